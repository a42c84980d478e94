"""Particle Gibbs: sweeps of conditional SMC whose kept paths are a Markov chain on the target.

    from fksteer.smc.particle_gibbs import gibbs, Budget

    chains = gibbs(model, reward, FKConfig(num_particles=4), sweeps=50, prompts=["a"] * 8,
                   generator=torch.Generator().manual_seed(0), burn_in=10)
    chains.chain()          # kept samples after burn-in and thinning: (S', G, ...) or lists
    chains.rhat(), chains.ess(), chains.acceptance_rate()
    gibbs(model, reward, config, budget=Budget(seconds=60), ...)   # sweeps until the budget

FK steering scales with K at once; particle Gibbs (conditional SMC; Andrieu, Doucet &
Holenstein 2010, sec. 4.3) repeats sweeps of a small system instead. Sweep 0 is FK steering;
every later sweep runs the same particle system with the previous sweep's kept path as the
reference in slot 0 of each group:

- after every ``predict`` the reference's rows at that step (everything the model declares
  per-particle, :mod:`fksteer.smc.rows`) are written into slot 0, and so is its clean prediction
  at the scoring steps (models whose prediction is random, e.g. a draw of x_0, need it); the
  final sample of slot 0 is the reference's. Slot 0 therefore scores exactly the reference's
  rewards, its potential state is the reference's, and its weight is the reference's;
- resampling is conditional (:data:`~fksteer.smc.resampling.CONDITIONAL_SCHEMES`): slot 0 is
  its own ancestor, so the reference is never resampled away, while the other K - 1 slots are
  drawn from the scheme's law given that (multinomial, or systematic after Chopin & Singh 2015);
  other schemes are refused by name;
- one path is kept per group, drawn from the final weights, and traced back through the
  ancestors; it becomes the next reference.

The kept paths form a Markov chain whose stationary law is exactly the tilted target
p(x_0) exp(lambda r(x_0)) / Z, for any K >= 2 (K = 1 never moves). Run G groups as G independent
chains in one batch (repeat a prompt to get several chains for it: :meth:`GibbsResult.rhat`
compares chains with the same prompt). The schedule must be the same in every sweep, so an
adaptive lambda (:class:`~fksteer.smc.tempering.AdaptiveTilt`, ``LargestTilt``) is frozen after
sweep 0 (``result.tilt_schedule()``); with ``LargestTilt`` the chain then targets the tilt
lambda_hat chosen in sweep 0. Reward-gradient guidance is refused (the reference's move would
need the proposal's density at the restored state).

Memory. A sweep keeps every particle's rows at every step (to trace the kept path back), and
its predictions at the scoring steps: T x G x K x (bytes of one particle's rows) plus
S_score x G x K x M x (bytes of one prediction); the kept path is 1/K of that
(:attr:`GibbsResult.path_bytes` reports both, measured).

Randomness. Sweep s draws from a generator seeded with seed + s * mix (sweep 0 with the seed
itself: it is ``steer`` with a fresh generator of that seed), so a run is a function of its
seed and its number of sweeps: a run stopped by a budget replays exactly with ``sweeps=`` the
number it made.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from fksteer.smc.config import FKConfig
from fksteer.smc.engine import run_system
from fksteer.smc.gibbs_result import GibbsResult, KeptPath
from fksteer.smc.particles import ParticleSystem
from fksteer.smc.plan import group_prompts
from fksteer.smc.potentials import Potential
from fksteer.smc.protocol import Reward, StepModel
from fksteer.smc.resampling import get_conditional_scheme
from fksteer.smc.result import SteeringResult
from fksteer.smc.rows import TensorRows, flatten_rows, has_particle_rows, select_rows
from fksteer.smc.tempering import is_adaptive

__all__ = ["gibbs", "Budget", "GibbsResult", "KeptPath", "Reference", "sweep_generator"]

logger = logging.getLogger(__name__)

# Odd 64-bit constant (2^64 / pi) spreading the sweeps' seeds apart.
_SWEEP_MIX = 0x517CC1B727220A95


def sweep_generator(generator: torch.Generator, sweep: int) -> torch.Generator:
    """The model's generator for sweep ``sweep``: seeded from ``generator``'s initial seed."""
    seed = (generator.initial_seed() + sweep * _SWEEP_MIX) % (2**63)
    return torch.Generator(device=generator.device).manual_seed(seed)


@dataclass(frozen=True)
class Budget:
    """A compute budget for :func:`gibbs`: denoiser evaluations, wall seconds, or both.

    ``nfe``: run as many whole sweeps as it pays for (a sweep of T steps, G groups and K
    particles costs T G K). ``seconds``: start no sweep once this much wall time has passed
    (the sweep in progress finishes, so a run may overshoot by up to one sweep).
    """

    nfe: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.nfe is None and self.seconds is None:
            raise ValueError("Budget needs nfe=..., seconds=..., or both.")
        if self.nfe is not None and (
            isinstance(self.nfe, bool) or not isinstance(self.nfe, int) or self.nfe < 1
        ):
            raise ValueError(f"Budget.nfe must be a positive int, got {self.nfe!r}.")
        if self.seconds is not None and (
            isinstance(self.seconds, bool)
            or not isinstance(self.seconds, (int, float))
            or not math.isfinite(self.seconds)
            or self.seconds <= 0
        ):
            raise ValueError(f"Budget.seconds must be a positive number, got {self.seconds!r}.")


def _put_rows(tree: Any, index: torch.Tensor, values: Any) -> Any:
    """``tree`` with the rows ``index`` of every tensor leaf replaced by ``values``' leaves."""
    leaves, build = flatten_rows(tree)
    new, _ = flatten_rows(values)
    if len(new) != len(leaves):
        raise ValueError(
            f"the reference has {len(new)} per-particle tensors where the model declares "
            f"{len(leaves)}: the model's rows changed shape between sweeps."
        )
    return build(
        [
            leaf.index_copy(0, index.to(leaf.device), value.to(leaf.device, leaf.dtype))
            for leaf, value in zip(leaves, new, strict=True)
        ]
    )


class Reference:
    """One sweep's hooks (:class:`~fksteer.smc.engine.SweepHooks`): restore the reference path
    in slot 0 of every group (when there is one) and record every particle's rows for tracing
    the kept path back."""

    def __init__(
        self,
        model: StepModel,
        num_groups: int,
        num_particles: int,
        num_predictions: int,
        scoring_steps: frozenset[int],
        path: KeptPath | None,
        potential: Potential,
    ) -> None:
        self.model, self.path, self.scoring_steps = model, path, scoring_steps
        self.potential = potential
        self.num_particles, self.num_predictions = num_particles, num_predictions
        self.slots = torch.arange(num_groups) * num_particles  # (G,) slot 0 of each group
        self.everyone = torch.arange(num_groups * num_particles)
        self.generator: torch.Generator | None = None  # ancestor sampling's draws
        self.current: tuple[Any, Any, int] | None = None
        self.rows: list[Any] = []
        self.predictions: dict[int, Any] = {}
        self.final: Any = None

    def _prediction_rows(self, slots: torch.Tensor) -> torch.Tensor:
        """(len(slots) * M,) rows of the predictions of particles ``slots`` (particle-major)."""
        M = self.num_predictions
        return (slots[:, None] * M + torch.arange(M)).reshape(-1)

    def restore(self, state: Any, output: Any, prediction: Any, step: int) -> tuple[Any, Any, Any]:
        """Slot 0 of every group becomes the reference at ``step``: rows and prediction."""
        rows = _put_rows(self.model.particle_rows(state, output), self.slots, self.path.rows[step])
        state, output = self.model.with_particle_rows(state, output, rows)
        if step in self.path.predictions:
            prediction = _put_rows(
                prediction, self._prediction_rows(self.slots), self.path.predictions[step]
            )
        return state, output, prediction

    def after_predict(
        self, state: Any, output: Any, prediction: Any, step: int
    ) -> tuple[Any, Any, Any]:
        """Restore the reference (if any), then record every particle's rows and prediction."""
        if self.path is not None:
            state, output, prediction = self.restore(state, output, prediction, step)
        self.current = (state, output, step)
        self.rows.append(select_rows(self.model.particle_rows(state, output), self.everyone))
        if step in self.scoring_steps:
            every_prediction = self._prediction_rows(self.everyone)
            self.predictions[step] = select_rows(prediction, every_prediction)
        return state, output, prediction

    def ancestor(self, log_weights: torch.Tensor, potential_state: dict) -> torch.Tensor:
        """Ancestor sampling (Lindsten, Jordan & Schön 2014, eq. 12): the reference's new
        ancestor J in each group, P(J = j) proportional to w_j p(x'_{i+1} | x_j) / prod G(x_j).

        The spliced path (particle j's past, the reference's future) has target density
        p(path) exp(lambda r(x_0)) (every potential's product along a path telescopes to the
        final tilt), and particle j's weight is p(past) prod_{m<=i} G_m / q(past); their ratio
        leaves w_j times the move's density to the reference's next state x'_{i+1} over the
        potentials applied to j's past (the factors shared by every j dropped).
        """
        state, output, step = self.current
        K = self.num_particles
        following = (
            self.path.rows[step + 1]["state"] if step + 1 < len(self.path.rows) else self.path.final
        )  # (G, ...) the reference's next state
        log_transition = self.model.transition_log_prob(
            state, output, step, following.repeat_interleave(K, dim=0)
        ).reshape(-1, K)  # (G, K)
        log_odds = log_weights + log_transition - self.potential.applied(potential_state)
        return torch.multinomial(torch.softmax(log_odds, dim=-1), 1, generator=self.generator)[:, 0]

    def final_sample(self, sample: Any) -> Any:
        """The final samples with the reference's in slot 0, recorded."""
        if self.path is not None:
            sample = _put_rows(sample, self.slots, self.path.final)
        self.final = select_rows(sample, self.everyone)
        return sample

    def kept(self, lineage: list[torch.Tensor]) -> KeptPath:
        """The path of particle ``lineage[i][g]`` at step i in group g: (G,) rows per step."""
        offsets = self.slots
        steps = zip(self.rows, lineage[:-1], strict=True)
        rows = tuple(select_rows(recorded, offsets + b) for recorded, b in steps)
        predictions = {
            step: select_rows(value, self._prediction_rows(offsets + lineage[step]))
            for step, value in self.predictions.items()
        }
        return KeptPath(rows, predictions, select_rows(self.final, offsets + lineage[-1]))

    def recorded_bytes(self) -> int:
        """Bytes of every particle's recorded rows, predictions and final samples."""
        return KeptPath(tuple(self.rows), self.predictions, self.final).nbytes()


def _lineage(result: SteeringResult, kept: torch.Tensor, num_steps: int) -> list[torch.Tensor]:
    """Within-group index of the kept particles' ancestor at each step 0 .. T-1, then ``kept``.

    The particle in slot k after the move out of step i was slot ``ancestors_i[k]`` when step
    i's rows were recorded (before resampling), so b_i = ancestors_i[b_{i+1}], b_T = kept.
    """
    lineage = [kept]
    index = kept
    for step in reversed(range(num_steps)):
        trace = result.trace[step]
        if trace.step != step:
            raise RuntimeError(f"trace entry {step} is step {trace.step}: the trace is broken.")
        if trace.ancestors is not None:
            index = trace.ancestors.gather(1, index[:, None])[:, 0]
        lineage.append(index)
    return lineage[::-1]


def _check_ancestor_sampling(model: Any) -> None:
    if not (hasattr(model, "transition_log_prob") and isinstance(model, TensorRows)):
        raise ValueError(
            f"ancestor_sampling=True needs the density of the model's move: "
            f"{type(model).__name__} has no transition_log_prob(state, output, step, "
            "next_state) over TensorRows state (the exact fixtures have it)."
        )


def _check(model: Any, config: FKConfig, sweeps: int | None, budget: Budget | None) -> None:
    if not isinstance(model, StepModel):
        raise ValueError(
            f"model {type(model).__name__} is not a StepModel: particle Gibbs restores a "
            "reference path through the model's per-particle rows, which a wrapped diffusers "
            "pipeline (steer_pipeline) cannot do from inside its own loop; use "
            "fksteer.diffusers.UNetStepModel (or any StepModel with particle_rows)."
        )
    if not has_particle_rows(model):
        raise ValueError(
            f"model {type(model).__name__} does not declare its per-particle rows "
            "(particle_rows, with_particle_rows): particle Gibbs restores the reference "
            "through them; a model with only permute cannot run it."
        )
    if config.guidance != 0:
        raise ValueError(
            f"FKConfig.guidance={config.guidance!r}: particle Gibbs runs the model's own "
            "kernel (the reference's guided move has no density ratio at its restored state); "
            "set guidance=0."
        )
    get_conditional_scheme(config.resampling)  # refuses schemes without a conditional version
    if sweeps is None and budget is None:
        raise ValueError("pass sweeps=S, a budget=Budget(...), or both.")
    if sweeps is not None and (isinstance(sweeps, bool) or not isinstance(sweeps, int) or (
        sweeps < 1
    )):
        raise ValueError(f"sweeps must be a positive int, got {sweeps!r}.")
    if budget is not None and not isinstance(budget, Budget):
        raise ValueError(f"budget must be a Budget, got {type(budget).__name__}.")


class _Sweeps:
    """The state of a run between sweeps: the reference, the records, the configuration."""

    def __init__(self, model, reward, config, prompts, generator, ancestor_sampling=False):
        self.model, self.reward, self.config = model, reward, config
        self.ancestor_sampling = ancestor_sampling
        self.prompts, self.generator = prompts, generator
        self.num_predictions = getattr(model, "num_predictions", 1)
        self.reference: KeptPath | None = None
        self.results: list[SteeringResult] = []
        self.samples: list[Any] = []
        self.records: dict[str, list[torch.Tensor]] = {
            "rewards": [], "kept": [], "accepted": [], "new_steps": [], "changed": []
        }
        self.path_bytes: dict[str, int] = {}

    def run(self) -> None:
        """One sweep: FK steering for the first, conditional SMC on the reference after."""
        sweep = len(self.results)
        system = ParticleSystem(
            self.reward,
            self.config,
            num_steps=self.model.num_steps,
            prompts=self.prompts,
            generator=sweep_generator(self.generator, sweep),
            num_predictions=self.num_predictions,
            scheme=None if sweep == 0 else get_conditional_scheme(self.config.resampling),
        )
        hooks = Reference(
            self.model,
            system.num_groups,
            system.num_particles,
            self.num_predictions,
            system.plan.scoring_steps,
            self.reference,
            system.potential,
        )
        if self.ancestor_sampling and self.reference is not None:
            hooks.generator = system.engine_generator
            system.reference_ancestor = hooks.ancestor
        result = run_system(self.model, system, hooks=hooks)
        kept = torch.multinomial(result.weights, 1, generator=system.engine_generator)[:, 0]
        lineage = _lineage(result, kept, self.model.num_steps)
        path = hooks.kept(lineage)
        if sweep == 0:
            self.path_bytes = {"sweep": hooks.recorded_bytes(), "kept_path": path.nbytes()}
            if is_adaptive(self.config.lmbda):  # one schedule for every later sweep
                self.config = replace(self.config, lmbda=result.tilt_schedule())
        self._record(sweep, result, kept, lineage)
        self.reference = path

    def _record(self, sweep, result, kept, lineage) -> None:
        """Append the sweep's result, kept sample, reward and diagnostics (G,) each."""
        # the kept path is the reference's at the points where its lineage runs through slot 0
        changed = torch.stack(lineage, dim=1) != 0  # (G, T + 1)
        if sweep == 0:  # no reference yet: every path is new
            changed = torch.ones_like(changed)
        new_steps = changed.sum(dim=1)
        values = {
            "rewards": result.rewards.gather(1, kept[:, None])[:, 0],
            "kept": kept,
            "accepted": new_steps > 0,
            "new_steps": new_steps,
            "changed": changed,
        }
        sample = _take(result.samples, kept)
        self.results.append(result)
        self.samples.append(sample)
        for name, value in values.items():
            self.records[name].append(value)


def _take(samples: Any, index: torch.Tensor) -> Any:
    """Sample ``index[g]`` of every group g of (G, K, ...) samples (a tensor or nested lists)."""
    if isinstance(samples, torch.Tensor):
        return samples[torch.arange(samples.shape[0]), index.to(samples.device)]
    return [row[int(k)] for row, k in zip(samples, index, strict=True)]


def gibbs(
    model: StepModel,
    reward: Reward,
    config: FKConfig,
    *,
    sweeps: int | None = None,
    budget: Budget | None = None,
    prompts: Sequence[Any] | str | None = None,
    generator: torch.Generator | None = None,
    burn_in: int = 0,
    thin: int = 1,
    ancestor_sampling: bool = False,
) -> GibbsResult:
    """Particle Gibbs: sweeps of conditional SMC, each keeping one path per group.

    Args:
        model: a :class:`~fksteer.smc.protocol.StepModel` declaring its particle rows.
        reward: as for :func:`~fksteer.smc.engine.steer`.
        config: :class:`~fksteer.smc.config.FKConfig` with ``resampling`` ``"multinomial"`` or
            ``"systematic"`` (the schemes with a conditional version) and no guidance; an
            adaptive lambda is frozen after the first sweep.
        sweeps: the number of sweeps (the first is FK steering).
        budget: stop when it is spent (:class:`Budget`): an NFE budget runs as many whole
            sweeps as it pays for; a time budget starts no sweep after it ran out and finishes
            the one in progress. With ``sweeps`` too, whichever comes first.
        prompts: one prompt per group (chain); repeat a prompt for several chains of it.
        generator: seeds every sweep (see the module docstring); ``None`` seeds a fresh one.
        burn_in, thin: what :meth:`GibbsResult.chain` and the diagnostics drop and keep.
        ancestor_sampling: at every resampling, draw the reference's ancestor anew
            (:meth:`Reference.ancestor`; Lindsten, Jordan & Schön 2014), so that the early
            steps of the kept path change too; needs the model's ``transition_log_prob`` (the
            exact fixtures: Gaussian-mixture and tabular masked diffusion).

    Returns:
        a :class:`GibbsResult`. Ctrl-C (KeyboardInterrupt) during a sweep stops the run like a
        spent budget: the sweeps already finished are returned, ``stop_reason`` says
        ``"interrupted"`` (with no finished sweep the interrupt propagates).
    """
    _check(model, config, sweeps, budget)
    if ancestor_sampling:
        _check_ancestor_sampling(model)
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    run = _Sweeps(model, reward, config, prompts, generator, ancestor_sampling)
    num_groups = len(group_prompts(prompts))
    per_sweep = model.num_steps * num_groups * config.num_particles
    if budget is not None and budget.nfe is not None and budget.nfe < per_sweep:
        raise ValueError(
            f"Budget(nfe={budget.nfe}) pays for no sweep: one costs {per_sweep} evaluations "
            f"({model.num_steps} steps x {num_groups} groups x {config.num_particles} particles)."
        )
    start = time.perf_counter()
    stop_reason = _run_sweeps(run, sweeps, budget, per_sweep, start)
    return GibbsResult.from_run(
        run, stop_reason=stop_reason, seconds=time.perf_counter() - start,
        seed=generator.initial_seed(), burn_in=burn_in, thin=thin,
    )


def _run_sweeps(run: _Sweeps, sweeps, budget, per_sweep: int, start: float) -> str:
    """Run sweeps until ``sweeps`` or the budget says stop; returns why it stopped."""
    while True:
        done = len(run.results)
        if sweeps is not None and done >= sweeps:
            return "sweeps"
        if budget is not None and budget.nfe is not None and (done + 1) * per_sweep > budget.nfe:
            return "budget-nfe"
        if budget is not None and budget.seconds is not None and done > 0 and (
            time.perf_counter() - start >= budget.seconds
        ):
            return "budget-seconds"
        try:
            run.run()
        except KeyboardInterrupt:
            if not run.results:
                raise
            logger.warning("interrupted in sweep %d: keeping the %d finished", done, done)
            return "interrupted"

