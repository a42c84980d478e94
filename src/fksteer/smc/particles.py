"""Feynman-Kac bookkeeping for G groups of K particles: `ParticleSystem`.

    from fksteer.smc.particles import ParticleSystem

This is the engine's core, independent of who runs the sampler. A driver owns the sampling loop
and calls, at each step i:

    if system.is_scoring_step(i):
        ancestors = system.weigh_and_resample(i, decoded_prediction)   # None, or (G*K,) int64
        # the driver reorders every per-particle tensor by `ancestors`
    system.record(i, times, evaluations=system.plan.evaluations(guided))
    ...
    result = system.finish(decoded_final_samples)

`fksteer.smc.engine.steer` is the driver for any StepModel; the diffusers integration drives it
from inside a pipeline's own loop, the particle-parallel run from every process. What the
drivers share (which steps score, guidance strengths, evaluation counts, time attribution) is in
:mod:`fksteer.smc.plan`; the potentials are in :mod:`fksteer.smc.potentials`, the rules that
decide which groups resample in :mod:`fksteer.smc.rules`, the schemes that draw the ancestors in
:mod:`fksteer.smc.resampling`. The run is sequential Monte Carlo on the path space of the
sampler, and every potential targets p(x_0) exp(lambda r(x_0)) / Z (see
:mod:`fksteer.smc.potentials` for why).

Bookkeeping, all in float64 log space on the CPU, per group, vectorised over (G, K):

- a scoring step adds log G_i to each particle's log-weight;
- a group that resamples adds log_mean_exp(log-weights) to its log-evidence, draws ancestors,
  gathers the potential's per-particle state by them (the driver permutes the model's state and
  output) and resets its log-weights to 0; a group that does not resample carries its
  log-weights on;
- the final step adds the final potential and log_mean_exp of the final log-weights to the
  log-evidence, which makes exp(log_evidence) an unbiased estimate of Z.

Per step only what the next step needs is computed (log-weights, potential state, ancestors):
:meth:`finish` adds up the resampling steps' log-evidence increments from the step records in
one reduction; the trace (:class:`~fksteer.smc.result.Trace`) computes each step's ESS, reward
summaries and distinct ancestors from them when first read.

A NaN or -inf reward at any step kills the particle (log-weight -inf, never resampled). At an
intermediate step this restricts the target to paths whose predictions had finite rewards.
Every scoring step must be recorded before the next is scored (or the run finishes): a driver
that forgets raises an error instead of losing that step's trace.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from fksteer.smc.checks import AllParticlesDeadError, argmax_finite, check_alive, check_no_plus_inf
from fksteer.smc.config import FKConfig
from fksteer.smc.plan import StepPlan, StepTimes, engine_generator, group_prompts, without_grad
from fksteer.smc.potentials import get_potential
from fksteer.smc.protocol import Reward, final_reward, step_rewards
from fksteer.smc.resampling import (
    ResamplingScheme,
    get_scheme,
    survivors_in_place,
    systematic,
    systematic_from_uniform,
    uniforms_far_from_one,
)
from fksteer.smc.result import (
    SteeringResult,
    Trace,
    resampling_evidence,
    scored_record,
    unscored_record,
)
from fksteer.smc.rules import always, get_rule
from fksteer.smc.tempering import Tilts
from fksteer.smc.weights import ess, log_mean_exp, normalise, soft_reward

__all__ = ["ParticleSystem", "AllParticlesDeadError", "engine_generator"]

logger = logging.getLogger(__name__)


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
            The engine's own draws use :func:`~fksteer.smc.plan.engine_generator` of it.
        method: ``"fk"``, or a baseline through the same path: ``"base"``, ``"best_of_n"``,
            ``"importance"`` (no intermediate reward calls; see :func:`fksteer.steer`).
        num_predictions: clean predictions per particle at each scoring step (M); with M > 1 the
            rewards of a particle's M predictions are combined by
            :func:`~fksteer.smc.weights.soft_reward`.
        stable_slots: rearrange each resampling's ancestors so that every surviving particle
            keeps its slot (:func:`~fksteer.smc.resampling.survivors_in_place`; same law), for
            drivers that pay for every particle that changes place.
        scheme, reference_ancestor: for conditional SMC (:mod:`fksteer.smc.particle_gibbs`): a
            scheme ``(weights, num_samples, generator)`` in place of ``config.resampling``, and
            ``(log_weights, potential_state) -> (G,)``, slot 0's ancestor where groups resample.
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
        stable_slots: bool = False,
        scheme: ResamplingScheme | None = None,
        reference_ancestor: Callable[[torch.Tensor, dict], torch.Tensor] | None = None,
    ) -> None:
        if not isinstance(config, FKConfig):
            raise ValueError(f"config must be an FKConfig, got {type(config).__name__}.")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}.")
        if isinstance(num_predictions, bool) or not isinstance(num_predictions, int) or (
            num_predictions < 1
        ):
            raise ValueError(f"num_predictions must be a positive int, got {num_predictions!r}.")
        self.group_prompts = group_prompts(prompts)
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        self.reward = reward
        #: the reward of the final samples (``reward.final_reward`` where declared)
        self.final_reward = final_reward(reward)
        self.config = config
        self.method = method
        self.num_steps = num_steps
        self.num_predictions = num_predictions
        self.stable_slots = stable_slots
        self.reference_ancestor = reference_ancestor
        self.num_groups = len(self.group_prompts)
        self.num_particles = config.num_particles
        self.plan = StepPlan(config, num_steps, method, self.num_groups * self.num_particles)
        # one prompt per particle, group-major, as the reward receives them, and one per
        # prediction at the scoring steps (M per particle), whose rewards are (G, K[, M])
        self.reward_prompts = self._scoring_prompts = None
        if prompts is not None:
            self.reward_prompts = [p for p in self.group_prompts for _ in range(self.num_particles)]
            self._scoring_prompts = [p for p in self.reward_prompts for _ in range(num_predictions)]
        self._scoring_shape = (self.num_groups, self.num_particles)
        if num_predictions > 1:
            self._scoring_shape = (*self._scoring_shape, num_predictions)
        self.generator = generator
        self.engine_generator = engine_generator(generator)
        self.potential = get_potential(config.potential)
        self.rule = get_rule(config.rule)
        self.scheme = get_scheme(config.resampling) if scheme is None else scheme
        self.tilts = Tilts(config.lmbda, num_steps, self.num_groups)
        #: a constant lambda as one (G, 1) tensor, made once (None: the tilt varies)
        self._fixed_tilt = None
        if isinstance(config.lmbda, (int, float)) and not isinstance(config.lmbda, bool):
            self._fixed_tilt = torch.full((self.num_groups, 1), float(config.lmbda),
                                          dtype=torch.float64)
        self.log_weights = torch.zeros((self.num_groups, self.num_particles), dtype=torch.float64)
        #: the log-weights of a group that just resampled; never written in place
        self._reset_log_weights = self.log_weights
        self.log_evidence = torch.zeros(self.num_groups, dtype=torch.float64)
        #: the potential's per-particle state along each path, named (G, K) tensors
        self.potential_state = self.potential.initial_state(self.log_weights)
        self.nfe = 0
        self.samples_scored = 0
        #: one record per closed step; :func:`~fksteer.smc.result.build_trace` summarises them
        self.records: list[dict[str, Any]] = []
        # (G, 1) where each group's particles start on the flat axis (None: one group, at 0)
        self._offsets = None
        if self.num_groups > 1:
            self._offsets = torch.arange(self.num_groups)[:, None] * self.num_particles
        self._unrecorded: dict[str, Any] | None = None
        self._uniforms: Iterator[torch.Tensor] | None = None  # see _draw
        self._far_from_one = False  # every uniform of _uniforms below 1 - K 2^-46
        self._plain: bool | None = None  # see _runs_plain
        self._finished = False

    # -- the driver's calls -----------------------------------------------------------------

    def is_scoring_step(self, step: int) -> bool:
        """Whether a potential applies at ``step`` (always False for the baselines)."""
        return self.plan.is_scoring_step(step)

    def weigh_and_resample(
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
        if torch.is_grad_enabled():  # without_grad inlined: one frame fewer on the hot path
            with torch.no_grad():
                return self.weigh_and_resample(step, decoded, rewards=rewards)
        if step not in self.plan.scoring_steps:
            raise ValueError(f"step {step} is not a scoring step of this run.")
        if self._unrecorded is not None:
            self._require_recorded(f"score step {step}")
        start = time.perf_counter()
        # _rewards inlined (one frame fewer): with M = 1 the scoring shape and prompts are the
        # per-particle ones
        rewards = step_rewards(  # (G, K[, M])
            self.reward, decoded, rewards, self._scoring_shape, self._scoring_prompts
        )
        self.samples_scored += rewards.numel()
        now = time.perf_counter()
        reward_seconds, start = now - start, now
        # one cheap check of every value (a NaN or an infinity makes the sum non-finite; an
        # overflowing sum of finite rewards only takes the slow path for nothing)
        finite = math.isfinite(rewards.sum().item())
        if self._plain is None:  # decided at the first scoring step, once the driver set up
            self._plain = self._runs_plain()
        if finite and self._plain:
            record, ancestors = self._plain_step(step, rewards)
        else:
            if not finite:
                check_no_plus_inf(rewards, step, self.group_prompts)
            lmbda = self._fixed_tilt  # (G, 1), or None when it varies
            if lmbda is None:
                lmbda = self.tilts.intermediate(  # (G, 1)
                    step, lambda tilt: self._log_increments(rewards, tilt), self.log_weights
                )
            if self.num_predictions > 1:
                rewards = self._combined(rewards, lmbda)  # (G, K)
            record = self._weigh(step, rewards, lmbda, finite and self.num_predictions == 1)
            record, ancestors = self._resample_where_due(step, record)
        record["reward_seconds"] = reward_seconds
        record["engine_seconds"] = time.perf_counter() - start
        self._unrecorded = record
        return ancestors

    @without_grad
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
        self, step: int, times: StepTimes | None = None, *, evaluations: int | None = None
    ) -> None:
        """Close ``step`` in the trace with the driver's timings and denoiser evaluations.

        ``times`` holds what the driver measured itself (:class:`~fksteer.smc.plan.StepTimes`;
        decoding counts as reward time, permuting as engine time, beside what
        :meth:`weigh_and_resample` measured). ``evaluations`` counts towards ``nfe`` (default
        G*K, one per particle).
        """
        times = StepTimes() if times is None else times
        record = self._unrecorded
        if record is not None and record["step"] != step:
            raise RuntimeError(
                f"step {record['step']} was scored but never recorded before step {step}: a "
                "driver must call record() after every step, scored or not."
            )
        self._unrecorded = None
        if record is None:
            if self.is_scoring_step(step):
                raise RuntimeError(f"step {step} is a scoring step but was never scored.")
            record = unscored_record(step, self.log_weights)
        record["reward_seconds"] += times.decode + times.reward
        record["engine_seconds"] += times.permute
        record["model_seconds"] = times.model
        self.nfe += self.plan.num_particles if evaluations is None else evaluations
        record["decode_seconds"] = times.decode
        self.records.append(record)

    @without_grad
    def finish(
        self, decoded: Any, *, rewards: torch.Tensor | None = None, times: StepTimes | None = None
    ) -> SteeringResult:
        """Apply the final potential to the decoded final samples and return the result.

        ``decoded`` is the flat batch (G*K items) the final reward (:attr:`final_reward`) reads;
        it also becomes the result's ``samples`` (reshaped to (G, K, ...)). ``rewards`` (G*K
        floats of the final reward), when given, are used instead of calling it. ``times`` adds
        the driver's decode (and reward) time.
        """
        if self._finished:
            raise RuntimeError("finish() was already called: a ParticleSystem runs once.")
        self._require_recorded("finish")
        self._finished = True
        self.log_evidence = self.log_evidence + resampling_evidence(self.records, self.num_groups)
        start = time.perf_counter()
        rewards = self._rewards(decoded, rewards, reward=self.final_reward)
        reward_seconds = time.perf_counter() - start
        start = time.perf_counter()
        step = self.num_steps
        check_no_plus_inf(rewards, step, self.group_prompts)
        dead = ~torch.isfinite(rewards)
        lmbda = self.tilts.final(  # (G, 1)
            lambda tilt: self._final_log_weights(rewards, dead, tilt), self.num_particles
        )
        if self.method == "fk":
            self._weigh_final(rewards, dead, lmbda)
        else:
            self._weigh_baseline(rewards, dead, lmbda)
        times = StepTimes() if times is None else times
        record = scored_record(step, self.log_weights, rewards, dead, lmbda)
        record.update(
            resampled=torch.zeros(self.num_groups, dtype=torch.bool),
            ancestors=None,
            final=True,
            model_seconds=0.0,
            reward_seconds=reward_seconds + times.decode + times.reward,
            engine_seconds=time.perf_counter() - start,
            decode_seconds=times.decode,
        )
        self.records.append(record)
        return self._result(decoded, rewards)

    # -- one scoring step -----------------------------------------------------------------

    def guidance_strength(self, step: int) -> float | torch.Tensor | None:
        """The multiplier of grad r in the move out of ``step``: s_i times the tilt of the
        intermediate target the move goes to; a float, a (G*K,) tensor when groups differ, or
        None for the model's own kernel."""
        scale = self.plan.guidance_scale(step)
        if not scale:
            return None
        tilt = self.tilts.next_after(step)
        if not isinstance(tilt, torch.Tensor):
            return scale * tilt or None
        if not bool(tilt.any()):
            return None
        return (scale * tilt).repeat_interleave(self.num_particles)

    def _combined(self, rewards: torch.Tensor, lmbda: torch.Tensor) -> torch.Tensor:
        """One reward per particle (G, K): M > 1 predictions combined by the soft reward."""
        if self.num_predictions == 1:
            return rewards
        return soft_reward(rewards, lmbda[..., None])

    def _log_increments(self, rewards: torch.Tensor, lmbda: torch.Tensor) -> torch.Tensor:
        """This step's log-potentials (G, K) if the tilts were ``lmbda`` (G, 1), state unchanged:
        what adaptive tempering chooses the tilt from."""
        combined = self._combined(rewards, lmbda)
        dead = ~torch.isfinite(combined)
        log_potential, _ = self.potential.step(
            self.potential_state, combined.masked_fill(dead, 0.0), lmbda, dead
        )
        return log_potential

    def _final_log_weights(
        self, rewards: torch.Tensor, dead: torch.Tensor, lmbda: torch.Tensor
    ) -> torch.Tensor:
        """The final log-weights (G, K) if the final tilts were ``lmbda`` (G, 1)."""
        safe = rewards.masked_fill(dead, 0.0)
        if self.method == "fk":
            final = self.potential.final(self.potential_state, safe, lmbda)
            return self.log_weights + final.masked_fill(dead, -math.inf)
        return (lmbda * safe).masked_fill(dead, -math.inf) + self.log_weights

    def _weigh(
        self, step: int, rewards: torch.Tensor, lmbda: torch.Tensor, finite: bool = False
    ) -> dict[str, Any]:
        """Add this step's log-potentials to the log-weights; returns the trace record so far.

        ``finite``: every reward is known to be finite (no particle dies, nothing to check)."""
        dead = None
        if not finite:
            # the soft reward keeps a draw's +inf
            check_no_plus_inf(rewards, step, self.group_prompts)
            dead = ~torch.isfinite(rewards)  # (G, K) NaN or -inf
            rewards_read = rewards.masked_fill(dead, 0.0)
        log_potential, self.potential_state = self.potential.step(
            self.potential_state, rewards if finite else rewards_read, lmbda, dead
        )
        newly_dead = None if dead is None else dead & torch.isfinite(self.log_weights)
        if self.log_weights is self._reset_log_weights:  # 0 + log G_i: nothing to add
            self.log_weights = log_potential
        else:
            self.log_weights = self.log_weights + log_potential
        if dead is not None:
            check_alive(self.log_weights, rewards, step, self.num_steps, self.group_prompts)
        return scored_record(step, self.log_weights, rewards, newly_dead, lmbda)

    def _runs_plain(self) -> bool:
        """Whether every scoring step may take :meth:`_plain_step` (when its rewards are
        finite): one prediction per particle, a fixed tilt, the ``always`` rule, no reference
        path, no stable slots."""
        return self.num_predictions == 1 and self._fixed_tilt is not None and (
            self.rule is always and self.reference_ancestor is None and not self.stable_slots
        )

    def _plain_step(self, step: int, rewards: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
        """:meth:`_weigh` then :meth:`_resample_where_due` in one pass for a plain run
        (:meth:`_runs_plain`) and finite rewards: the same tensor operations in the same order,
        without the branches that cannot apply. Returns the record and the flat ancestors."""
        lmbda = self._fixed_tilt  # (G, 1)
        log_potential, state = self.potential.step(self.potential_state, rewards, lmbda, None)
        log_weights = log_potential  # (G, K), after a resampling (or at the start): 0 + log G_i
        if self.log_weights is not self._reset_log_weights:
            log_weights = self.log_weights + log_potential
        ancestors = self._draw(torch.softmax(log_weights, dim=1))  # (G, K), every group
        self.log_weights = self._reset_log_weights
        self.potential_state = {name: value.gather(1, ancestors) for name, value in state.items()}
        record = scored_record(step, log_weights, rewards, None, lmbda)
        record["resampled"], record["ancestors"] = None, ancestors
        if self._offsets is not None:  # (G*K,) indices into the flat particle axis
            return record, (ancestors + self._offsets).reshape(-1)
        return record, ancestors.reshape(-1)

    def _resample_where_due(
        self, step: int, record: dict[str, Any]
    ) -> tuple[dict[str, Any], torch.Tensor | None]:
        """Resample the groups the rule picks; returns the record and flat ancestors (or None)."""
        resampled = None  # every group: the "always" rule reads nothing, so it is not asked
        if self.rule is not always:
            record["ess"] = ess(self.log_weights)
            resampled = self.rule(record["ess"], self.num_particles, self.config)  # (G,) bool
            if bool(resampled.all()):
                resampled = None
            elif not bool(resampled.any()):
                record.update(resampled=resampled, ancestors=None)
                return record, None
            else:
                logger.debug("step %d: %d group(s) resampled", step, int(resampled.sum()))
        ancestors = self._resample(resampled)  # (G, K)
        record["resampled"], record["ancestors"] = resampled, ancestors
        if self.num_groups > 1:  # (G*K,) indices into the flat particle axis
            return record, (ancestors + self._offsets).reshape(-1)
        return record, ancestors.reshape(-1)

    def _resample(self, resampled: torch.Tensor | None) -> torch.Tensor:
        """Resample the groups flagged in ``resampled`` (G,), all of them when None; returns
        (G, K) within-group ancestors."""
        K = self.num_particles
        # Each resampled group's evidence grows by the mean of its unnormalised weights: the
        # record keeps them, and :func:`~fksteer.smc.result.resampling_evidence` adds them up at
        # the end.
        probabilities = torch.softmax(self.log_weights, dim=1)  # (G, K)
        log_weights = self.log_weights  # before the reset: ancestor sampling reads them
        if resampled is None:
            ancestors = self._draw(probabilities)  # (G, K)
            self.log_weights = self._reset_log_weights
        else:
            ancestors = torch.arange(K).expand(self.num_groups, K).clone()  # (G, K)
            ancestors[resampled] = self.scheme(
                probabilities[resampled], K, self.engine_generator
            )
            self.log_weights = torch.where(resampled[:, None], 0.0, self.log_weights)
        if self.reference_ancestor is not None:  # slot 0 (the reference), where resampled
            chosen = self.reference_ancestor(log_weights, self.potential_state)  # (G,)
            ancestors[:, 0] = chosen if resampled is None else chosen.where(resampled, 0)
        if self.stable_slots:
            ancestors = survivors_in_place(ancestors)
        self.potential_state = {
            name: value.gather(1, ancestors) for name, value in self.potential_state.items()
        }
        return ancestors

    def _draw(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(G, K) ancestors of every group by the run's scheme. A run that resamples every group
        with the systematic scheme at every scoring step (the ``always`` rule, no reference
        path) draws its uniforms, one per group and step, at the first: the same numbers in the
        same order as one draw per step (the CPU generator fills a tensor in order)."""
        if self.scheme is not systematic or self.rule is not always or (
            self.reference_ancestor is not None
        ):
            return self.scheme(probabilities, self.num_particles, self.engine_generator)
        if self._uniforms is None:
            shape = (len(self.plan.scoring_steps), self.num_groups, 1)
            uniforms = torch.rand(shape, generator=self.engine_generator, dtype=torch.float64)
            self._far_from_one = uniforms_far_from_one(uniforms, self.num_particles)
            self._uniforms = iter(uniforms.neg_().unbind(0))  # -U, what the search reads
        # softmax rows: a positive total, or a NaN one (see systematic_from_uniform)
        return systematic_from_uniform(
            probabilities, self.num_particles, next(self._uniforms), True, self._far_from_one
        )

    # -- the final step ---------------------------------------------------------------------

    def _weigh_final(self, rewards: torch.Tensor, dead: torch.Tensor, lmbda: torch.Tensor) -> None:
        """FK: the final potential exp(lambda r(x_0)) / prod_i G_i, then the evidence."""
        self.log_weights = self._final_log_weights(rewards, dead, lmbda)
        check_alive(self.log_weights, rewards, self.num_steps, self.num_steps, self.group_prompts)
        self.log_evidence = self.log_evidence + log_mean_exp(self.log_weights)

    def _weigh_baseline(
        self, rewards: torch.Tensor, dead: torch.Tensor, lmbda: torch.Tensor
    ) -> None:
        """The baselines never resample, so their log-weights hold just the corrections of
        guided moves (zero without guidance); log of exp(lambda r(x_0)) p(path) / q(path)."""
        log_target = self._final_log_weights(rewards, dead, lmbda)  # (G, K)
        self.log_evidence = log_mean_exp(log_target)
        if self.method == "base":
            # uniform: with guidance this is guided sampling without correction (biased)
            self.log_weights = torch.zeros_like(rewards)
            return
        check_alive(log_target, rewards, self.num_steps, self.num_steps, self.group_prompts)
        if self.method == "importance":
            self.log_weights = log_target
        else:  # best_of_n
            best = argmax_finite(rewards)
            self.log_weights = torch.full_like(rewards, -math.inf)
            self.log_weights.scatter_(1, best[:, None], 0.0)

    def _result(self, decoded: Any, rewards: torch.Tensor) -> SteeringResult:
        log_weights = normalise(self.log_weights)
        return SteeringResult(
            samples=self._group(decoded),
            weights=torch.exp(log_weights),
            log_weights=log_weights,
            rewards=rewards,
            best=argmax_finite(rewards),
            log_evidence=self.log_evidence,
            trace=Trace(self.records, self.num_particles),
            nfe=self.nfe,
            samples_scored=self.samples_scored,
            method=self.method,
            config=self.config,
            prompts=self.group_prompts,
        )

    # -- checks ------------------------------------------------------------------------------

    def _require_recorded(self, action: str) -> None:
        if self._unrecorded is not None:
            raise RuntimeError(
                f"step {self._unrecorded['step']} was scored but never recorded: call "
                f"record() before you {action}."
            )

    # -- helpers --------------------------------------------------------------------------

    def _rewards(
        self, decoded: Any, rewards: Any, per_particle: int = 1, reward: Reward | None = None
    ) -> torch.Tensor:
        """The rewards of a step, float64 (G, K) or (G, K, M) (M = ``per_particle``):
        ``reward``'s (default the run's) on ``decoded``, or the ones the driver computed (see
        :func:`~fksteer.smc.protocol.step_rewards`)."""
        shape = self._scoring_shape if per_particle > 1 else self._scoring_shape[:2]
        prompts = self.reward_prompts if per_particle == 1 else self._scoring_prompts
        reward = self.reward if reward is None else reward
        rewards = step_rewards(reward, decoded, rewards, shape, prompts)
        self.samples_scored += rewards.numel()
        return rewards

    def _group(self, decoded: Any) -> Any:
        G, K = self.num_groups, self.num_particles
        if isinstance(decoded, torch.Tensor):
            return decoded.reshape(G, K, *decoded.shape[1:])
        items = list(decoded)
        return [items[g * K : (g + 1) * K] for g in range(G)]
