"""The hub path: a transformers masked LM and its tokenizer, steered end to end, offline.

A tiny BertForMaskedLM with random weights (built from a config, nothing downloaded) stands in
for a hub masked diffusion LM; its tokenizer is a word-level tokenizer built in code. Bidirectional
attention and a [MASK] token are all the sampler needs (LLaDA, Dream and MDLM are the same shape:
token ids in, logits at every position out).
"""

from __future__ import annotations

import pytest
import torch
from tiny_builds import SPECIAL_TOKENS, tiny_masked_lm

from fksteer import FKConfig, steer
from fksteer.integrations.masked import (
    DecodedText,
    LogLinearSchedule,
    MaskedDiffusionModel,
    TransformersDenoiser,
    token_ids,
)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = "the a cat dog sat ran on mat big small red blue is was and".split()


@pytest.fixture(scope="module")
def tiny():
    return tiny_masked_lm(WORDS)


class RecordingDenoiser(TransformersDenoiser):
    """Keeps every batch the model saw."""

    def __call__(self, tokens, times=None, attention_mask=None):
        self.calls = getattr(self, "calls", [])
        self.calls.append((tokens.clone(), attention_mask))
        return super().__call__(tokens, times, attention_mask)


def cat_count(texts, prompts):
    assert all(isinstance(text, str) for text in texts)
    return [float(text.split().count("cat")) for text in texts]


def test_tiny_bert_runs_end_to_end_for_g_prompts_by_k_particles(tiny):
    model, tokenizer = tiny
    denoiser = RecordingDenoiser(model, tokenizer)
    assert denoiser.mask_id == tokenizer.mask_token_id
    special = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    sampler = MaskedDiffusionModel(denoiser, seq_len=6, num_steps=6, num_x0_samples=2,
                                   suppress_token_ids=special)
    prompts = ["the cat", "a big red dog", "the"]  # 2, 4 and 1 tokens: padded on the right
    result = steer(sampler, cat_count, FKConfig(num_particles=4, lmbda=2.0), prompts=prompts,
                   generator=torch.Generator().manual_seed(0))

    ids = token_ids(result)
    assert ids.shape == (3, 4, 6)
    assert not bool(torch.isin(ids, torch.tensor(special)).any())  # no mask, no special token
    for g in range(3):
        texts = tokenizer.batch_decode(ids[g].tolist(), skip_special_tokens=True)
        assert [str(text) for text in result.samples[g]] == texts
        assert all(isinstance(text, DecodedText) for text in result.samples[g])
    assert torch.equal(result.rewards, torch.tensor(
        [[float(text.split().count("cat")) for text in row] for row in result.samples],
        dtype=torch.float64))

    prefixes = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    for tokens, attention_mask in denoiser.calls:
        assert tokens.shape[1] == 4 + 6 and attention_mask is not None
        if len(tokens) == 12:  # a full batch: rows are group-major
            for g, prefix in enumerate(prefixes):
                rows = tokens[4 * g : 4 * g + 4]
                assert bool((rows[:, : len(prefix)] == torch.tensor(prefix)).all())
                assert bool((attention_mask[4 * g : 4 * g + 4].sum(1) == len(prefix) + 6).all())
                assert bool((rows[:, len(prefix) + 6 :] == tokenizer.pad_token_id).all())


def test_cache_matches_the_uncached_path_on_a_transformer(tiny):
    model, tokenizer = tiny
    outcomes = {}
    for cache in (True, False):
        denoiser = RecordingDenoiser(model, tokenizer)
        sampler = MaskedDiffusionModel(denoiser, seq_len=5, num_steps=10,
                                       unmasking="fixed-count", cache=cache)
        result = steer(sampler, cat_count, FKConfig(num_particles=4, lmbda=1.0),
                       prompts=["the cat", "a dog"], generator=torch.Generator().manual_seed(3))
        outcomes[cache] = token_ids(result), result.weights, sum(len(t) for t, _ in denoiser.calls)
    assert torch.equal(outcomes[True][0], outcomes[False][0])
    assert torch.equal(outcomes[True][1], outcomes[False][1])
    assert outcomes[True][2] < outcomes[False][2] == 10 * 8


def test_from_pretrained_loads_a_saved_model_offline(tiny, tmp_path):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    denoiser = TransformersDenoiser.from_pretrained(str(tmp_path))
    tokens = torch.tensor([[5, 6, 4, 4], [7, 4, 4, 4]])
    with torch.no_grad():
        assert torch.allclose(denoiser(tokens), model(input_ids=tokens).logits)
    assert denoiser.mask_id == tokenizer.mask_token_id and not denoiser.time_conditioned
    with pytest.raises(ValueError, match="auto_class"):
        TransformersDenoiser.from_pretrained(str(tmp_path), auto_class="NoSuchModel")


class _FixedLogits(torch.nn.Module):
    """Returns logits[b, j, :] = j at every vocabulary entry, and records its keywords."""

    def forward(self, input_ids, **kwargs):
        self.kwargs = kwargs
        batch, length = input_ids.shape
        return (torch.arange(length, dtype=torch.float32)[None, :, None].expand(batch, length, 3),)


def test_shift_logits_time_keyword_and_mask_id_errors():
    module = _FixedLogits()
    shifted = TransformersDenoiser(module, mask_id=2, shift_logits=True)
    logits = shifted(torch.zeros(1, 4, dtype=torch.long))
    assert logits[0, :, 0].tolist() == [0.0, 0.0, 1.0, 2.0]  # Dream: position j reads j - 1

    timed = TransformersDenoiser(module, mask_id=2, time_keyword="timesteps",
                                 time_transform=LogLinearSchedule().sigma, time_conditioned=False)
    timed(torch.zeros(2, 3, dtype=torch.long), torch.tensor([1.0, 0.5]))
    expected = LogLinearSchedule().sigma(torch.tensor([1.0, 0.5]))
    assert torch.allclose(module.kwargs["timesteps"], expected)
    assert not timed.time_conditioned  # MDLM's checkpoints ignore the time: caching stays on

    with pytest.raises(ValueError, match="mask_id"):
        TransformersDenoiser(module)  # no tokenizer, no mask id
