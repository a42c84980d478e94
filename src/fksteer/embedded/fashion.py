"""Fashion-MNIST at 16x16: the data of the embedded image models, read from Debian's package.

    from fksteer.embedded.fashion import CLASS_NAMES, load_fashion

The Debian package ``dataset-fashion-mnist`` installs the IDX files under
/usr/share/datasets/fashion-mnist (``apt-get install dataset-fashion-mnist``). Images are
downsampled from 28x28 to 16x16 by area averaging and scaled to [0, 1].
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

__all__ = ["CLASS_NAMES", "FASHION_DIR", "load_fashion"]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Label names in label order; the prompts of the embedded image models.
CLASS_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion(split: str = "train", directory: Path = FASHION_DIR) -> tuple[torch.Tensor, ...]:
    """Images (N, 1, 16, 16) float32 in [0, 1] and labels (N,) int64 of ``split``.

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000).
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split={split!r}: choose 'train' or 'test'.")
    images_path = Path(directory) / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.exists():
        raise FileNotFoundError(
            f"{images_path} not found: install Fashion-MNIST with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu)."
        )
    images = torch.from_numpy(_read_idx(images_path).copy()).float().div_(255.0)
    labels = torch.from_numpy(_read_idx(Path(directory) / f"{prefix}-labels-idx1-ubyte.gz").copy())
    images = torch.nn.functional.interpolate(images[:, None], size=(16, 16), mode="area")
    return images, labels.long()
