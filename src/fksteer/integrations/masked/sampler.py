"""Steer masked (absorbing-state) diffusion language models: MDLM, LLaDA, Dream or your own.

    from fksteer.integrations.masked import MaskedDiffusionModel, TransformersDenoiser

    denoiser = TransformersDenoiser.from_pretrained("GSAI-ML/LLaDA-8B-Base", mask_id=126336,
                                                    auto_class="AutoModel",
                                                    trust_remote_code=True)
    model = MaskedDiffusionModel(denoiser, seq_len=64, num_steps=64, num_x0_samples=4)
    result = fksteer.steer(model, reward, fksteer.FKConfig(num_particles=8, lmbda=10.0),
                           prompts=["The movie was", "My neighbour"], generator=g)
    result.samples              # G lists of K texts (DecodedText: a str with .token_ids)
    token_ids(result)           # (G, K, seq_len) int64, the generated tokens

What is in it (this module is the sampler; the package holds the rest):

- :class:`MaskedDiffusionModel`, a :class:`fksteer.smc.protocol.StepModel` for any denoiser that
  maps token ids (B, N) (plus the time, if it wants it) to logits (B, N, V), with a mask id. It is
  the ancestral sampler of absorbing-state (masked) diffusion (Austin et al. 2021, D3PM; Sahoo et
  al. 2024, MDLM; Shi et al. 2024, MD4). Prompts are prefixes that never change; each prompt is
  a group of K particles. Its particle rows (tokens, positions, attention mask, cached logits)
  are declared once, so it can be permuted, sharded over processes and restored.
- :mod:`~fksteer.integrations.masked.schedules`: :class:`LogLinearSchedule` (the default) and
  :class:`CosineSchedule`.
- :mod:`~fksteer.integrations.masked.denoisers`: the :class:`Denoiser` protocol and
  :class:`TransformersDenoiser` (a transformers model and its tokenizer).
- :mod:`~fksteer.integrations.masked.text`: :class:`DecodedText` and :func:`token_ids`.
- The exact fixtures of this sampler live with the others in :mod:`fksteer.models.masked_exact`:
  :class:`~fksteer.models.masked_exact.TableDenoiser` and the sampler's exact law by enumeration
  (:meth:`MaskedDiffusionModel.exact_law`).

The sampler. Time runs t_i = 1 - i / T for steps i = 0 .. T-1 and the final sample is at t_T = 0
(never below 0). alpha(t) is the probability that a token is unmasked at time t (alpha(0) = 1).
Every generated position starts masked. At step i the denoiser gives logits at every position;
the mask id (and any ``suppress_token_ids``) get probability 0, and a position's categorical is
the model's p(x_0^j | x_t). Two ways to choose which masked positions to fill (``unmasking``):

- ``"ancestral"`` (MDLM, Dream's ``alg="origin"``): each masked position independently unmasks
  with probability (alpha(t_{i+1}) - alpha(t_i)) / (1 - alpha(t_i)) (MDLM eq. 7) and draws its
  token from its categorical. Under the log-linear schedule this is (t_i - t_{i+1}) / t_i.
- ``"fixed-count"`` (LLaDA with random remasking): exactly n_i = round(L m(t_i)) -
  round(L m(t_{i+1})) positions (rounded half up), chosen uniformly among the masked ones, with
  m(t) = (1 - alpha(t)) / (1 - alpha(1)) the masked fraction; with T = L this unmasks one
  position per step.

The last step unmasks every position still masked, whatever the schedule. Unmasked tokens never
change. Unmasking several positions in one step draws them from the product of their per-position
categoricals, not from their joint law, so the sampler's law is the model's only when each step
unmasks one position; FK steering targets this sampler's law tilted, p_sampler(x) exp(lambda r(x))
/ Z, which :meth:`MaskedDiffusionModel.exact_law` computes for tiny vocabularies.

Caching (MDLM's trick). When the denoiser does not take the time, its logits depend only on the
tokens, so a particle whose tokens did not change since the last step reuses its logits: only
the particles that changed are evaluated, as one sub-batch. The random draws are the same with
and without the cache, so a cached run gives the same samples as an uncached one (for a denoiser
whose rows do not depend on what else is in the batch, as on CPU).

Potentials. ``predict`` returns the logits (what ``move`` needs, in a
:class:`MaskedDiffusionOutput`) and ``num_x0_samples`` = M draws of x_0 from the product of
per-position categoricals given x_t, with the unmasked tokens kept, so the engine decodes and
scores all G*K*M draws in one reward call and combines them as the soft reward
(1/lambda) log mean_j exp(lambda r_j) (``num_predictions`` of the StepModel protocol). The final
potential scores the final text itself. A reward may also read ``.token_ids`` of what it gets.

What the result holds. ``decode`` turns generated tokens (B, L) into what the reward reads: with a
tokenizer, a list of :class:`DecodedText` (a ``str``, so any text reward reads it, that also keeps
its ``token_ids``); without one, the token ids (B, L) themselves. ``result.samples`` is therefore
G lists of K texts, and :func:`token_ids` stacks their ids into a (G, K, L) tensor. The reward
reads the generated continuation only; the engine passes each sample's prompt beside it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from fksteer.integrations.masked.denoisers import Denoiser
from fksteer.integrations.masked.schedules import SCHEDULES
from fksteer.integrations.masked.text import DecodedText
from fksteer.smc.rows import PermuteByRows

__all__ = ["UNMASKING", "MaskedDiffusionModel", "MaskedDiffusionOutput", "MaskedDiffusionState"]

logger = logging.getLogger(__name__)

#: How a step chooses the masked positions it fills (see the module docstring).
UNMASKING = ("ancestral", "fixed-count")


@dataclass(frozen=True)
class MaskedDiffusionState:
    """Per-particle state of :class:`MaskedDiffusionModel`; every tensor has the flat axis B = G*K.

    Attributes:
        tokens: (B, N) int64, each row ``prompt, generated tokens, right padding``; masked
            generated positions hold the mask id.
        positions: (B, L) int64, where the L generated tokens sit in ``tokens``.
        attention_mask: (B, N) bool, False on padding; None when no row is padded.
        logits: (B, L, V) the denoiser's (processed) logits at the generated positions for the
            tokens of the previous step, valid in rows where ``stale`` is False; None at the start.
        stale: (B,) bool, rows whose tokens changed since ``logits`` were computed.
        denoiser_rows: rows the denoiser evaluated in the steps so far (with the cache, fewer
            than B per step).
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    attention_mask: torch.Tensor | None
    logits: torch.Tensor | None
    stale: torch.Tensor
    denoiser_rows: int = 0

    def generated(self) -> torch.Tensor:
        """The generated region: (B, L) int64."""
        return self.tokens.gather(1, self.positions)


@dataclass(frozen=True)
class MaskedDiffusionOutput:
    """What ``predict`` hands to ``move``: the logits of the current tokens and their cost.

    Attributes:
        logits: (B, L, V) processed logits at the generated positions (mask id at -inf).
        evaluated: rows the denoiser evaluated for them (the rest came from the cache).
    """

    logits: torch.Tensor
    evaluated: int


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: pass a positive int.")
    return value


class MaskedDiffusionModel(PermuteByRows):
    """Absorbing-state masked diffusion over a denoiser, as a StepModel (see the module docstring).

    Args:
        denoiser: a :class:`Denoiser` (a function of token ids, a :class:`TransformersDenoiser`,
            a :class:`TableDenoiser`, ...).
        seq_len: L, the number of tokens to generate after each prompt.
        num_steps: T, denoising steps (T = L with ``"fixed-count"`` unmasks one token per step).
        mask_id: the mask token id; default ``denoiser.mask_id``.
        schedule: ``"log-linear"`` (default), ``"cosine"``, or an object with ``alpha(t)`` on
            float64 tensors, non-increasing in t with alpha(0) = 1.
        unmasking: ``"ancestral"`` or ``"fixed-count"`` (:data:`UNMASKING`).
        num_x0_samples: M, draws of x_0 per particle that the intermediate potentials score.
        cache: reuse the logits of particles whose tokens did not change (only when the denoiser
            is not time-conditioned).
        time_conditioned: default ``denoiser.time_conditioned`` (else False).
        tokenizer: default ``denoiser.tokenizer``; tokenises text prompts and decodes samples. No
            tokenizer: prompts must be token ids and samples stay token ids.
        add_special_tokens: passed to the tokenizer for text prompts (default False: a prompt is
            exactly its text's tokens; pass token ids for chat templates or BOS).
        pad_id: fills the right padding of shorter prompts (masked out by the attention mask);
            default the tokenizer's pad id, else the mask id.
        suppress_token_ids: ids never generated (e.g. special tokens); this changes the model's
            law to its restriction, and the mask id is always suppressed.
        device: where tokens live; default ``denoiser.device``, else the CPU.
    """

    def __init__(
        self,
        denoiser: Denoiser | Callable[..., torch.Tensor],
        *,
        seq_len: int,
        num_steps: int,
        mask_id: int | None = None,
        schedule: str | Any = "log-linear",
        unmasking: str = "ancestral",
        num_x0_samples: int = 1,
        cache: bool = True,
        time_conditioned: bool | None = None,
        tokenizer: Any = None,
        add_special_tokens: bool = False,
        pad_id: int | None = None,
        suppress_token_ids: Sequence[int] = (),
        device: str | torch.device | None = None,
    ):
        if not callable(denoiser):
            raise ValueError(f"denoiser must be callable (token ids -> logits), got {denoiser!r}.")
        self.denoiser = denoiser
        self.seq_len = _positive_int("seq_len", seq_len)
        self.num_steps = _positive_int("num_steps", num_steps)
        self.num_x0_samples = _positive_int("num_x0_samples", num_x0_samples)
        self.num_predictions = self.num_x0_samples
        mask_id = getattr(denoiser, "mask_id", None) if mask_id is None else mask_id
        if isinstance(mask_id, bool) or not isinstance(mask_id, int) or mask_id < 0:
            raise ValueError(
                f"mask_id={mask_id!r}: pass the mask token id (the denoiser has no mask_id)."
            )
        self.mask_id = mask_id
        if unmasking not in UNMASKING:
            raise ValueError(f"unmasking={unmasking!r}: choose one of {', '.join(UNMASKING)}.")
        self.unmasking = unmasking
        if isinstance(schedule, str):
            if schedule not in SCHEDULES:
                raise ValueError(
                    f"schedule={schedule!r}: choose one of {', '.join(SCHEDULES)}, or pass an "
                    "object with an alpha(t) method."
                )
            schedule = SCHEDULES[schedule]()
        if not callable(getattr(schedule, "alpha", None)):
            raise ValueError(f"schedule={schedule!r} has no alpha(t) method.")
        self.schedule = schedule
        if time_conditioned is None:
            time_conditioned = bool(getattr(denoiser, "time_conditioned", False))
        self.time_conditioned = bool(time_conditioned)
        self.cache = bool(cache)
        self.tokenizer = getattr(denoiser, "tokenizer", None) if tokenizer is None else tokenizer
        self.add_special_tokens = bool(add_special_tokens)
        if pad_id is None:
            pad_id = getattr(self.tokenizer, "pad_token_id", None)
        self.pad_id = self.mask_id if pad_id is None else int(pad_id)
        self.suppress_token_ids = tuple(int(i) for i in suppress_token_ids)
        if device is None:
            device = getattr(denoiser, "device", None) or "cpu"
        self.device = torch.device(device)

        self.times, self.alphas, self.unmask_probabilities, self.unmask_counts = (
            _schedule_tables(schedule, self.num_steps, self.seq_len)
        )

    def __repr__(self) -> str:
        return (
            f"MaskedDiffusionModel(seq_len={self.seq_len}, num_steps={self.num_steps}, "
            f"unmasking={self.unmasking!r}, schedule={self.schedule!r}, "
            f"num_x0_samples={self.num_x0_samples}, cache={self.cache})"
        )

    # -- prompts ---------------------------------------------------------------------------------

    def prompt_ids(self, prompt: Any) -> list[int]:
        """A prompt's token ids: None -> [], a str -> the tokenizer's ids, ids -> themselves."""
        if prompt is None:
            return []
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError(
                    f"prompt {prompt!r} is text but the model has no tokenizer: pass "
                    "tokenizer= to MaskedDiffusionModel, or give prompts as token ids."
                )
            ids = self.tokenizer(prompt, add_special_tokens=self.add_special_tokens)["input_ids"]
        elif isinstance(prompt, torch.Tensor) and prompt.ndim == 1:
            ids = prompt.tolist()
        elif isinstance(prompt, (list, tuple)) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in prompt
        ):
            ids = list(prompt)
        else:
            raise ValueError(
                f"prompt {prompt!r} ({type(prompt).__name__}): pass a str, a list of token ids, "
                "a 1-D tensor of ids, or None (no prefix)."
            )
        ids = [int(i) for i in ids]
        if self.mask_id in ids:
            raise ValueError(
                f"prompt {prompt!r} contains the mask id {self.mask_id}: prompts are fixed "
                "prefixes; infilling inside a prompt is not supported."
            )
        return ids

    # -- the StepModel protocol ------------------------------------------------------------------

    def init(
        self, prompts: Sequence[Any], num_particles: int, generator: torch.Generator
    ) -> MaskedDiffusionState:
        """Rows ``prompt, L masks, padding``, K per prompt, group-major."""
        _positive_int("num_particles", num_particles)
        prefixes = [self.prompt_ids(prompt) for prompt in prompts]
        longest = max(len(ids) for ids in prefixes)
        width = longest + self.seq_len
        ragged = any(len(ids) != longest for ids in prefixes)
        if ragged and not getattr(self.denoiser, "accepts_attention_mask", False):
            raise ValueError(
                f"prompts have different lengths ({sorted({len(ids) for ids in prefixes})} "
                "tokens) but the denoiser takes no attention mask: give prompts of equal length, "
                "or a denoiser with accepts_attention_mask = True (TransformersDenoiser has it)."
            )
        rows = torch.full((len(prefixes), width), self.pad_id, dtype=torch.int64)
        positions = torch.empty((len(prefixes), self.seq_len), dtype=torch.int64)
        attention = torch.zeros((len(prefixes), width), dtype=torch.bool)
        for g, ids in enumerate(prefixes):
            rows[g, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
            rows[g, len(ids) : len(ids) + self.seq_len] = self.mask_id
            positions[g] = len(ids) + torch.arange(self.seq_len)
            attention[g, : len(ids) + self.seq_len] = True
        def repeat(x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(num_particles, dim=0).to(self.device)

        batch = len(prefixes) * num_particles
        return MaskedDiffusionState(
            tokens=repeat(rows),  # (B, N)
            positions=repeat(positions),  # (B, L)
            attention_mask=repeat(attention) if ragged else None,  # (B, N)
            logits=None,
            stale=torch.ones(batch, dtype=torch.bool, device=self.device),
        )

    def predict(
        self, state: MaskedDiffusionState, step: int, generator: torch.Generator
    ) -> tuple[MaskedDiffusionOutput, torch.Tensor]:
        """``(output, draws (B*M, L))``: the logits, and M draws of x_0 per particle.

        Each draw keeps the unmasked tokens and fills every masked position independently from
        its categorical softmax(logits); the draws are laid out particle-major (the M draws of
        particle p are rows p*M .. p*M + M - 1). Reuses the cached logits of unchanged particles.
        """
        self._check_step(step)
        logits, evaluated = self._logits(state, step)  # (B, L, V)
        generated = state.generated()  # (B, L)
        masked = generated == self.mask_id  # (B, L)
        M = self.num_x0_samples
        draws = generated.unsqueeze(-1).repeat(1, 1, M)  # (B, L, M)
        if bool(masked.any()):
            draws[masked] = self._categorical(logits[masked], M, generator)  # (n, M)
        output = MaskedDiffusionOutput(logits=logits, evaluated=evaluated)
        return output, draws.permute(0, 2, 1).reshape(-1, self.seq_len)  # (B*M, L)

    def move(
        self,
        state: MaskedDiffusionState,
        model_output: MaskedDiffusionOutput,
        step: int,
        generator: torch.Generator,
    ) -> MaskedDiffusionState:
        """Fill some masked positions (all of them at the last step) from their categoricals."""
        self._check_step(step)
        generated = state.generated()  # (B, L)
        masked = generated == self.mask_id  # (B, L)
        uniforms = self._uniform(generated.shape, generator)  # (B, L)
        if step == self.num_steps - 1:
            unmask = masked
        elif self.unmasking == "ancestral":
            unmask = masked & (uniforms < float(self.unmask_probabilities[step]))
        else:
            # fixed-count: the n masked positions with the smallest uniforms, a uniformly random
            # n-subset of the masked ones (every row has the same number of masks here).
            count = int(self.unmask_counts[step])
            keys = torch.where(masked, uniforms, 2.0)
            chosen = keys.argsort(dim=1)[:, :count]  # (B, n)
            unmask = torch.zeros_like(masked).scatter_(1, chosen, True) & masked
        new = generated.clone()
        if bool(unmask.any()):
            new[unmask] = self._categorical(model_output.logits[unmask], 1, generator)[:, 0]
        tokens = state.tokens.scatter(1, state.positions, new)  # (B, N)
        keep = self.cache and not self.time_conditioned
        return replace(
            state,
            tokens=tokens,
            logits=model_output.logits if keep else None,
            stale=unmask.any(dim=1) if keep else torch.ones_like(state.stale),
            denoiser_rows=state.denoiser_rows + model_output.evaluated,
        )

    def decode(self, clean: torch.Tensor, final: bool) -> Any:
        """Token ids (B, L) -> a list of :class:`DecodedText` with a tokenizer, else the ids.

        The text stops at the first end-of-text token when the tokenizer has one
        (``eos_token_id``); special tokens are dropped. ``.token_ids`` keeps the whole row.
        """
        if self.tokenizer is None:
            return clean
        ids = clean.cpu()
        rows = ids.tolist()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None:  # the text ends at the first end-of-text token
            rows = [row[: row.index(eos)] if eos in row else row for row in rows]
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [DecodedText(text, row) for text, row in zip(texts, ids, strict=True)]

    def particle_rows(
        self, state: MaskedDiffusionState, model_output: MaskedDiffusionOutput
    ) -> dict[str, Any]:
        """Every per-particle tensor: tokens, positions, attention mask, staleness, and the
        logits of the current tokens (the model output, which is also the state's cache).

        The engine reorders particles between ``predict`` and ``move``, when ``model_output``
        holds the logits of the current tokens: the reordered logits become both the output and
        the reordered state's cache (one copy, not two).
        """
        return {
            "tokens": state.tokens,
            "positions": state.positions,
            "attention_mask": state.attention_mask,
            "stale": state.stale,
            "logits": model_output.logits,
        }

    def with_particle_rows(
        self, state: MaskedDiffusionState, model_output: MaskedDiffusionOutput, rows: dict
    ) -> tuple[MaskedDiffusionState, MaskedDiffusionOutput]:
        """The state and output made of ``rows`` (see :meth:`particle_rows`)."""
        logits = rows["logits"]
        rebuilt = MaskedDiffusionState(
            tokens=rows["tokens"],
            positions=rows["positions"],
            attention_mask=rows["attention_mask"],
            logits=logits,
            stale=rows["stale"],
            denoiser_rows=state.denoiser_rows,
        )
        return rebuilt, replace(model_output, logits=logits)

    def replicate(self) -> MaskedDiffusionModel:
        """The model itself: its run state lives in the state, not in the model."""
        return self

    def final_sample(self, state: MaskedDiffusionState) -> torch.Tensor:
        """The generated tokens (B, L) int64, with no mask left."""
        generated = state.generated()
        if bool((generated == self.mask_id).any()):
            raise RuntimeError("masks remain after the last step: the run did not finish.")
        steps_by_rows = self.num_steps * len(generated)
        logger.debug(
            "denoiser evaluated %d rows for %d particle-steps (cache saved %.0f%%)",
            state.denoiser_rows, steps_by_rows, 100 * (1 - state.denoiser_rows / steps_by_rows),
        )
        return generated

    # -- internals -------------------------------------------------------------------------------

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.num_steps:
            raise ValueError(f"step must be in 0 .. {self.num_steps - 1}, got {step!r}")

    def _logits(self, state: MaskedDiffusionState, step: int) -> tuple[torch.Tensor, int]:
        """Logits for the state's tokens, evaluating only stale rows when the cache is valid."""
        cached = state.logits
        if cached is None or not self.cache or self.time_conditioned:
            rows = None
        else:
            rows = state.stale.nonzero().squeeze(1)
            if len(rows) == len(state.stale):
                rows = None
        if rows is None:
            return self._evaluate(state.tokens, state.positions, state.attention_mask, step), len(
                state.tokens
            )
        if len(rows):
            attention = None if state.attention_mask is None else state.attention_mask[rows]
            fresh = self._evaluate(state.tokens[rows], state.positions[rows], attention, step)
            # In place: the cache belongs to this state alone (move made or permute copied it).
            cached[rows] = fresh.to(cached.dtype)
        return cached, len(rows)

    def _evaluate(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        step: int,
    ) -> torch.Tensor:
        """Call the denoiser and keep the generated positions: (B, L, V), mask suppressed."""
        args: list[Any] = [tokens]
        if self.time_conditioned:
            times = torch.full((len(tokens),), float(self.times[step]), device=tokens.device)
            args.append(times)
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
        logits = self.denoiser(*args, **kwargs)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or (
            tuple(logits.shape[:2]) != tuple(tokens.shape)
        ):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ValueError(
                f"the denoiser returned {shape} for tokens {tuple(tokens.shape)}: it must "
                "return logits shaped (B, N, vocab_size)."
            )
        index = positions.to(logits.device)[..., None].expand(-1, -1, logits.shape[-1])
        logits = logits.gather(1, index)  # (B, L, V), a new tensor
        suppressed = [i for i in (self.mask_id, *self.suppress_token_ids) if i < logits.shape[-1]]
        if suppressed:
            logits[..., suppressed] = -math.inf
        return logits

    def _categorical(
        self, logits: torch.Tensor, num_samples: int, generator: torch.Generator
    ) -> torch.Tensor:
        """``num_samples`` draws from softmax(logits) per row: (n, num_samples) int64.

        Drawn where the generator lives (pass a generator on the model's device to avoid a copy).
        """
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        probs = torch.softmax(logits.to(dtype), dim=-1).to(generator.device)
        draws = torch.multinomial(probs, num_samples, replacement=True, generator=generator)
        return draws.to(self.device)

    def _uniform(self, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        uniforms = torch.rand(tuple(shape), generator=generator, dtype=torch.float64,
                              device=generator.device)
        return uniforms.to(self.device)

    # -- the exact law of this sampler -----------------------------------------------------------

    def exact_law(
        self, vocab_size: int, prompt: Any = None, max_states: int = 4096
    ) -> torch.Tensor:
        """The exact law of the generated tokens, by enumeration: (vocab_size ** L,) float64.

        See :func:`fksteer.models.masked_exact.sampler_law`, which this calls.
        """
        from fksteer.models.masked_exact import sampler_law

        return sampler_law(self, vocab_size, prompt=prompt, max_states=max_states)


def _schedule_tables(
    schedule: Any, num_steps: int, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sampler's per-step tables from a schedule: times t_i (T+1,), alpha(t_i) (T+1,), the
    ancestral unmasking probabilities (T,) and the fixed-count numbers of positions (T,)."""
    # t_i = 1 - i / T, exactly 0 at the end and never below (the reference code's last
    # step ran at t < 0).
    times = (1.0 - torch.arange(num_steps + 1, dtype=torch.float64) / num_steps).clamp(0.0, 1.0)
    alphas = torch.as_tensor(schedule.alpha(times), dtype=torch.float64)  # (T+1,)
    if alphas.shape != times.shape or not torch.isfinite(alphas).all():
        raise ValueError(f"schedule.alpha gave {alphas.tolist()} on times {times.tolist()}.")
    if abs(float(alphas[-1]) - 1.0) > 1e-9 or float(alphas[0]) >= 1.0:
        raise ValueError(
            f"schedule.alpha must be 1 at t = 0 and below 1 at t = 1, got alpha(0) = "
            f"{float(alphas[-1])}, alpha(1) = {float(alphas[0])}."
        )
    if (alphas[1:] < alphas[:-1] - 1e-12).any():
        raise ValueError(f"schedule.alpha must not increase as t falls, got {alphas.tolist()}.")
    # (alpha_s - alpha_t) / (1 - alpha_t) per step, 1 at the last step (MDLM eq. 7).
    masked_before = 1.0 - alphas[:-1]  # (T,) 0 only where the schedule is already done
    probabilities = torch.where(
        masked_before > 0, (alphas[1:] - alphas[:-1]) / masked_before.clamp_min(1e-300), 1.0
    )  # (T,)
    probabilities[-1] = 1.0
    # fixed-count: masked positions left before each step, L at the start, 0 at the end.
    masked_fraction = (1.0 - alphas) / (1.0 - alphas[0])  # (T+1,) from 1 to 0
    # rounded half up (a tolerance absorbs float error at exact halves)
    remaining = torch.floor(seq_len * masked_fraction + 0.5 + 1e-9).long()
    remaining[0], remaining[-1] = seq_len, 0
    return times, alphas, probabilities.clamp(0.0, 1.0), remaining[:-1] - remaining[1:]
