"""`fksteer gibbs`: particle Gibbs sweeps under a sweep count or a compute budget.

    from fksteer.commands.gibbs import GIBBS_DEFAULTS, run_gibbs
    report, exit_code = run_gibbs(values)   # values: GIBBS_DEFAULTS updated by the command line

Models: ``exact`` (the rare-mode Gaussian mixture, :meth:`GaussianMixtureDiffusion.rare_mode`,
reward x_1, whose target is known: the report gives the chain's rare-component mass beside the
exact 0.8847) or an embedded image model (``embedded-weak``, ``embedded-strong``; prompts are
class names, the reward the embedded steering classifier by default). Each prompt runs
``--chains`` chains. ``--sweeps N``, ``--budget-nfe N`` and ``--budget-seconds T`` stop the run
(whichever comes first); Ctrl-C stops it like a spent budget, the finished sweeps are written
and the exit status is 130.

Writes into ``out``: ``chain.jsonl`` (one line per sweep and chain: reward, accepted, lineage
depth, the kept slot; the sample itself for the exact model), ``summary.json`` (acceptance,
split R-hat, ESS, best reward, NFE, the stop reason), ``config.json`` (the options, the seed and
the number of sweeps made: ``--sweeps`` that number with the same seed replays the run exactly)
and, for image models, ``best_c{chain}.png`` and ``chain_c{chain}.png`` (the kept samples after
burn-in, up to 16).
"""

from __future__ import annotations

import time
from typing import Any

from fksteer.commands.options import FK_FIELDS, build_fk_config, resolve_device, set_threads
from fksteer.smc.config import FKConfig

__all__ = ["GIBBS_DEFAULTS", "run_gibbs", "INTERRUPTED_EXIT"]

#: Exit status of a run stopped by Ctrl-C (128 + SIGINT), its finished sweeps written.
INTERRUPTED_EXIT = 130

GIBBS_DEFAULTS: dict[str, Any] = {
    "prompts": [],
    "prompts_file": None,
    "model": "exact",
    "reward": None,
    **{field: getattr(FKConfig(), field) for field in FK_FIELDS},
    "num_particles": 4,
    "lmbda": None,
    "method": "fk",
    "steps": None,
    "sweeps": None,
    "budget_nfe": None,
    "budget_seconds": None,
    "chains": 4,
    "burn_in": 0,
    "thin": 1,
    "device": "cpu",
    "dtype": "float32",
    "seed": 0,
    "threads": None,
    "config": None,
    "out": "runs/gibbs",
}


def _problem(values: dict[str, Any]) -> tuple[Any, Any, list[Any], dict[str, Any]]:
    """(model, reward, prompts, facts) for ``--model``; prompts repeated ``--chains`` times."""
    chains = values["chains"]
    if isinstance(chains, bool) or not isinstance(chains, int) or chains < 1:
        raise ValueError(f"--chains {chains!r}: pass a positive int, e.g. 4.")
    if values["model"] == "exact":
        from fksteer.models.gaussian_mixture import GaussianMixtureDiffusion, LinearReward

        problem = GaussianMixtureDiffusion.rare_mode(num_steps=values["steps"] or 25)
        if values["lmbda"] is None:
            values["lmbda"] = problem.lmbda
        target = problem.model.tilted(problem.direction, float(values["lmbda"]))
        facts = {"target": target, "exact_rare_mode_mass": float(target.weights[-1])}
        return problem.model, LinearReward(problem.direction), [None] * chains, facts
    from fksteer.commands.image_models import load_image_runner
    from fksteer.commands.options import torch_dtype
    from fksteer.commands.sample import EMBEDDED_REWARD, load_image_reward

    device = resolve_device(values["device"])
    runner = load_image_runner(values["model"], values["steps"] or 50, 1.0, device,
                               torch_dtype(values["dtype"]))
    if runner.kind == "pipeline":
        raise ValueError(
            f"--model {values['model']}: a diffusers pipeline runs its own loop, which cannot "
            "restore a reference path; particle Gibbs needs an embedded model or a UNet folder."
        )
    prompts = runner.check_prompts(list(values["prompts"]) or ["sneaker"])
    reward = load_image_reward(values["reward"] or EMBEDDED_REWARD, runner.embedded, device)
    if values["lmbda"] is None:
        values["lmbda"] = 10.0
    return runner.model, reward, [p for p in prompts for _ in range(chains)], {}


def _budget(values: dict[str, Any]):
    from fksteer.smc.particle_gibbs import Budget

    if values["budget_nfe"] is None and values["budget_seconds"] is None:
        if values["sweeps"] is None:
            raise ValueError("pass --sweeps N, --budget-nfe N or --budget-seconds T.")
        return None
    return Budget(nfe=values["budget_nfe"], seconds=values["budget_seconds"])


def run_gibbs(values: dict[str, Any]) -> tuple[str, int]:
    """Validate, run the sweeps and write; returns the report and the exit status."""
    import torch

    from fksteer.commands.staging import check_writable, staged_directory
    from fksteer.smc.particle_gibbs import gibbs

    started = time.perf_counter()
    set_threads(values["threads"], embedded=values["model"] != "exact")
    values = dict(values)
    if values["method"] != "fk":
        raise ValueError(f"--method {values['method']}: particle Gibbs sweeps FK steering only.")
    model, reward, prompts, facts = _problem(values)
    config = build_fk_config(values)
    budget = _budget(values)
    check_writable(values["out"])
    result = gibbs(model, reward, config, sweeps=values["sweeps"], budget=budget,
                   prompts=prompts, generator=torch.Generator().manual_seed(values["seed"]))
    # a budget may make fewer sweeps than the burn-in asked for: keep at least the last one
    result = result.with_burn_in(min(values["burn_in"], result.num_sweeps - 1), values["thin"])
    summary = {**result.summary(), "seconds_total": time.perf_counter() - started}
    if "target" in facts:
        rare = facts["target"].responsibilities(result.chain().reshape(-1, 2).double())[:, -1]
        summary["chain_rare_mode_mass"] = float(rare.mean())
        summary["exact_rare_mode_mass"] = facts["exact_rare_mode_mass"]
    with staged_directory(values["out"]) as work:
        _write(work, values, config, prompts, result, summary)
    code = INTERRUPTED_EXIT if result.stop_reason == "interrupted" else 0
    return _report(values, result, summary), code


def _write(work, values, config, prompts, result, summary) -> None:
    from fksteer.commands.run_folder import write_json, write_jsonl

    records = []
    for sweep in range(result.num_sweeps):
        for chain, prompt in enumerate(prompts):
            record = {
                "sweep": sweep, "chain": chain, "prompt": None if prompt is None else str(prompt),
                "reward": float(result.rewards[sweep, chain]),
                "accepted": bool(result.accepted[sweep, chain]),
                "new_steps": int(result.new_steps[sweep, chain]),
                "kept_slot": int(result.kept[sweep, chain]),
            }
            if values["model"] == "exact":
                record["sample"] = result.samples[sweep, chain].tolist()
            records.append(record)
    write_jsonl(work / "chain.jsonl", records)
    write_json(work / "summary.json", summary)
    options = {key: value for key, value in values.items() if key not in FK_FIELDS}
    write_json(work / "config.json", {
        "command": "gibbs", "fk_config": config.to_dict(), **options,
        "sweeps_made": result.num_sweeps, "stop_reason": result.stop_reason,
        "replay": f"--sweeps {result.num_sweeps} --seed {values['seed']}",
    })
    if values["model"] != "exact":
        _write_images(work, result)


def _write_images(work, result) -> None:
    import torch

    from fksteer.commands.images import particle_row, save_png, to_pil_image

    _, best = result.best()
    chain = result.chain()[-16:].detach().float().cpu()  # (S', G, C, H, W)
    for index in range(result.num_chains):
        save_png(to_pil_image(best[index].detach().float().cpu()), work / f"best_c{index}.png")
        kept = chain[:, index]
        uniform = torch.full((len(kept),), 1.0 / len(kept), dtype=torch.float64)
        save_png(particle_row(kept, uniform, best=None), work / f"chain_c{index}.png")


def _report(values, result, summary) -> str:
    acceptance = float(result.acceptance_rate().nanmean()) if result.num_sweeps > 1 else None
    lines = [
        f"particle Gibbs on {values['model']}: {result.num_chains} chains x "
        f"{result.sweeps[0].num_particles} particles, {result.num_sweeps} sweeps "
        f"(stopped: {result.stop_reason}), NFE {result.nfe}, {result.seconds:.1f} s",
        f"  acceptance of a new path {acceptance if acceptance is None else f'{acceptance:.3f}'}"
        f", mean kept reward {float(result.chain_rewards().mean()):.3f}, best reward "
        f"{float(result.best()[0].max()):.3f}",
    ]
    if summary.get("rhat"):
        lines.append(f"  split R-hat {summary['rhat']}, ESS {summary['ess']}")
    if "chain_rare_mode_mass" in summary:
        lines.append(f"  rare-component mass: chain {summary['chain_rare_mode_mass']:.3f}, "
                     f"exact {summary['exact_rare_mode_mass']:.3f}")
    lines.append(f"  replay: --sweeps {result.num_sweeps} --seed {values['seed']}")
    lines.append(f"results in {values['out']}/ (chain.jsonl, summary.json, config.json)")
    return "\n".join(lines)
