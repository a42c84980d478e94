"""The masked diffusion integration under its old name: use :mod:`fksteer.integrations.masked`.

    from fksteer.integrations.masked import MaskedDiffusionModel   # the new home

Every name of the old module still imports from here; ``TableDenoiser`` now lives with the
exact fixtures in :mod:`fksteer.models.masked_exact`. Importing it warns (DeprecationWarning);
it goes in a later release.
"""

import warnings

from fksteer.integrations.masked import (
    UNMASKING,
    CosineSchedule,
    DecodedText,
    Denoiser,
    LogLinearSchedule,
    MaskedDiffusionModel,
    MaskedDiffusionOutput,
    MaskedDiffusionState,
    TransformersDenoiser,
    token_ids,
)
from fksteer.models.masked_exact import TableDenoiser

warnings.warn(
    "fksteer.integrations.masked_diffusion is deprecated: import from fksteer.integrations.masked "
    "(TableDenoiser: fksteer.models.masked_exact).",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "UNMASKING",
    "CosineSchedule",
    "DecodedText",
    "Denoiser",
    "LogLinearSchedule",
    "MaskedDiffusionModel",
    "MaskedDiffusionOutput",
    "MaskedDiffusionState",
    "TableDenoiser",
    "TransformersDenoiser",
    "token_ids",
]
