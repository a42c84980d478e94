"""What a steering run returns: `SteeringResult` and its per-step `StepTrace`.

    from fksteer import SteeringResult
    from fksteer.smc.result import StepTrace, concatenate_results

``build_trace`` turns the particle system's step records (made by ``scored_record`` and
``unscored_record``) into the trace, summarising every step's rewards, dead particles, ESS and
distinct ancestors in a few vectorised passes at the end of the run instead of a dozen small
reductions per step; ``resampling_evidence`` adds up the log-evidence increments of the steps
that resampled from the same records, in one reduction. ``concatenate_results`` joins the
results of runs over disjoint groups (e.g. one per process of a prompt-parallel run) into one
result, groups in the order given.

Both are frozen. Tensors with a group axis are shaped (G, K) for G prompts (groups) of K
particles; all weight and evidence tensors are float64 on the CPU.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fksteer.smc.config import FKConfig, SearchConfig
from fksteer.smc.tempering import GroupSchedule, schedule_of
from fksteer.smc.weights import ess, log_mean_exp

__all__ = [
    "StepTrace",
    "SteeringResult",
    "Trace",
    "build_trace",
    "concatenate_results",
    "resampling_evidence",
    "scored_record",
    "unscored_record",
]


@dataclass(frozen=True)
class StepTrace:
    """What happened at one step of the chain.

    ``step`` counts 0 .. num_steps-1 from the noisiest; ``step == num_steps`` is the final
    potential on the final sample. Fields that only exist on scoring steps are None elsewhere.

    Attributes:
        step: the step index.
        scored: whether a potential was applied at this step.
        ess: (G,) effective sample size after this step's potential, before any resampling.
        resampled: (G,) bool, whether each group resampled.
        ancestors: (G, K) within-group ancestor indices (identity for groups that did not
            resample), or None where nothing resampled.
        num_distinct: (G,) number of distinct ancestors (K where a group did not resample).
        reward_mean: (G,) mean of the finite rewards at this step, or None where not scored.
        reward_max: (G,) max reward (NaN counted as -inf), or None.
        num_dead: (G,) particles whose reward was NaN or -inf at this step.
        model_seconds: time in ``predict`` and ``move``.
        reward_seconds: time in ``decode`` and the reward.
        engine_seconds: time in weights, resampling and ``permute``.
        lmbda: (G,) the tilt each group's potential used at this step, or None where not scored.
        decode_seconds: the part of ``reward_seconds`` the driver spent decoding predictions
            into what the reward reads.
    """

    step: int
    scored: bool
    ess: torch.Tensor
    resampled: torch.Tensor
    ancestors: torch.Tensor | None
    num_distinct: torch.Tensor | None
    reward_mean: torch.Tensor | None
    reward_max: torch.Tensor | None
    num_dead: torch.Tensor | None
    model_seconds: float
    reward_seconds: float
    engine_seconds: float
    lmbda: torch.Tensor | None = None
    decode_seconds: float = 0.0


def scored_record(
    step: int,
    log_weights: torch.Tensor,
    rewards: torch.Tensor,
    newly_dead: torch.Tensor | None,
    lmbda: torch.Tensor,
) -> dict[str, Any]:
    """The record of a scoring step: the log-weights after its potential, its rewards, the
    particles that died there and its tilts. Its ESS and the summaries of its rewards and dead
    particles are computed for all steps at once by :func:`build_trace`."""
    return {
        "step": step,
        "scored": True,
        "log_weights": log_weights,
        "rewards": rewards,
        "newly_dead": newly_dead,
        "lmbda": lmbda,
    }


def unscored_record(step: int, log_weights: torch.Tensor) -> dict[str, Any]:
    """The record of a step without a potential (its log-weights carried on)."""
    return {
        "step": step,
        "scored": False,
        "log_weights": log_weights,
        "ancestors": None,
        "reward_seconds": 0.0,
        "engine_seconds": 0.0,
    }


def resampling_evidence(records: Sequence[dict[str, Any]], num_groups: int) -> torch.Tensor:
    """(G,) the sum, over the steps at which each group resampled, of log_mean_exp of its
    log-weights just before: the log-evidence increments, in one batched reduction."""
    log_weights, flags = [], []  # of the steps that resampled
    for record in records:
        if record["ancestors"] is not None:
            log_weights.append(record["log_weights"])
            flags.append(record["resampled"])
    if not log_weights:
        return torch.zeros(num_groups, dtype=torch.float64)
    increments = log_mean_exp(torch.stack(log_weights))  # (R, G)
    if flags.count(None) == len(flags):  # every group, every time
        return increments.sum(dim=0)
    every = torch.ones(num_groups, dtype=torch.bool)
    resampled = torch.stack([every if flag is None else flag for flag in flags])  # (R, G)
    return torch.where(resampled, increments, 0.0).sum(dim=0)


def build_trace(records: Sequence[dict[str, Any]], num_particles: int) -> tuple[StepTrace, ...]:
    """The trace of a run from its step records, in step order.

    Every record holds the log-weights after its step's potential, before any resampling (their
    ESS is computed here unless the record has one); a scoring step's also holds its rewards
    (G, K) float64, the particles that died there (``newly_dead``, (G, K) bool, or None when
    none did), its tilts (G, 1) and ancestors (G, K, or None), and ``resampled`` (G,) bool or
    None when every group resampled. Reward means count finite rewards only; reward maxima
    count NaN as -inf. Every per-step tensor is a row of one tensor stacked over the steps.
    """
    carried = ess(torch.stack([record["log_weights"] for record in records]))  # (N, G)
    scored = [record for record in records if record["scored"]]
    summaries = _reward_summaries(scored)
    resampled = _resampled_rows(records, carried.shape[1])
    distinct = _distinct_ancestors(records, num_particles, carried.shape[1])
    lmbdas = [record["lmbda"] for record in records if record.get("lmbda") is not None]
    tilts = iter(torch.stack(lmbdas)[:, :, 0].unbind(0) if lmbdas else ())
    trace = []
    for record, step_ess, step_resampled, step_distinct in zip(
        records, carried.unbind(0), resampled, distinct, strict=True
    ):
        mean, maximum, num_dead = summaries.get(id(record), (None, None, None))
        lmbda = None if record.get("lmbda") is None else next(tilts)
        trace.append(StepTrace(
            step=record["step"], scored=record["scored"], ess=record.get("ess", step_ess),
            resampled=step_resampled, ancestors=record["ancestors"], num_distinct=step_distinct,
            reward_mean=mean, reward_max=maximum, num_dead=num_dead,
            model_seconds=record["model_seconds"], reward_seconds=record["reward_seconds"],
            engine_seconds=record["engine_seconds"],
            decode_seconds=record.get("decode_seconds", 0.0), lmbda=lmbda,
        ))
    return tuple(trace)


def _resampled_rows(records: Sequence[dict[str, Any]], num_groups: int) -> tuple[torch.Tensor, ...]:
    """(G,) bool per record: its ``resampled`` (None: every group; absent: none), as the rows
    of one (N, G) tensor."""
    flags = [record.get("resampled", False) for record in records]
    rows = torch.tensor([flag is None for flag in flags]).unsqueeze(1).repeat(1, num_groups)
    for index, flag in enumerate(flags):
        if isinstance(flag, torch.Tensor):
            rows[index] = flag
    return rows.unbind(0)


def _reward_summaries(scored: Sequence[dict[str, Any]]) -> dict[int, tuple[torch.Tensor, ...]]:
    """id(record) -> (G,) mean of the finite rewards, max reward and newly dead particles."""
    if not scored:
        return {}
    rewards = torch.stack([record["rewards"] for record in scored])  # (S, G, K)
    dead = ~torch.isfinite(rewards)
    means = torch.where(dead, 0.0, rewards).sum(-1) / (~dead).sum(-1)  # (S, G)
    maxima = torch.nan_to_num(rewards, nan=-math.inf).amax(-1)  # (S, G)
    if all(record["newly_dead"] is None for record in scored):
        newly_dead = torch.zeros(maxima.shape, dtype=torch.int64)  # (S, G)
    else:
        no_deaths = torch.zeros_like(dead[0])
        newly_dead = torch.stack([
            no_deaths if record["newly_dead"] is None else record["newly_dead"]
            for record in scored
        ]).sum(-1)  # (S, G)
    rows = zip(scored, means.unbind(0), maxima.unbind(0), newly_dead.unbind(0), strict=True)
    return {id(record): row for record, *row in rows}


def _distinct_ancestors(
    records: Sequence[dict[str, Any]], num_particles: int, num_groups: int
) -> list[torch.Tensor | None]:
    """(G,) number of distinct ancestors per record (K where nothing resampled), None for the
    unscored steps and the final one; rows of one (N, G) tensor."""
    counts = torch.full((len(records), num_groups), num_particles, dtype=torch.int64)  # (N, G)
    resampling = [index for index, record in enumerate(records) if record["ancestors"] is not None]
    if resampling:
        ancestors = torch.stack([records[index]["ancestors"] for index in resampling])  # (R, G, K)
        present = torch.zeros(ancestors.shape, dtype=torch.bool)
        present.scatter_(-1, ancestors, True)
        counts[torch.tensor(resampling)] = present.sum(-1)  # (R, G)
    return [
        row if record["scored"] and not record.get("final", False) else None
        for record, row in zip(records, counts.unbind(0), strict=True)
    ]


class Trace(Sequence[StepTrace]):
    """A run's per-step trace: a read-only sequence of :class:`StepTrace`, built from the step
    records by :func:`build_trace` when first read (a run whose trace nobody reads does not pay
    for its summaries). It compares equal to the tuple of its steps and pickles as that tuple.
    """

    __slots__ = ("_records", "_num_particles", "_steps")

    def __init__(self, records: Sequence[dict[str, Any]], num_particles: int) -> None:
        self._records: list[dict[str, Any]] | None = list(records)
        self._num_particles = num_particles
        self._steps: tuple[StepTrace, ...] | None = None

    def steps(self) -> tuple[StepTrace, ...]:
        """The steps, as a tuple (built on the first call, kept after)."""
        if self._steps is None:
            self._steps = build_trace(self._records, self._num_particles)
            self._records = None
        return self._steps

    def __len__(self) -> int:
        return len(self._records) if self._steps is None else len(self._steps)

    def __getitem__(self, index: Any) -> Any:
        return self.steps()[index]

    def __iter__(self) -> Any:
        return iter(self.steps())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Trace, tuple)):
            return self.steps() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Trace({self.steps()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (tuple, (self.steps(),))


@dataclass(frozen=True)
class SteeringResult:
    """Weighted particles for every prompt, with the evidence and the trace of the run.

    Attributes:
        samples: final decoded samples with leading dims (G, K): a tensor, or nested lists
            (G lists of K items) when the model decodes to Python objects.
        weights: (G, K) normalised importance weights; a weighted average over particles
            estimates an expectation under the tilted target.
        log_weights: (G, K) normalised log-weights (log of ``weights``; -inf for dead particles).
        rewards: (G, K) final rewards r(x_0) (NaN where the reward gave NaN).
        best: (G,) index of the highest final reward in each group.
        log_evidence: (G,) estimate of log Z = log E_p[exp(lambda r(x_0))] per group; its
            exponential is unbiased for Z (NaN for a search, which estimates no Z).
        trace: one :class:`StepTrace` per step, then one for the final potential (a
            :class:`Trace` built when first read, or a tuple).
        nfe: denoiser evaluations, all groups (rows the model evaluated, summed over steps;
            a guided move counts twice).
        samples_scored: the samples the reward scored, all groups, intermediate and final
            (one per particle at a scoring step, or one per clean-sample draw; a call of the
            reward on a batch counts its batch size). ``reward_calls``: its deprecated name.
        method: ``"fk"``, a baseline (``"base"``, ``"best_of_n"``, ``"importance"``) or a
            search (``"svdd"``, ``"code"``, ``"beam"``).
        config: the configuration of the run.
        prompts: one prompt per group (``[None]`` when none were given).
        search: the search's options (:class:`~fksteer.smc.config.SearchConfig`), or None.
    """

    samples: Any
    weights: torch.Tensor
    log_weights: torch.Tensor
    rewards: torch.Tensor
    best: torch.Tensor
    log_evidence: torch.Tensor
    trace: Sequence[StepTrace]
    nfe: int
    samples_scored: int
    method: str
    config: FKConfig
    prompts: Sequence[Any]
    search: SearchConfig | None = None

    @property
    def reward_calls(self) -> int:
        """Deprecated name of :attr:`samples_scored` (it counts samples, not calls)."""
        warnings.warn(
            "SteeringResult.reward_calls is deprecated: it is samples_scored (the samples the "
            "reward scored, not its calls).",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.samples_scored

    @property
    def num_groups(self) -> int:
        """G, the number of groups (prompts)."""
        return self.weights.shape[0]

    @property
    def num_particles(self) -> int:
        """K, particles per group."""
        return self.weights.shape[1]

    @property
    def ess(self) -> torch.Tensor:
        """(G,) effective sample size of the final weights."""
        return 1.0 / (self.weights**2).sum(dim=-1)

    @property
    def seconds(self) -> dict[str, float]:
        """Total seconds in the model, the reward and the engine."""
        return {
            part: sum(getattr(step, f"{part}_seconds") for step in self.trace)
            for part in ("model", "reward", "engine")
        }

    def best_samples(self) -> Any:
        """The highest-reward sample of each group (G, ...)."""
        return self._select(self.best)

    def draw(self, generator: torch.Generator | None = None) -> Any:
        """One sample per group drawn from its weights: a draw from the tilted target."""
        index = torch.multinomial(self.weights.float(), 1, generator=generator).squeeze(-1)
        return self._select(index)

    def _select(self, index: torch.Tensor) -> Any:
        if isinstance(self.samples, torch.Tensor):
            groups = torch.arange(self.num_groups)
            return self.samples[groups, index.to(self.samples.device)]
        return [row[int(k)] for row, k in zip(self.samples, index, strict=True)]

    def tilt_schedule(self) -> GroupSchedule:
        """Each group's tilts at the scoring steps and the final step, as a frozen schedule.

        ``FKConfig(lmbda=result.tilt_schedule())`` reruns an adaptive run's schedule fixed in
        advance: with fresh noise its log-evidence is unbiased for that schedule's target (the
        adaptive run's own estimate is only consistent; see :mod:`fksteer.smc.tempering`).
        """
        return schedule_of(self.trace)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest: per-group evidence, ESS, rewards, tilts and the run's totals."""
        scored = [step for step in self.trace if step.scored and step.lmbda is not None]
        return {
            "method": self.method,
            "config": self.config.to_dict(),
            "search": None if self.search is None else self.search.to_dict(),
            "num_groups": self.num_groups,
            "num_particles": self.num_particles,
            "log_evidence": self.log_evidence.tolist(),
            "final_ess": self.ess.tolist(),
            "best_reward": self.rewards.gather(1, self.best[:, None]).squeeze(1).tolist(),
            "weighted_reward": torch.nansum(self.weights * self.rewards, dim=1).tolist(),
            "num_resampling_steps": int(sum(int(step.resampled.any()) for step in self.trace)),
            "final_lambda": scored[-1].lmbda.tolist() if scored else None,
            "lambda_schedule": {
                "steps": [step.step for step in scored],
                "values": [
                    [float(step.lmbda[g]) for step in scored] for g in range(self.num_groups)
                ]
                if scored
                else [],
            },
            "nfe": self.nfe,
            "samples_scored": self.samples_scored,
            "reward_calls": self.samples_scored,  # its deprecated name, for one release
            "seconds": self.seconds,
        }


def concatenate_results(results: Sequence[SteeringResult]) -> SteeringResult:
    """One result holding the groups of ``results`` in order (runs over disjoint groups).

    The runs must share the method, the configuration and the number of steps. Per-group
    tensors are concatenated along the group axis; ``nfe``, ``samples_scored`` and the per-step
    seconds are summed (total work, not wall time, when the runs ran in parallel). A step that
    resampled in one run and not in another gets identity ancestors for the latter's groups.
    """
    results = list(results)
    if not results:
        raise ValueError("concatenate_results needs at least one result.")
    first = results[0]
    if len(results) == 1:
        return first
    for other in results[1:]:
        if (other.method, other.config, other.search) != (first.method, first.config,
                                                           first.search):
            raise ValueError(
                "concatenate_results: the runs differ in method or configuration "
                f"({first.method!r}, {first.config!r}) vs ({other.method!r}, {other.config!r})."
            )
        if len(other.trace) != len(first.trace):
            raise ValueError(
                f"concatenate_results: the runs have {len(first.trace)} and {len(other.trace)} "
                "trace entries; they must run the same number of steps."
            )
    if isinstance(first.samples, torch.Tensor):
        samples: Any = torch.cat([result.samples for result in results])
    else:
        samples = [row for result in results for row in result.samples]
    trace = tuple(
        _concatenate_steps([result.trace[index] for result in results], first.num_particles)
        for index in range(len(first.trace))
    )
    return SteeringResult(
        samples=samples,
        weights=torch.cat([result.weights for result in results]),
        log_weights=torch.cat([result.log_weights for result in results]),
        rewards=torch.cat([result.rewards for result in results]),
        best=torch.cat([result.best for result in results]),
        log_evidence=torch.cat([result.log_evidence for result in results]),
        trace=trace,
        nfe=sum(result.nfe for result in results),
        samples_scored=sum(result.samples_scored for result in results),
        method=first.method,
        config=first.config,
        prompts=[prompt for result in results for prompt in result.prompts],
        search=first.search,
    )


def _concatenate_steps(steps: Sequence[StepTrace], num_particles: int) -> StepTrace:
    """One StepTrace from the same step of runs over disjoint groups."""
    if len({step.step for step in steps}) != 1:
        raise ValueError(f"concatenate_results: steps {[s.step for s in steps]} do not align.")
    sizes = [step.ess.shape[0] for step in steps]

    def joined(name: str, fill: Any) -> torch.Tensor | None:
        values = [getattr(step, name) for step in steps]
        if all(value is None for value in values):
            return None
        return torch.cat(
            [
                fill(size) if value is None else value
                for value, size in zip(values, sizes, strict=True)
            ]
        )

    K = num_particles

    def nan(g: int) -> torch.Tensor:
        return torch.full((g,), math.nan, dtype=torch.float64)

    return StepTrace(
        step=steps[0].step,
        scored=any(step.scored for step in steps),
        ess=torch.cat([step.ess for step in steps]),
        resampled=torch.cat([step.resampled for step in steps]),
        ancestors=joined("ancestors", lambda g: torch.arange(K).expand(g, K).clone()),
        num_distinct=joined("num_distinct", lambda g: torch.full((g,), K)),
        reward_mean=joined("reward_mean", nan),
        reward_max=joined("reward_max", nan),
        num_dead=joined("num_dead", lambda g: torch.zeros(g, dtype=torch.long)),
        lmbda=joined("lmbda", nan),
        model_seconds=sum(step.model_seconds for step in steps),
        reward_seconds=sum(step.reward_seconds for step in steps),
        engine_seconds=sum(step.engine_seconds for step in steps),
        decode_seconds=sum(step.decode_seconds for step in steps),
    )
