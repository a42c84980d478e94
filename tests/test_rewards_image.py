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

from fksteer.rewards import Combination, load_reward
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


def direct_cosines(model, tokenizer, pixels, prompts):
    """cos(image, prompt) under a transformers CLIPModel, from preprocessed pixels."""
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
    pixels = preprocess_images(batch, ImageTransform.transformers_clip(32))
    expected = direct_cosines(model, tokenizer, pixels, PROMPTS)
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


# -- preprocessing parity with the original packages ---------------------------------------------
#
# The originals read 8-bit images (files, or a diffusers pipeline's PIL output). Their transforms
# are reproduced here from their code, with PIL and torch only (torchvision does not load beside
# this torch build): OpenAI CLIP's torchvision transform (ImageReward, the LAION aesthetic
# predictor), transformers' own CLIPImageProcessor on PIL images (CLIP score, PickScore), and
# HPS v2.1's evaluation transform (its open_clip fork's ResizeMaxSize on a float tensor).
# Shapes: a downscale whose crop margin is odd (44x40 -> 35x32, margin 3: torchvision starts the
# crop at round(1.5) = 2, transformers at 1), an upscale (27x20 -> 43x32, margin 11), a wide one,
# and a square image that needs no resize.

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PARITY_SHAPES = [(44, 40), (27, 20), (40, 61), (32, 32)]


def parity_batch(shape, count=3, seed=11):
    """Smooth random images (low-frequency noise upsampled, plus a little fine noise) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 5, 5, generator=g)
    smooth = F.interpolate(coarse, size=shape, mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.rand(count, 3, *shape, generator=g)).clamp(0, 1)


def pil_images(batch):
    """The 8-bit images the originals read: rounded as diffusers' numpy_to_pil does."""
    import numpy as np
    from PIL import Image

    arrays = (batch.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def to_tensor(image):
    """torchvision's ToTensor of an 8-bit RGB PIL image."""
    import numpy as np

    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)


def normalised(x, mean=OPENAI_MEAN, std=OPENAI_STD):
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]



def reference_openai_clip(image, size):
    """Resize(size, BICUBIC), CenterCrop(size), RGB, ToTensor, Normalize on a PIL image."""
    from PIL import Image

    w, h = image.size
    # torchvision's Resize(int): the short side to size, the long side int(size * long / short)
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    image = image.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    return normalised(to_tensor(image))


def reference_transformers_clip(images, size):
    """transformers' CLIPImageProcessor (its PIL backend) on PIL images."""
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers < 5: the slow processor is the PIL one
        from transformers import CLIPImageProcessor as Processor
    processor = Processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return processor(images=images, return_tensors="pt")["pixel_values"]


def reference_hps_evaluation(image, size):
    """HPS v2.1's preprocess_val: RGB, ToTensor, ResizeMaxSize(size) (torchvision's tensor
    resize: antialiased bicubic, no clamp; then zero padding), Normalize."""
    x = to_tensor(image.convert("RGB"))
    height, width = x.shape[1:]
    scale = size / float(max(height, width))
    if scale != 1.0:
        new_size = tuple(round(dim * scale) for dim in (height, width))
        x = F.interpolate(x[None], size=new_size, mode="bicubic", align_corners=False,
                          antialias=True)[0]
        pad_h, pad_w = size - new_size[0], size - new_size[1]
        # torchvision's pad order [left, top, right, bottom] -> F.pad's (left, right, top, bottom)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    return normalised(x)


ORIGINALS = {
    "torchvision-clip": (
        ImageTransform.torchvision_clip(32),
        lambda images: torch.stack([reference_openai_clip(im, 32) for im in images]),
    ),
    "transformers-clip": (
        ImageTransform.transformers_clip(32),
        lambda images: reference_transformers_clip(images, 32),
    ),
    "hps-evaluation": (
        ImageTransform.hps_evaluation(32),
        lambda images: torch.stack([reference_hps_evaluation(im, 32) for im in images]),
    ),
}


@pytest.mark.parametrize("shape", PARITY_SHAPES)
@pytest.mark.parametrize("original", sorted(ORIGINALS))
def test_exact_preprocessing_reproduces_the_originals_pixels(original, shape):
    transform, reference = ORIGINALS[original]
    batch = parity_batch(shape)
    expected = reference(pil_images(batch))
    exact = preprocess_images(batch, transform, "exact")
    assert exact.shape == expected.shape == (3, 3, 32, 32)
    # the same 8-bit images, resize, crop or padding and arithmetic: measured bitwise equal
    assert (exact - expected).abs().max() <= 1e-6
    fast = preprocess_images(batch, transform, "fast")
    # the fast path: the same geometry, torch's bicubic on the float images (no 8-bit rounding).
    # 8-bit rounding alone moves a pixel by U(-0.5, 0.5)/255, 0.25/255/std ~ 0.0036 on average
    # in normalised units (measured 0.0036 on the square images); the resize adds about as
    # much (measured 0.005 at most): the bound is one grey level, 1/255/std ~ 0.015
    assert 0 < (fast - expected).abs().mean() < 0.015


def test_crop_offsets_follow_each_original():
    # 44x40 -> 35x32: margin 3; torchvision crops from round(1.5) = 2, transformers from 1
    batch = parity_batch((44, 40), count=1)
    torchvision_like = preprocess_images(batch, ImageTransform.torchvision_clip(32), "exact")
    transformers_like = preprocess_images(batch, ImageTransform.transformers_clip(32), "exact")
    torch.testing.assert_close(torchvision_like[..., :-1, :], transformers_like[..., 1:, :])
    assert not torch.allclose(torchvision_like, transformers_like)
    # HPS pads the short side: 44x40 -> 32x29, one black column left, two right
    hps = preprocess_images(batch, ImageTransform.hps_evaluation(32), "exact")
    black = normalised(torch.zeros(3, 1, 1))
    for column in (0, 30, 31):
        torch.testing.assert_close(hps[0, :, :, column], black[:, :, 0].expand(3, 32))
    assert not torch.allclose(hps[0, :, :, 1], black[:, :, 0].expand(3, 32))


def test_preprocessing_errors_name_the_choices():
    with pytest.raises(ValueError, match="'exact'.*'fast'"):
        preprocess_images(images(1), ImageTransform.torchvision_clip(32), "pil")
    with pytest.raises(ValueError, match="preprocessing='slow'"):
        ImageReward("unused", preprocessing="slow")
    with pytest.raises(ValueError, match="fit='stretch'"):
        ImageTransform(32, fit="stretch")


# Scores: every image reward with the exact path against its network run on the original's
# pixels (reproduced above), on non-square images that need resizing. Acceptance: 1e-4.

SCORE_SHAPES = [(44, 40), (27, 20)]


@pytest.mark.parametrize("shape", SCORE_SHAPES)
def test_clip_score_and_pickscore_exact_path_scores_the_originals_pixels(tiny_clip, shape):
    folder, model, tokenizer = tiny_clip
    batch = parity_batch(shape, count=4)
    pixels = reference_transformers_clip(pil_images(batch), 32)
    expected = direct_cosines(model, tokenizer, pixels, PROMPTS)
    raw = CLIPScore(folder, device="cpu", clamp=False, scale=1.0, preprocessing="exact")
    torch.testing.assert_close(raw(batch, PROMPTS), expected, atol=1e-4, rtol=0)
    pick = PickScore(folder, tokenizer=folder, device="cpu")  # default: fast
    scale = model.logit_scale.exp().item()
    torch.testing.assert_close(
        pick.final_reward(batch, PROMPTS), scale * expected, atol=1e-4, rtol=0
    )
    assert not torch.allclose(pick(batch, PROMPTS), scale * expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", SCORE_SHAPES)
def test_hpsv2_exact_path_scores_the_originals_pixels(tmp_path, clip_tokenizer_files, shape):
    tok_folder, tokenizer, vocab = clip_tokenizer_files
    state = open_clip_state(vocab, context=16)
    torch.save({"state_dict": state}, tmp_path / "HPS_v2.1_compressed.pt")
    batch = parity_batch(shape, count=4)
    pixels = torch.stack([reference_hps_evaluation(im, 32) for im in pil_images(batch)])
    rows = [tokenizer(p)["input_ids"] for p in PROMPTS]
    expected = reference_hps(state, pixels, rows)
    reward = HPSv2(tmp_path, tokenizer=tok_folder, heads=(2, 2), device="cpu")
    torch.testing.assert_close(reward.final_reward(batch, PROMPTS), expected, atol=1e-4, rtol=0)
    # the fast path pads too: it differs from the original by the 8-bit rounding only
    torch.testing.assert_close(reward(batch, PROMPTS), expected, atol=2e-2, rtol=0)


def aesthetic_mlp(width):
    torch.manual_seed(2)
    return torch.nn.Sequential(
        torch.nn.Linear(width, 1024),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(1024, 128),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1),
    ).eval()


@pytest.mark.parametrize("shape", SCORE_SHAPES)
def test_aesthetic_exact_path_scores_the_originals_pixels(tmp_path, tiny_clip, shape):
    folder, model, _ = tiny_clip
    mlp = aesthetic_mlp(16)
    torch.save({f"layers.{k}": v for k, v in mlp.state_dict().items()}, tmp_path / "head.pth")
    batch = parity_batch(shape, count=3)
    pixels = torch.stack([reference_openai_clip(im, 32) for im in pil_images(batch)])
    with torch.no_grad():
        pooled = model.vision_model(pixel_values=pixels).pooler_output
        expected = mlp(F.normalize(model.visual_projection(pooled), dim=-1))[:, 0].double()
    reward = LAIONAesthetic(tmp_path / "head.pth", clip=folder, device="cpu",
                            preprocessing="exact")
    torch.testing.assert_close(reward(batch, None), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", SCORE_SHAPES)
def test_image_reward_exact_path_scores_the_originals_pixels(tmp_path, shape):
    from transformers import BertTokenizerFast

    state = blip_image_reward_state(vocab=30524)
    state["mlp.layers.7.weight"] = state["mlp.layers.7.weight"] * 1e-3  # scores of order 1,
    state["mlp.layers.7.bias"] = torch.zeros(1)  # as the published model's (random: ~1000)
    torch.save(state, tmp_path / "ImageReward.pt")
    reward = ImageReward(tmp_path, heads=(2, 2), device="cpu", preprocessing="exact")
    vision, text, head, _ = reward.model
    tokenizer = BertTokenizerFast.from_pretrained(str(minilm_path()))
    batch = parity_batch(shape, count=4)
    pixels = torch.stack([reference_openai_clip(im, 32) for im in pil_images(batch)])
    expected = []
    with torch.no_grad():
        image_states = vision(pixel_values=pixels).last_hidden_state
        for i, prompt in enumerate(PROMPTS):  # one prompt at a time: no padding
            encoded = tokenizer([prompt], return_tensors="pt")
            cls = text(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                encoder_hidden_states=image_states[i : i + 1],
                is_decoder=False,
            ).last_hidden_state[:, 0]
            expected.append((head(cls)[0, 0] - IMAGE_REWARD_MEAN) / IMAGE_REWARD_STD)
    expected = torch.stack(expected).double()
    torch.testing.assert_close(reward(batch, PROMPTS), expected, atol=1e-4, rtol=0)


def test_final_reward_is_the_exact_twin_on_the_same_model(tmp_path, tiny_clip):
    folder, _, _ = tiny_clip
    torch.save({f"layers.{k}": v for k, v in aesthetic_mlp(16).state_dict().items()},
               tmp_path / "head.pth")
    aesthetic = LAIONAesthetic(tmp_path / "head.pth", clip=folder, device="cpu")
    clip = CLIPScore(folder, device="cpu")
    final = aesthetic.final_reward
    assert (aesthetic.preprocessing, final.preprocessing) == ("fast", "exact")
    assert final.final_reward is final and final.with_preprocessing("fast") is aesthetic
    assert final.model is aesthetic.model  # loaded once
    batch = parity_batch((44, 40), count=2)
    torch.testing.assert_close(
        final(batch, None),
        LAIONAesthetic(tmp_path / "head.pth", clip=folder, preprocessing="exact")(batch, None),
    )
    # sums take their components' final rewards; rewards without one stay themselves
    total = 2.0 * aesthetic + clip
    finals = total.final_reward.rewards
    assert [r.preprocessing for r in finals] == ["exact", "exact"]
    torch.testing.assert_close(
        total.final_reward(batch, PROMPTS[:2]),
        2.0 * final(batch, None) + clip.final_reward(batch, PROMPTS[:2]),
    )
    assert total.final_reward is total.final_reward  # built once: last_components readable
    worst = Combination([aesthetic, clip], reduce="min").final_reward
    assert [r.preprocessing for r in worst.rewards] == ["exact", "exact"]
    assert worst.final_reward is worst
    sentiment = load_reward("sentiment")
    assert sentiment.final_reward is sentiment
    assert (sentiment + 1.0).final_reward.rewards == [sentiment]
    # guidance differentiates the fast path, whatever the reward's own path
    x = batch.clone().requires_grad_(True)
    final.differentiable()(x, None).sum().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
