"""Train the embedded Fashion-MNIST 16x16 classifiers on disjoint halves of the training set.

    python scripts/train_classifiers.py

``steering`` (width 32, seed 1) learns from one half, ``judge`` (width 48, seed 2) from the
other; both are scored on the 10,000 test images. Writes
src/fksteer/embedded/weights/fashion16-classifier-{steering,judge}/ (model.safetensors and
config.json with the test accuracy). Needs ``apt-get install dataset-fashion-mnist``.
"""

from __future__ import annotations

import json
import time

import torch
from safetensors.torch import save_file

from fksteer.embedded.classifier import CLASSIFIER_DIR, FashionClassifier
from fksteer.embedded.fashion import load_fashion

SETTINGS = {
    "steering": {"width": 32, "seed": 1, "half": 0},
    "judge": {"width": 48, "seed": 2, "half": 1},
}
EPOCHS = 6


def accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(chunk).argmax(1) for chunk in images.split(1000)])
    return float((predictions == labels).float().mean())


def main() -> None:
    images, labels = load_fashion("train")
    test_images, test_labels = load_fashion("test")
    halves = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).chunk(2)
    for name, settings in SETTINGS.items():
        start = time.time()
        torch.manual_seed(settings["seed"])
        generator = torch.Generator().manual_seed(settings["seed"])
        index = halves[settings["half"]]
        x, y = images[index], labels[index]
        model = FashionClassifier(width=settings["width"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
        steps = EPOCHS * (len(x) // 128)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
        for _ in range(EPOCHS):
            model.train()
            order = torch.randperm(len(x), generator=generator)
            for batch in order[: len(x) // 128 * 128].view(-1, 128):
                # light augmentation: random shifts of up to one pixel
                shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
                inputs = torch.roll(x[batch], shifts=shift, dims=(2, 3))
                loss = torch.nn.functional.cross_entropy(model(inputs), y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        test_accuracy = accuracy(model, test_images, test_labels)
        folder = CLASSIFIER_DIR / f"fashion16-classifier-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  folder / "model.safetensors")
        config = {**settings, "epochs": EPOCHS, "train_images": len(x),
                  "test_accuracy": test_accuracy, "seconds": time.time() - start}
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        print(name, config, flush=True)


if __name__ == "__main__":
    main()
