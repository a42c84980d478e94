"""The report's plots, drawn by matplotlib and returned as inline SVG text.

    from fksteer.report import figures
    if figures.available():
        svg = figures.ess([("run", run)])       # "<svg ...>...</svg>"

Each trace plot takes a list of ``(label, RunData)``: one run, or two drawn over each other
(solid, then dashed) for a comparison. Colours follow the prompts (groups); past ten prompts the
lines share one colour and no legend is drawn. Glyphs are paths (matplotlib's default), so an
SVG needs no font; many-segment layers (lineage trees of large K) are rasterised inside the SVG
to keep the file small.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["available", "ess", "rewards", "tilts", "dead", "timing", "lineage", "distinct"]

STYLES = ("-", "--")
PARTS = ("model", "decode", "reward", "engine")
MAX_LEGEND = 10


def available() -> bool:
    """Whether matplotlib is installed (the report degrades to tables without it)."""
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(figure) -> str:
    for axis in figure.axes:  # the x axis counts steps: whole numbers
        axis.xaxis.set_major_locator(_integers())
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")  # fixed margins: "tight" would draw twice
    _pyplot().close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def _integers():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _figure(width: float = 9.0, height: float = 3.2):
    """One axis, with room on the right for a legend of the prompts."""
    figure, axis = _pyplot().subplots(figsize=(width, height))
    figure.subplots_adjust(left=0.08, right=0.74, bottom=0.16, top=0.89)
    axis.grid(alpha=0.3)
    return figure, axis


def _colour(group: int, groups: int) -> Any:
    return f"C{group % 10}" if groups <= MAX_LEGEND else "C0"


def _lines(axis, runs: Sequence[tuple[str, Any]], field: str, *, scored_only: bool,
           marker: str | None = None, alpha: float = 1.0, suffix: str = "") -> None:
    """One line per (run, group) of a per-group trace field; NaN steps skipped."""
    for index, (label, run) in enumerate(runs):
        steps, values = run.steps(), run.series(field)  # (S,), (S, G)
        for group in range(run.num_groups):
            keep = np.isfinite(values[:, group]) if scored_only else slice(None)
            name = run.prompts[group] or f"group {group}"
            axis.plot(steps[keep], values[keep, group], STYLES[index % 2], marker=marker,
                      markersize=3, color=_colour(group, run.num_groups), alpha=alpha,
                      label=f"{name}{suffix}" + (f" ({label})" if len(runs) > 1 else ""))


def _legend(axis, runs: Sequence[tuple[str, Any]]) -> None:
    if max(run.num_groups for _, run in runs) <= MAX_LEGEND:
        axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def ess(runs: Sequence[tuple[str, Any]]) -> str:
    """ESS per step and prompt, the resampling threshold, and dots where a group resampled."""
    figure, axis = _figure()
    _lines(axis, runs, "ess", scored_only=False)
    for index, (_, run) in enumerate(runs):
        steps, resampled = run.steps(), run.series("resampled")  # (S,), (S, G)
        for group in range(run.num_groups):
            where = resampled[:, group] > 0
            axis.plot(steps[where], run.series("ess")[where, group], "o", markersize=3,
                      color=_colour(group, run.num_groups), alpha=0.8 if index == 0 else 0.5)
        threshold = (run.config.get("fk_config") or {}).get("ess_threshold")
        if threshold is not None:
            axis.axhline(threshold * run.num_particles, color="black", linestyle=STYLES[index % 2],
                         linewidth=0.8, label="resampling threshold" + (
                             f" ({runs[index][0]})" if len(runs) > 1 else ""))
    top = max(run.num_particles for _, run in runs)
    axis.set(xlabel="step", ylabel="ESS", ylim=(0, top * 1.05),
             title="effective sample size after each step's potential (dots: resampled)")
    _legend(axis, runs)
    return _svg(figure)


def rewards(runs: Sequence[tuple[str, Any]]) -> str:
    """Mean (solid) and max (faint) reward of the particles at each scoring step."""
    figure, axis = _figure()
    _lines(axis, runs, "reward_mean", scored_only=True, marker=".")
    _lines(axis, runs, "reward_max", scored_only=True, alpha=0.35, suffix=" max")
    axis.set(xlabel="step", ylabel="reward",
             title="mean reward (strong) and max reward (faint) at each scoring step")
    _legend(axis, runs)
    return _svg(figure)


def tilts(runs: Sequence[tuple[str, Any]]) -> str:
    """The tilt lambda each prompt's potential used at each scoring step."""
    figure, axis = _figure()
    _lines(axis, runs, "lmbda", scored_only=True, marker=".")
    axis.set(xlabel="step", ylabel="lambda", title="tilt lambda at each scoring step")
    _legend(axis, runs)
    return _svg(figure)


def dead(runs: Sequence[tuple[str, Any]]) -> str:
    """Particles whose reward was NaN or -inf at each scoring step."""
    figure, axis = _figure(height=2.4)
    _lines(axis, runs, "num_dead", scored_only=True, marker=".")
    axis.yaxis.set_major_locator(_integers())
    axis.set(xlabel="step", ylabel="dead particles", ylim=(-0.5, None),
             title="dead particles (reward NaN or -inf) at each scoring step")
    _legend(axis, runs)
    return _svg(figure)


def timing(runs: Sequence[tuple[str, Any]]) -> str:
    """Seconds per step, stacked by part: model, decode, reward, engine."""
    plt = _pyplot()
    figure, axes = plt.subplots(len(runs), 1, figsize=(9.0, 2.8 * len(runs)), squeeze=False)
    figure.subplots_adjust(left=0.08, right=0.74, hspace=0.6)
    for axis, (label, run) in zip(axes[:, 0], runs, strict=True):
        steps, bottom = run.steps(), np.zeros(len(run.trace))
        for part in PARTS:
            seconds = np.array([step.get(f"{part}_seconds") or 0.0 for step in run.trace])
            axis.bar(steps, seconds, bottom=bottom, width=0.85, label=part)
            bottom += seconds
        axis.set(xlabel="step", ylabel="seconds",
                 title="time per step by part" + (f" ({label})" if len(runs) > 1 else ""))
        axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        axis.grid(alpha=0.3, axis="y")
    return _svg(figure)


def lineage(run: Any, tree: Any, group: int) -> str:
    """The ancestry of one prompt's particles: a segment from each particle to its parent at
    every step; lineages with a final descendant dark, extinct ones faint."""
    from matplotlib.collections import LineCollection

    figure, axis = _figure(height=2.8)
    steps = np.arange(len(run.trace) + 1)
    parents, survives = tree.parents[:, group], tree.survives[:, group]  # (S, K), (S + 1, K)
    children = np.broadcast_to(np.arange(run.num_particles), parents.shape)  # (S, K)
    starts = np.stack([np.broadcast_to(steps[:-1, None], parents.shape), parents], -1)
    ends = np.stack([np.broadcast_to(steps[1:, None], parents.shape), children], -1)
    segments = np.stack([starts, ends], axis=-2).reshape(-1, 2, 2)  # (S * K, 2, 2)
    alive = survives[1:].reshape(-1)
    many = segments.shape[0] > 2000
    for keep, colour, width in ((~alive, "0.8", 0.6), (alive, "C0", 1.2)):
        collection = LineCollection(segments[keep], colors=colour, linewidths=width)
        collection.set_rasterized(many)
        axis.add_collection(collection)
    axis.set(xlim=(0, steps[-1]), ylim=(-0.5, run.num_particles - 0.5), xlabel="trace step",
             ylabel="particle", title=f"lineage: {run.prompts[group] or f'group {group}'} "
             "(dark: has a final descendant)")
    axis.grid(False)
    axis.yaxis.set_major_locator(_integers())
    return _svg(figure)


def distinct(runs: Sequence[tuple[str, Any]], trees: Sequence[Any]) -> str:
    """Initial particles that still have descendants, after each step, per prompt."""
    figure, axis = _figure()
    for index, ((label, run), tree) in enumerate(zip(runs, trees, strict=True)):
        counts = tree.distinct_roots()  # (S + 1, G)
        for group in range(run.num_groups):
            name = run.prompts[group] or f"group {group}"
            axis.step(np.arange(counts.shape[0]), counts[:, group], STYLES[index % 2],
                      where="post", color=_colour(group, run.num_groups),
                      label=name + (f" ({label})" if len(runs) > 1 else ""))
    axis.yaxis.set_major_locator(_integers())
    axis.set(xlabel="trace step", ylabel="distinct ancestors", ylim=(0, None),
             title="initial particles with descendants (distinct ancestors over time)")
    _legend(axis, runs)
    return _svg(figure)
