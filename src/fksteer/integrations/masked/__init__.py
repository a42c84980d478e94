"""Steer masked (absorbing-state) diffusion language models: MDLM, LLaDA, Dream or your own.

    from fksteer.integrations.masked import MaskedDiffusionModel, TransformersDenoiser, token_ids

Modules: ``sampler`` (:class:`MaskedDiffusionModel`, the StepModel, and its state), ``schedules``
(masking schedules), ``denoisers`` (the :class:`Denoiser` protocol, :class:`TransformersDenoiser`)
and ``text`` (:class:`DecodedText`, :func:`token_ids`). The sampler's exact fixtures
(:class:`~fksteer.models.masked_exact.TableDenoiser` and its exact law) are in
:mod:`fksteer.models.masked_exact`. See :mod:`fksteer.integrations.masked.sampler` for the
sampler, the caching and what FK steering targets here.
"""

from fksteer.integrations.masked.denoisers import Denoiser, TransformersDenoiser
from fksteer.integrations.masked.sampler import (
    UNMASKING,
    MaskedDiffusionModel,
    MaskedDiffusionOutput,
    MaskedDiffusionState,
)
from fksteer.integrations.masked.schedules import CosineSchedule, LogLinearSchedule
from fksteer.integrations.masked.text import DecodedText, token_ids

__all__ = [
    "UNMASKING",
    "CosineSchedule",
    "DecodedText",
    "Denoiser",
    "LogLinearSchedule",
    "MaskedDiffusionModel",
    "MaskedDiffusionOutput",
    "MaskedDiffusionState",
    "TransformersDenoiser",
    "token_ids",
]
