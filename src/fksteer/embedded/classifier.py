"""The small CNN classifiers of Fashion-MNIST 16x16: one steers, the other judges.

    from fksteer.embedded.classifier import FashionClassifier, load_classifier
    steering = load_classifier("steering")      # the reward of the image demos
    judge = load_classifier("judge")            # held out: used only for evaluation

The two are trained on disjoint halves of the training set (scripts/train_classifiers.py) with
different widths and seeds, so the judge is not fooled by the same quirks the steering reward
may reward. Both read images (B, 1, 16, 16) in [0, 1] and return logits (B, 10).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

__all__ = ["FashionClassifier", "load_classifier", "CLASSIFIER_DIR"]

CLASSIFIER_DIR = Path(__file__).resolve().parent / "weights"


class FashionClassifier(nn.Module):
    """conv-conv-pool-conv-pool-linear; ``width`` sets the channels (width, width, 2 width)."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        self.width = width
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(2 * width * 16, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, 10) of images (B, 1, 16, 16) in [0, 1]."""
        return self.head(self.features(images * 2 - 1))


def load_classifier(name: str, directory: Path | None = None) -> FashionClassifier:
    """The embedded classifier ``"steering"`` or ``"judge"``, in eval mode on the CPU."""
    from safetensors.torch import load_file

    folder = (directory or CLASSIFIER_DIR) / f"fashion16-classifier-{name}"
    if not folder.exists():
        raise FileNotFoundError(
            f"{folder} not found: valid names are 'steering' and 'judge' "
            "(train them with scripts/train_classifiers.py)."
        )
    config = json.loads((folder / "config.json").read_text())
    model = FashionClassifier(width=config["width"])
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval()
