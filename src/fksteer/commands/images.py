"""PNG output of image runs: particle tiles and grids ordered by weight, best one framed.

    from fksteer.commands.images import to_pil_image, particle_row, grid, save_png
    row = particle_row(samples[g], weights[g], best=int(result.best[g]))   # one PIL image

Samples are float tensors (C, H, W) in [0, 1] with 1 or 3 channels. Small images are upscaled
(nearest neighbour) to at least ``MIN_TILE`` pixels so that 16x16 samples are visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = [
    "MIN_TILE", "to_pil_image", "particle_row", "grid", "labelled", "save_png", "text_tile"
]

MIN_TILE = 64
BEST_COLOUR = (230, 40, 40)
BORDER = 3
CAPTION = 24  # two lines of PIL's default font under each tile


def to_pil_image(sample: torch.Tensor, min_size: int = 0):
    """(C, H, W) in [0, 1] -> an RGB PIL image, upscaled by an integer factor to >= min_size."""
    from PIL import Image

    array = (sample.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    image = Image.fromarray(array[:3].permute(1, 2, 0).contiguous().numpy(), mode="RGB")
    scale = max(1, -(-min_size // max(image.size)))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return image


def particle_row(samples: torch.Tensor, weights: torch.Tensor, best: int | None = None,
                 rewards: torch.Tensor | None = None):
    """A row of K tiles (K, C, H, W) ordered by weight, heaviest first; ``best`` framed in red.

    With ``rewards`` (K,), each tile is captioned with its weight and reward (``w=0.52`` above
    ``r=-0.13``)."""
    from PIL import Image, ImageDraw

    order = torch.argsort(weights.double(), descending=True, stable=True).tolist()
    tiles = [to_pil_image(samples[k], MIN_TILE) for k in order]
    size = tiles[0].width + 2 * BORDER, tiles[0].height + 2 * BORDER
    caption = 0 if rewards is None else CAPTION
    row = Image.new("RGB", (size[0] * len(tiles), size[1] + caption), (255, 255, 255))
    draw = ImageDraw.Draw(row)
    for position, (k, tile) in enumerate(zip(order, tiles, strict=True)):
        if k == best:
            row.paste(Image.new("RGB", size, BEST_COLOUR), (position * size[0], 0))
        row.paste(tile, (position * size[0] + BORDER, BORDER))
        if rewards is not None:
            x, y = position * size[0] + BORDER, size[1]
            draw.text((x, y), f"w={float(weights[k]):.2f}", fill=(0, 0, 0))
            draw.text((x, y + CAPTION // 2), f"r={float(rewards[k]):.3g}", fill=(0, 0, 0))
    return row


def grid(rows: Sequence[Sequence], gap: int = 8):
    """Rows of images (each row a list of blocks), blocks separated by ``gap`` pixels."""
    from PIL import Image

    widths = [sum(block.width for block in row) + gap * (len(row) - 1) for row in rows]
    heights = [max(block.height for block in row) for row in rows]
    canvas = Image.new("RGB", (max(widths), sum(heights) + gap * (len(rows) - 1)), "white")
    y = 0
    for row, height in zip(rows, heights, strict=True):
        x = 0
        for block in row:
            canvas.paste(block, (x, y))
            x += block.width + gap
        y += height + gap
    return canvas


def labelled(image, text: str, height: int = 14):
    """``image`` with a line of text above it."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (max(image.width, 8 * len(text)), image.height + height), "white")
    ImageDraw.Draw(canvas).text((2, 1), text, fill=(0, 0, 0))
    canvas.paste(image, (0, height))
    return canvas


def save_png(image, path: str | Path) -> None:
    """Save ``image`` (PIL) as a PNG at ``path``, creating its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def text_tile(text: str, width: int, height: int):
    """A white tile of ``width`` x ``height`` with ``text`` at its left, vertically centred."""
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(tile).text((2, max(0, height // 2 - 6)), text, fill=(0, 0, 0))
    return tile
