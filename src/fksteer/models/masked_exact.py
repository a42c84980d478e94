"""Exact fixtures for the masked diffusion sampler: `TableDenoiser` and `sampler_law`.

    from fksteer.models.masked_exact import TableDenoiser, sampler_law
    from fksteer.integrations.masked import MaskedDiffusionModel

    table = TabularMaskedDiffusion.default(num_steps=4)
    model = MaskedDiffusionModel(TableDenoiser(table), seq_len=table.seq_len, num_steps=4)
    law = sampler_law(model, table.vocab_size)      # (V ** L,) the sampler's exact law

:class:`TableDenoiser` gives the exact per-position marginals of a
:class:`~fksteer.models.tabular_masked.TabularMaskedDiffusion` table as logits, so a
:class:`~fksteer.integrations.masked.MaskedDiffusionModel` runs on it. That sampler unmasks
several positions at a step from the product of their marginals, so its law is not the table's;
:func:`sampler_law` computes it by enumerating every partially masked state, and the tilted
target of any reward follows by enumeration too. Tests and benchmarks compare the steered
particles with it. The sampler is duck-typed here (this layer sits below the integrations).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["TableDenoiser", "sampler_law"]


class TableDenoiser:
    """The exact per-position marginals of a
    :class:`~fksteer.models.tabular_masked.TabularMaskedDiffusion` table, as logits.

    For tokens x_t (B, L) with mask ``table.mask_id``, returns (B, L, V + 1) float64 logits
    log p(x_0^j = v | x_t) (the mask column is -inf), where p(x_0 | x_t) is the table restricted
    to the sequences that agree with x_t's unmasked tokens. The sampler draws several positions
    from these marginals independently, so it can reach contexts that no sequence of positive
    probability agrees with; there the denoiser returns uniform logits (a fixed, documented
    choice, so the sampler's law stays defined and :meth:`MaskedDiffusionModel.exact_law`
    matches it).
    """

    time_conditioned = False
    accepts_attention_mask = False

    def __init__(self, table: Any, chunk_size: int = 2048):
        self.table = table
        self.mask_id = int(table.mask_id)
        self.vocab_size = int(table.vocab_size)
        self.seq_len = int(table.seq_len)
        self.chunk_size = int(chunk_size)
        sequences = table.sequences()  # (N, L)
        one_hot = torch.nn.functional.one_hot(sequences, self.vocab_size)  # (N, L, V)
        self._sequences_one_hot = one_hot.reshape(len(sequences), -1).double()  # (N, L*V)
        self._probs = table.flat_probs.double()  # (N,)
        self.calls = 0
        self.rows = 0

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of p(x_0 | x_t) per position, exact by enumerating the table."""
        if tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
            raise ValueError(
                f"tokens must have shape (B, {self.seq_len}), got {tuple(tokens.shape)}"
            )
        self.calls += 1
        self.rows += tokens.shape[0]
        return torch.cat([self._marginals(chunk) for chunk in tokens.split(self.chunk_size)])

    def _marginals(self, tokens: torch.Tensor) -> torch.Tensor:
        V, L = self.vocab_size, self.seq_len
        device = tokens.device
        tokens = tokens.cpu()
        unmasked = tokens != self.mask_id  # (B, L)
        clean = torch.where(unmasked, tokens, 0)
        one_hot = torch.nn.functional.one_hot(clean, V).double() * unmasked[..., None]  # (B, L, V)
        # A sequence agrees with x_t iff it matches every unmasked position: count the matches.
        matches = one_hot.reshape(len(tokens), -1) @ self._sequences_one_hot.T  # (B, N)
        agrees = matches == unmasked.sum(-1, keepdim=True)  # (B, N), exact in float64
        posterior = agrees * self._probs  # (B, N) unnormalised p(x_0 | x_t)
        mass = posterior.sum(-1, keepdim=True)  # (B, 1)
        marginals = (posterior @ self._sequences_one_hot).reshape(-1, L, V)  # (B, L, V)
        marginals = torch.where(
            (mass > 0)[..., None], marginals / mass.clamp_min(1e-300)[..., None], 1.0 / V
        )
        logits = torch.full((len(tokens), L, V + 1), -math.inf, dtype=torch.float64)
        logits[..., :V] = torch.log(marginals)
        return logits.to(device)


@torch.no_grad()
def sampler_law(
    model: Any, vocab_size: int, prompt: Any = None, max_states: int = 4096
) -> torch.Tensor:
    """The exact law of a masked sampler's generated tokens, by enumeration: (V ** L,) float64.

    ``model`` is a :class:`~fksteer.integrations.masked.MaskedDiffusionModel` over a
    deterministic denoiser whose clean tokens are ``0 .. vocab_size - 1``. The chain runs over all
    (V + 1) ** L partially masked states (at most ``max_states``), with the sampler's transition
    kernel built in closed form from the denoiser's categoricals. Given the state, positions move
    independently, so a row of the kernel is an outer product of per-position factors;
    ``fixed-count`` then keeps the outcomes that unmask exactly n positions, each n-subset having
    probability 1 / C(m, n). Entries are in row-major order over sequences (last position
    fastest), as ``TabularMaskedDiffusion.sequences()``.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size!r}: pass a positive int.")
    V, L = vocab_size, model.seq_len
    num_states = (V + 1) ** L
    if num_states > max_states:
        raise ValueError(
            f"{num_states} masking states ((vocab_size + 1) ** seq_len) exceed "
            f"max_states={max_states}: enumerate tiny problems only."
        )
    if model.mask_id < V:
        raise ValueError(f"mask_id={model.mask_id} lies among the clean ids 0 .. {V - 1}.")
    place = (V + 1) ** torch.arange(L - 1, -1, -1)  # (L,)
    digits = (torch.arange(num_states)[:, None] // place) % (V + 1)  # (S, L), V = masked
    masked = digits == V  # (S, L)
    generated = torch.where(masked, model.mask_id, digits)  # (S, L)
    prefix = torch.tensor(model.prompt_ids(prompt), dtype=torch.int64)
    tokens = torch.cat([prefix.expand(num_states, -1), generated], dim=1).to(model.device)
    positions = (len(prefix) + torch.arange(L)).expand(num_states, -1).to(model.device)
    law = torch.zeros(num_states, dtype=torch.float64)
    law[-1] = 1.0  # every position masked: the last state in this order
    probs = None
    for step in range(model.num_steps):
        if probs is None or model.time_conditioned:
            probs = _clean_probabilities(model, tokens, positions, step, V)  # (S, L, V)
        law = law @ _step_kernel(model, step, probs, digits, masked)  # (S,)
    clean = ~masked.any(-1)  # (S,)
    leftover = float(law[~clean].sum())
    if leftover > 1e-9:
        raise RuntimeError(f"probability {leftover} left on masked states after the last step")
    clean_place = V ** torch.arange(L - 1, -1, -1)
    result = torch.zeros(V**L, dtype=torch.float64)
    result[(digits[clean] * clean_place).sum(-1)] = law[clean]
    return result


def _clean_probabilities(
    model: Any, tokens: torch.Tensor, positions: torch.Tensor, step: int, V: int
) -> torch.Tensor:
    """The denoiser's categoricals over the V clean ids at every state: (S, L, V) float64."""
    logits = model._evaluate(tokens, positions, None, step).cpu()
    probs = torch.softmax(logits.double(), dim=-1)  # (S, L, V')
    outside = probs[..., V:].sum(-1)
    if bool((outside > 1e-9).any()):
        raise ValueError(
            f"the denoiser gives probability {float(outside.max()):.3g} to ids "
            f">= vocab_size={V}: pass the full clean vocabulary size."
        )
    return probs[..., :V]


def _step_kernel(
    model: Any, step: int, probs: torch.Tensor, digits: torch.Tensor, masked: torch.Tensor
) -> torch.Tensor:
    """The sampler's transition matrix between masking states at ``step``: (S, S) float64."""
    num_states, L = digits.shape
    V = probs.shape[-1]
    last = step == model.num_steps - 1
    fixed_count = model.unmasking == "fixed-count" and not last
    stay = 0.0 if last else 1.0 - float(model.unmask_probabilities[step])
    move = 1.0 if last else float(model.unmask_probabilities[step])
    if fixed_count:
        stay, move = 1.0, 1.0  # the count constraint below weighs the outcomes
    factors = torch.where(
        masked[..., None],
        torch.cat([move * probs, torch.full((num_states, L, 1), stay)], -1),
        torch.nn.functional.one_hot(digits, V + 1).double(),
    )  # (S, L, V+1): law of each position's next digit given the state
    kernel = factors[:, 0]  # (S, V+1)
    for j in range(1, L):
        kernel = (kernel[:, :, None] * factors[:, j, None, :]).reshape(num_states, -1)
    if fixed_count:
        count = int(model.unmask_counts[step])
        num_masked = masked.sum(-1)  # (S,)
        newly = num_masked[:, None] - num_masked[None, :]  # (S, S)
        ways = torch.tensor([math.comb(int(m), count) for m in num_masked], dtype=torch.float64)
        weight = torch.where(ways > 0, 1.0 / ways.clamp_min(1.0), 0.0)
        kernel = kernel * (newly == count) * weight[:, None]
    return kernel
