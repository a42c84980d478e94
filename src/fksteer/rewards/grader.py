"""An LLM or vision-language grader over any OpenAI-compatible chat completions API.

    from fksteer.rewards.grader import ChatGrader
    reward = ChatGrader(model="gpt-4o-mini", instructions="Score 0-10 how funny the text is.")
    reward = ChatGrader(base_url="http://localhost:8000/v1", model="Qwen/Qwen2-VL-7B-Instruct")

Each sample (a text, or an image sent as a PNG data URL) goes with its prompt in one request; the
grader answers a JSON object ``{"score": <number>, "reason": "..."}`` and the reward is the score.
The base URL, key and model come from the arguments or the environment (``FKSTEER_GRADER_BASE_URL``
or ``OPENAI_BASE_URL``, default the OpenAI API; ``FKSTEER_GRADER_API_KEY`` or ``OPENAI_API_KEY``;
``FKSTEER_GRADER_MODEL``).

- Requests run concurrently (at most ``max_concurrency`` at once); results keep the order of the
  samples whatever order replies arrive in.
- Each request has a ``timeout``; timeouts, connection errors, HTTP 408/409/425/429/5xx and
  malformed replies are retried up to ``max_retries`` times with exponential backoff (honouring
  ``Retry-After``); other HTTP errors fail at once. After the last try, ``on_error="raise"`` raises
  :class:`GraderError` and ``on_error="nan"`` returns NaN (the engine then discards the sample).
- Replies are cached in memory by the hash of (model, instructions, prompt, sample): a particle
  duplicated by resampling, or scored again, costs no second request.
- The API key is sent only in the ``Authorization`` header: it is in no log line, error or repr.

Standard library only (urllib, concurrent.futures); images need Pillow (``rewards-hf`` extra).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from fksteer.rewards.base import RewardModel, as_image_batch, require

__all__ = ["ChatGrader", "GraderError"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_INSTRUCTIONS = (
    "You are a strict grader. Rate how well the sample satisfies the prompt on a scale from 0 "
    "(not at all) to 10 (perfectly)."
)
_JSON_SUFFIX = (
    'Reply with a JSON object only, of the form {"score": <number>, "reason": "<one sentence>"}.'
)
_RETRY_STATUS = {408, 409, 425, 429}


class GraderError(RuntimeError):
    """The grader gave no usable score for a sample after every retry."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _parse_json_object(content: str) -> dict[str, Any]:
    text = content.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL)
    candidates = [text]
    if fenced:
        candidates.append(fenced.group(1).strip())
    braces = re.search(r"\{.*\}", text, flags=re.DOTALL)
    if braces:
        candidates.append(braces.group(0))
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("the reply holds no JSON object")


class ChatGrader(RewardModel):
    """Scores from an OpenAI-compatible chat model reading each (prompt, sample) pair."""

    name = "llm-grader"

    def __init__(
        self,
        model: str | None = None,
        *,
        instructions: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        score_key: str = "score",
        score_range: tuple[float, float] | None = None,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int = 256,
        json_mode: bool = True,
        on_error: str = "raise",
        cache: bool = True,
        extra_body: dict[str, Any] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
    ):
        model = model or os.environ.get("FKSTEER_GRADER_MODEL")
        if not model:
            raise ValueError(
                "ChatGrader needs a model name: pass model='...' or set FKSTEER_GRADER_MODEL."
            )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency={max_concurrency}: pass at least 1.")
        if timeout <= 0:
            raise ValueError(f"timeout={timeout}: pass a positive number of seconds.")
        if max_retries < 0:
            raise ValueError(f"max_retries={max_retries}: pass 0 or more.")
        if on_error not in ("raise", "nan"):
            raise ValueError(f"on_error={on_error!r}: pass 'raise' or 'nan'.")
        if score_range is not None and not score_range[0] <= score_range[1]:
            raise ValueError(f"score_range={score_range}: pass (low, high) with low <= high.")
        # a CPU scorer: `device` is accepted, like every reward's, and ignored
        super().__init__(batch_size=batch_size, device="cpu")
        self.model_name = model
        self.instructions = instructions or DEFAULT_INSTRUCTIONS
        base = (
            base_url
            or os.environ.get("FKSTEER_GRADER_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
            or DEFAULT_BASE_URL
        )
        self.url = base.rstrip("/") + "/chat/completions"
        key = (
            api_key or os.environ.get("FKSTEER_GRADER_API_KEY") or os.environ.get("OPENAI_API_KEY")
        )
        self._api_key = key or None
        self.score_key = score_key
        self.score_range = score_range
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.on_error = on_error
        self.use_cache = cache
        self.extra_body = dict(extra_body or {})
        self._cache: dict[str, float] = {}
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0
        self.cache_hits = 0

    def __repr__(self) -> str:  # never shows the key
        return (
            f"ChatGrader(model={self.model_name!r}, url={self.url!r}, "
            f"key={'set' if self._api_key else 'none'}, max_concurrency={self.max_concurrency})"
        )

    # -- building requests -----------------------------------------------------------------
    def _sample_parts(self, samples: Any) -> list[tuple[str, Any]]:
        """Per sample: ("text", str) or ("image", PNG bytes)."""
        if isinstance(samples, torch.Tensor) or (len(samples) and not isinstance(samples[0], str)):
            images = as_image_batch(samples, "the llm grader")
            pil = require("PIL.Image", "rewards-hf", what="grading images")
            arrays = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            parts = []
            for array in arrays:
                buffer = io.BytesIO()
                pil.fromarray(array).save(buffer, format="PNG")
                parts.append(("image", buffer.getvalue()))
            return parts
        return [("text", str(s)) for s in samples]

    def _key(self, prompt: Any, part: tuple[str, Any]) -> str:
        digest = hashlib.sha256()
        for piece in (self.model_name, self.instructions, self.score_key, str(prompt), part[0]):
            digest.update(piece.encode("utf-8"))
            digest.update(b"\x00")
        digest.update(part[1] if isinstance(part[1], bytes) else part[1].encode("utf-8"))
        return digest.hexdigest()

    def _body(self, prompt: Any, part: tuple[str, Any]) -> bytes:
        prompt_text = "(no prompt)" if prompt is None else str(prompt)
        if part[0] == "text":
            content: Any = f"Prompt:\n{prompt_text}\n\nSample:\n{part[1]}"
        else:
            url = "data:image/png;base64," + base64.b64encode(part[1]).decode("ascii")
            content = [
                {"type": "text", "text": f"Prompt:\n{prompt_text}\n\nThe sample is the image."},
                {"type": "image_url", "image_url": {"url": url}},
            ]
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [
                {"role": "system", "content": f"{self.instructions}\n{_JSON_SUFFIX}"},
                {"role": "user", "content": content},
            ],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        body.update(self.extra_body)
        return json.dumps(body).encode("utf-8")

    # -- one request, with retries ---------------------------------------------------------
    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _post(self, body: bytes) -> float:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with self._lock:
            self.requests_sent += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = self._redact(error.read()[:300].decode("utf-8", "replace"))
            message = f"HTTP {error.code} from {self.url}: {detail}"
            if error.code in _RETRY_STATUS or error.code >= 500:
                retry_after = error.headers.get("Retry-After") if error.headers else None
                try:
                    wait = float(retry_after) if retry_after is not None else None
                except ValueError:
                    wait = None
                raise _Retryable(message, wait) from None
            raise GraderError(message) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise _Retryable(f"no reply from {self.url}: {self._redact(str(reason))}") from None
        try:
            reply = json.loads(raw)
            content = reply["choices"][0]["message"]["content"]
            if isinstance(content, list):  # content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            value = float(_parse_json_object(content)[self.score_key])
        except (ValueError, KeyError, IndexError, TypeError) as error:
            excerpt = self._redact(raw[:200].decode("utf-8", "replace"))
            raise _Retryable(f"malformed reply ({error}): {excerpt!r}") from None
        if not math.isfinite(value):
            raise _Retryable(f"the score is {value}, not a finite number")
        if self.score_range is not None and not (
            self.score_range[0] <= value <= self.score_range[1]
        ):
            raise _Retryable(f"the score {value} is outside score_range={self.score_range}")
        return value

    def _grade(self, body: bytes) -> float:
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(body)
            except _Retryable as error:
                last = str(error)
                if attempt == self.max_retries:
                    break
                wait = min(self.backoff * 2**attempt, self.max_backoff)
                if error.retry_after is not None:
                    wait = min(max(wait, error.retry_after), self.max_backoff)
                with self._lock:
                    self.retries += 1
                logger.info("grader try %d failed (%s); retrying in %.2fs", attempt + 1, last, wait)
                time.sleep(wait)
        message = f"the grader gave no usable score after {self.max_retries + 1} tries: {last}"
        if self.on_error == "raise":
            raise GraderError(message)
        logger.warning("%s; returning NaN", message)
        return math.nan

    # -- the reward ------------------------------------------------------------------------
    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """The grader's score of each sample (cached by sample hash)."""
        parts = self._sample_parts(samples)
        prompt_list = list(prompts) if prompts is not None else [None] * len(parts)
        keys = [self._key(p, part) for p, part in zip(prompt_list, parts, strict=True)]
        values: dict[str, float] = {}
        todo: dict[str, bytes] = {}
        for key, prompt, part in zip(keys, prompt_list, parts, strict=True):
            if self.use_cache and key in self._cache:
                values[key] = self._cache[key]
                with self._lock:
                    self.cache_hits += 1
            elif key not in todo:
                todo[key] = self._body(prompt, part)
        if todo:
            workers = min(self.max_concurrency, len(todo))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {key: pool.submit(self._grade, body) for key, body in todo.items()}
                for key, future in futures.items():
                    values[key] = future.result()
            if self.use_cache:
                for key in todo:
                    if not math.isnan(values[key]):
                        self._cache[key] = values[key]
        return torch.tensor([values[key] for key in keys], dtype=torch.float64)
