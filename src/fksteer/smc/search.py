"""Search baselines through the steering path: SVDD-PM, CoDe and beam search.

    from fksteer import steer, FKConfig
    from fksteer.smc.config import SearchConfig
    result = steer(model, reward, FKConfig(num_particles=4),
                   method=SearchConfig("svdd", candidates=4, temperature=0.1))

These methods search instead of weighting: they keep, at chosen steps, the candidates whose
clean-sample prediction the reward values most. They make the same model calls as FK steering
(``init``, ``predict``, reordering the particles, ``move``, ``decode``), so that both run on the
same models at a compute both can count.

The layout. With K particles per prompt and M candidates each, the model runs K * M rows per
group, row ``k * M + m`` being candidate m of particle k. A step predicts every row (K * M
denoiser evaluations); at a choosing step (:meth:`~fksteer.smc.config.SearchConfig.choosing_steps`)
every row's clean prediction is decoded and scored (K * M reward evaluations), K rows are kept
by the method's rule (:data:`SELECTIONS`), and each kept row is copied into M rows, its state
with the model output that belongs to it, before ``move``: the M copies then draw M different
next states, the candidates of the next choice, and no model evaluation is wasted (the model
output of a kept row is the one it was valued with). After the last step the final samples are
scored (K * M reward evaluations) and K are kept, the same way.

- ``svdd`` (SVDD-PM, Li et al. 2024, "Derivative-free guidance in continuous and discrete
  diffusion models with soft value-based decoding", Alg. 1): particle k keeps candidate m with
  probability softmax_m(v_km / temperature), v the value; temperature 0 keeps the argmax.
- ``code`` (CoDe, Singh et al. 2025, "CoDe: blockwise control for denoising diffusion models"):
  particle k keeps its best candidate, every ``block`` steps (best-of-M within each block).
- ``beam`` (beam search over denoising steps, as in Ma et al. 2025, "Inference-time scaling for
  diffusion models beyond scaling denoising steps"): each group keeps the top K of its K * M
  candidates, whichever particle they descend from (identical copies count once).

Counting, per group: denoiser evaluations T * K * M for T steps; reward evaluations
(|choosing steps| + 1) * K * M. Step 0's rows are K * M independent draws from the prior, so the
first choice falls at step ``block`` (see ``choosing_steps``). With M = 1 nothing is chosen:
the rows are base sampling's, draw for draw. The result holds the K kept final samples with
uniform weights (a search keeps no importance weights), their final rewards, the best of them,
and NaN log-evidence (a search estimates no Z); the trace records at each choosing step the
candidates' mean and max value and how many distinct particles were kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fksteer.smc.config import FKConfig, SearchConfig
from fksteer.smc.plan import StepTimes, engine_generator, group_prompts
from fksteer.smc.protocol import Reward, StepModel, call_reward, final_reward
from fksteer.smc.result import SteeringResult, StepTrace
from fksteer.smc.rows import permute_particles

__all__ = ["SELECTIONS", "search", "keep_softmax", "keep_best", "keep_top"]

#: A selection rule: (values (G, K, M) float64, search, generator) -> kept rows (G, K) in [0, K*M).
Selection = Callable[[torch.Tensor, SearchConfig, torch.Generator], torch.Tensor]


def _finite_or_minus_inf(values: torch.Tensor) -> torch.Tensor:
    """NaN counts as -inf: a candidate whose reward is NaN or -inf is never preferred."""
    return torch.nan_to_num(values, nan=-math.inf, posinf=math.inf)


def keep_best(
    values: torch.Tensor, search: SearchConfig, generator: torch.Generator
) -> torch.Tensor:
    """Each particle keeps its highest-value candidate (CoDe; SVDD at temperature 0)."""
    G, K, M = values.shape
    chosen = _finite_or_minus_inf(values).argmax(dim=-1)  # (G, K)
    return torch.arange(K) * M + chosen


def keep_softmax(
    values: torch.Tensor, search: SearchConfig, generator: torch.Generator
) -> torch.Tensor:
    """Each particle keeps candidate m with probability softmax_m(v_m / temperature) (SVDD-PM).

    A particle whose M candidates all have NaN or -inf values keeps one uniformly."""
    if search.temperature == 0:
        return keep_best(values, search, generator)
    G, K, M = values.shape
    logits = _finite_or_minus_inf(values) / search.temperature  # (G, K, M)
    all_dead = torch.isneginf(logits).all(dim=-1, keepdim=True)
    logits = torch.where(all_dead, 0.0, logits)
    probabilities = torch.softmax(logits, dim=-1).reshape(G * K, M)
    chosen = torch.multinomial(probabilities, 1, generator=generator).reshape(G, K)
    return torch.arange(K) * M + chosen


def keep_top(
    values: torch.Tensor, search: SearchConfig, generator: torch.Generator
) -> torch.Tensor:
    """Each group keeps its K highest-value rows of K * M, highest first (beam search).

    Copies of one kept row that a deterministic move left identical (a DDPM or DDIM scheduler's
    last step adds no noise; DDIM with eta = 0 none at all) are one candidate: a row whose value
    equals an earlier row's of the same particle ranks after every other row, so the beams stay
    distinct while there are K distinct candidates."""
    G, K, M = values.shape
    flat = _finite_or_minus_inf(values).reshape(G, K * M)
    same = values[..., :, None] == values[..., None, :]  # (G, K, M, M)
    earlier = torch.ones(M, M, dtype=torch.bool).tril(-1)  # [m, j]: j < m
    copy = (same & earlier).any(dim=-1).reshape(G, K * M)
    order = flat.argsort(dim=-1, descending=True, stable=True)
    first_copies_last = copy.gather(1, order).to(torch.int8).argsort(dim=-1, stable=True)
    return order.gather(1, first_copies_last)[:, :K]


#: The rule each search method keeps its rows by.
SELECTIONS: dict[str, Selection] = {"svdd": keep_softmax, "code": keep_best, "beam": keep_top}


class _Search:
    """The state of one search run: the rows' layout, the counts and the trace."""

    def __init__(self, reward: Reward, config: FKConfig, search: SearchConfig,
                 prompts: Sequence[Any] | str | None, generator: torch.Generator,
                 num_steps: int) -> None:
        self.reward, self.config, self.search = reward, config, search
        self.group_prompts = group_prompts(prompts)
        self.G, self.K, self.M = len(self.group_prompts), config.num_particles, search.candidates
        self.rows = self.K * self.M  # per group
        per_row = [p for p in self.group_prompts for _ in range(self.rows)]
        self.row_prompts = None if prompts is None else per_row
        self.generator = generator
        self.engine_generator = engine_generator(generator)
        self.select = SELECTIONS[search.method]
        self.choosing = frozenset(search.choosing_steps(num_steps))
        self.num_steps = num_steps
        self.nfe = self.samples_scored = 0
        self.trace: list[StepTrace] = []

    def values(self, decoded: Any, step: int, reward: Reward) -> torch.Tensor:
        """The rewards of every row, (G, K, M) float64; +inf is refused as the engine does."""
        values = call_reward(reward, decoded, self.row_prompts)
        if values.numel() != self.G * self.rows:
            raise ValueError(f"the model decoded {values.numel()} samples at step {step}; the "
                             f"search runs {self.G} groups x {self.rows} rows.")
        if bool((values == math.inf).any()):
            raise ValueError(f"the reward returned +inf at step {step}: rewards must be finite, "
                             "or NaN/-inf to discard a sample.")
        self.samples_scored += values.numel()
        return values.reshape(self.G, self.K, self.M)

    def keep(self, values: torch.Tensor) -> torch.Tensor:
        """(G, K) kept rows within each group, by the method's rule."""
        return self.select(values, self.search, self.engine_generator)

    def ancestors(self, kept: torch.Tensor) -> torch.Tensor | None:
        """Flat (G*K*M,) rows: each kept row copied into its M rows; None when nothing moves."""
        rows = kept.repeat_interleave(self.M, dim=1)  # (G, K*M)
        if torch.equal(rows, torch.arange(self.rows).expand_as(rows)):
            return None
        return (rows + torch.arange(self.G)[:, None] * self.rows).reshape(-1)

    def record(self, step: int, times: StepTimes, values: torch.Tensor | None,
               kept: torch.Tensor | None, reward_seconds: float = 0.0) -> None:
        """One trace entry: the candidates' values and the kept particles (None: no choice)."""
        G, K = self.G, self.K
        flat = None if values is None else _finite_or_minus_inf(values.reshape(G, -1))
        finite = None if values is None else torch.isfinite(values.reshape(G, -1))
        self.trace.append(StepTrace(
            step=step,
            scored=values is not None,
            ess=torch.full((G,), float(K), dtype=torch.float64),
            resampled=torch.full((G,), kept is not None and self.M > 1),
            ancestors=None,
            num_distinct=None if kept is None else _distinct(kept // self.M),
            reward_mean=None if values is None else torch.where(finite, flat, 0.0).sum(1)
            / finite.sum(1),
            reward_max=None if flat is None else flat.amax(dim=1),
            num_dead=None if finite is None else (~finite).sum(dim=1),
            model_seconds=times.model,
            reward_seconds=reward_seconds + times.decode,
            engine_seconds=times.permute,
            decode_seconds=times.decode,
        ))


def _distinct(parents: torch.Tensor) -> torch.Tensor:
    """(G,) number of distinct particles in each row of ``parents`` (G, K), values in [0, K)."""
    seen = torch.zeros(parents.shape, dtype=torch.bool)
    return seen.scatter_(1, parents, True).sum(dim=1)


def search(
    model: StepModel,
    reward: Reward,
    config: FKConfig,
    search_config: SearchConfig,
    *,
    prompts: Sequence[Any] | str | None,
    generator: torch.Generator,
) -> SteeringResult:
    """Run ``search_config``'s search with ``config.num_particles`` particles per prompt.

    Called by :func:`fksteer.steer` for ``method="svdd"``, ``"code"``, ``"beam"`` or a
    :class:`~fksteer.smc.config.SearchConfig`; the FKConfig's other fields (potential, tilt,
    resampling) do not apply. See the module docstring for the layout and the counts.
    """
    if not isinstance(config, FKConfig):
        raise ValueError(f"config must be an FKConfig, got {type(config).__name__}.")
    if getattr(model, "num_predictions", 1) != 1:
        raise ValueError(f"method={search_config.method!r} values one clean prediction per row; "
                         f"{type(model).__name__} makes {model.num_predictions}: build it with "
                         "one (e.g. num_x0_samples=1).")
    if config.guidance != 0:
        raise ValueError(f"method={search_config.method!r} searches over the model's own "
                         f"kernel: FKConfig.guidance={config.guidance!r} must be 0.")
    run = _Search(reward, config, search_config, prompts, generator, model.num_steps)
    with torch.no_grad():
        state = model.init(run.group_prompts, run.rows, generator)
        for step in range(run.num_steps):
            state = _step(model, run, state, step)
        return _finish(model, run, state)


def _step(model: StepModel, run: _Search, state: Any, step: int) -> Any:
    """Predict every row; at a choosing step value, keep and copy the kept rows; move."""
    times = StepTimes()
    start = time.perf_counter()
    output, prediction = model.predict(state, step, run.generator)
    start = times.add("model", start, sync_on=prediction)
    run.nfe += run.G * run.rows
    values = kept = None
    reward_seconds = 0.0
    if step in run.choosing:
        decoded = model.decode(prediction, final=False)
        start = times.add("decode", start)
        values = run.values(decoded, step, run.reward)
        kept = run.keep(values)
        ancestors = run.ancestors(kept)
        now = time.perf_counter()
        reward_seconds, start = now - start, now
        if ancestors is not None:
            state, output = permute_particles(model, state, output, ancestors)
            start = times.add("permute", start)
    state = model.move(state, output, step, run.generator)
    times.add("model", start, sync_on=state)
    run.record(step, times, values, kept, reward_seconds)
    return state


def _finish(model: StepModel, run: _Search, state: Any) -> SteeringResult:
    """Score the final rows, keep K per group, and return them with uniform weights."""
    times = StepTimes()
    start = time.perf_counter()
    decoded = model.decode(model.final_sample(state), final=True)
    start = times.add("decode", start)
    values = run.values(decoded, run.num_steps, final_reward(run.reward))  # (G, K, M)
    kept = run.keep(values)  # (G, K)
    run.record(run.num_steps, times, values, kept, time.perf_counter() - start)
    G, K = run.G, run.K
    flat = (kept + torch.arange(G)[:, None] * run.rows).reshape(-1)  # (G*K,)
    if isinstance(decoded, torch.Tensor):
        samples: Any = decoded.index_select(0, flat.to(decoded.device))
        samples = samples.reshape(G, K, *samples.shape[1:])
    else:
        items = list(decoded)
        samples = [[items[int(i)] for i in flat[g * K : (g + 1) * K]] for g in range(G)]
    rewards = values.reshape(G, -1).gather(1, kept)  # (G, K)
    log_weights = torch.full((G, K), -math.log(K), dtype=torch.float64)
    return SteeringResult(
        samples=samples,
        weights=torch.exp(log_weights),
        log_weights=log_weights,
        rewards=rewards,
        best=_finite_or_minus_inf(rewards).argmax(dim=1),
        log_evidence=torch.full((G,), math.nan, dtype=torch.float64),
        trace=tuple(run.trace),
        nfe=run.nfe,
        samples_scored=run.samples_scored,
        method=run.search.method,
        config=run.config,
        prompts=run.group_prompts,
        search=run.search,
    )
