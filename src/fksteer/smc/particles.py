"""Feynman-Kac bookkeeping for G groups of K particles: `ParticleSystem`.

    from fksteer.smc.particles import ParticleSystem

This is the engine's core, independent of who runs the sampler. A driver owns the sampling loop
and calls, at each step i:

    if system.scores(i):
        ancestors = system.score(i, decoded_prediction)   # None, or flat (G*K,) int64 indices
        # the driver reorders every per-particle tensor by `ancestors`
    system.record(i, model_seconds=..., evaluations=...)
    ...
    result = system.finish(decoded_final_samples)

`fksteer.smc.engine.steer` is the driver for any StepModel; the diffusers integration drives it
from inside a pipeline's own loop.

The run is sequential Monte Carlo on the path space of the sampler. With r_i the reward of the
clean-sample prediction at scoring step i and lambda_i the tilt there, the potentials are
(Singhal et al. 2025, sec. 3; the lambda schedule generalises them):

    difference  G_i = exp(lambda_i r_i - lambda_prev r_prev)     (r_prev = 0 at the first)
    max         G_i = exp(lambda_i max_{j<=i} r_j)
    sum         G_i = exp(lambda_i sum_{j<=i} r_j)
    immediate   G_i = exp(lambda_i r_i)

and the final potential on the final sample x_0 is exp(lambda r(x_0)) / prod_i G_i, the product
running over the potentials already applied to that particle's path (carried through
resampling). The product of all potentials along any path is therefore exp(lambda r(x_0)), so
every potential targets p(x_0) exp(lambda r(x_0)) / Z (Del Moral 2004, ch. 2; Chopin &
Papaspiliopoulos 2020, ch. 10): the choice changes variance, not the target.

Bookkeeping, all in float64 log space on the CPU, per group, vectorised over (G, K):

- a scoring step adds log G_i to each particle's log-weight;
- a group that resamples adds log_mean_exp(log-weights) to its log-evidence, draws ancestors,
  permutes the engine's running rewards (the driver permutes the model's state and output) and
  resets its log-weights to 0; a group that does not resample (adaptive mode) carries its
  log-weights on;
- the final step adds the final potential and log_mean_exp of the final log-weights to the
  log-evidence, which makes exp(log_evidence) an unbiased estimate of Z.

A NaN or -inf reward at any step kills the particle (log-weight -inf, never resampled). At an
intermediate step this restricts the target to paths whose predictions had finite rewards.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from fksteer.smc.config import METHODS, FKConfig, lambda_at
from fksteer.smc.protocol import Reward
from fksteer.smc.resampling import keep_in_place, resample
from fksteer.smc.result import SteeringResult, StepTrace
from fksteer.smc.weights import ess, log_mean_exp, normalise, soft_reward

__all__ = ["ParticleSystem", "AllParticlesDeadError", "engine_generator", "score_in_chunks"]

logger = logging.getLogger(__name__)

# Odd 64-bit constant (golden ratio) that decorrelates the engine's seed from the model's.
_SEED_MIX = 0x9E3779B97F4A7C15


class AllParticlesDeadError(RuntimeError):
    """Every particle of a group has weight zero: the reward gave NaN or -inf to all of them."""


def engine_generator(generator: torch.Generator) -> torch.Generator:
    """A CPU generator for the engine's own draws, derived from ``generator``'s initial seed.

    Nothing is drawn from ``generator``, so the model sees the same noise stream with and without
    steering, and the same seed gives the same resampling.
    """
    seed = (generator.initial_seed() * _SEED_MIX + 1) % (2**63)
    return torch.Generator(device="cpu").manual_seed(seed)


class ParticleSystem:
    """Weights, evidence, resampling and trace of one steering run of G groups x K particles.

    Args:
        reward: ``reward(samples, prompts)`` returning one float per sample, chunked to its
            ``batch_size`` attribute when it has one.
        config: the :class:`~fksteer.smc.config.FKConfig`.
        num_steps: steps of the sampler (scoring steps are counted 0 .. num_steps-1).
        prompts: one prompt per group (a single string is one group); ``None`` is one group and
            gives the reward ``prompts=None``.
        generator: the model's noise; ``None`` seeds a fresh CPU generator (``self.generator``).
            The engine's own draws use :func:`engine_generator` of it.
        method: ``"fk"``, or a baseline through the same path: ``"base"``, ``"best_of_n"``,
            ``"importance"`` (no intermediate reward calls; see :func:`fksteer.steer`).
        num_predictions: clean predictions per particle at each scoring step (M); with M > 1 the
            rewards of a particle's M predictions are combined by
            :func:`~fksteer.smc.weights.soft_reward`.
        keep_in_place: rearrange each resampling's ancestors so that every surviving particle
            keeps its slot (:func:`~fksteer.smc.resampling.keep_in_place`; same law), for
            drivers that pay for every particle that changes place.
    """

    def __init__(
        self,
        reward: Reward,
        config: FKConfig,
        *,
        num_steps: int,
        prompts: Sequence[Any] | str | None = None,
        generator: torch.Generator | None = None,
        method: str = "fk",
        num_predictions: int = 1,
        keep_in_place: bool = False,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is unknown: choose one of {', '.join(METHODS)}.")
        if not isinstance(config, FKConfig):
            raise ValueError(f"config must be an FKConfig, got {type(config).__name__}.")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}.")
        if isinstance(num_predictions, bool) or not isinstance(num_predictions, int) or (
            num_predictions < 1
        ):
            raise ValueError(f"num_predictions must be a positive int, got {num_predictions!r}.")
        if isinstance(prompts, str):
            prompts = [prompts]
        group_prompts = [None] if prompts is None else list(prompts)
        if not group_prompts:
            raise ValueError("prompts is empty: pass at least one prompt, or None for one group.")
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        self.reward = reward
        self.config = config
        self.method = method
        self.num_steps = num_steps
        self.num_predictions = num_predictions
        self.keep_in_place = keep_in_place
        self.group_prompts = group_prompts
        self.num_groups = len(group_prompts)
        self.num_particles = config.num_particles
        # one prompt per particle, group-major, as the reward receives them
        per_particle = [p for p in group_prompts for _ in range(config.num_particles)]
        self.reward_prompts = None if prompts is None else per_particle
        self.generator = generator
        self.engine_generator = engine_generator(generator)
        self.scoring_steps = set(config.scoring_steps(num_steps)) if method == "fk" else set()
        shape = (self.num_groups, self.num_particles)
        f64 = torch.float64
        self.log_weights = torch.zeros(shape, dtype=f64)
        self.log_evidence = torch.zeros(self.num_groups, dtype=f64)
        # Sum of the log-potentials applied along each particle's path (for the final correction).
        self.applied = torch.zeros(shape, dtype=f64)
        # lambda_prev * r_prev for the difference potential.
        self.previous = torch.zeros(shape, dtype=f64)
        # Running max (max potential) or sum (sum potential) of the rewards along the path.
        self.running = torch.full(shape, -math.inf if config.potential == "max" else 0.0, dtype=f64)
        self.nfe = 0
        self.reward_calls = 0
        self.trace: list[StepTrace] = []
        self._pending: dict[str, Any] | None = None
        self._finished = False

    # -- the driver's calls -----------------------------------------------------------------

    def scores(self, step: int) -> bool:
        """Whether a potential applies at ``step`` (always False for the baselines)."""
        return step in self.scoring_steps

    @torch.no_grad()
    def score(
        self, step: int, decoded: Any = None, *, rewards: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Score the decoded clean predictions of ``step``, weigh, and resample where due.

        ``decoded`` is the flat batch the reward reads: G*K items (G*K*M with M predictions per
        particle, particle-major). A driver that computed the rewards itself (e.g. each process
        of a distributed run scoring its own particles) passes ``rewards`` instead: G*K (or
        G*K*M) floats in the same order. Returns flat ``(G*K,)`` int64 ancestors on the CPU,
        never crossing groups, by which the driver must reorder every per-particle tensor (state,
        model output, scheduler history, caches); or None when no group resampled.
        """
        if not self.scores(step):
            raise ValueError(f"step {step} is not a scoring step of this run.")
        start = time.perf_counter()
        rewards = self._rewards(decoded, rewards, self.num_predictions)  # (G, K[, M])
        if self.num_predictions > 1:
            lmbda = lambda_at(self.config.lmbda, step, self.num_steps)
            rewards = soft_reward(rewards, lmbda)  # (G, K)
        reward_seconds = time.perf_counter() - start
        start = time.perf_counter()
        record, ancestors = self._weigh_and_resample(step, rewards)
        record["reward_seconds"] = reward_seconds
        record["engine_seconds"] = time.perf_counter() - start
        self._pending = record
        return ancestors

    @torch.no_grad()
    def reweight(self, step: int, log_ratio: torch.Tensor) -> None:
        """Correct the weights for a move drawn from a proposal instead of the model's kernel.

        A driver that moved particle p from x to x' with a proposal q (e.g. a reward-guided
        Gaussian step) instead of the model's kernel p passes ``log_ratio[p] = log p(x' | x) -
        log q(x' | x)`` (flat, G*K): the importance weight that keeps every potential's target
        exact (Doucet, de Freitas & Gordon 2001, ch. 1; Wu et al. 2023, "Practical and
        asymptotically exact conditional sampling in diffusion models", eq. 7).
        """
        log_ratio = torch.as_tensor(log_ratio).detach().to(device="cpu", dtype=torch.float64)
        shape = (self.num_groups, self.num_particles)
        if log_ratio.numel() != math.prod(shape):
            raise ValueError(
                f"log_ratio has {log_ratio.numel()} values at step {step}; the run has "
                f"{math.prod(shape)} particles."
            )
        log_ratio = log_ratio.reshape(shape)
        if not bool(torch.isfinite(log_ratio).all()):
            raise ValueError(
                f"the proposal's log density ratio is not finite at step {step}: "
                f"{log_ratio[~torch.isfinite(log_ratio)][:4].tolist()}..."
            )
        # A dead particle stays dead (-inf + finite).
        self.log_weights = self.log_weights + log_ratio

    def record(
        self,
        step: int,
        *,
        model_seconds: float = 0.0,
        reward_seconds: float = 0.0,
        engine_seconds: float = 0.0,
        evaluations: int | None = None,
    ) -> None:
        """Close ``step`` in the trace: the driver's own timings and denoiser evaluations.

        ``evaluations`` counts towards ``nfe`` (default G*K, one per particle); the seconds are
        added to what ``score`` measured (e.g. decode time as reward time, permutation time as
        engine time).
        """
        if self._pending is not None and self._pending["step"] == step:
            record, self._pending = self._pending, None
        else:
            record = self._unscored(step)
            record["reward_seconds"] = record["engine_seconds"] = 0.0
        record["reward_seconds"] += reward_seconds
        record["engine_seconds"] += engine_seconds
        self.nfe += self.num_groups * self.num_particles if evaluations is None else evaluations
        self.trace.append(StepTrace(**record, model_seconds=model_seconds))

    @torch.no_grad()
    def finish(
        self,
        decoded: Any,
        *,
        rewards: torch.Tensor | None = None,
        reward_seconds: float = 0.0,
    ) -> SteeringResult:
        """Apply the final potential to the decoded final samples and return the result.

        ``decoded`` is the flat batch (G*K items) the reward reads; it also becomes the result's
        ``samples`` (reshaped to (G, K, ...)). ``rewards`` (G*K floats), when given, are used
        instead of calling the reward. ``reward_seconds`` adds the driver's decode time.
        """
        if self._finished:
            raise RuntimeError("finish() was already called: a ParticleSystem runs once.")
        self._finished = True
        start = time.perf_counter()
        rewards = self._rewards(decoded, rewards)
        reward_seconds += time.perf_counter() - start
        start = time.perf_counter()
        step = self.num_steps
        lmbda = lambda_at(self.config.lmbda, step, self.num_steps)
        self._check_no_plus_inf(rewards, step)
        dead = ~torch.isfinite(rewards)
        safe = torch.where(dead, 0.0, rewards)
        if self.method == "fk":
            # Final potential exp(lambda r(x_0)) / prod_i G_i: the path product telescopes to
            # exp(lambda r(x_0)) whatever the intermediate potentials were.
            log_potential = torch.where(dead, -math.inf, lmbda * safe - self.applied)
            self.log_weights = self.log_weights + log_potential
            self._check_alive(step, rewards)
            self.log_evidence = self.log_evidence + log_mean_exp(self.log_weights)
        else:
            # log of exp(lambda r(x_0)) p(path) / q(path): the baselines never resample, so their
            # log-weights hold just the corrections of guided moves (zero without guidance).
            log_target = torch.where(dead, -math.inf, lmbda * safe) + self.log_weights  # (G, K)
            self.log_evidence = log_mean_exp(log_target)
            if self.method == "base":
                # uniform: with guidance this is guided sampling without correction (biased)
                self.log_weights = torch.zeros_like(rewards)
            else:
                self._check_alive(step, rewards, log_target)
                if self.method == "importance":
                    self.log_weights = log_target
                else:  # best_of_n
                    best = _argmax_finite(rewards)
                    self.log_weights = torch.full_like(rewards, -math.inf)
                    self.log_weights.scatter_(1, best[:, None], 0.0)
        log_weights = normalise(self.log_weights)
        weights = torch.exp(log_weights)
        self.trace.append(
            StepTrace(
                step=step,
                scored=True,
                ess=ess(self.log_weights),
                resampled=torch.zeros(self.num_groups, dtype=torch.bool),
                ancestors=None,
                num_distinct=None,
                reward_mean=_nanmean(rewards, dead),
                reward_max=_argmax_value(rewards),
                num_dead=dead.sum(dim=1),
                model_seconds=0.0,
                reward_seconds=reward_seconds,
                engine_seconds=time.perf_counter() - start,
            )
        )
        return SteeringResult(
            samples=self._group(decoded),
            weights=weights,
            log_weights=log_weights,
            rewards=rewards,
            best=_argmax_finite(rewards),
            log_evidence=self.log_evidence,
            trace=tuple(self.trace),
            nfe=self.nfe,
            reward_calls=self.reward_calls,
            method=self.method,
            config=self.config,
            prompts=self.group_prompts,
        )

    # -- one scoring step -----------------------------------------------------------------

    def _weigh_and_resample(
        self, step: int, rewards: torch.Tensor
    ) -> tuple[dict[str, Any], torch.Tensor | None]:
        """Add this step's log-potentials; resample the groups that need it.

        Returns the trace record and the flat ancestors (None when no group resampled).
        """
        lmbda = lambda_at(self.config.lmbda, step, self.num_steps)
        self._check_no_plus_inf(rewards, step)
        dead = ~torch.isfinite(rewards)  # (G, K) NaN or -inf
        newly_dead = dead & torch.isfinite(self.log_weights)
        safe = torch.where(dead, 0.0, rewards)
        potential = self.config.potential
        if potential == "immediate":
            log_potential = lmbda * safe
        elif potential == "difference":
            log_potential = lmbda * safe - self.previous
            self.previous = lmbda * safe
        elif potential == "max":
            self.running = torch.maximum(self.running, safe)
            log_potential = lmbda * self.running
        else:  # sum
            self.running = self.running + safe
            log_potential = lmbda * self.running
        log_potential = torch.where(dead, -math.inf, log_potential)
        self.log_weights = self.log_weights + log_potential
        # A dead particle's log-weight is already -inf; keep its bookkeeping finite.
        self.applied = self.applied + torch.where(dead, 0.0, log_potential)
        self._check_alive(step, rewards)

        group_ess = ess(self.log_weights)  # (G,)
        if self.config.ess_threshold is None:
            resampled = torch.ones(self.num_groups, dtype=torch.bool)
        else:
            resampled = group_ess < self.config.ess_threshold * self.num_particles
        ancestors = flat_ancestors = None
        num_distinct = torch.full((self.num_groups,), self.num_particles)
        if bool(resampled.any()):
            ancestors, num_distinct = self._resample(resampled)
            flat_ancestors = self._flat(ancestors)
            logger.debug("step %d: %d group(s) resampled", step, int(resampled.sum()))
        record = {
            "step": step,
            "scored": True,
            "ess": group_ess,
            "resampled": resampled,
            "ancestors": ancestors,
            "num_distinct": num_distinct,
            "reward_mean": _nanmean(rewards, dead),
            "reward_max": _argmax_value(rewards),
            "num_dead": newly_dead.sum(dim=1),
        }
        return record, flat_ancestors

    def _resample(self, resampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Resample the groups flagged in ``resampled`` (G,); returns within-group ancestors."""
        K = self.num_particles
        ancestors = torch.arange(K).expand(self.num_groups, K).clone()  # (G, K)
        probabilities = torch.exp(normalise(self.log_weights[resampled]))  # (R, K)
        ancestors[resampled] = resample(
            probabilities, K, self.config.resampling, self.engine_generator
        )
        if self.keep_in_place:
            ancestors = keep_in_place(ancestors)
        # Each resampled group's evidence grows by the mean of its unnormalised weights.
        self.log_evidence = torch.where(
            resampled, self.log_evidence + log_mean_exp(self.log_weights), self.log_evidence
        )
        self.log_weights = torch.where(resampled[:, None], 0.0, self.log_weights)
        for name in ("applied", "previous", "running"):
            setattr(self, name, getattr(self, name).gather(1, ancestors))
        one_hot = torch.zeros(self.num_groups, K, dtype=torch.bool)
        one_hot.scatter_(1, ancestors, True)
        return ancestors, one_hot.sum(dim=1)

    def _unscored(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "scored": False,
            "ess": ess(self.log_weights),
            "resampled": torch.zeros(self.num_groups, dtype=torch.bool),
            "ancestors": None,
            "num_distinct": None,
            "reward_mean": None,
            "reward_max": None,
            "num_dead": None,
        }

    # -- helpers --------------------------------------------------------------------------

    def _flat(self, ancestors: torch.Tensor) -> torch.Tensor:
        """(G, K) within-group ancestors -> (G*K,) indices into the flat particle axis."""
        offsets = torch.arange(self.num_groups)[:, None] * self.num_particles
        return (ancestors + offsets).reshape(-1)

    def _rewards(
        self, decoded: Any, rewards: torch.Tensor | None, per_particle: int = 1
    ) -> torch.Tensor:
        """The rewards of a step: computed by :meth:`_score`, or given by the driver."""
        if rewards is None:
            if decoded is None:
                raise ValueError("pass the decoded samples or their rewards.")
            return self._score(decoded, per_particle)
        extra = (per_particle,) if per_particle > 1 else ()
        shape = (self.num_groups, self.num_particles, *extra)
        rewards = torch.as_tensor(rewards).detach().to(device="cpu", dtype=torch.float64)
        if rewards.numel() != math.prod(shape):
            raise ValueError(
                f"got {rewards.numel()} rewards but the run expects {math.prod(shape)} "
                f"({' x '.join(map(str, shape))})."
            )
        self.reward_calls += rewards.numel()
        return rewards.reshape(shape)

    def _score(self, decoded: Any, per_particle: int = 1) -> torch.Tensor:
        """Call the reward on the flat batch (chunked) and return float64 rewards on the CPU.

        Shaped (G, K), or (G, K, M) for ``per_particle = M > 1`` predictions per particle (laid
        out particle-major: the M predictions of particle p are rows p*M .. p*M + M - 1).
        """
        total = self.num_groups * self.num_particles * per_particle
        if len(decoded) != total:
            raise ValueError(
                f"the model decoded {len(decoded)} samples but the run expects {total} "
                f"({self.num_groups} groups x {self.num_particles} particles x {per_particle} "
                "prediction(s) each)."
            )
        prompts = (
            None
            if self.reward_prompts is None
            else [self.reward_prompts[i // per_particle] for i in range(total)]
        )
        values = score_in_chunks(self.reward, decoded, prompts)
        self.reward_calls += total
        extra = (per_particle,) if per_particle > 1 else ()
        return values.reshape(self.num_groups, self.num_particles, *extra)

    def _group(self, decoded: Any) -> Any:
        G, K = self.num_groups, self.num_particles
        if isinstance(decoded, torch.Tensor):
            return decoded.reshape(G, K, *decoded.shape[1:])
        items = list(decoded)
        return [items[g * K : (g + 1) * K] for g in range(G)]

    def _check_no_plus_inf(self, rewards: torch.Tensor, step: int) -> None:
        bad = rewards == math.inf
        if bool(bad.any()):
            group = int(bad.any(dim=1).nonzero()[0])
            raise ValueError(
                f"the reward returned +inf at step {step} for group {group} "
                f"(prompt {self.group_prompts[group]!r}): rewards must be finite, or NaN/-inf "
                "to discard a sample."
            )

    def _check_alive(
        self, step: int, rewards: torch.Tensor, log_weights: torch.Tensor | None = None
    ) -> None:
        log_weights = self.log_weights if log_weights is None else log_weights
        all_dead = torch.isneginf(log_weights).all(dim=1)
        if bool(all_dead.any()):
            group = int(all_dead.nonzero()[0])
            raise AllParticlesDeadError(
                f"every particle of group {group} (prompt {self.group_prompts[group]!r}) has "
                f"weight zero at step {step} of {self.num_steps}: the reward returned "
                f"{rewards[group].tolist()}. Rewards must be finite for at least one particle."
            )




def score_in_chunks(reward: Reward, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
    """``reward`` on a flat batch, in chunks of its ``batch_size``: (B,) float64 on the CPU.

    ``prompts`` has one entry per sample, or is None. Raises a ValueError when the reward does
    not return one value per sample.
    """
    total = len(samples)
    batch_size = getattr(reward, "batch_size", None) or max(total, 1)
    values = []
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        out = reward(samples[start:stop], None if prompts is None else list(prompts[start:stop]))
        out = torch.as_tensor(out).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        if out.numel() != stop - start:
            raise ValueError(
                f"the reward returned {out.numel()} values for {stop - start} samples: "
                "it must return one float per sample."
            )
        values.append(out)
    return torch.cat(values) if values else torch.empty(0, dtype=torch.float64)


def _argmax_finite(rewards: torch.Tensor) -> torch.Tensor:
    """(G,) index of the largest reward per group, NaN counted as -inf."""
    return torch.nan_to_num(rewards, nan=-math.inf).argmax(dim=1)


def _argmax_value(rewards: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(rewards, nan=-math.inf).amax(dim=1)


def _nanmean(rewards: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """(G,) mean of the finite rewards per group (NaN where none is finite)."""
    count = (~dead).sum(dim=1)
    total = torch.where(dead, 0.0, rewards).sum(dim=1)
    return total / count
