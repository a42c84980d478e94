"""The final samples of a run as the report shows them: one card per particle.

    from fksteer.report.samples import sample_cards, THUMBNAIL_ABOVE
    cards = sample_cards(run, tree)       # per prompt: cards heaviest first

A card holds the particle's index, weight, reward, root (the initial particle it descends
from), whether it is the prompt's best, and either its text (the prompt kept apart) or its
image as a ``data:`` URI. Beyond ``THUMBNAIL_ABOVE`` particles per prompt, images are shrunk to
thumbnails of at most ``THUMBNAIL_SIZE`` pixels so that a K = 256 report stays small; below it
they are kept up to ``FULL_SIZE`` pixels. Small images are shown enlarged by the page (CSS), not
re-encoded larger.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

__all__ = ["SampleCard", "sample_cards", "data_uri", "THUMBNAIL_ABOVE", "THUMBNAIL_SIZE"]

THUMBNAIL_ABOVE = 32
THUMBNAIL_SIZE = 64
FULL_SIZE = 256


@dataclass(frozen=True)
class SampleCard:
    """One final particle of one prompt, ready for the page."""

    prompt: str
    group: int
    particle: int
    weight: float
    reward: float | None
    root: int
    best: bool
    text: str | None = None
    image: str | None = None  # a data: URI


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:`` URI of ``data``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _image(data: bytes, max_size: int) -> str:
    """The PNG ``data`` as a data: URI, shrunk to ``max_size`` pixels on its long side."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    if max(image.size) <= max_size:
        return data_uri(data)
    image.thumbnail((max_size, max_size), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return data_uri(buffer.getvalue())


def sample_cards(run: Any, tree: Any) -> list[list[SampleCard]]:
    """For each prompt, its K cards ordered by weight, heaviest first."""
    size = THUMBNAIL_SIZE if run.num_particles > THUMBNAIL_ABOVE else FULL_SIZE
    roots = tree.final_roots()  # (G, K)
    cards = []
    for group, prompt in enumerate(run.prompts):
        row = []
        for record in run.group(group):
            image = None
            if "path" in record:
                image = _image((run.path / record["path"]).read_bytes(), size)
            row.append(SampleCard(
                prompt=prompt, group=group, particle=int(record["particle"]),
                weight=float(record["weight"] or 0.0), reward=record.get("reward"),
                root=int(roots[group, record["particle"]]), best=bool(record.get("best")),
                text=record.get("text"), image=image,
            ))
        cards.append(row)
    return cards
