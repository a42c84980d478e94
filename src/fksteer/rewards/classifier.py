"""Log-probability of a target class under any torch classifier.

    from fksteer.rewards.classifier import ClassifierLogProb
    reward = ClassifierLogProb(net, target_class=3)            # log p(y = 3 | x)
    reward = ClassifierLogProb(net, labels=["cat", "dog"])     # the class named by each prompt

``classifier`` is an ``nn.Module`` (moved to the reward's device, put in eval mode) or any
callable mapping a batch to logits ``(B, num_classes)``. ``transform`` (optional) maps the decoded
batch to the classifier's input first (resize, normalise, flatten). The target is one class for
every sample, or, with ``target_class=None``, each sample's prompt: an int, or a label looked up
in ``labels``. With ``lambda = 1`` the tilt p(x) p(y | x) is the class-conditional p(x | y)
(classifier guidance without gradients). Pure torch: no extra needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fksteer.rewards.base import RewardModel

__all__ = ["ClassifierLogProb"]

_OUTPUTS = ("log_prob", "prob", "logit")


class ClassifierLogProb(RewardModel):
    """``log softmax(classifier(transform(x)))[target]`` per sample (or the prob, or the logit)."""

    name = "classifier"

    def __init__(
        self,
        classifier: torch.nn.Module | Callable[[Any], torch.Tensor],
        *,
        target_class: int | None = None,
        labels: Sequence[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        output: str = "log_prob",
        batch_size: int | None = 256,
        device: str | torch.device | None = None,
    ):
        if not callable(classifier):
            raise TypeError(
                f"classifier must be an nn.Module or a callable returning logits: got "
                f"{type(classifier).__name__}."
            )
        if output not in _OUTPUTS:
            raise ValueError(f"output={output!r}: pass one of {_OUTPUTS}.")
        if target_class is not None and (not isinstance(target_class, int) or target_class < 0):
            raise ValueError(f"target_class={target_class!r}: pass a class index >= 0 or None.")
        super().__init__(batch_size=batch_size, device=device)
        self.classifier = classifier
        if isinstance(classifier, torch.nn.Module):
            classifier.to(self.device).eval()
        self.target_class = target_class
        self.labels = list(labels) if labels is not None else None
        self.transform = transform
        self.output = output

    def _targets(self, prompts: Sequence[Any] | None, batch: int) -> torch.Tensor:
        if self.target_class is not None:
            return torch.full((batch,), self.target_class, dtype=torch.long)
        if prompts is None:
            raise ValueError(
                "ClassifierLogProb(target_class=None) reads the class from each prompt, but the "
                "run gave no prompts: pass target_class=... or prompts."
            )
        targets = []
        for prompt in prompts:
            if isinstance(prompt, int) or (isinstance(prompt, str) and prompt.isdigit()):
                targets.append(int(prompt))
            elif self.labels is not None and prompt in self.labels:
                targets.append(self.labels.index(prompt))
            else:
                raise ValueError(
                    f"prompt {prompt!r} names no class: use a class index, or one of "
                    f"labels={self.labels}."
                )
        return torch.tensor(targets, dtype=torch.long)

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """log p(the prompt's class | sample) for each sample."""
        inputs = samples.to(self.device) if isinstance(samples, torch.Tensor) else samples
        if self.transform is not None:
            inputs = self.transform(inputs)
        logits = torch.as_tensor(self.classifier(inputs)).float()  # (B, C)
        if logits.ndim != 2 or logits.shape[0] != len(samples):
            raise ValueError(
                f"the classifier returned shape {tuple(logits.shape)} for {len(samples)} "
                "samples: it must return logits (B, num_classes)."
            )
        targets = self._targets(prompts, logits.shape[0]).to(logits.device)  # (B,)
        if targets.numel() and int(targets.max()) >= logits.shape[1]:
            raise ValueError(
                f"target class {int(targets.max())} is out of range for {logits.shape[1]} classes."
            )
        if self.output == "logit":
            values = logits
        else:
            values = torch.log_softmax(logits.double(), dim=1)
            if self.output == "prob":
                values = values.exp()
        return values.gather(1, targets[:, None])[:, 0]
