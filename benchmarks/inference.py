"""Chat completion latency on tiny-llama through the real API, the web server and an inference worker.

    .venv/bin/python benchmarks/inference.py [--max-tokens 16] [--repeat 10]

Runs on the embedded default in a temporary DATA_DIR (SQLite, bundled Redis), with the web server and
the inference worker as separate processes, as `make run` starts them; the requests go through
the official openai client. Prints the cold request (the worker's first: it imports torch and
loads the model), warm non-streaming requests (p50/p95: the model stays loaded) and the time to
the first streamed token. The goal is a warm reply well under 1 s.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from embedded import ROOT  # first: it sets the environment Django reads (a fresh DATA_DIR)

os.environ.update(SECRET_KEY="benchmark-only-not-a-secret", DEBUG="0", LOG_LEVEL="WARNING")
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per reply (the base model never stops "
                                                                    "early: its weights are random)")
    parser.add_argument("--repeat", type=int, default=10)
    options = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from finetune_site.embedded import embedded_redis_start
    from tests.e2e import free_port, wait_for

    call_command("migrate", verbosity=0)
    key = _api_key()
    port = free_port()
    children = [embedded_redis_start(settings.EMBEDDED_REDIS_SOCKET)]
    try:
        children.append(_spawn([sys.executable, "-m", "finetune_site.server", "--host", "127.0.0.1",
                                "--port", str(port)]))
        children.append(_spawn([sys.executable, "-m", "celery", "-A", "finetune_site", "worker", "-l", "warning",
                                "-Q", "inference", "-c", "1", "-n", "inference@%h"]))
        wait_for(lambda: _healthy(port), timeout=60, what="the web server")
        _measure(f"http://127.0.0.1:{port}/v1", key, options)
    finally:
        for child in reversed(children):
            child.terminate()
            child.wait(timeout=30)


def _api_key() -> str:
    from django.contrib.auth import get_user_model

    from accounts_app.services import api_key_create
    from models_app.base_models.services import base_model_builtin_ensure

    base_model_builtin_ensure()
    return api_key_create(user=get_user_model().objects.create(username="bench"), name="benchmark")[1]


def _measure(base_url: str, key: str, options) -> None:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=300)
    ask = {"model": "tiny-llama", "messages": QUESTION, "temperature": 0, "max_tokens": options.max_tokens}

    started = time.perf_counter()
    cold = client.chat.completions.with_raw_response.create(**ask)
    cold_seconds = time.perf_counter() - started
    warm, caches = [], []
    for _ in range(options.repeat):
        started = time.perf_counter()
        raw = client.chat.completions.with_raw_response.create(**ask)
        warm.append(time.perf_counter() - started)
        caches.append(raw.headers["x-model-cache"])
    first_tokens, stream_totals = [], []
    for _ in range(options.repeat):
        started = time.perf_counter()
        first = None
        for chunk in client.chat.completions.create(**ask, stream=True):
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
        first_tokens.append(first)
        stream_totals.append(time.perf_counter() - started)

    tokens = cold.parse().usage.completion_tokens
    print(f"tiny-llama, {tokens} completion tokens per reply, temperature 0, non-streaming unless said")
    print(f"cold (worker's first request: imports torch, loads the model): {cold_seconds:.2f} s "
          f"(X-Model-Cache: {cold.headers['x-model-cache']})")
    print(f"warm x{len(warm)}: p50 {_p(warm, 50) * 1000:.0f} ms, p95 {_p(warm, 95) * 1000:.0f} ms "
          f"(X-Model-Cache: {', '.join(sorted(set(caches)))}; target well under 1000 ms)")
    print(f"streamed x{len(first_tokens)}: first token p50 {_p(first_tokens, 50) * 1000:.0f} ms, "
          f"p95 {_p(first_tokens, 95) * 1000:.0f} ms; whole reply p50 {_p(stream_totals, 50) * 1000:.0f} ms")


def _p(values: list[float], percent: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def _spawn(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _healthy(port: int) -> bool:
    import requests

    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
    except requests.ConnectionError:
        return False


if __name__ == "__main__":
    main()
