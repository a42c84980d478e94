"""The embedded image models' UNet in plain torch: diffusers' ``UNet2DModel``, its weights.

    from fksteer.embedded.unet import EmbeddedUNet
    unet = EmbeddedUNet.from_pretrained(folder)         # a UNet2DModel folder (config.json)
    eps = unet(x, t, class_labels=y, return_dict=False)[0]

It mirrors diffusers' ``UNet2DModel`` (diffusers 0.42, ``models/unets/unet_2d.py``) for the block
types the embedded configurations use, operation for operation, so that it reads the same
safetensors file under the same parameter names and gives the same outputs:
``DownBlock2D``, ``AttnDownBlock2D``, ``UNetMidBlock2D`` (with attention), ``AttnUpBlock2D`` and
``UpBlock2D``; positional (sinusoidal) timestep embeddings; an ``nn.Embedding`` of class labels
added to the time embedding; ``"default"`` time conditioning (the projected embedding added
before the second group norm); strided-conv down-sampling and nearest x2 + conv up-sampling.
Any other configuration is refused with a ValueError naming the key.

Loading it costs the import of torch only, where diffusers' class pulls in most of diffusers
(and torch._dynamo): the embedded commands start several seconds sooner.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EmbeddedUNet", "ModelConfig", "UNetOutput", "check_unet_config"]


class ModelConfig(dict):
    """A configuration read from ``config.json``: a dict whose keys are also attributes (as
    diffusers' ``FrozenDict``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class UNetOutput:
    """The output of :class:`EmbeddedUNet` with ``return_dict=True``."""

    sample: torch.Tensor


#: configuration key -> the only values this UNet implements (those of the embedded models)
_FIXED = {
    "_class_name": ("UNet2DModel",),
    "act_fn": ("silu",),
    "add_attention": (True,),
    "attn_norm_num_groups": (None,),
    "center_input_sample": (False,),
    "class_embed_type": (None,),
    "downsample_type": ("conv",),
    "dropout": (0.0,),
    "mid_block_type": ("UNetMidBlock2D",),
    "resnet_time_scale_shift": ("default",),
    "time_embedding_dim": (None,),
    "time_embedding_type": ("positional",),
    "upsample_type": ("conv",),
}
_BLOCKS = {"DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"}


def check_unet_config(config: dict) -> None:
    """Refuse a configuration this UNet does not implement (ValueError naming the key)."""
    for key, allowed in _FIXED.items():
        if config.get(key) not in allowed:
            raise ValueError(
                f"UNet config {key}={config.get(key)!r}: fksteer's embedded UNet implements only "
                f"{allowed[0]!r}; load this model with diffusers.UNet2DModel."
            )
    for key in ("down_block_types", "up_block_types"):
        unknown = set(config[key]) - _BLOCKS
        if unknown:
            raise ValueError(
                f"UNet config {key} has {sorted(unknown)}: fksteer's embedded UNet implements "
                f"{', '.join(sorted(_BLOCKS))}; load this model with diffusers.UNet2DModel."
            )


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool, shift: float
) -> torch.Tensor:
    """Sinusoidal embeddings (N, dim) of timesteps (N,) (Ho et al. 2020; Vaswani et al. 2017).

    Frequency k is exp(-ln(10000) k / (dim/2 - shift)); the first half of the output is sin(t f),
    the second cos(t f), swapped when ``flip_sin_to_cos`` (diffusers' ``get_timestep_embedding``).
    """
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(
        0, half, dtype=torch.float32, device=timesteps.device
    )
    frequencies = torch.exp(exponent / (half - shift))
    angles = timesteps[:, None].float() * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if flip_sin_to_cos:
        embedding = torch.cat([embedding[:, half:], embedding[:, :half]], dim=-1)
    if dim % 2 == 1:
        embedding = F.pad(embedding, (0, 1, 0, 0))
    return embedding


class TimestepEmbedding(nn.Module):
    """linear -> SiLU -> linear of the sinusoidal embedding."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        """The time embedding (N, out_dim)."""
        return self.linear_2(self.act(self.linear_1(sample)))


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv, + projected time embedding, GroupNorm-SiLU-conv, + (1x1-conv) skip."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        groups: int,
        eps: float,
        output_scale_factor: float = 1.0,
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nonlinearity = nn.SiLU()
        self.conv_shortcut = None
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(
                in_channels, out_channels, kernel_size=1, stride=1, padding=0
            )
        self.output_scale_factor = output_scale_factor

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """(input + F(input, temb)) / output_scale_factor."""
        hidden = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
        hidden = hidden + self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        hidden = self.conv2(self.nonlinearity(self.norm2(hidden)))  # dropout 0: the identity
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return (input_tensor + hidden) / self.output_scale_factor


class Attention(nn.Module):
    """Self-attention over the H*W positions after a GroupNorm, with a residual connection.

    softmax(q k^T / sqrt(d)) v per head (``scaled_dot_product_attention``), heads = C / head_dim,
    then a linear projection; the output is (x + attention) / rescale_output_factor.
    """

    def __init__(
        self,
        channels: int,
        head_dim: int,
        groups: int,
        eps: float,
        rescale_output_factor: float = 1.0,
    ):
        super().__init__()
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps, affine=True)
        self.to_q = nn.Linear(channels, channels, bias=True)
        self.to_k = nn.Linear(channels, channels, bias=True)
        self.to_v = nn.Linear(channels, channels, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels, bias=True)])
        self.rescale_output_factor = rescale_output_factor

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The attended feature map, shape of the input (B, C, H, W)."""
        residual = hidden_states
        batch, channels, height, width = hidden_states.shape
        hidden = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        hidden = self.group_norm(hidden.transpose(1, 2)).transpose(1, 2)
        query, key, value = self.to_q(hidden), self.to_k(hidden), self.to_v(hidden)
        head_dim = key.shape[-1] // self.heads
        query, key, value = (
            tensor.view(batch, -1, self.heads, head_dim).transpose(1, 2)
            for tensor in (query, key, value)
        )
        hidden = F.scaled_dot_product_attention(
            query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False
        )
        hidden = hidden.transpose(1, 2).reshape(batch, -1, self.heads * head_dim)
        hidden = self.to_out[0](hidden.to(query.dtype))
        hidden = hidden.transpose(-1, -2).reshape(batch, channels, height, width)
        return (hidden + residual) / self.rescale_output_factor


class Downsample(nn.Module):
    """A 3x3 convolution of stride 2."""

    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The map at half the resolution."""
        if self.padding == 0:
            hidden_states = F.pad(hidden_states, (0, 1, 0, 1), mode="constant", value=0)
        return self.conv(hidden_states)


class Upsample(nn.Module):
    """Nearest-neighbour x2 up-sampling, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The map at twice the resolution."""
        if hidden_states.shape[0] >= 64:
            hidden_states = hidden_states.contiguous()
        return self.conv(F.interpolate(hidden_states, scale_factor=2.0, mode="nearest"))


def _attention_layers(channels: int, count: int, shape: dict[str, Any]) -> nn.ModuleList:
    """``count`` attention layers over ``channels``, one after each resnet of an Attn block."""
    return nn.ModuleList(
        [
            Attention(channels, shape["head_dim"] or channels, shape["groups"], shape["eps"])
            for _ in range(count)
        ]
    )


class DownBlock(nn.Module):
    """Resnet blocks (each followed by attention in ``AttnDownBlock2D``), then a down-sampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        attention: bool,
        add_downsample: bool,
        shape: dict[str, Any],
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    shape["temb"],
                    shape["groups"],
                    shape["eps"],
                )
                for i in range(num_layers)
            ]
        )
        self.attentions = _attention_layers(out_channels, num_layers, shape) if attention else None
        self.downsamplers = (
            nn.ModuleList([Downsample(out_channels, shape["padding"])]) if add_downsample else None
        )

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor):
        """The block's output and every state the up path concatenates back (skip connections)."""
        states = ()
        for index, resnet in enumerate(self.resnets):
            hidden = resnet(hidden, temb)
            if self.attentions is not None:
                hidden = self.attentions[index](hidden)
            states = states + (hidden,)
        if self.downsamplers is not None:
            hidden = self.downsamplers[0](hidden)
            states = states + (hidden,)
        return hidden, states


class MidBlock(nn.Module):
    """resnet, then (attention, resnet) at the lowest resolution."""

    def __init__(self, channels: int, shape: dict[str, Any], output_scale_factor: float):
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock(
                    channels,
                    channels,
                    shape["temb"],
                    shape["groups"],
                    shape["eps"],
                    output_scale_factor,
                )
                for _ in range(2)
            ]
        )
        self.attentions = nn.ModuleList(
            [
                Attention(
                    channels,
                    shape["head_dim"] or channels,
                    shape["groups"],
                    shape["eps"],
                    output_scale_factor,
                )
            ]
        )

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """The mid block's output."""
        hidden = self.resnets[0](hidden, temb)
        return self.resnets[1](self.attentions[0](hidden), temb)


class UpBlock(nn.Module):
    """Resnet blocks over [hidden, skip] (each followed by attention in ``AttnUpBlock2D``), then
    an up-sampler."""

    def __init__(
        self,
        channels: tuple[int, int, int],
        num_layers: int,
        attention: bool,
        add_upsample: bool,
        shape: dict[str, Any],
    ):
        super().__init__()
        in_channels, previous_channels, out_channels = channels
        self.resnets = nn.ModuleList(
            [
                ResnetBlock(
                    (previous_channels if i == 0 else out_channels)
                    + (in_channels if i == num_layers - 1 else out_channels),
                    out_channels,
                    shape["temb"],
                    shape["groups"],
                    shape["eps"],
                )
                for i in range(num_layers)
            ]
        )
        self.attentions = _attention_layers(out_channels, num_layers, shape) if attention else None
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if add_upsample else None

    def forward(self, hidden: torch.Tensor, skips: tuple, temb: torch.Tensor) -> torch.Tensor:
        """The block's output from the path below and the down path's ``skips`` (last first)."""
        for index, resnet in enumerate(self.resnets):
            hidden = torch.cat([hidden, skips[-1]], dim=1)
            skips = skips[:-1]
            hidden = resnet(hidden, temb)
            if self.attentions is not None:
                hidden = self.attentions[index](hidden)
        if self.upsamplers is not None:
            hidden = self.upsamplers[0](hidden)
        return hidden


class EmbeddedUNet(nn.Module):
    """diffusers' ``UNet2DModel`` for the embedded configurations (see the module docstring).

    Called as the diffusers model is: ``unet(sample, timestep, class_labels, return_dict)``;
    ``config`` holds the configuration (keys also as attributes), ``device`` and ``dtype``
    those of the parameters.
    """

    def __init__(self, config: dict):
        super().__init__()
        check_unet_config(config)
        self.config = ModelConfig(config)
        channels = list(config["block_out_channels"])
        temb = channels[0] * 4
        shape = {
            "temb": temb,
            "groups": config["norm_num_groups"],
            "eps": config["norm_eps"],
            "head_dim": config["attention_head_dim"],
            "padding": config["downsample_padding"],
        }
        layers = config["layers_per_block"]
        self.conv_in = nn.Conv2d(config["in_channels"], channels[0], kernel_size=3, padding=(1, 1))
        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.class_embedding = (
            None
            if config.get("num_class_embeds") is None
            else nn.Embedding(config["num_class_embeds"], temb)
        )
        last = len(channels) - 1
        self.down_blocks = nn.ModuleList(
            [
                DownBlock(
                    channels[max(i - 1, 0)],
                    channels[i],
                    layers,
                    kind == "AttnDownBlock2D",
                    i != last,
                    shape,
                )
                for i, kind in enumerate(config["down_block_types"])
            ]
        )
        self.mid_block = MidBlock(channels[-1], shape, config["mid_block_scale_factor"])
        up = channels[::-1]
        self.up_blocks = nn.ModuleList(
            [
                UpBlock(
                    (up[min(i + 1, last)], up[max(i - 1, 0)], up[i]),
                    layers + 1,
                    kind == "AttnUpBlock2D",
                    i != last,
                    shape,
                )
                for i, kind in enumerate(config["up_block_types"])
            ]
        )
        self.conv_norm_out = nn.GroupNorm(
            config["norm_num_groups"], channels[0], eps=config["norm_eps"]
        )
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], config["out_channels"], kernel_size=3, padding=1)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> EmbeddedUNet:
        """The UNet of a diffusers ``UNet2DModel`` folder (``config.json`` and
        ``diffusion_pytorch_model.safetensors``), in eval mode on the CPU."""
        from safetensors.torch import load_file

        folder = Path(folder)
        unet = cls(json.loads((folder / "config.json").read_text()))
        unet.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"))
        return unet.eval()

    @property
    def device(self) -> torch.device:
        """The parameters' device."""
        return self.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype."""
        return self.conv_in.weight.dtype

    def _embedding(self, sample: torch.Tensor, timestep: Any, class_labels: Any) -> torch.Tensor:
        """Time embedding (+ class embedding) (B, 4 C0) for ``timestep`` broadcast to the batch."""
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], dtype=torch.long, device=sample.device)
        elif len(timesteps.shape) == 0:
            timesteps = timesteps[None].to(sample.device)
        timesteps = timesteps * torch.ones(
            sample.shape[0], dtype=timesteps.dtype, device=timesteps.device
        )
        config = self.config
        t_emb = timestep_embedding(
            timesteps, config.block_out_channels[0], config.flip_sin_to_cos, config.freq_shift
        )
        emb = self.time_embedding(t_emb.to(dtype=self.dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("class_labels should be provided when doing class conditioning")
            emb = emb + self.class_embedding(class_labels).to(dtype=self.dtype)
        elif class_labels is not None:
            raise ValueError("this UNet has no class embedding: pass class_labels=None.")
        return emb

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Any,
        class_labels: Any = None,
        return_dict: bool = True,
    ):
        """The model output (epsilon) for ``sample`` (B, C, H, W) at ``timestep``, as
        ``(output,)`` or a :class:`UNetOutput`."""
        emb = self._embedding(sample, timestep, class_labels)
        sample = self.conv_in(sample)
        skips = (sample,)
        for block in self.down_blocks:
            sample, states = block(sample, emb)
            skips += states
        sample = self.mid_block(sample, emb)
        for block in self.up_blocks:
            count = len(block.resnets)
            sample = block(sample, skips[-count:], emb)
            skips = skips[:-count]
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        return UNetOutput(sample=sample) if return_dict else (sample,)
