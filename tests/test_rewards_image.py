"""Image rewards on tiny random-weight builds of the real architectures (no download, no mock).

CLIP score and PickScore run a transformers ``CLIPModel`` saved to a folder; HPS v2.1 loads an
open_clip-layout checkpoint, checked against an independent open_clip-style forward written here;
the aesthetic head and ImageReward load checkpoints in their published layouts.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from fksteer.rewards import load_reward
from fksteer.rewards.aesthetic import LAIONAesthetic
from fksteer.rewards.clip import CLIPScore, HPSv2, PickScore
from fksteer.rewards.hub import WeightsNotFoundError
from fksteer.rewards.image_reward import IMAGE_REWARD_MEAN, IMAGE_REWARD_STD, ImageReward
from fksteer.rewards.preprocess import ImageTransform, preprocess_images
from fksteer.rewards.similarity import minilm_path

LETTERS = "abcdefghijklmnopqrstuvwxyz"
PROMPTS = ["a red cat", "blue sky", "a dog", "green tree"]


@pytest.fixture(scope="module")
def clip_tokenizer_files(tmp_path_factory):
    """A CLIP BPE tokenizer over single letters; <|endoftext|> is the last id, as in CLIP."""
    folder = tmp_path_factory.mktemp("clip-tokenizer")
    tokens = list(LETTERS) + [c + "</w>" for c in LETTERS] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.save_pretrained(folder)
    return folder, tokenizer, len(tokens)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory, clip_tokenizer_files):
    from transformers import CLIPConfig, CLIPModel

    _, tokenizer, vocab = clip_tokenizer_files
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=vocab,
            max_position_embeddings=16,
            eos_token_id=vocab - 1,
            bos_token_id=vocab - 2,
            pad_token_id=vocab - 1,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    folder = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def images(count: int, seed: int = 0, size: int = 40) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_torch_preprocessing_matches_the_official_clip_processor():
    from transformers import CLIPImageProcessor

    batch = images(3, size=48)[:, :, :, :40]  # (3, 3, 48, 40): not square
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_convert_rgb=False
    )
    pil_input = [(x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for x in batch]
    official = processor(images=pil_input, return_tensors="pt")["pixel_values"]
    ours = preprocess_images(batch, ImageTransform.transformers_clip(32), "fast")
    assert ours.shape == official.shape == (3, 3, 32, 32)
    # PIL and torch bicubic kernels differ slightly; normalised values span about [-2, 2]
    assert (ours - official).abs().mean() < 0.05


def direct_cosines(model, tokenizer, batch, prompts):
    pixels = preprocess_images(batch, ImageTransform.transformers_clip(32))
    with torch.no_grad():
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        cos = []
        for i, prompt in enumerate(prompts):  # one prompt at a time: no padding
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            text = model.text_projection(model.text_model(input_ids=ids).pooler_output)[0]
            cos.append(F.cosine_similarity(image[i], text, dim=0))
    return torch.stack(cos).double()


def test_clip_score_and_pickscore_match_direct_computation(tiny_clip):
    folder, model, tokenizer = tiny_clip
    batch = images(4)
    expected = direct_cosines(model, tokenizer, batch, PROMPTS)
    clip = CLIPScore(folder, device="cpu", batch_size=3)
    torch.testing.assert_close(clip(batch, PROMPTS), 100 * expected.clamp(min=0), atol=1e-4, rtol=0)
    raw = CLIPScore(folder, device="cpu", clamp=False, scale=1.0)
    torch.testing.assert_close(raw(batch, PROMPTS), expected, atol=1e-6, rtol=0)
    pick = load_reward("pickscore", model=folder, tokenizer=folder, device="cpu")
    scale = model.logit_scale.exp().item()
    torch.testing.assert_close(pick(batch, PROMPTS), scale * expected, atol=1e-4, rtol=0)
    # pairing: permuting (image, prompt) pairs permutes the scores
    order = [2, 0, 3, 1]
    torch.testing.assert_close(
        raw(batch[order], [PROMPTS[i] for i in order]), expected[order], atol=1e-6, rtol=0
    )
    # grey images and uint8 images are accepted
    assert raw(batch[:, :1], PROMPTS).shape == (4,)
    with pytest.raises(ValueError, match="prompts"):
        raw(batch, None)


# -- HPS v2.1: an open_clip-layout checkpoint -----------------------------------------------------


def open_clip_state(
    vocab: int,
    context: int,
    width: int = 32,
    layers: int = 2,
    patch: int = 8,
    image: int = 32,
    embed: int = 16,
) -> dict[str, torch.Tensor]:
    """Random weights named and shaped as open_clip/OpenAI ViT CLIP stores them."""
    g = torch.Generator().manual_seed(1)

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    state = {
        "visual.class_embedding": rand(width),
        "visual.positional_embedding": rand((image // patch) ** 2 + 1, width),
        "visual.conv1.weight": rand(width, 3, patch, patch),
        "visual.ln_pre.weight": 1 + rand(width),
        "visual.ln_pre.bias": rand(width),
        "visual.ln_post.weight": 1 + rand(width),
        "visual.ln_post.bias": rand(width),
        "visual.proj": rand(width, embed),
        "token_embedding.weight": rand(vocab, width),
        "positional_embedding": rand(context, width),
        "ln_final.weight": 1 + rand(width),
        "ln_final.bias": rand(width),
        "text_projection": rand(width, embed),
        "logit_scale": torch.tensor(math.log(100.0)),
        "attn_mask": torch.full((context, context), float("-inf")).triu(1),
    }
    for tower in ("visual.transformer.resblocks.", "transformer.resblocks."):
        for i in range(layers):
            p = f"{tower}{i}."
            state.update(
                {
                    p + "ln_1.weight": 1 + rand(width),
                    p + "ln_1.bias": rand(width),
                    p + "attn.in_proj_weight": rand(3 * width, width),
                    p + "attn.in_proj_bias": rand(3 * width),
                    p + "attn.out_proj.weight": rand(width, width),
                    p + "attn.out_proj.bias": rand(width),
                    p + "ln_2.weight": 1 + rand(width),
                    p + "ln_2.bias": rand(width),
                    p + "mlp.c_fc.weight": rand(4 * width, width),
                    p + "mlp.c_fc.bias": rand(4 * width),
                    p + "mlp.c_proj.weight": rand(width, 4 * width),
                    p + "mlp.c_proj.bias": rand(width),
                }
            )
    return state


def reference_block(x, s, p, heads, causal):
    """open_clip's ResidualAttentionBlock, written out: x (B, L, W)."""
    B, L, W = x.shape
    h = F.layer_norm(x, (W,), s[p + "ln_1.weight"], s[p + "ln_1.bias"])
    q, k, v = (h @ s[p + "attn.in_proj_weight"].T + s[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
    q, k, v = (t.reshape(B, L, heads, W // heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(W // heads)  # (B, heads, L, L)
    if causal:
        scores = scores + torch.full((L, L), float("-inf")).triu(1)
    attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, W)
    x = x + attn @ s[p + "attn.out_proj.weight"].T + s[p + "attn.out_proj.bias"]
    h = F.layer_norm(x, (W,), s[p + "ln_2.weight"], s[p + "ln_2.bias"])
    h = F.gelu(h @ s[p + "mlp.c_fc.weight"].T + s[p + "mlp.c_fc.bias"])
    return x + h @ s[p + "mlp.c_proj.weight"].T + s[p + "mlp.c_proj.bias"]


def reference_hps(s, pixels, token_rows, heads=2, layers=2):
    """HPS = <normalised image features, normalised text features>, open_clip style."""
    W = s["visual.class_embedding"].shape[0]
    patch = s["visual.conv1.weight"].shape[-1]
    x = F.conv2d(pixels, s["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([s["visual.class_embedding"].expand(len(x), 1, W), x], dim=1)
    x = F.layer_norm(
        x + s["visual.positional_embedding"],
        (W,),
        s["visual.ln_pre.weight"],
        s["visual.ln_pre.bias"],
    )
    for i in range(layers):
        x = reference_block(x, s, f"visual.transformer.resblocks.{i}.", heads, causal=False)
    image = F.layer_norm(x[:, 0], (W,), s["visual.ln_post.weight"], s["visual.ln_post.bias"])
    image = F.normalize(image @ s["visual.proj"], dim=-1)
    scores = []
    for i, ids in enumerate(token_rows):
        ids = torch.tensor([ids])
        t = s["token_embedding.weight"][ids] + s["positional_embedding"][: ids.shape[1]]
        for j in range(layers):
            t = reference_block(t, s, f"transformer.resblocks.{j}.", heads, causal=True)
        t = F.layer_norm(t, (W,), s["ln_final.weight"], s["ln_final.bias"])
        text = F.normalize(t[0, ids[0].argmax()] @ s["text_projection"], dim=-1)
        scores.append(image[i] @ text)
    return torch.stack(scores).double()


def test_hpsv2_loads_open_clip_weights_exactly(tmp_path, clip_tokenizer_files):
    tok_folder, tokenizer, vocab = clip_tokenizer_files
    state = open_clip_state(vocab, context=16)
    torch.save({"state_dict": state}, tmp_path / "HPS_v2.1_compressed.pt")
    reward = HPSv2(tmp_path, tokenizer=tok_folder, heads=(2, 2), device="cpu")
    batch = images(4, seed=5)
    values = reward(batch, PROMPTS)
    rows = [tokenizer(p)["input_ids"] for p in PROMPTS]
    pixels = preprocess_images(batch, ImageTransform.hps_evaluation(32))
    expected = reference_hps(state, pixels, rows)
    torch.testing.assert_close(values, expected, atol=1e-5, rtol=0)
    by_file = load_reward(
        "hpsv2",
        model=tmp_path / "HPS_v2.1_compressed.pt",
        tokenizer=tok_folder,
        heads=(2, 2),
        device="cpu",
    )
    torch.testing.assert_close(by_file(batch, PROMPTS), values)


# -- LAION aesthetic predictor ------------------------------------------------------------------


def test_aesthetic_head_on_clip_image_embeddings(tmp_path, tiny_clip):
    folder, model, _ = tiny_clip
    torch.manual_seed(2)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(16, 1024),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(1024, 128),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1),
    ).eval()
    torch.save({f"layers.{k}": v for k, v in mlp.state_dict().items()}, tmp_path / "head.pth")
    reward = LAIONAesthetic(tmp_path / "head.pth", clip=folder, device="cpu")
    batch = images(3, seed=7)
    with torch.no_grad():
        pixels = preprocess_images(batch, ImageTransform.torchvision_clip(32))
        pooled = model.vision_model(pixel_values=pixels).pooler_output
        features = F.normalize(model.visual_projection(pooled), dim=-1)
        expected = mlp(features)[:, 0].double()
    torch.testing.assert_close(reward(batch, None), expected, atol=1e-5, rtol=0)
    linear = torch.nn.Linear(16, 1)
    torch.save(linear.state_dict(), tmp_path / "linear.pth")
    with torch.no_grad():
        expected_linear = linear(features)[:, 0].double()
    linear_reward = LAIONAesthetic(tmp_path / "linear.pth", clip=folder, device="cpu")
    torch.testing.assert_close(linear_reward(batch, None), expected_linear, atol=1e-5, rtol=0)


# -- ImageReward: BLIP weights in the published layout ------------------------------------------


def blip_image_reward_state(
    vocab: int,
    width: int = 32,
    text_width: int = 32,
    layers: int = 2,
    patch: int = 8,
    image: int = 32,
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    s = {
        "blip.visual_encoder.cls_token": rand(1, 1, width),
        "blip.visual_encoder.pos_embed": rand(1, (image // patch) ** 2 + 1, width),
        "blip.visual_encoder.patch_embed.proj.weight": rand(width, 3, patch, patch),
        "blip.visual_encoder.patch_embed.proj.bias": rand(width),
        "blip.visual_encoder.norm.weight": 1 + rand(width),
        "blip.visual_encoder.norm.bias": rand(width),
        "blip.text_encoder.embeddings.word_embeddings.weight": rand(vocab, text_width),
        "blip.text_encoder.embeddings.position_embeddings.weight": rand(40, text_width),
        "blip.text_encoder.embeddings.LayerNorm.weight": 1 + rand(text_width),
        "blip.text_encoder.embeddings.LayerNorm.bias": rand(text_width),
        "blip.text_encoder.embeddings.position_ids": torch.arange(40)[None],
        "blip.vision_proj.weight": rand(8, width),  # unused by the score, present in the file
    }
    for i in range(layers):
        p = f"blip.visual_encoder.blocks.{i}."
        for name, shape in (
            ("norm1", (width,)),
            ("norm2", (width,)),
            ("attn.qkv", (3 * width, width)),
            ("attn.proj", (width, width)),
            ("mlp.fc1", (4 * width, width)),
            ("mlp.fc2", (width, 4 * width)),
        ):
            s[p + name + ".weight"] = (
                (1 + rand(*shape)) if name.startswith("norm") else rand(*shape)
            )
            s[p + name + ".bias"] = rand(shape[0])
    p = "blip.text_encoder.encoder.layer.0."
    for block, source_width in (("attention", text_width), ("crossattention", width)):
        for proj in ("query", "key", "value"):
            inputs = text_width if proj == "query" else source_width
            s[f"{p}{block}.self.{proj}.weight"] = rand(text_width, inputs)
            s[f"{p}{block}.self.{proj}.bias"] = rand(text_width)
        s[f"{p}{block}.output.dense.weight"] = rand(text_width, text_width)
        s[f"{p}{block}.output.dense.bias"] = rand(text_width)
        s[f"{p}{block}.output.LayerNorm.weight"] = 1 + rand(text_width)
        s[f"{p}{block}.output.LayerNorm.bias"] = rand(text_width)
    s[p + "intermediate.dense.weight"] = rand(64, text_width)
    s[p + "intermediate.dense.bias"] = rand(64)
    s[p + "output.dense.weight"] = rand(text_width, 64)
    s[p + "output.dense.bias"] = rand(text_width)
    s[p + "output.LayerNorm.weight"] = 1 + rand(text_width)
    s[p + "output.LayerNorm.bias"] = rand(text_width)
    for index, (n_in, n_out) in zip(
        (0, 2, 4, 6, 7),
        ((text_width, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)),
        strict=True,
    ):
        s[f"mlp.layers.{index}.weight"] = rand(n_out, n_in, scale=0.5)
        s[f"mlp.layers.{index}.bias"] = rand(n_out)
    return s


def test_image_reward_loads_the_published_layout(tmp_path):
    state = blip_image_reward_state(vocab=30524)
    torch.save(state, tmp_path / "ImageReward.pt")
    reward = ImageReward(tmp_path, heads=(2, 2), device="cpu", batch_size=2)
    vision, text, head, _ = reward.model
    # every published tensor landed where transformers' BLIP expects it
    vision_state, text_state = vision.state_dict(), text.state_dict()
    assert torch.equal(
        vision_state["encoder.layers.1.self_attn.qkv.weight"],
        state["blip.visual_encoder.blocks.1.attn.qkv.weight"],
    )
    assert torch.equal(
        vision_state["embeddings.position_embedding"], state["blip.visual_encoder.pos_embed"]
    )
    key = "encoder.layer.0.crossattention.self.key.weight"
    assert torch.equal(text_state[key], state["blip.text_encoder." + key])
    batch = images(4, seed=9)
    values = reward(batch, PROMPTS)
    assert values.shape == (4,) and bool(torch.isfinite(values).all())
    # batch-invariant (padding of the prompts), image-dependent, standardised head output
    single = torch.cat([reward(batch[i : i + 1], PROMPTS[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(values, single, atol=1e-5, rtol=1e-5)
    same_prompt = reward(batch, [PROMPTS[0]] * 4)
    assert same_prompt.std() > 1e-4  # cross-attention reads the image
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(str(minilm_path()))
    encoded = tokenizer(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        pixels = preprocess_images(batch[:1], ImageTransform.torchvision_clip(32))
        image_states = vision(pixel_values=pixels).last_hidden_state
        cls = text(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            encoder_hidden_states=image_states,
            is_decoder=False,
        ).last_hidden_state[:, 0]
        expected = (head(cls)[0, 0].item() - IMAGE_REWARD_MEAN) / IMAGE_REWARD_STD
    assert values[0].item() == pytest.approx(expected, rel=1e-5)


def test_missing_weights_offline_say_what_to_download(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for reward, hint in (
        (
            ImageReward("no-such-org/image-reward", device="cpu"),
            "hf download no-such-org/image-reward ImageReward.pt",
        ),
        (CLIPScore("no-such-org/clip", device="cpu"), "hf download no-such-org/clip"),
        (PickScore("no-such-org/pick", device="cpu"), "hf download no-such-org/pick"),
    ):
        with pytest.raises(WeightsNotFoundError, match=hint):
            reward(images(1), ["a"])
    with pytest.raises(WeightsNotFoundError, match="has no file 'HPS_v2.1_compressed.pt'"):
        HPSv2(tmp_path, device="cpu")(images(1), ["a"])
