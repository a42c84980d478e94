"""The potentials of FK steering, one small class each, behind a registry.

    from fksteer.smc.potentials import POTENTIALS, Potential, get_potential, register_potential

    potential = get_potential("difference")            # an instance of the registered class
    state = potential.initial_state(log_weights)       # named (G, K) float64 tensors
    log_g, state = potential.step(state, rewards, lmbda)   # lmbda: (G, 1), one tilt per group
    final = potential.final(state, rewards, lmbda)     # exp(final) * prod_i G_i = exp(lmbda r)

With r_i the reward of the clean-sample prediction at scoring step i and lambda_i the tilt there
(Singhal et al. 2025, sec. 3; the lambda schedule generalises them):

    difference  G_i = exp(lambda_i r_i - lambda_prev r_prev)     (r_prev = 0 at the first)
    max         G_i = exp(lambda_i max_{j<=i} r_j)
    sum         G_i = exp(lambda_i sum_{j<=i} r_j)
    immediate   G_i = exp(lambda_i r_i)

Every potential ends with the same final potential on the final sample x_0,
exp(lambda r(x_0)) / prod_i G_i, the product running over the potentials already applied to that
particle's path (carried through resampling). The product of all potentials along any path is
therefore exp(lambda r(x_0)), so every potential targets p(x_0) exp(lambda r(x_0)) / Z (Del Moral
2004, ch. 2; Chopin & Papaspiliopoulos 2020, ch. 10): the choice changes variance, not the target.

A potential's state is a dict of named (G, K) tensors, one row per group, one entry per particle;
the particle system gathers every entry by the ancestors when a group resamples, so a new
potential needs no change anywhere else. Adding one is one class:

    @register_potential
    class Squared(Potential):
        name = "squared"
        def log_potential(self, state, rewards, lmbda):
            return lmbda * rewards**2, {}

The tilt ``lmbda`` is a (G, 1) float64 tensor (each group may follow its own schedule); rewards
arrive float64 with dead particles (NaN or -inf) already replaced by 0 (their log-weight is -inf
whatever the potential says). This module uses tensor methods only and does not import torch:
the registry's names load without it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

__all__ = [
    "POTENTIALS",
    "Potential",
    "Difference",
    "Max",
    "Sum",
    "Immediate",
    "get_potential",
    "register_potential",
]

#: The sum of the log-potentials applied along each particle's path, kept by every potential for
#: the final correction.
APPLIED = "applied_log_potential"

PotentialState = dict[str, "torch.Tensor"]


class Potential:
    """One family of intermediate potentials; subclasses define :meth:`log_potential`.

    Class attributes:
        name: the registry key (what ``FKConfig.potential`` names).
        carried: per-particle quantities the potential carries along the path, name -> initial
            value (e.g. the running maximum of the rewards, starting at -inf).
        applied_log_potential: the state entry holding log prod_i G_i, the sum of the
            log-potentials applied along each path, which the final correction divides out: a
            running sum the base class keeps (``APPLIED``), unless the potential carries that
            sum already under another name.
    """

    name: ClassVar[str] = ""
    carried: ClassVar[dict[str, float]] = {}
    applied_log_potential: ClassVar[str] = APPLIED

    def log_potential(
        self, state: PotentialState, rewards: torch.Tensor, lmbda: torch.Tensor
    ) -> tuple[torch.Tensor, PotentialState]:
        """log G_i per particle (G, K), and the new values of :attr:`carried`."""
        raise NotImplementedError

    def initial_state(self, like: torch.Tensor) -> PotentialState:
        """The state before the first scoring step, shaped and placed like ``like`` (G, K)."""
        state = {name: like.new_full(like.shape, value) for name, value in self.carried.items()}
        if self.applied_log_potential == APPLIED:
            state[APPLIED] = like.new_zeros(like.shape)
        return state

    def step(
        self,
        state: PotentialState,
        rewards: torch.Tensor,
        lmbda: torch.Tensor,
        dead: torch.Tensor | None,
    ) -> tuple[torch.Tensor, PotentialState]:
        """Apply one scoring step: log G_i (-inf where ``dead``; ``None``: no particle died at
        this step) and the updated state."""
        log_potential, carried = self.log_potential(state, rewards, lmbda)
        if self.applied_log_potential != APPLIED:  # carried already: no running sum to keep
            if dead is not None:
                log_potential = log_potential.masked_fill(dead, -math.inf)
            return log_potential, {**state, **carried}
        if dead is None:
            return log_potential, {**state, **carried, APPLIED: state[APPLIED] + log_potential}
        log_potential = log_potential.masked_fill(dead, -math.inf)
        # A dead particle's log-weight is -inf already; keep its bookkeeping finite.
        applied = state[APPLIED] + log_potential.masked_fill(dead, 0.0)
        return log_potential, {**state, **carried, APPLIED: applied}

    def final(
        self, state: PotentialState, rewards: torch.Tensor, lmbda: torch.Tensor
    ) -> torch.Tensor:
        """log of the final potential exp(lambda r(x_0)) / prod_i G_i (the path product
        telescopes to exp(lambda r(x_0)) whatever the intermediate potentials were)."""
        return lmbda * rewards - self.applied(state)

    def applied(self, state: PotentialState) -> torch.Tensor:
        """(G, K) log prod_i G_i: the log-potentials applied along each particle's path."""
        return state[self.applied_log_potential]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: name -> potential class. Iterating gives the names; use :func:`get_potential` for an instance.
POTENTIALS: dict[str, type[Potential]] = {}


def register_potential(cls: type[Potential]) -> type[Potential]:
    """Class decorator: add a :class:`Potential` subclass to :data:`POTENTIALS` by its name."""
    if not (isinstance(cls, type) and issubclass(cls, Potential)) or not cls.name:
        raise ValueError(f"{cls!r} must be a Potential subclass with a non-empty name.")
    if cls.name in POTENTIALS and POTENTIALS[cls.name] is not cls:
        raise ValueError(f"a potential named {cls.name!r} is already registered.")
    POTENTIALS[cls.name] = cls
    return cls


def get_potential(name: str) -> Potential:
    """An instance of the potential registered as ``name``; a ValueError lists the valid names."""
    try:
        return POTENTIALS[name]()
    except (KeyError, TypeError):
        raise ValueError(
            f"potential {name!r} is unknown: choose one of {', '.join(POTENTIALS)}."
        ) from None


@register_potential
class Difference(Potential):
    """G_i = exp(lambda_i r_i - lambda_prev r_prev): the intermediate targets are the tilted
    marginals p(x_t) exp(lambda_i r(x0_hat(x_t))), and the final correction is one more
    difference. The default, and the lowest-variance choice with many scoring steps."""

    name = "difference"
    carried = {"previous_tilt": 0.0}  # lambda_prev * r_prev
    # sum_i (lambda_i r_i - lambda_{i-1} r_{i-1}) telescopes to lambda_last r_last along every
    # path (the entry is gathered with it when particles resample): no running sum to keep,
    # and the final correction carries no rounding accumulated over the steps.
    applied_log_potential = "previous_tilt"

    def log_potential(self, state, rewards, lmbda):
        """lambda_i r_i - lambda_prev r_prev."""
        tilt = lmbda * rewards
        return tilt - state["previous_tilt"], {"previous_tilt": tilt}


@register_potential
class Max(Potential):
    """G_i = exp(lambda_i max_{j<=i} r_j): favours paths that ever reached a high reward."""

    name = "max"
    carried = {"running_max": -math.inf}

    def log_potential(self, state, rewards, lmbda):
        """lambda_i max_{j<=i} r_j."""
        running = state["running_max"].maximum(rewards)
        return lmbda * running, {"running_max": running}


@register_potential
class Sum(Potential):
    """G_i = exp(lambda_i sum_{j<=i} r_j): after n scoring steps it has tilted by about
    n(n+1)/2 lambda, so use it with few scoring steps."""

    name = "sum"
    carried = {"running_sum": 0.0}

    def log_potential(self, state, rewards, lmbda):
        """lambda_i sum_{j<=i} r_j."""
        running = state["running_sum"] + rewards
        return lmbda * running, {"running_sum": running}


@register_potential
class Immediate(Potential):
    """G_i = exp(lambda_i r_i): tilts by about n lambda after n scoring steps."""

    name = "immediate"

    def log_potential(self, state, rewards, lmbda):
        """lambda_i r_i."""
        return lmbda * rewards, {}
