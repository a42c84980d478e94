"""Build a report page from run folders: `render_folder` and `render_comparison`.

    from fksteer.report.page import render_folder, render_comparison
    html = render_folder(load_folder("runs/sample"))
    html = render_comparison(load_run("runs/a"), load_run("runs/b"))

The page shows the samples by weight, the traces (ESS and its threshold, rewards, lambda, dead
particles, seconds by part), the genealogy, the log-evidence per prompt, the configuration,
the machine and the command that reproduces the run; for summaries (benchmarks, the demos) the
folder's report.md (tables and verdicts) and its plots. See :mod:`fksteer.report.template` for
the structure tests can rely on.
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np

from fksteer.report import figures
from fksteer.report.folder import RunData, RunFolder, RunFolderError, Summary
from fksteer.report.genealogy import Genealogy
from fksteer.report.samples import THUMBNAIL_ABOVE, data_uri, sample_cards

__all__ = ["render_folder", "render_comparison", "markdown_html"]

#: Lineage trees drawn per run (one per prompt); the distinct-ancestor plot covers them all.
MAX_LINEAGES = 12


def fmt(value: Any) -> str:
    """A number for the page: 4 significant digits; a dash for a missing one."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.4g}"


def markdown_html(text: str) -> str:
    """``text`` (GitHub-style markdown with tables) as HTML; a <pre> without markdown-it-py."""
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _evidence(run: RunData, tree: Genealogy) -> list[list[str]]:
    summary, left = run.summary, tree.distinct_roots()[-1]  # (G,)
    return [
        [fmt(summary["log_evidence"][g]), fmt((summary.get("final_ess") or [None] * (g + 1))[g]),
         fmt((summary.get("best_reward") or [None] * (g + 1))[g]),
         fmt((summary.get("weighted_reward") or [None] * (g + 1))[g]), fmt(int(left[g]))]
        for g in range(run.num_groups)
    ]


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _trace_rows(run: RunData, tree: Genealogy) -> list[list[str]]:
    ess, left = run.series("ess"), tree.distinct_roots()[1:]  # (S, G), (S, G)
    columns = {name: run.series(name) for name in ("reward_mean", "reward_max", "lmbda",
                                                   "num_dead")}
    rows = []
    for index, step in enumerate(run.trace):
        dead = columns["num_dead"][index]
        seconds = sum(step.get(f"{part}_seconds") or 0.0 for part in figures.PARTS)
        rows.append([
            str(step["step"]), fmt(bool(step["scored"])), f"{sum(step['resampled'])}/"
            f"{run.num_groups}", fmt(ess[index].min()), fmt(ess[index].mean()),
            fmt(_nanmean(columns["reward_mean"][index])),
            fmt(_nanmean(columns["reward_max"][index])), fmt(_nanmean(columns["lmbda"][index])),
            fmt(int(np.nansum(dead))) if np.isfinite(dead).any() else "–",
            fmt(int(left[index].min())), fmt(seconds),
        ])
    return rows


def _run_view(label: str, run: RunData, tree: Genealogy, tag: str = "") -> dict[str, Any]:
    seconds = [sum(step.get(f"{part}_seconds") or 0.0 for step in run.trace)
               for part in figures.PARTS]
    shown = min(run.num_groups, MAX_LINEAGES)
    lineages = ([figures.lineage(run, tree, g) for g in range(shown)]
                if figures.available() else [])
    note = (f"Lineage trees of the first {shown} of {run.num_groups} prompts{tag}."
            if run.num_groups > shown else "")
    return {"label": label, "tag": tag, "prompts": run.prompts, "num_groups": run.num_groups,
            "num_particles": run.num_particles, "cards": sample_cards(run, tree),
            "evidence": _evidence(run, tree), "seconds": [fmt(value) for value in seconds],
            "lineages": lineages, "lineage_note": note, "trace_rows": _trace_rows(run, tree),
            "collapses": _collapses(run, tree)}


def _plots(pairs: list[tuple[str, RunData]], trees: list[Genealogy]) -> dict[str, str]:
    if not figures.available():
        return dict.fromkeys(("ess", "rewards", "tilts", "dead", "timing", "distinct"), "")
    any_dead = any(np.nansum(run.series("num_dead")) > 0 for _, run in pairs)
    return {"ess": figures.ess(pairs), "rewards": figures.rewards(pairs),
            "tilts": figures.tilts(pairs), "dead": figures.dead(pairs) if any_dead else "",
            "timing": figures.timing(pairs), "distinct": figures.distinct(pairs, trees)}


#: ESS below this means one particle holds nearly all the weight: sum_k W_k^2 <= max_k W_k, so
#: max_k W_k >= 1 / ESS > 95%.
COLLAPSED_ESS = 1.05


def _collapses(run: RunData, tree: Genealogy) -> list[dict[str, Any]]:
    """Prompts whose weights collapsed at some step: steps with ESS ~ 1, lineages left."""
    ess, steps, left = run.series("ess"), run.steps(), tree.distinct_roots()[-1]
    found = []
    for group in range(run.num_groups):
        where = steps[ess[:, group] < COLLAPSED_ESS]
        if where.size:
            found.append({"prompt": run.prompts[group], "steps": where.tolist(),
                          "lineages": int(left[group])})
    return found


def _ess_note(run: RunData) -> str:
    fk = run.config.get("fk_config") or {}
    threshold = fk.get("ess_threshold")
    rule = (f"resample when ESS < {threshold} x K = {threshold * run.num_particles:g}"
            if threshold is not None else "no ESS threshold: every scoring step resamples")
    count = run.summary.get("num_resampling_steps")
    return (f"{run.summary.get('method', 'fk')}: {fk.get('resampling', '?')} resampling; {rule}; "
            f"{fmt(count)} steps resampled at least one prompt.")


def _lambda_note(run: RunData) -> str:
    lmbda = (run.config.get("fk_config") or {}).get("lmbda")
    schedule = (f"schedule {lmbda.get('schedule')} {json.dumps(lmbda)}"
                if isinstance(lmbda, dict) else f"lambda = {lmbda}")
    final = run.summary.get("final_lambda")
    return f"{schedule}; final lambda per prompt: {', '.join(fmt(v) for v in final or [])}."


def _config_block(label: str, config: dict[str, Any]) -> dict[str, str]:
    return {"label": label, "command": config.get("reproduce", ""),
            "json": json.dumps(config, indent=2, sort_keys=True, default=str)}


def _subtitle(run: RunData) -> str:
    config, summary = run.config, run.summary
    scored = summary.get("samples_scored", summary.get("reward_calls", "?"))  # or its old name
    parts = [f"{summary.get('method', '?')} on {config.get('model', '?')}",
             f"reward {config.get('reward', '?')}",
             f"{run.num_groups} prompts x {run.num_particles} particles",
             f"NFE {summary.get('nfe', '?')}", f"samples scored {scored}"]
    steer = (summary.get("wall_seconds") or {}).get("steer")
    if steer is not None:
        parts.append(f"{steer:.1f} s steering")
    return ", ".join(parts)


def _context(title: str, subtitle: str, folder: str, summary: dict[str, Any] | None,
             views: list[dict[str, Any]], plots: dict[str, str], notes: tuple[str, str],
             configs: list[dict[str, str]]) -> dict[str, Any]:
    from fksteer import __version__

    nav = [(summary["id"], summary["heading"])] if summary else []
    if views:
        nav += [("evidence", "log Z"), ("samples", "samples"), ("ess", "ESS"),
                ("rewards", "rewards"), ("lambda", "lambda"), ("dead", "dead"),
                ("timing", "time"), ("lineage", "genealogy"), ("trace", "trace")]
    many = any(view["num_particles"] > THUMBNAIL_ABOVE for view in views)
    return {
        "title": title, "subtitle": subtitle, "folder": folder, "nav": nav + [("config",
                                                                               "config")],
        "summary": summary, "runs": views, "figures": plots, "ess_note": notes[0],
        "lambda_note": notes[1], "configs": configs, "fmt": fmt, "version": __version__,
        "plots_available": figures.available(), "thumbnails": many,
        "thumbnail_above": THUMBNAIL_ABOVE, "collapsed_ess": COLLAPSED_ESS,
        "image_width": 48 if many else 96,
        "dead_total": sum(int(np.nansum(view_run.series("num_dead")))
                          for view_run in [view["run"] for view in views]),
    }


def _render(context: dict[str, Any]) -> str:
    import jinja2

    from fksteer.report.template import PAGE

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(PAGE).render(**context)


def _summary_view(summary: Summary, demo: bool) -> dict[str, Any]:
    images = [(name, data_uri(data)) for name, data in summary.images.items()]
    return {"id": "summary" if demo else "results", "heading": "Summary" if demo else "Results",
            "html": markdown_html(summary.markdown), "images": images}


def render_folder(folder: RunFolder) -> str:
    """The report page of a run folder (a run, a summary, or a demo: both)."""
    views, plots, notes, configs = [], {}, ("", ""), []
    title = f"fksteer report: {folder.path.name}"
    subtitle = ""
    if folder.summary is not None:
        configs.append(_config_block("config.json", folder.summary.config))
        config = folder.summary.config
        subtitle = "summary of " + (f"fksteer bench {config['bench']}" if "bench" in config
                                    else f"fksteer {config.get('command', 'demo --exact')}")
    if folder.run is not None:
        run = folder.run
        tree = Genealogy.of(run)
        view = _run_view(run.config.get("command", "run"), run, tree)
        view["run"] = run
        views = [view]
        plots = _plots([(view["label"], run)], [tree])
        notes = (_ess_note(run), _lambda_note(run))
        label = "steering run" if folder.summary is None else f"FK run ({run.path.name})"
        configs.append(_config_block(label, run.config))
        subtitle = _subtitle(run) if folder.summary is None else (
            subtitle + "; below, its FK run: " + _subtitle(run))
    summary = (None if folder.summary is None
               else _summary_view(folder.summary, demo=folder.run is not None))
    return _render(_context(title, subtitle, str(folder.path), summary, views, plots, notes,
                            configs))


def render_comparison(first: RunData, second: RunData) -> str:
    """Two runs of the same prompts side by side: samples, traces, log Z, configurations."""
    if first.prompts != second.prompts:
        raise RunFolderError(
            f"{first.path} and {second.path} steer different prompts ({first.prompts} vs "
            f"{second.prompts}): compare runs of the same prompts."
        )
    labels = ["A: " + first.path.name, "B: " + second.path.name]
    runs, trees = [first, second], [Genealogy.of(first), Genealogy.of(second)]
    views = []
    for label, tag, run, tree in zip(labels, (" (A)", " (B)"), runs, trees, strict=True):
        view = _run_view(label, run, tree, tag)
        view["run"] = run
        views.append(view)
    plots = _plots(list(zip(labels, runs, strict=True)), trees)
    notes = (" ".join(f"{label}: {_ess_note(run)}" for label, run in zip(labels, runs,
                                                                          strict=True)),
             " ".join(f"{label}: {_lambda_note(run)}" for label, run in zip(labels, runs,
                                                                            strict=True)))
    configs = [_config_block(label, run.config) for label, run in zip(labels, runs,
                                                                      strict=True)]
    subtitle = " | ".join(f"{label}: {_subtitle(run)}" for label, run in zip(labels, runs,
                                                                             strict=True))
    return _render(_context(f"fksteer report: {labels[0][3:]} vs {labels[1][3:]}", subtitle,
                            str(first.path), None, views, plots, notes, configs))
