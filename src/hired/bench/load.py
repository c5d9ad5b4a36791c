"""A closed-loop load generator for an OpenAI-compatible server (standard library only).

``concurrency`` client threads each send one streamed chat completion at a time until every
request body has been sent once; time to first token is the arrival of the first streamed chunk
(vLLM sends it, with the role, together with the first generated token), end-to-end latency the
last. Token counts come from the server's own ``usage`` (``stream_options.include_usage``).
A poller reads the server's Prometheus ``/metrics`` meanwhile (the most requests running at once,
the highest KV-cache use), and two scrapes around the level give the engine's own per-request
means (queue, prefill, decode, TTFT) and its prefix- and multimodal-cache hits.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class RequestResult:
    item: int
    ok: bool
    ttft: float | None = None
    latency: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def chat_body(model: str, image_url: str, question: str, max_tokens: int) -> bytes:
    return json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                                  {"type": "text", "text": question}]}],
        "max_tokens": max_tokens, "min_tokens": max_tokens, "ignore_eos": True,  # fixed output length
        "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True},
    }).encode()


def send(url: str, body: bytes, item: int, timeout: float = 600) -> RequestResult:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    result = RequestResult(item, ok=False)
    t0 = time.perf_counter()
    try:
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            result.error = f"HTTP {response.status}: {response.read()[:300]!r}"
            return result
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("choices") and result.ttft is None:
                result.ttft = time.perf_counter() - t0
            usage = chunk.get("usage")
            if usage:
                result.prompt_tokens = usage.get("prompt_tokens")
                result.completion_tokens = usage.get("completion_tokens")
        result.latency = time.perf_counter() - t0
        result.ok = result.ttft is not None and result.completion_tokens is not None
    except (OSError, ValueError) as error:
        result.error = f"{type(error).__name__}: {error}"
    finally:
        conn.close()
    return result


ENGINE_HISTOGRAMS = ("request_prefill_time_seconds", "request_decode_time_seconds", "request_queue_time_seconds",
                     "time_to_first_token_seconds")
CACHE_COUNTERS = ("prefix_cache_hits", "mm_cache_hits")


def scrape(url: str) -> dict[str, float]:
    """Sums and counts of vLLM's per-request engine histograms and its cache-hit counters."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^vllm:([a-z_]+?)(_sum|_count|_total)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if match and (match.group(1) in ENGINE_HISTOGRAMS or match.group(1) in CACHE_COUNTERS):
            key = match.group(1) + match.group(2)
            out[key] = out.get(key, 0.0) + float(match.group(3))
    return out


def engine_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Per-request means of the engine's histograms between two scrapes, and the cache hits."""
    out: dict[str, float | None] = {}
    for name in ENGINE_HISTOGRAMS:
        count = after.get(name + "_count", 0.0) - before.get(name + "_count", 0.0)
        total = after.get(name + "_sum", 0.0) - before.get(name + "_sum", 0.0)
        out[name.replace("_seconds", "_mean_s")] = total / count if count else None
    for name in CACHE_COUNTERS:
        out[name] = after.get(name + "_total", 0.0) - before.get(name + "_total", 0.0)
    return out


class MetricsPoller(threading.Thread):
    """Maxima of ``vllm:num_requests_running`` and ``vllm:kv_cache_usage_perc`` while running."""

    PATTERN = re.compile(r"^(vllm:num_requests_running|vllm:kv_cache_usage_perc)\{[^}]*\}\s+([0-9.eE+-]+)$", re.M)

    def __init__(self, url: str, interval: float = 0.25):
        super().__init__(daemon=True)
        self.url, self.interval = url + "/metrics", interval
        self.max_running = 0.0
        self.max_kv_usage = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    text = r.read().decode()
                for name, value in self.PATTERN.findall(text):
                    if name.endswith("running"):
                        self.max_running = max(self.max_running, float(value))
                    else:
                        self.max_kv_usage = max(self.max_kv_usage, float(value))
            except (OSError, ValueError):
                pass
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_load(url: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """Send every body once, ``concurrency`` in flight; the engine's own means from ``/metrics``."""
    counter = itertools.count()
    lock = threading.Lock()
    results: list[RequestResult] = []

    def worker() -> None:
        while True:
            with lock:
                n = next(counter)
            if n >= len(bodies):
                return
            result = send(url, bodies[n], n)
            with lock:
                results.append(result)

    before = scrape(url)
    poller = MetricsPoller(url)
    poller.start()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    poller.stop()
    return {"wall_s": wall, "results": [r.to_dict() for r in results], "max_running": poller.max_running,
            "max_kv_usage": poller.max_kv_usage, "engine": engine_means(before, scrape(url))}
