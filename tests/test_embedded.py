"""The embedded models load offline, run through the engine, and stay within the size budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fksteer
from fksteer.embedded.classifier import load_classifier
from fksteer.embedded.fashion import CLASS_NAMES, FASHION_DIR, load_fashion

WEIGHTS = Path(fksteer.__file__).parent / "embedded" / "weights"


def test_embedded_weights_fit_the_size_budget():
    total = sum(path.stat().st_size for path in WEIGHTS.rglob("*") if path.is_file())
    assert total <= 20 * 2**20, f"{total / 2**20:.1f} MiB of embedded weights"


@pytest.mark.skipif(not FASHION_DIR.exists(), reason="apt-get install dataset-fashion-mnist")
@pytest.mark.parametrize("name, floor", [("steering", 0.85), ("judge", 0.85)])
def test_classifier_accuracy_on_real_test_images(name, floor):
    """Measured on the 10,000 test images: steering 0.873, judge 0.880 (train_classifiers.py).

    The floor sits 2-3 points below, far outside the retraining noise, and fails if the weights,
    the preprocessing (area downsampling to 16x16, [0, 1]) or the architecture drift.
    """
    images, labels = load_fashion("test")
    classifier = load_classifier(name)
    with torch.no_grad():
        predictions = torch.cat([classifier(chunk).argmax(1) for chunk in images.split(2000)])
    assert float((predictions == labels).float().mean()) >= floor


def test_the_weak_image_model_steers_towards_its_prompt():
    from fksteer.embedded.image_model import load_image_model
    from fksteer.rewards.classifier import ClassifierLogProb

    model = load_image_model("weak", num_inference_steps=10)
    reward = ClassifierLogProb(load_classifier("steering"), labels=CLASS_NAMES)
    result = fksteer.steer(model, reward, fksteer.FKConfig(num_particles=2),
                           prompts=["sneaker", "trouser"],
                           generator=torch.Generator().manual_seed(0))
    assert result.samples.shape == (2, 2, 1, 16, 16)
    assert 0.0 <= float(result.samples.min()) and float(result.samples.max()) <= 1.0
    with pytest.raises(ValueError, match="not a class"):
        fksteer.steer(model, reward, fksteer.FKConfig(num_particles=2), prompts=["a cat"])


def test_the_text_model_runs_prompts_of_different_lengths_as_if_each_ran_alone():
    """Right padding plus the attention mask: every prompt's first-step logits equal those of
    the same prompt run on its own (float noise), and without the mask the padding would leak."""
    pytest.importorskip("transformers")
    from fksteer.embedded.text_model import TEXT_MODEL_DIR, load_text_model

    if not (TEXT_MODEL_DIR / "model.safetensors").exists():
        pytest.skip("the embedded text model's weights are not committed yet")
    model = load_text_model(seq_len=8, num_steps=8)
    prompts = ["Never", "The best", "You will never know"]
    lengths = [len(model.prompt_ids(prompt)) for prompt in prompts]
    assert len(set(lengths)) == 3  # ragged: 1, 2 and more tokens
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state = model.init(prompts, 2, generator)
        assert state.attention_mask is not None
        together, _ = model.predict(state, 0, generator)  # logits (G*K, L, V)
        unmasked = model.denoiser(state.tokens)  # the same rows, padding visible
        for g, prompt in enumerate(prompts):
            alone, _ = model.predict(model.init([prompt], 2, generator), 0, generator)
            torch.testing.assert_close(together.logits[2 * g : 2 * g + 2], alone.logits,
                                       atol=1e-4, rtol=1e-4)
    first = state.positions[0, 0]  # the shortest prompt's first generated position
    leaked = (unmasked[0, first] - together.logits[0, 0]).abs().max()
    assert float(leaked) > 1e-2  # the mask, not luck, makes the rows independent
