"""MaskedDiffusionModel's contracts: schedule, prefixes, unmasking, caching, permutation, decoding.

The denoisers here are small deterministic torch functions (logits depend on every token of the
row) or the exact TableDenoiser; exactness of the steered law is in
test_masked_diffusion_exactness.py, the transformers path in test_masked_diffusion_transformers.py.
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from fksteer import FKConfig, steer
from fksteer.integrations.masked import (
    CosineSchedule,
    DecodedText,
    LogLinearSchedule,
    MaskedDiffusionModel,
    token_ids,
)

VOCAB = 6  # clean ids 0..5 ("a".."f"); the mask is 6
MASK = VOCAB


class ContextDenoiser:
    """Deterministic logits (B, N, V+1) that depend on every (attended) token of the row.

    Records every call; ``time_conditioned`` adds a time-dependent term, so caching must be off.
    """

    mask_id = MASK

    def __init__(self, seed=0, accepts_attention_mask=False, time_conditioned=False):
        generator = torch.Generator().manual_seed(seed)
        self.embed = torch.randn(VOCAB + 1, VOCAB + 1, generator=generator, dtype=torch.float64)
        self.position = torch.randn(64, VOCAB + 1, generator=generator, dtype=torch.float64)
        self.accepts_attention_mask = accepts_attention_mask
        self.time_conditioned = time_conditioned
        self.calls = []

    def __call__(self, tokens, *args, attention_mask=None):
        times = args[0] if args else None
        self.calls.append((tokens.clone(), times, attention_mask))
        weights = torch.ones(tokens.shape, dtype=torch.float64)
        if attention_mask is not None:
            weights = attention_mask.double()
        context = (self.embed[tokens] * weights[..., None]).sum(1, keepdim=True)  # (B, 1, V+1)
        logits = 0.5 * context / weights.sum(1)[:, None, None] + self.position[: tokens.shape[1]]
        if self.time_conditioned:
            logits = logits + 3.0 * times.double()[:, None, None] * self.position[-1]
        return logits  # (B, N, V+1)

    @property
    def rows(self):
        return sum(len(tokens) for tokens, _, _ in self.calls)


class LetterTokenizer:
    """Letters a..f are ids 0..5; enough of a tokenizer for prompts and decoding."""

    pad_token_id = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) - ord("a") for c in text]}

    def batch_decode(self, ids, skip_special_tokens=True):
        return ["".join(chr(ord("a") + i) for i in row) for row in ids]


def count_of_token_two(tokens, prompts):
    return (tokens == 2).sum(dim=-1).double()


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# -- schedule ------------------------------------------------------------------------------------


def test_log_linear_schedule_unmasks_t_minus_s_over_t_and_ends_at_time_zero():
    for eps in (0.0, 1e-3, 0.2):
        model = MaskedDiffusionModel(ContextDenoiser(), seq_len=5, num_steps=4,
                                     schedule=LogLinearSchedule(eps))
        t = model.times
        assert t[0] == 1.0 and t[-1] == 0.0 and bool((t >= 0).all())
        expected = (t[:-1] - t[1:]) / t[:-1]  # (t - s) / t, whatever eps
        assert torch.allclose(model.unmask_probabilities, expected, atol=1e-12)
        assert model.unmask_probabilities[-1] == 1.0
        assert math.isclose(float(model.alphas[0]), eps, abs_tol=1e-12)
    sigma = LogLinearSchedule(1e-3).sigma(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert sigma[0] == 0.0 and math.isclose(float(sigma[1]), -math.log(1e-3), rel_tol=1e-9)


def test_cosine_schedule():
    model = MaskedDiffusionModel(ContextDenoiser(), seq_len=5, num_steps=4, schedule="cosine")
    t = model.times
    masked = torch.sin(0.5 * math.pi * t)  # 1 - alpha(t)
    assert torch.allclose(model.unmask_probabilities, (masked[:-1] - masked[1:]) / masked[:-1])
    assert isinstance(model.schedule, CosineSchedule)


@pytest.mark.parametrize("num_steps, counts", [(4, [1, 1, 1, 1]), (2, [2, 2]),
                                               (8, [0, 1, 0, 1, 0, 1, 0, 1])])
def test_fixed_count_unmasks_round_l_times_the_masked_fraction(num_steps, counts):
    model = MaskedDiffusionModel(ContextDenoiser(), seq_len=4, num_steps=num_steps,
                                 unmasking="fixed-count")
    assert model.unmask_counts.tolist() == counts


# -- prefixes, unmasked tokens, the end ------------------------------------------------------------


class _CheckedModel(MaskedDiffusionModel):
    """Asserts at every move: prompts and padding unchanged, unmasked tokens kept, counts right."""

    def init(self, prompts, num_particles, generator):
        state = super().init(prompts, num_particles, generator)
        self.initial = state.tokens.clone()
        self.history = [state.generated()]
        return state

    def move(self, state, model_output, step, generator):
        new = super().move(state, model_output, step, generator)
        outside = torch.ones_like(state.tokens, dtype=torch.bool)
        outside.scatter_(1, state.positions, False)  # prompt and padding
        assert torch.equal(new.tokens[outside], self.initial[outside])
        before, after = state.generated(), new.generated()
        was_unmasked = before != MASK
        assert torch.equal(after[was_unmasked], before[was_unmasked])
        newly = ((before == MASK) & (after != MASK)).sum(1)  # (B,)
        if self.unmasking == "fixed-count":
            assert bool((newly == int(self.unmask_counts[step])).all())
        self.history.append(after)
        return new


@pytest.mark.parametrize("unmasking", ["ancestral", "fixed-count"])
def test_prefixes_never_change_unmasked_tokens_stay_and_no_mask_remains(unmasking):
    denoiser = ContextDenoiser(accepts_attention_mask=True)
    model = _CheckedModel(denoiser, seq_len=5, num_steps=5, unmasking=unmasking,
                          num_x0_samples=3)
    prompts = [[0, 1, 2], [5], None, torch.tensor([3, 3])]  # ragged: padded on the right
    result = steer(model, count_of_token_two, FKConfig(num_particles=6, lmbda=2.0),
                   prompts=prompts, generator=seeded(1))
    assert result.samples.shape == (4, 6, 5)
    assert not bool((result.samples == MASK).any())
    assert bool((result.samples < VOCAB).all())
    assert len(model.history) == 6 and not bool((model.history[-1] == MASK).any())
    for tokens, _, attention_mask in denoiser.calls:  # what the denoiser saw, row by row
        width = tokens.shape[1]
        assert width == 3 + 5
        rows = tokens.reshape(4, 6, width) if len(tokens) == 24 else None
        if rows is not None:
            assert bool((rows[0, :, :3] == torch.tensor([0, 1, 2])).all())
            assert bool((rows[1, :, 0] == 5).all()) and bool((rows[3, :, :2] == 3).all())
            lengths = attention_mask.reshape(4, 6, width).sum(-1)
            assert bool((lengths == torch.tensor([8, 6, 5, 7])[:, None]).all())


def test_the_last_step_removes_every_mask_whatever_the_schedule():
    class LateSchedule:
        """alpha = 0 until the end: no position unmasks before the final step."""

        def alpha(self, t):
            return torch.where(t > 0, 0.0, 1.0).double()

    model = _CheckedModel(ContextDenoiser(), seq_len=6, num_steps=4, schedule=LateSchedule())
    result = steer(model, count_of_token_two, FKConfig(num_particles=3), prompts=[None, None],
                   generator=seeded(2))
    assert [bool((h == MASK).all()) for h in model.history] == [True] * 4 + [False]
    assert not bool((result.samples == MASK).any())


# -- caching ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("unmasking", ["ancestral", "fixed-count"])
def test_cache_gives_identical_samples_and_evaluates_fewer_rows(unmasking):
    runs = {}
    for cache in (True, False):
        denoiser = ContextDenoiser(seed=3)
        model = MaskedDiffusionModel(denoiser, seq_len=4, num_steps=12, unmasking=unmasking,
                                     num_x0_samples=2, cache=cache)
        config = FKConfig(num_particles=8, lmbda=1.5, ess_threshold=0.7)
        result = steer(model, count_of_token_two, config, prompts=[[1], [4]],
                       generator=seeded(5))
        runs[cache] = result, denoiser.rows
    (cached, cached_rows), (uncached, uncached_rows) = runs[True], runs[False]
    assert torch.equal(cached.samples, uncached.samples)
    assert torch.equal(cached.weights, uncached.weights)
    assert torch.equal(cached.log_evidence, uncached.log_evidence)
    assert any(bool(step.resampled.any()) for step in cached.trace)  # permuted caches used
    assert uncached_rows == 12 * 16
    assert cached_rows < 0.75 * uncached_rows, (cached_rows, uncached_rows)


def test_a_time_conditioned_denoiser_is_called_every_step_with_the_time():
    denoiser = ContextDenoiser(time_conditioned=True)
    model = MaskedDiffusionModel(denoiser, seq_len=4, num_steps=8, unmasking="fixed-count")
    steer(model, count_of_token_two, FKConfig(num_particles=4), prompts=[None],
          generator=seeded(6))
    assert denoiser.rows == 8 * 4  # steps with no change are evaluated all the same
    times = [float(call_times[0]) for _, call_times, _ in denoiser.calls]
    assert times == pytest.approx([1 - i / 8 for i in range(8)])

    # a plain function taking (tokens, times): say so with time_conditioned=True
    seen = []

    def function(tokens, times):
        seen.append(times)
        return denoiser(tokens, times)

    model = MaskedDiffusionModel(function, mask_id=MASK, seq_len=4, num_steps=3,
                                 time_conditioned=True)
    steer(model, count_of_token_two, FKConfig(num_particles=2), generator=seeded(6))
    assert [float(t[0]) for t in seen] == pytest.approx([1.0, 2 / 3, 1 / 3])


# -- resampling permutes every per-particle tensor -----------------------------------------------


def test_permute_reorders_tokens_positions_masks_and_logits_together():
    model = MaskedDiffusionModel(ContextDenoiser(accepts_attention_mask=True), seq_len=4,
                                 num_steps=4, num_x0_samples=2)
    state = model.init([[0, 1], [2]], num_particles=3, generator=seeded(0))
    output, _ = model.predict(state, 0, seeded(1))
    state = model.move(state, output, 0, seeded(2))
    output, _ = model.predict(state, 1, seeded(3))
    ancestors = torch.tensor([2, 2, 0, 4, 3, 3])  # within groups of 3
    permuted, permuted_output = model.permute(state, output, ancestors)
    assert torch.equal(permuted.tokens, state.tokens[ancestors])
    assert torch.equal(permuted.positions, state.positions[ancestors])
    assert torch.equal(permuted.attention_mask, state.attention_mask[ancestors])
    assert torch.equal(permuted.stale, state.stale[ancestors])
    assert torch.equal(permuted_output.logits, output.logits[ancestors])
    assert permuted.logits is permuted_output.logits  # the cache is the permuted output
    # the cached logits are those the denoiser gives for the permuted tokens
    fresh = model._evaluate(permuted.tokens, permuted.positions, permuted.attention_mask, 1)
    assert torch.allclose(permuted.logits, fresh)


# -- draws of x_0 for the intermediate potentials --------------------------------------------------


def test_draws_keep_unmasked_tokens_and_follow_the_per_position_marginals():
    """The denoiser's logits at unmasked positions are not one-hot: draws must still keep them."""
    draws_per_particle = 4000
    model = MaskedDiffusionModel(ContextDenoiser(), seq_len=4, num_steps=4,
                                 unmasking="fixed-count", num_x0_samples=draws_per_particle)
    state = model.init([None], num_particles=2, generator=seeded(0))
    output, _ = model.predict(state, 0, seeded(1))
    state = model.move(state, output, 0, seeded(2))  # one position unmasked per particle
    output, draws = model.predict(state, 1, seeded(3))
    draws = draws.reshape(2, draws_per_particle, 4)  # particle-major
    generated = state.generated()
    for p in range(2):
        unmasked = generated[p] != MASK
        assert int(unmasked.sum()) == 1
        assert bool((draws[p][:, unmasked] == generated[p][unmasked]).all())
        assert not bool((draws[p] == MASK).any())
        probs = torch.softmax(output.logits[p], -1)  # (L, V+1) per-position marginals
        assert bool((probs[:, MASK] == 0).all())
        for j in torch.nonzero(~unmasked).squeeze(1).tolist():
            counts = torch.bincount(draws[p][:, j], minlength=VOCAB + 1).double()
            frequency = counts / draws_per_particle
            se = (probs[j] * (1 - probs[j]) / draws_per_particle).sqrt()
            assert bool(((frequency - probs[j]).abs() <= 5 * se + 1e-12).all())


def test_each_scoring_step_scores_m_draws_per_particle_in_one_reward_call():
    batches = []

    def reward(samples, prompts):
        batches.append(len(samples))
        return count_of_token_two(samples, prompts)

    model = MaskedDiffusionModel(ContextDenoiser(), seq_len=4, num_steps=4, num_x0_samples=3)
    result = steer(model, reward, FKConfig(num_particles=5, resample_every=2),
                   prompts=[None, None], generator=seeded(0))
    assert batches == [2 * 5 * 3, 2 * 5 * 3, 2 * 5]  # steps 0 and 2, then the final samples
    assert result.samples_scored == sum(batches)


# -- prompts and decoding --------------------------------------------------------------------------


def test_text_prompts_are_tokenised_and_samples_are_texts_with_token_ids():
    denoiser = ContextDenoiser()
    model = MaskedDiffusionModel(denoiser, seq_len=4, num_steps=4, tokenizer=LetterTokenizer())
    seen_prompts = []

    def reward(texts, prompts):
        seen_prompts.extend(prompts)
        assert all(isinstance(text, str) for text in texts)
        return [float(text.count("c")) for text in texts]

    result = steer(model, reward, FKConfig(num_particles=3), prompts=["abc", "fed"],
                   generator=seeded(4))
    first = denoiser.calls[0][0]  # (6, 3 + 4)
    assert first[:3, :3].tolist() == [[0, 1, 2]] * 3 and first[3:, :3].tolist() == [[5, 4, 3]] * 3
    assert set(seen_prompts) == {"abc", "fed"}
    assert len(result.samples) == 2 and all(len(row) == 3 for row in result.samples)
    ids = token_ids(result)  # (G, K, L)
    assert ids.shape == (2, 3, 4) and ids.dtype == torch.int64
    for g in range(2):
        for k in range(3):
            text = result.samples[g][k]
            assert isinstance(text, DecodedText) and isinstance(text, str)
            assert text == LetterTokenizer().batch_decode([ids[g, k].tolist()])[0]
    restored = pickle.loads(pickle.dumps(result.samples[0][0]))
    assert restored == result.samples[0][0]
    assert torch.equal(restored.token_ids, result.samples[0][0].token_ids)


def test_without_a_tokenizer_samples_are_token_ids():
    model = MaskedDiffusionModel(ContextDenoiser(), seq_len=4, num_steps=2)
    result = steer(model, count_of_token_two, FKConfig(num_particles=3), prompts=[[0], [1]],
                   generator=seeded(0))
    assert result.samples.shape == (2, 3, 4)
    assert token_ids(result) is result.samples


# -- errors name the argument and the fix ----------------------------------------------------------


def test_bad_arguments_raise_at_construction():
    denoiser = ContextDenoiser()
    with pytest.raises(ValueError, match="unmasking"):
        MaskedDiffusionModel(denoiser, seq_len=4, num_steps=2, unmasking="greedy")
    with pytest.raises(ValueError, match="schedule"):
        MaskedDiffusionModel(denoiser, seq_len=4, num_steps=2, schedule="linear-ish")
    with pytest.raises(ValueError, match="num_x0_samples"):
        MaskedDiffusionModel(denoiser, seq_len=4, num_steps=2, num_x0_samples=0)
    with pytest.raises(ValueError, match="mask_id"):
        MaskedDiffusionModel(lambda tokens: tokens, seq_len=4, num_steps=2)

    class Rising:
        def alpha(self, t):
            return 0.5 + 0.5 * t * (1 - t) + (t == 0)

    with pytest.raises(ValueError, match="alpha"):
        MaskedDiffusionModel(denoiser, seq_len=4, num_steps=4, schedule=Rising())


def test_bad_prompts_and_denoisers_raise_with_the_fix():
    model = MaskedDiffusionModel(ContextDenoiser(), seq_len=4, num_steps=2)
    with pytest.raises(ValueError, match="no tokenizer"):
        model.init(["abc"], 2, seeded())
    with pytest.raises(ValueError, match="mask id"):
        model.init([[1, MASK]], 2, seeded())
    with pytest.raises(ValueError, match="attention mask"):
        model.init([[1, 2], [1]], 2, seeded())
    with pytest.raises(ValueError, match="pass a str"):
        model.init([3.5], 2, seeded())
    broken = MaskedDiffusionModel(lambda tokens: tokens.double(), mask_id=MASK, seq_len=4,
                                  num_steps=2)
    with pytest.raises(ValueError, match=r"\(B, N, vocab_size\)"):
        steer(broken, count_of_token_two, FKConfig(num_particles=2), generator=seeded())
