"""The genealogy of a run's particles, from the ancestors its trace recorded.

    from fksteer.report.genealogy import Genealogy
    tree = Genealogy.of(run)          # run: fksteer.report.folder.RunData
    tree.final_roots()                # (G, K) the initial particle of each final particle
    tree.distinct_roots()             # (S + 1, G) initial particles with descendants at each step

Step s of the trace moves the particles through its ancestors A_s (within-group indices into
the particles before it; identity where nothing resampled), so particle k after step s descends
from particle A_s[k] before it. Composing these maps forward gives each particle's *root*, the
initial particle at the start of its lineage; walking them backward from the final particles
marks the *surviving* lineages, the particles at each step that have a descendant at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Genealogy"]


@dataclass(frozen=True)
class Genealogy:
    """Parents, roots and survivors at every step of a run, per group.

    Attributes:
        parents: (S, G, K) index of each particle's parent before step s (identity where the
            step did not resample).
        roots: (S + 1, G, K) the initial particle each particle descends from, before the first
            step (``roots[0]``, the identity) and after each step.
        survives: (S + 1, G, K) whether the particle has a descendant among the final ones.
    """

    parents: np.ndarray
    roots: np.ndarray
    survives: np.ndarray

    @classmethod
    def of(cls, run: Any) -> Genealogy:
        """The genealogy of ``run`` (a RunData: its trace and particle count)."""
        groups, num_particles = run.num_groups, run.num_particles
        identity = np.broadcast_to(np.arange(num_particles), (groups, num_particles))
        parents = np.stack([
            identity if step["ancestors"] is None else np.asarray(step["ancestors"], dtype=int)
            for step in run.trace
        ])  # (S, G, K)
        roots = [identity]
        for step_parents in parents:
            roots.append(np.take_along_axis(roots[-1], step_parents, axis=1))
        survives = [np.ones((groups, num_particles), dtype=bool)]
        rows = np.arange(groups)[:, None]
        for step_parents in parents[::-1]:
            before = np.zeros((groups, num_particles), dtype=bool)
            # unbuffered: several children may share a parent
            np.logical_or.at(before, (np.broadcast_to(rows, step_parents.shape), step_parents),
                             survives[-1])
            survives.append(before)
        return cls(parents, np.stack(roots), np.stack(survives[::-1]))

    def distinct_roots(self) -> np.ndarray:
        """(S + 1, G) how many initial particles still have descendants, at each step."""
        ordered = np.sort(self.roots, axis=-1)
        return 1 + (np.diff(ordered, axis=-1) != 0).sum(axis=-1)

    def final_roots(self) -> np.ndarray:
        """(G, K) the initial particle each final particle descends from."""
        return self.roots[-1]
