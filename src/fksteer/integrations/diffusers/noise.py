"""Gaussian noise drawn as diffusers draws it, without importing diffusers: `randn_tensor`.

    from fksteer.integrations.diffusers.noise import randn_tensor
    z = randn_tensor((8, 1, 16, 16), generator=g, device=device, dtype=torch.float32)

The same values as ``diffusers.utils.torch_utils.randn_tensor`` for the same generator state
(one ``torch.randn`` call of the whole shape, on the generator's device when it is a CPU
generator and the target another device, then moved), so that a pipeline's random stream is
reproduced exactly. Importing diffusers' helper imports most of diffusers (and torch._dynamo);
this one costs nothing.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["randn_tensor"]


def randn_tensor(
    shape: tuple[int, ...] | list[int],
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    layout: Any = None,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``device``, drawn from ``generator``.

    A list of generators draws one row of the batch from each; a CPU generator with another
    target device draws on the CPU and moves the result (as diffusers does); a CUDA generator
    for another device type is refused.
    """
    if isinstance(device, str):
        device = torch.device(device)
    rand_device = device
    layout = layout or torch.strided
    device = device or torch.device("cpu")
    if generator is not None:
        first = generator[0] if isinstance(generator, list) else generator
        if first.device.type != device.type and first.device.type == "cpu":
            rand_device = "cpu"
        elif first.device.type != device.type and first.device.type == "cuda":
            raise ValueError(f"Cannot generate a {device} tensor from a generator of type cuda.")
    if isinstance(generator, list) and len(generator) == 1:
        generator = generator[0]
    if isinstance(generator, list):
        row = (1, *shape[1:])
        rows = [
            torch.randn(row, generator=generator[i], device=rand_device, dtype=dtype, layout=layout)
            for i in range(shape[0])
        ]
        return torch.cat(rows, dim=0).to(device)
    return torch.randn(
        shape, generator=generator, device=rand_device, dtype=dtype, layout=layout
    ).to(device)
