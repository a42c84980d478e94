"""Methods compared at matched compute: the steer arguments of a budget, paired differences and
the winner at each budget.

    from fksteer.bench.matched import search_setting, paired_difference, matched_table

A budget is K, the model rows per prompt: every method at budget K makes T * K denoiser
evaluations per prompt. FK and the baselines run K particles; a search (``svdd``, ``code``,
``beam``) runs K / M particles with M candidates each (:func:`search_setting`), so the same K
rows start from the same initial noise. Methods at one budget are compared by paired
differences over (seed, prompt) pairs, which share the prompt and the seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from fksteer.bench.records import markdown_table, mean_and_t_ci
from fksteer.bench.suite import format_cell, seed_cell
from fksteer.smc.config import SEARCH_METHODS, SearchConfig

__all__ = ["search_setting", "paired_difference", "matched_table"]


def search_setting(
    method: str, budget: int, candidates: int, temperature: float, block: int
) -> tuple[int, SearchConfig]:
    """(particles, SearchConfig) of search ``method`` at ``budget`` rows per prompt: K / M
    particles of M candidates; ``temperature`` applies to svdd only, ``block`` to code only."""
    if method not in SEARCH_METHODS:
        raise ValueError(f"{method!r} is not a search: choose one of {', '.join(SEARCH_METHODS)}.")
    if budget % candidates:
        raise ValueError(f"particles={budget}: a search with {candidates} candidates needs a "
                         f"multiple of {candidates} rows per prompt (K / M particles).")
    search = SearchConfig(method, candidates=candidates,
                          temperature=temperature if method == "svdd" else 0.0,
                          block=block if method == "code" else 1)
    return budget // candidates, search


def paired_difference(
    records: Iterable[dict[str, Any]], where: dict[str, Any], method_a: str, method_b: str,
    metric: str, pair_fields: Sequence[str] = ("seed", "prompt_index"),
) -> tuple[float, float, int] | None:
    """Mean of ``metric``(a) - ``metric``(b) over the pairs that share ``pair_fields``, with a
    Student t 95% half-width over the pairs, and their number; None without pairs."""
    values: dict[str, dict[tuple, float]] = {method_a: {}, method_b: {}}
    for record in records:
        if record.get("method") in values and all(
            record.get(field) == value for field, value in where.items()
        ):
            value = record.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                key = tuple(record[field] for field in pair_fields)
                values[record["method"]][key] = float(value)
    shared = sorted(set(values[method_a]) & set(values[method_b]))
    if not shared:
        return None
    mean, half_width = mean_and_t_ci(values[method_a][k] - values[method_b][k] for k in shared)
    return mean, half_width, len(shared)


def matched_table(
    records: list[dict[str, Any]], methods: Sequence[str], budgets: Sequence[int],
    where: dict[str, Any], metric: str, percent: bool = False,
) -> tuple[str, dict[str, Any]]:
    """A markdown table of ``metric`` per budget and method, each method's paired difference
    from the budget's winner (the highest mean), NFE and seconds per prompt; and the winners."""
    rows, winners = [], {}
    for budget in budgets:
        at = {**where, "num_particles": budget}
        cells = {m: seed_cell(records, {**at, "method": m}, metric) for m in methods}
        ranked = [m for m in methods if cells[m] is not None]
        if not ranked:
            continue
        winner = max(ranked, key=lambda m: cells[m][0])
        clear = True
        for method in ranked:
            gap = (None if method == winner else
                   paired_difference(records, at, winner, method, metric))
            if gap is not None and gap[0] - gap[1] <= 0:
                clear = False
            rows.append([
                budget, format_cell(seed_cell(records, {**at, "method": method}, "nfe")),
                method, format_cell(cells[method], percent),
                "winner" if method == winner else _gap(gap, percent),
                format_cell(seed_cell(records, {**at, "method": method}, "seconds")),
            ])
        winners[str(budget)] = {"winner": winner, "clear": clear}
    table = markdown_table(["K (rows/prompt)", "NFE/prompt", "method", metric,
                            "winner - method (paired 95% CI, pairs)", "s/prompt"], rows)
    return table, winners


def _gap(gap: tuple[float, float, int] | None, percent: bool) -> str:
    if gap is None:
        return "-"
    mean, half_width, pairs = gap
    mean, half_width = (0.0 if abs(value) < 1e-9 else value for value in (mean, half_width))
    scale, unit = (100, " pt") if percent else (1, "")
    return f"{scale * mean:+.3g}{unit} ± {scale * half_width:.2g} ({pairs})"
