"""Load an open_clip (OpenAI layout) CLIP state dict into a transformers ``CLIPModel``.

    from fksteer.rewards.open_clip_convert import clip_model_from_open_clip
    model = clip_model_from_open_clip(state_dict, vision_heads=16, text_heads=16)

open_clip and OpenAI's CLIP name a ViT CLIP's weights ``visual.conv1``, ``visual.transformer.
resblocks.N.attn.in_proj_weight`` (q, k and v stacked), ``token_embedding``, ``text_projection``
and so on; transformers' ``CLIPModel`` is the same network with other names, separate q/k/v
projections, and projections stored transposed. The sizes (widths, depths, patch, image and
context sizes, vocabulary) are read from the tensors' shapes; the head counts and the activation
are not recorded in a state dict and are arguments (open_clip's ViT-H-14: 16 and 16 heads, GELU;
OpenAI's models: ``hidden_act="quick_gelu"``). Only plain ViT towers without attention pooling are
supported (the OpenAI and LAION ViT-B/L/H/g models, HPS v2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fksteer.rewards.base import require

__all__ = ["clip_config_from_open_clip", "clip_model_from_open_clip", "convert_open_clip_state"]

_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def _strip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefixes = ("module.", "model.")
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _layers(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    indices = {int(key[len(prefix) :].split(".")[0]) for key in state if key.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def clip_config_from_open_clip(
    state: Mapping[str, torch.Tensor],
    *,
    vision_heads: int,
    text_heads: int,
    hidden_act: str = "gelu",
    layer_norm_eps: float = 1e-5,
) -> Any:
    """A ``CLIPConfig`` whose sizes are read from an open_clip state dict."""
    transformers = require("transformers", "rewards-hf", what="converting open_clip weights")
    state = _strip(state)
    if "visual.conv1.weight" not in state or "token_embedding.weight" not in state:
        raise ValueError(
            "this state dict is not an open_clip/OpenAI ViT CLIP (no visual.conv1.weight or "
            "token_embedding.weight); its first keys are " + ", ".join(list(state)[:5])
        )
    conv = state["visual.conv1.weight"]  # (W_v, 3, p, p)
    vision_width, patch = conv.shape[0], conv.shape[-1]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["token_embedding.weight"].shape[1]
    vision_config = {
        "hidden_size": vision_width,
        "intermediate_size": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": _layers(state, "visual.transformer.resblocks."),
        "num_attention_heads": vision_heads,
        "image_size": grid * patch,
        "patch_size": patch,
        "hidden_act": hidden_act,
        "layer_norm_eps": layer_norm_eps,
    }
    text_config = {
        "hidden_size": text_width,
        "intermediate_size": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": _layers(state, "transformer.resblocks."),
        "num_attention_heads": text_heads,
        "max_position_embeddings": state["positional_embedding"].shape[0],
        "vocab_size": state["token_embedding.weight"].shape[0],
        "hidden_act": hidden_act,
        "layer_norm_eps": layer_norm_eps,
        # pool at the end-of-text token, the highest id of CLIP's vocabulary (open_clip's argmax)
        "eos_token_id": state["token_embedding.weight"].shape[0] - 1,
        "bos_token_id": state["token_embedding.weight"].shape[0] - 2,
        "pad_token_id": 0,
    }
    return transformers.CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=state["text_projection"].shape[1],
    )


def _tower(state: dict[str, torch.Tensor], source: str, target: str, layers: int) -> dict:
    out = {}
    for i in range(layers):
        src, dst = f"{source}{i}.", f"{target}{i}."
        q, k, v = state[src + "attn.in_proj_weight"].chunk(3, dim=0)
        qb, kb, vb = state[src + "attn.in_proj_bias"].chunk(3, dim=0)
        for name, weight, bias in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            out[f"{dst}self_attn.{name}.weight"] = weight
            out[f"{dst}self_attn.{name}.bias"] = bias
        for old, new in _BLOCK.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{new}.{kind}"] = state[f"{src}{old}.{kind}"]
    return out


def convert_open_clip_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and split, transpose) an open_clip state dict into ``CLIPModel``'s names."""
    state = _strip(state)
    out = {
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
        "visual_projection.weight": state["visual.proj"].T.contiguous(),
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "text_projection.weight": state["text_projection"].T.contiguous(),
        "logit_scale": state["logit_scale"].reshape(()),
    }
    out.update(
        _tower(
            state,
            "visual.transformer.resblocks.",
            "vision_model.encoder.layers.",
            _layers(state, "visual.transformer.resblocks."),
        )
    )
    out.update(
        _tower(
            state,
            "transformer.resblocks.",
            "text_model.encoder.layers.",
            _layers(state, "transformer.resblocks."),
        )
    )
    return out


def clip_model_from_open_clip(
    state: Mapping[str, torch.Tensor],
    *,
    vision_heads: int,
    text_heads: int,
    hidden_act: str = "gelu",
) -> Any:
    """A ``CLIPModel`` holding the weights of an open_clip ViT CLIP state dict (float32)."""
    transformers = require("transformers", "rewards-hf", what="converting open_clip weights")
    config = clip_config_from_open_clip(
        state, vision_heads=vision_heads, text_heads=text_heads, hidden_act=hidden_act
    )
    model = transformers.CLIPModel(config)
    converted = {k: v.float() for k, v in convert_open_clip_state(state).items()}
    missing, unexpected = model.load_state_dict(converted, strict=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(
            f"the open_clip state dict does not fit CLIPModel: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}."
        )
    return model.eval()
