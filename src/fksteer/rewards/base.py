"""The base class of the reward catalogue and the helpers every reward shares.

    from fksteer.rewards.base import RewardModel, FunctionReward

A reward (the engine's :class:`fksteer.smc.protocol.Reward`) is a callable
``reward(samples, prompts)`` on a flat batch of B decoded samples, returning one float per sample,
higher is better. Images arrive as a float tensor ``(B, C, H, W)`` in [0, 1]; texts as a list of B
strings; ``prompts`` is a list of B prompts or None.

:class:`RewardModel` gives every reward of the catalogue the same behaviour:

- it declares ``batch_size`` (the engine chunks for it) and ``__call__`` also chunks when called
  directly on a longer batch;
- it runs under ``torch.no_grad()`` and returns a float64 CPU tensor of shape ``(B,)``;
  :meth:`RewardModel.differentiable` gives the same score with its gradient, for guidance;
- it holds a ``device`` (the user's, or CUDA when available, else CPU), and loads its model lazily,
  once, through :func:`fksteer.rewards.cache.cached_model`;
- rewards add and scale: ``0.5 * a + b - c`` is a :class:`fksteer.rewards.compose.WeightedSum`;
- :attr:`RewardModel.final_reward` is the reward the engine applies to the final samples: the
  reward itself, except for the image rewards, whose final reward preprocesses images exactly as
  the original package does (:mod:`fksteer.rewards.preprocess`).

Heavy dependencies are imported inside the rewards that need them with :func:`require`, whose error
names the pip extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "FunctionReward",
    "RewardModel",
    "as_image_batch",
    "as_texts",
    "require",
    "resolve_device",
]


def require(module: str, extra: str | None, *, package: str | None = None, what: str = "") -> Any:
    """Import ``module`` or raise an ImportError that says how to install it.

    ``extra`` is the fksteer extra that provides it (``pip install 'fksteer[extra]'``); None for a
    package that is no extra (its own install step is then given by ``package``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        needed = f"{what} needs" if what else "this reward needs"
        if extra is not None:
            hint = f"pip install 'fksteer[{extra}]'"
        else:
            hint = f"pip install {package or module}"
        raise ImportError(
            f"{needed} the Python package {module!r}, which is not importable ({error}). "
            f"Install it with: {hint}"
        ) from error


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device the user named; None means CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device={device!r} is not a torch device: pass e.g. 'cpu', 'cuda' or 'cuda:1'."
        ) from error


def as_texts(samples: Any, what: str = "this reward") -> list[str]:
    """Check that ``samples`` is a batch of strings and return it as a list."""
    if isinstance(samples, str):
        raise TypeError(
            f"{what} scores a batch of texts: got one str; wrap it in a list, e.g. [text]."
        )
    items = list(samples)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(
                f"{what} scores texts: sample {i} is a {type(item).__name__}, not a str "
                "(decode token ids to strings before scoring)."
            )
    return items


def as_image_batch(samples: Any, what: str = "this reward", size: int | None = None
                   ) -> torch.Tensor:
    """A float image batch ``(B, 3, H, W)`` in [0, 1] from a tensor, or a list of tensors, PIL
    images or ``(H, W[, C])`` arrays (integer images are divided by 255).

    A tensor ``(B, C, H, W)`` with C = 1 (grey) is repeated to three channels; C = 4 drops alpha.
    Values are clamped to [0, 1] (decoders overshoot slightly). A list of images of different
    sizes is brought to the reward's input ``size``: each image's shorter side is resized to
    ``size`` (bicubic, antialiased) and its centre cropped to ``size`` x ``size``, as the CLIP
    family preprocesses one image; without ``size`` such a list is a ValueError.
    """
    if isinstance(samples, torch.Tensor):
        images = samples
    else:
        items = [_as_image_tensor(item) for item in samples]  # each (C, H, W)
        if not items:
            return torch.zeros(0, 3, 1, 1)
        if len({tuple(item.shape) for item in items}) > 1:
            if size is None:
                raise ValueError(
                    f"{what} got images of different sizes "
                    f"({sorted({tuple(item.shape[1:]) for item in items})}): pass images of one "
                    "size."
                )
            items = [_fit(_as_float(item), size) for item in items]
        images = torch.stack(items)
    if images.ndim != 4:
        raise ValueError(
            f"{what} scores images as a (B, C, H, W) tensor in [0, 1]: got shape "
            f"{tuple(images.shape)}."
        )
    if not images.is_floating_point():
        images = images.float() / 255.0
    channels = images.shape[1]
    if channels == 1:
        images = images.expand(-1, 3, -1, -1)
    elif channels == 4:
        images = images[:, :3]
    elif channels != 3:
        raise ValueError(
            f"{what} scores images with 1, 3 or 4 channels in dim 1 (B, C, H, W): got "
            f"{channels} channels, shape {tuple(images.shape)}."
        )
    return images.clamp(0.0, 1.0)


def _as_image_tensor(item: Any) -> torch.Tensor:
    """One image as a tensor (C, H, W): a tensor as it is, a PIL image or an (H, W[, C]) array
    moved to channels first."""
    if isinstance(item, torch.Tensor):
        return item
    import numpy as np

    array = torch.from_numpy(np.array(item.convert("RGB") if hasattr(item, "convert") else item))
    return array[None] if array.ndim == 2 else array.permute(2, 0, 1) if array.ndim == 3 else array


def _as_float(image: torch.Tensor) -> torch.Tensor:
    return image.float() if image.is_floating_point() else image.float() / 255.0


def _fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) float: the shorter side resized to ``size``, then the centre ``size`` square."""
    if image.ndim != 3:
        raise ValueError(f"an image is (C, H, W) or (H, W[, C]): got shape {tuple(image.shape)}.")
    height, width = image.shape[1:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    resized = torch.nn.functional.interpolate(
        image[None], size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
    )[0].clamp(0.0, 1.0)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[:, top : top + size, left : left + size]


class RewardModel:
    """Base of the catalogue: chunked, no_grad, float64 CPU output, lazily loaded model.

    Subclasses implement :meth:`score` (one chunk of at most ``batch_size`` samples) and, when
    they hold a model, :meth:`load` (called once; use :func:`fksteer.rewards.cache.cached_model`
    so two rewards on the same weights share them).
    """

    name: str = "reward"

    #: The class the operators build (``a + b``, ``2 * a``): the subclass declared with
    #: ``sums_rewards=True``, :class:`fksteer.rewards.compose.WeightedSum`, which the package
    #: imports with this module; so this module imports nothing from the layers above it.
    _sum_class: Any = None

    def __init_subclass__(cls, *, sums_rewards: bool = False, **kwargs: Any) -> None:
        """``class WeightedSum(RewardModel, sums_rewards=True)`` makes it the class the reward
        algebra builds."""
        super().__init_subclass__(**kwargs)
        if sums_rewards:
            RewardModel._sum_class = cls

    def __init__(self, *, batch_size: int | None = None, device: str | torch.device | None = None):
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(
                f"batch_size={batch_size!r}: pass a positive int, or None for one call per batch."
            )
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self._loaded: Any = None

    # -- the model, loaded once ------------------------------------------------------------
    def load(self) -> Any:
        """Load and return what :meth:`score` needs (a model, a tokenizer...). Called once."""
        return None

    @property
    def model(self) -> Any:
        """The loaded model: :meth:`load` on first use, then kept."""
        if self._loaded is None:
            self._loaded = self.load()
        return self._loaded

    @property
    def final_reward(self) -> RewardModel:
        """The reward of the final samples (the engine's final potential and the reported
        rewards): this reward itself, unless a subclass scores final samples more carefully."""
        return self

    # -- scoring ---------------------------------------------------------------------------
    def score(self, samples: Any, prompts: Sequence[Any] | None) -> Any:
        """Score one chunk: return one float per sample (tensor, array or list)."""
        raise NotImplementedError

    def __call__(self, samples: Any, prompts: Sequence[Any] | None = None) -> torch.Tensor:
        """Score ``samples`` in chunks of ``batch_size``: (B,) float64 on the CPU, under no_grad;
        ``prompts``: one per sample, or None."""
        total = len(samples)
        if prompts is not None and len(prompts) != total:
            raise ValueError(
                f"{self.name}: got {total} samples but {len(prompts)} prompts; pass one prompt "
                "per sample, or None."
            )
        step = self.batch_size or max(total, 1)
        values = []
        with torch.no_grad():
            for start in range(0, total, step):
                stop = min(start + step, total)
                chunk_prompts = None if prompts is None else list(prompts[start:stop])
                out = self.score(samples[start:stop], chunk_prompts)
                out = torch.as_tensor(out).detach().to(device="cpu", dtype=torch.float64)
                out = out.reshape(-1)
                if out.numel() != stop - start:
                    raise ValueError(
                        f"{self.name} returned {out.numel()} values for {stop - start} samples."
                    )
                values.append(out)
        if not values:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat(values)

    def differentiable(self) -> Callable[[Any, Sequence[Any] | None], torch.Tensor]:
        """This reward keeping its autograd graph, for reward-gradient guidance.

        The returned callable runs :meth:`score` on the samples as given (one chunk, with
        gradients, on the reward's device) and returns its values as a tensor; it raises when
        :meth:`score` does not produce one (text rewards, lists). Used by
        :func:`fksteer.smc.guidance.reward_gradient` in place of ``__call__``.
        """

        def call(samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
            values = self.score(samples, prompts)
            if not isinstance(values, torch.Tensor):
                raise ValueError(
                    f"{self.name} is not differentiable: its score returns "
                    f"{type(values).__name__}, not a tensor. Set FKConfig.guidance=0."
                )
            return values.reshape(-1)

        return call

    # -- algebra: weighted sums of rewards -------------------------------------------------
    def _weighted(self, weight: float) -> Any:
        """``weight`` times this reward, as a one-term weighted sum."""
        if RewardModel._sum_class is None:  # only while fksteer.rewards itself is importing
            raise RuntimeError("rewards add and scale once fksteer.rewards is imported.")
        return RewardModel._sum_class.of(self, weight)

    def __add__(self, other: Any) -> Any:
        return self._weighted(1.0) + other

    def __radd__(self, other: Any) -> Any:
        if other == 0:  # sum([a, b, c]) starts from 0
            return self.__add__(0.0)
        return self.__add__(other)

    def __mul__(self, weight: float) -> Any:
        return self._weighted(weight)

    __rmul__ = __mul__

    def __neg__(self) -> Any:
        return self.__mul__(-1.0)

    def __sub__(self, other: Any) -> Any:
        return self.__add__(-1.0 * other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_size={self.batch_size}, device='{self.device}')"


class FunctionReward(RewardModel):
    """Wrap a plain callable ``fn(samples, prompts) -> floats`` into a :class:`RewardModel`.

    It gets the chunking, no_grad, output checks and the algebra of the catalogue.
    """

    def __init__(
        self,
        fn: Callable[[Any, Sequence[Any] | None], Any],
        *,
        name: str | None = None,
        batch_size: int | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"FunctionReward wraps a callable: got {type(fn).__name__}.")
        super().__init__(batch_size=batch_size or getattr(fn, "batch_size", None), device="cpu")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> Any:
        """The wrapped function on the batch."""
        return self.fn(samples, prompts)

    def __repr__(self) -> str:
        return f"FunctionReward({self.name}, batch_size={self.batch_size})"
