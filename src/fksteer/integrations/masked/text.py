"""Texts out of the masked sampler: `DecodedText` (for rewards) and `token_ids` (for users).

    from fksteer.integrations.masked.text import DecodedText, token_ids
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DecodedText", "token_ids"]


class DecodedText(str):
    """A decoded sample: a ``str`` (what text rewards read) that keeps its ``token_ids`` (L,)."""

    token_ids: torch.Tensor

    def __new__(cls, text: str, token_ids: torch.Tensor) -> DecodedText:
        """``text`` carrying its ``token_ids``."""
        obj = super().__new__(cls, text)
        obj.token_ids = token_ids
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (DecodedText, (str(self), self.token_ids))


def token_ids(result: Any) -> torch.Tensor:
    """The generated token ids of a run's final samples: (G, K, L) int64.

    Works on the ``SteeringResult`` of a :class:`MaskedDiffusionModel` run, whether it decoded to
    texts (:class:`DecodedText`, which keep their ids) or to token ids.
    """
    samples = result.samples
    if isinstance(samples, torch.Tensor):
        return samples
    try:
        return torch.stack([torch.stack([item.token_ids for item in row]) for row in samples])
    except AttributeError as error:
        raise ValueError(
            "result.samples holds no token ids: it was not decoded by MaskedDiffusionModel "
            "(whose texts are DecodedText with .token_ids)."
        ) from error
