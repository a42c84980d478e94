"""The chat-API grader against an OpenAI-compatible server started here on 127.0.0.1.

The server answers with the number written after '#' in each sample, and misbehaves on demand:
slow replies (past the client's timeout), HTTP 500 and 429, malformed bodies, fenced JSON, and
401 errors that echo the Authorization header back.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from fksteer.rewards import load_reward
from fksteer.rewards.grader import ChatGrader, GraderError

KEY = "sk-test-SECRET-0123456789"


class FakeChatServer:
    def __init__(self):
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.requests = []
        self.active = 0
        self.max_active = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                    server.requests.append((self.path, dict(self.headers), body))
                self.counted = True
                try:
                    server.respond(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected in the slow case
                finally:
                    self.uncount()

            def send_response(self, *args, **kwargs):
                # A request stops counting as active once its reply starts: the client may send
                # its next request as soon as it has read this one, before this thread resumes.
                self.uncount()
                super().send_response(*args, **kwargs)

            def uncount(self):
                with server.lock:
                    if getattr(self, "counted", False):
                        server.active -= 1
                        self.counted = False

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def send(handler, status, payload, headers=None):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def reply(content):
        return {"choices": [{"message": {"role": "assistant", "content": content}}]}

    def respond(self, handler, body):
        content = body["messages"][1]["content"]
        if isinstance(content, list):  # an image: score = 10 * its mean brightness
            url = content[1]["image_url"]["url"]
            import numpy as np
            from PIL import Image

            png = base64.b64decode(url.split(",", 1)[1])
            pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
            score = round(10 * pixels.mean() / 255, 3)
            return self.send(handler, 200, self.reply(json.dumps({"score": score})))
        sample = content.split("Sample:\n", 1)[1]
        with self.lock:
            attempt = self.attempts.get(sample, 0) + 1
            self.attempts[sample] = attempt
        match = re.search(r"#(-?[\d.]+)", sample)
        score = float(match.group(1)) if match else 0.0
        good = self.reply(json.dumps({"score": score, "reason": "counted"}))
        if "delay" in sample:
            time.sleep(float(re.search(r"delay=([\d.]+)", sample).group(1)))
        if sample.startswith("slow") and attempt == 1:
            time.sleep(1.0)
        elif sample.startswith("fail") and attempt == 1:
            return self.send(handler, 500, {"error": "overloaded"})
        elif sample.startswith("busy") and attempt == 1:
            return self.send(handler, 429, {"error": "rate"}, {"Retry-After": "0.05"})
        elif sample.startswith("bad") and attempt == 1:
            return self.send(handler, 200, self.reply("I think it is quite good"))
        elif sample.startswith("garbled") and attempt == 1:
            return self.send(handler, 200, b"<html>not json")
        elif sample.startswith("always-bad"):
            return self.send(handler, 200, self.reply('{"verdict": "no score"}'))
        elif sample.startswith("fenced"):
            text = f"Here you go:\n```json\n{json.dumps({'score': score})}\n```"
            return self.send(handler, 200, self.reply(text))
        elif sample.startswith("denied"):
            echoed = f"invalid credentials: {handler.headers.get('Authorization')}"
            return self.send(handler, 401, {"error": echoed})
        return self.send(handler, 200, good)


@pytest.fixture()
def server():
    fake = FakeChatServer()
    yield fake
    fake.close()


def grader(server, **kwargs):
    options = dict(
        model="judge-1",
        base_url=server.url,
        api_key=KEY,
        timeout=0.4,
        max_retries=2,
        backoff=0.01,
        max_concurrency=4,
    )
    options.update(kwargs)
    return ChatGrader(**options)


def test_scores_come_back_in_order_with_bounded_concurrency(server):
    reward = grader(server, max_concurrency=3)
    # later samples answer faster: replies arrive out of order
    texts = [f"sample {i} delay={0.02 * (9 - i):.2f} #{i}" for i in range(9)]
    values = reward(texts, [f"prompt {i}" for i in range(9)])
    assert values.tolist() == [float(i) for i in range(9)]
    assert server.max_active <= 3 and server.max_active >= 2
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == "judge-1" and body["response_format"] == {"type": "json_object"}
    assert "prompt" in body["messages"][1]["content"]


def test_retries_slow_failing_and_malformed_replies(server, caplog):
    caplog.set_level(logging.DEBUG)
    reward = grader(server)
    texts = ["slow #1", "fail #2", "busy #3", "bad #4", "garbled #5", "fenced #6", "fine #7"]
    values = reward(texts, None)
    assert values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert reward.retries == 5  # slow, fail, busy, bad, garbled each needed a second try
    assert server.attempts["fenced #6"] == 1 and server.attempts["slow #1"] == 2
    assert KEY not in caplog.text and KEY not in repr(reward)


def test_cache_and_duplicates_cost_no_extra_request(server):
    reward = grader(server)
    texts = ["a #1", "b #2", "a #1"]
    first = reward(texts, ["p", "p", "p"])
    assert first.tolist() == [1.0, 2.0, 1.0] and len(server.requests) == 2
    again = reward(texts, ["p", "p", "p"])
    assert again.tolist() == first.tolist() and len(server.requests) == 2
    assert reward.cache_hits == 3
    reward(["a #1"], ["another prompt"])  # the prompt is part of the key
    assert len(server.requests) == 3


def test_errors_after_retries_raise_or_give_nan_without_leaking_the_key(server, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GraderError, match="after 3 tries") as error:
        grader(server)(["always-bad #1"], None)
    assert server.attempts["always-bad #1"] == 3
    nan_reward = grader(server, on_error="nan", max_retries=1)
    values = nan_reward(["always-bad #2", "fine #3"], None)
    assert math.isnan(values[0]) and values[1] == 3.0
    with pytest.raises(GraderError, match="HTTP 401") as denied:
        grader(server)(["denied #1"], None)
    assert server.attempts["denied #1"] == 1  # not retried
    assert "***" in str(denied.value)
    for text in (str(error.value), str(denied.value), caplog.text):
        assert KEY not in text


def test_images_are_sent_as_png_and_scored(server):
    reward = grader(server)
    batch = torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.9)])
    values = reward(batch, ["a dark image", "a dark image"])
    assert values[0] == pytest.approx(1.0, abs=0.05) and values[1] == pytest.approx(9.0, abs=0.05)


def test_configuration_from_the_environment_and_errors(monkeypatch, server):
    monkeypatch.setenv("FKSTEER_GRADER_BASE_URL", server.url)
    monkeypatch.setenv("FKSTEER_GRADER_API_KEY", KEY)
    monkeypatch.setenv("FKSTEER_GRADER_MODEL", "judge-env")
    reward = load_reward("llm-grader", timeout=1.0)
    assert reward(["x #4"], None).tolist() == [4.0]
    assert server.requests[-1][2]["model"] == "judge-env"
    assert server.requests[-1][1]["Authorization"] == f"Bearer {KEY}"
    monkeypatch.delenv("FKSTEER_GRADER_MODEL")
    with pytest.raises(ValueError, match="model name"):
        ChatGrader()
    with pytest.raises(ValueError, match="on_error"):
        ChatGrader("m", on_error="ignore")


def test_score_range_rejects_out_of_range_replies(server):
    reward = grader(server, score_range=(0, 10), max_retries=1, on_error="nan")
    values = reward(["in range #7", "out of range #42"], None)
    assert values[0] == 7.0 and math.isnan(values[1])
