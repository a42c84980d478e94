"""What a particle Gibbs run returns: `GibbsResult`, and the `KeptPath` it carries on.

    from fksteer.smc.gibbs_result import GibbsResult, KeptPath

A :class:`GibbsResult` holds the chain of kept samples (one per sweep and group), their rewards,
every sweep's :class:`~fksteer.smc.result.SteeringResult`, and the diagnostics of the chain:
acceptance of a new path, how many steps of each kept path are new (its lineage depth), the
split R-hat of the reward over chains with the same prompt and the chain's effective sample
size (:mod:`fksteer.smc.chains`), after burn-in and thinning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from fksteer.smc.chains import effective_sample_size, split_rhat
from fksteer.smc.config import FKConfig
from fksteer.smc.result import SteeringResult
from fksteer.smc.rows import flatten_rows

__all__ = ["GibbsResult", "KeptPath", "STOP_REASONS"]

#: Why a run stopped: its sweeps were done, a budget ran out, or it was interrupted (Ctrl-C).
STOP_REASONS = ("sweeps", "budget-nfe", "budget-seconds", "interrupted")


@dataclass(frozen=True)
class KeptPath:
    """One kept path per group: the reference of the next sweep.

    Attributes:
        rows: per step 0 .. T-1, the model's particle rows (a pytree) with G rows, as recorded
            after ``predict``.
        predictions: per scoring step, the clean predictions (G*M rows, M per particle).
        final: the final samples (``model.final_sample``), G rows.
    """

    rows: tuple[Any, ...]
    predictions: dict[int, Any]
    final: Any

    def nbytes(self) -> int:
        """Bytes held by the tensors of the path."""
        trees = [*self.rows, *self.predictions.values(), self.final]
        return sum(
            leaf.numel() * leaf.element_size() for tree in trees for leaf in flatten_rows(tree)[0]
        )


def _stack(samples: list[Any]) -> Any:
    """Per-sweep (G, ...) samples -> (S, G, ...) for tensors; a list of per-sweep lists else."""
    if samples and isinstance(samples[0], torch.Tensor):
        return torch.stack(samples)
    return list(samples)


@dataclass(frozen=True)
class GibbsResult:
    """The chains of a particle Gibbs run: G chains (groups), one kept sample per sweep.

    Attributes:
        samples: kept samples of every sweep, (S, G, ...) for tensors (else S lists of G).
        rewards: (S, G) float64 final reward of each kept sample.
        kept: (S, G) slot of the kept particle (0 is the reference, in sweeps after the first).
        accepted: (S, G) bool, whether the kept path is new (differs from the reference
            somewhere; True in sweep 0). With ancestor sampling nearly every path is new (its
            early steps change); :meth:`update_rate` says how often each step changes.
        new_steps: (S, G) int, points of the kept path (its T steps and its final sample) at
            which it differs from the reference (its lineage depth: T + 1 for a path that
            shares nothing with it, 0 for the reference).
        changed: (S, G, T + 1) bool, where the kept path differs from the reference. Without
            ancestor sampling a new path shares a first stretch of steps with the reference and
            differs after; with it, the early steps change too.
        sweeps: every sweep's :class:`~fksteer.smc.result.SteeringResult`.
        reference: the last kept path (:class:`KeptPath`).
        prompts: one prompt per chain.
        config: the first sweep's configuration; ``sweep_config`` the later sweeps' (lambda
            frozen when adaptive).
        nfe: denoiser evaluations over all sweeps.
        seconds: wall time of the run.
        stop_reason: one of :data:`STOP_REASONS`.
        seed: the generator's seed; with ``sweeps=num_sweeps`` it replays the run exactly.
        burn_in, thin: sweeps dropped at the start, and the stride kept, by :meth:`chain` and
            the diagnostics.
        path_bytes: measured memory of one sweep's records (every particle's rows at every
            step, ``"sweep"``) and of one kept path (``"kept_path"``).
    """

    samples: Any
    rewards: torch.Tensor
    kept: torch.Tensor
    accepted: torch.Tensor
    new_steps: torch.Tensor
    changed: torch.Tensor
    sweeps: tuple[SteeringResult, ...]
    reference: KeptPath
    prompts: Sequence[Any]
    config: FKConfig
    sweep_config: FKConfig
    nfe: int
    seconds: float
    stop_reason: str
    seed: int
    burn_in: int = 0
    thin: int = 1
    path_bytes: dict[str, int] | None = None

    def __post_init__(self) -> None:
        for name, value in (("burn_in", self.burn_in), ("thin", self.thin)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (name == "thin"):
                raise ValueError(f"{name} must be an int >= {int(name == 'thin')}, got {value!r}.")

    @classmethod
    def from_run(cls, run: Any, **fields: Any) -> GibbsResult:
        """The result of a run's finished sweeps (``run`` is the driver's sweep state)."""
        records = {name: torch.stack(values) for name, values in run.records.items()}
        return cls(
            samples=_stack(run.samples),
            sweeps=tuple(run.results),
            reference=run.reference,
            prompts=run.results[0].prompts,
            config=run.results[0].config,
            sweep_config=run.config,
            nfe=sum(result.nfe for result in run.results),
            path_bytes=run.path_bytes,
            **records,
            **fields,
        )

    @property
    def num_sweeps(self) -> int:
        """S, the sweeps made."""
        return self.rewards.shape[0]

    @property
    def num_chains(self) -> int:
        """G, the chains (groups)."""
        return self.rewards.shape[1]

    def with_burn_in(self, burn_in: int, thin: int = 1) -> GibbsResult:
        """The same chains with other burn-in and thinning."""
        return replace(self, burn_in=burn_in, thin=thin)

    def _kept_sweeps(self) -> slice:
        if self.burn_in >= self.num_sweeps:
            raise ValueError(
                f"burn_in={self.burn_in} drops all {self.num_sweeps} sweeps: lower it or run more."
            )
        return slice(self.burn_in, None, self.thin)

    def chain(self) -> Any:
        """Kept samples after burn-in and thinning: (S', G, ...) (or lists for non-tensors)."""
        return self.samples[self._kept_sweeps()]

    def chain_rewards(self) -> torch.Tensor:
        """(S', G) rewards of the kept samples after burn-in and thinning."""
        return self.rewards[self._kept_sweeps()]

    def acceptance_rate(self) -> torch.Tensor:
        """(G,) fraction of the sweeps after the first whose kept path is new."""
        if self.num_sweeps < 2:
            return torch.full((self.num_chains,), math.nan, dtype=torch.float64)
        return self.accepted[1:].double().mean(dim=0)

    def update_rate(self) -> torch.Tensor:
        """(T + 1,) per step (the last entry is the final sample), the fraction of (sweep,
        chain) pairs after the first sweep whose kept path is new there: near 1 everywhere
        mixes well; near 0 at the first steps is path degeneracy (the early states hardly ever
        change)."""
        return self.changed[1:].double().mean(dim=(0, 1))

    def _chains_by_prompt(self, values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Prompt -> (chains, draws) values of the chains run for it."""
        groups: dict[str, list[int]] = {}
        for index, prompt in enumerate(self.prompts):
            groups.setdefault(repr(prompt), []).append(index)
        return {prompt: values[:, index].T for prompt, index in groups.items()}

    def rhat(self, values: torch.Tensor | None = None) -> dict[str, float]:
        """Split R-hat of the reward (or of ``values`` (S', G)) per prompt, over its chains."""
        values = self.chain_rewards() if values is None else values
        return {
            prompt: float(split_rhat(chains))
            for prompt, chains in self._chains_by_prompt(values).items()
        }

    def ess(self, values: torch.Tensor | None = None) -> dict[str, float]:
        """Effective sample size of the reward (or ``values`` (S', G)) per prompt."""
        values = self.chain_rewards() if values is None else values
        return {
            prompt: float(effective_sample_size(chains))
            for prompt, chains in self._chains_by_prompt(values).items()
        }

    def best(self) -> tuple[torch.Tensor, Any]:
        """The highest final reward of any particle of any sweep, per chain: ((G,), samples)."""
        rewards = torch.stack([result.rewards for result in self.sweeps])  # (S, G, K)
        flat = torch.nan_to_num(rewards, nan=-math.inf).permute(1, 0, 2).reshape(
            self.num_chains, -1
        )
        index = flat.argmax(dim=1)  # (G,)
        K = rewards.shape[2]
        sweep, slot = index // K, index % K
        samples = [self.sweeps[int(s)].samples[g][int(k)] for g, (s, k) in enumerate(
            zip(sweep, slot, strict=True)
        )]
        if samples and isinstance(samples[0], torch.Tensor):
            samples = torch.stack(samples)
        return flat.gather(1, index[:, None])[:, 0], samples

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest: sweeps, stop reason, acceptance, R-hat, ESS, rewards, cost."""
        enough = self.num_sweeps - self.burn_in >= 4 * self.thin
        best_reward, _ = self.best()
        return {
            "num_sweeps": self.num_sweeps,
            "num_chains": self.num_chains,
            "stop_reason": self.stop_reason,
            "seed": self.seed,
            "burn_in": self.burn_in,
            "thin": self.thin,
            "config": self.config.to_dict(),
            "sweep_config": self.sweep_config.to_dict(),
            "acceptance_rate": self.acceptance_rate().tolist(),
            "mean_new_steps": self.new_steps[1:].double().mean(dim=0).tolist()
            if self.num_sweeps > 1
            else None,
            "update_rate": self.update_rate().tolist() if self.num_sweeps > 1 else None,
            "chain_reward_mean": self.chain_rewards().mean(dim=0).tolist(),
            "rhat": self.rhat() if enough else None,
            "ess": self.ess() if enough else None,
            "best_reward": best_reward.tolist(),
            "nfe": self.nfe,
            "seconds": self.seconds,
            "path_bytes": self.path_bytes,
        }
