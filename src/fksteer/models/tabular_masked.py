"""Masked (absorbing-state) discrete diffusion over an explicit table: an exact fixture.

    from fksteer.models.tabular_masked import TabularMaskedDiffusion

    model = TabularMaskedDiffusion.default(num_steps=4)     # vocab 3, length 4, non-product
    target, log_normaliser = model.tilted(reward, lmbda=1.0)  # p(x) exp(lmbda r(x)) / Z, (N,)

What is in it: :class:`TabularMaskedDiffusion`, an MDLM-style masked diffusion (Sahoo et al. 2024,
"Simple and effective masked diffusion language models"; Austin et al. 2021, D3PM absorbing
state) whose data distribution is a table ``probs`` over all N = V^L sequences. It implements
:class:`fksteer.smc.protocol.StepModel` exactly: p(x_0 | x_t) is computed by enumerating the
table, and the reverse step unmasks each masked position with the exact probability of the
schedule, so the final samples are exact draws from the table for any number of steps. The
tilted target of any reward is computed by enumeration as well (:meth:`tilted`).

Tokens are ids ``0 .. V-1``; the mask is ``mask_id = V``. The schedule is alpha(t) = 1 - t (the
probability that a token is still unmasked at time t). Step ``i`` is at ``t_i = 1 - i / num_steps``
(step 0: every token masked); the final sample is at t = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fksteer.smc.rows import TensorRows

__all__ = ["TabularMaskedDiffusion"]


def _enumerate_sequences(vocab_size: int, seq_len: int) -> torch.Tensor:
    """All V^L sequences in row-major table order (last position fastest): (N, L) int64."""
    place_values = vocab_size ** torch.arange(seq_len - 1, -1, -1)  # (L,)
    flat_indices = torch.arange(vocab_size**seq_len)  # (N,)
    return (flat_indices[:, None] // place_values) % vocab_size  # (N, L)


class TabularMaskedDiffusion(TensorRows):
    """Absorbing-state masked diffusion whose data distribution is an explicit table.

    Implements :class:`fksteer.smc.protocol.StepModel`:

    - state: int64 tokens (B, L); ``init`` makes them all ``mask_id``.
    - ``predict`` returns ``(draw, draw)``: one joint draw x_0 ~ p(x_0 | x_t) (B, L) per
      particle, which is both what ``move`` needs and what the reward scores (token ids).
    - ``move`` unmasks each masked position with probability (alpha_s - alpha_t) / (1 - alpha_t),
      copying its token from the draw; unmasked tokens never change.
    - its particle rows are the state and the output (:class:`~fksteer.smc.rows.TensorRows`).

    Parameters:

    - ``probs``: a tensor of shape ``(vocab_size,) * seq_len``, non-negative, summing to 1 within
      1e-6 (then divided by its sum); ``probs[x_1, ..., x_L]`` is the probability of a sequence.
    - ``vocab_size`` (V >= 1), ``seq_len`` (L >= 1), ``num_steps`` (>= 1).
    """

    def __init__(
        self,
        probs: torch.Tensor | Sequence[Any],
        vocab_size: int,
        seq_len: int,
        num_steps: int,
    ):
        for name, value in (
            ("vocab_size", vocab_size),
            ("seq_len", seq_len),
            ("num_steps", num_steps),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        try:
            probs = torch.as_tensor(probs, dtype=torch.float64).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"probs must be a numeric tensor, got {probs!r}") from error
        expected_shape = (vocab_size,) * seq_len
        if tuple(probs.shape) != expected_shape:
            raise ValueError(
                f"probs must have shape (vocab_size,) * seq_len = {expected_shape}, got "
                f"{tuple(probs.shape)}; index it as probs[x_1, ..., x_L]"
            )
        if not torch.isfinite(probs).all() or (probs < 0).any():
            raise ValueError("probs must be finite and non-negative; found a negative or NaN entry")
        total = probs.sum().item()
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"probs must sum to 1, got sum {total:.8g}; divide it by its sum")

        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.num_steps = num_steps
        self.mask_id = vocab_size
        self.probs = probs / total  # (V,) * L
        self.flat_probs = self.probs.reshape(-1)  # (N,)
        self.num_sequences = self.flat_probs.numel()
        self._sequences = _enumerate_sequences(vocab_size, seq_len)  # (N, L)
        self._place_values = vocab_size ** torch.arange(seq_len - 1, -1, -1)  # (L,)
        self.times = 1.0 - torch.arange(num_steps + 1, dtype=torch.float64) / num_steps  # (T+1,)

    def __repr__(self) -> str:
        return (
            f"TabularMaskedDiffusion(vocab_size={self.vocab_size}, seq_len={self.seq_len}, "
            f"num_steps={self.num_steps})"
        )

    # -- the table ---------------------------------------------------------------------------

    @staticmethod
    def alpha(t: torch.Tensor | float) -> torch.Tensor:
        """alpha(t) = 1 - t: the probability that a token is still unmasked at time t."""
        return 1.0 - torch.as_tensor(t, dtype=torch.float64)

    def sequences(self) -> torch.Tensor:
        """All N = V^L sequences in table order (row-major over ``probs``): (N, L) int64."""
        return self._sequences.clone()

    def index_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """The flat table index of each clean sequence in ``tokens`` (B, L): (B,) int64."""
        tokens = torch.as_tensor(tokens)
        if tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
            raise ValueError(
                f"tokens must have shape (B, seq_len={self.seq_len}), got {tuple(tokens.shape)}"
            )
        if ((tokens < 0) | (tokens >= self.vocab_size)).any():
            raise ValueError(
                f"tokens must be clean ids in 0 .. {self.vocab_size - 1} (no mask "
                f"{self.mask_id}); only clean sequences have a table index"
            )
        return (tokens.long().cpu() * self._place_values).sum(-1)  # (B,)

    def histogram(self, tokens: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The empirical (optionally weighted) distribution of ``tokens`` (B, L): (N,) float64."""
        indices = self.index_of(tokens)  # (B,)
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float64).cpu()
            if weights.shape != indices.shape:
                raise ValueError(
                    f"weights must have shape {tuple(indices.shape)} (one per sequence), got "
                    f"{tuple(weights.shape)}"
                )
        counts = torch.bincount(indices, weights=weights, minlength=self.num_sequences)
        counts = counts.to(torch.float64)  # (N,)
        return counts / counts.sum()

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        """Exact draws from the table: (num_samples, L) int64."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        indices = torch.multinomial(
            self.flat_probs, num_samples, replacement=True, generator=generator
        )  # (n,)
        return self._sequences[indices]

    def tilted(
        self, reward: Callable[[torch.Tensor, Any], Any], lmbda: float
    ) -> tuple[torch.Tensor, float]:
        """The target p(x) exp(lmbda r(x)) / Z by enumeration: (probs (N,) float64, log Z).

        Calls ``reward(self.sequences(), None)`` (in chunks of ``reward.batch_size`` if it has
        one). A reward of -inf or NaN gives the sequence probability 0 whatever lmbda (as the
        engine kills such particles); +inf is an error, and so is a target with no mass left.
        """
        lmbda = float(lmbda)
        if not math.isfinite(lmbda):
            raise ValueError(f"lmbda must be finite, got {lmbda!r}")
        sequences = self.sequences()
        batch_size = getattr(reward, "batch_size", None) or self.num_sequences
        rewards = torch.cat(
            [
                torch.as_tensor(reward(chunk, None), dtype=torch.float64).reshape(-1).cpu()
                for chunk in sequences.split(batch_size)
            ]
        )  # (N,)
        if rewards.shape != (self.num_sequences,):
            raise ValueError(
                f"reward must return one number per sequence ({self.num_sequences}), got "
                f"{rewards.numel()}"
            )
        if (rewards == math.inf).any():
            raise ValueError("reward returned +inf for some sequence; the tilt is undefined")
        dead = torch.isnan(rewards) | (rewards == -math.inf)  # (N,)
        log_tilts = torch.where(dead, -math.inf, lmbda * rewards.nan_to_num(0.0))  # (N,)
        log_unnormalised = torch.log(self.flat_probs) + log_tilts  # (N,)
        log_normaliser = torch.logsumexp(log_unnormalised, dim=0)
        if not torch.isfinite(log_normaliser):
            raise ValueError(
                "the tilted target has no mass: every sequence of positive probability has "
                "reward -inf or NaN (or lmbda * reward overflows)"
            )
        return (log_unnormalised - log_normaliser).exp(), float(log_normaliser)

    # -- the StepModel protocol --------------------------------------------------------------

    def init(
        self, prompts: Sequence[Any], num_particles: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Fully masked sequences: (len(prompts) * num_particles, L) int64 of ``mask_id``."""
        if (
            isinstance(num_particles, bool)
            or not isinstance(num_particles, int)
            or (num_particles < 1)
        ):
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        return torch.full(
            (len(prompts) * num_particles, self.seq_len), self.mask_id, dtype=torch.int64
        )

    def predict(
        self, state: torch.Tensor, step: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw x_0 ~ p(x_0 | x_t) jointly, by enumeration: ``(draw, draw)``, each (B, L) int64.

        Under absorbing noise the masking pattern is independent of x_0, so
        p(x_0 | x_t) is proportional to p(x_0) 1[x_0 agrees with x_t wherever x_t is unmasked].
        """
        self._check_step(step)
        sequences = self._sequences.to(state.device)  # (N, L)
        unmasked = (state != self.mask_id)[:, None, :]  # (B, 1, L)
        agrees = (sequences[None] == state[:, None, :]) | ~unmasked  # (B, N, L)
        posterior = agrees.all(-1) * self.flat_probs.to(state.device)  # (B, N), unnormalised
        empty = posterior.sum(-1) <= 0  # (B,)
        if empty.any():
            particle = int(empty.nonzero()[0, 0])
            raise ValueError(
                f"particle {particle} at step {step} has state {state[particle].tolist()} "
                f"(mask id {self.mask_id}), which no sequence of positive probability agrees "
                f"with; states made by init and move never do this, so check what built it"
            )
        indices = torch.multinomial(posterior, 1, generator=generator)[:, 0]  # (B,)
        draw = sequences[indices]  # (B, L)
        return draw, draw

    def move(
        self,
        state: torch.Tensor,
        model_output: torch.Tensor,
        step: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Unmask each masked token with probability (alpha_s - alpha_t) / (1 - alpha_t).

        This is the exact reverse kernel of absorbing diffusion (the posterior q(z_s | z_t, x)
        of MDLM, Sahoo et al. 2024, with the joint x_0 draw in place of x_theta): a masked
        token at t is still masked at s with probability (1 - alpha_s) / (1 - alpha_t), else
        it takes its value in x_0. At the last step alpha_s = 1, so the probability is 1 and
        every mask goes.
        """
        self._check_step(step)
        alpha_t, alpha_s = self.alpha(self.times[step]), self.alpha(self.times[step + 1])
        unmask_probability = float((alpha_s - alpha_t) / (1 - alpha_t))  # 1 - alpha_t > 0
        masked = state == self.mask_id  # (B, L)
        uniforms = torch.rand(state.shape, generator=generator, dtype=torch.float64)
        unmask = masked & (uniforms.to(state.device) < unmask_probability)  # (B, L)
        return torch.where(unmask, model_output, state)

    def transition_log_prob(
        self,
        state: torch.Tensor,
        model_output: torch.Tensor,
        step: int,
        next_state: torch.Tensor,
    ) -> torch.Tensor:
        """log p(next_state | state, draw) of :meth:`move`, per row: (B,) float64.

        Unmasked tokens stay (-inf if ``next_state`` changed one); each masked token is still
        masked with probability 1 - u, else unmasked to the draw's token (``model_output``)
        with probability u, u = (alpha_s - alpha_t) / (1 - alpha_t).
        """
        self._check_step(step)
        alpha_t, alpha_s = self.alpha(self.times[step]), self.alpha(self.times[step + 1])
        u = float((alpha_s - alpha_t) / (1 - alpha_t))
        state, draw, after = state.cpu(), model_output.cpu(), next_state.cpu()
        masked, stays = state == self.mask_id, after == self.mask_id  # (B, L)
        def value(x: float) -> torch.Tensor:
            return torch.tensor(x, dtype=torch.float64)

        log_stay, log_unmask = value(math.log(1 - u) if u < 1 else -math.inf), value(math.log(u))
        impossible = value(-math.inf)
        per_token = torch.where(
            masked,
            torch.where(stays, log_stay, torch.where(after == draw, log_unmask, impossible)),
            torch.where(after == state, value(0.0), impossible),
        )  # (B, L) float64
        return per_token.sum(dim=-1)

    def decode(self, clean: torch.Tensor, final: bool) -> torch.Tensor:
        """The reward reads token ids: ``clean`` (B, L) int64 unchanged."""
        return clean

    def final_sample(self, state: torch.Tensor) -> torch.Tensor:
        """The final tokens, which are the sample."""
        return state

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.num_steps:
            raise ValueError(f"step must be in 0 .. {self.num_steps - 1}, got {step!r}")

    # -- a ready-made instance ---------------------------------------------------------------

    @classmethod
    def default(cls, num_steps: int = 4) -> TabularMaskedDiffusion:
        """Vocabulary 3, length 4 (81 sequences), strongly non-product (used by tests).

        log p(x) = 1.2 * #{j : x_j = x_{j+1}} + sum_j field[x_j] + const, field = (0.4, 0, -0.4),
        except that sequences starting and ending with token 2 have probability 0 (so the
        table has zeros, and some partially masked states have no compatible sequence).
        """
        vocab_size, seq_len = 3, 4
        sequences = _enumerate_sequences(vocab_size, seq_len).to(torch.float64)  # (N, L)
        field = torch.tensor([0.4, 0.0, -0.4], dtype=torch.float64)
        equal_neighbours = (sequences[:, 1:] == sequences[:, :-1]).sum(-1)  # (N,)
        log_weights = 1.2 * equal_neighbours + field[sequences.long()].sum(-1)  # (N,)
        forbidden = (sequences[:, 0] == 2) & (sequences[:, -1] == 2)  # (N,)
        weights = torch.where(forbidden, 0.0, log_weights.exp())  # (N,)
        probs = (weights / weights.sum()).reshape((vocab_size,) * seq_len)
        return cls(probs, vocab_size, seq_len, num_steps)
