"""Load patterns for an OpenAI-compatible server (vLLM's /v1/completions), one per phase kind.

Each pattern keeps a fixed number of requests in flight (closed loop) until its deadline,
then cancels what is still running (the client disconnects; vLLM aborts those requests).
It returns counts for the phase's label: requests sent, completed, failed, and completion
tokens reported by the server. Prompts are random words over the alphabet the recording
model's tokenizer was trained on (bench/real_engine/mkmodel usage), so token counts are
predictable without loading the tokenizer here.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import aiohttp

ALPHABET = "abcdefghij"


def words(n: int, rng: random.Random) -> str:
    """``n`` random words of 2-8 letters."""
    return " ".join("".join(rng.choice(ALPHABET) for _ in range(rng.randint(2, 8))) for _ in range(n))


# kind -> (concurrency, request body without prompt/model, prompt words)
PATTERNS: dict[str, tuple[int, dict, int]] = {
    # long prompts, one output token: the GPU runs large prefill GEMMs
    "prefill": (32, {"max_tokens": 1}, 1200),
    # many streams decoding long outputs: with a small model vLLM's per-step CPU work dominates
    "heavy_decode": (128, {"max_tokens": 256, "ignore_eos": True}, 16),
    "single_stream": (1, {"max_tokens": 512, "ignore_eos": True}, 16),
    # 20 logprobs per token: the API server detokenizes and serialises them
    "logprobs": (64, {"max_tokens": 128, "ignore_eos": True, "logprobs": 20}, 16),
    # JSON-schema constrained decoding (grammar work per step in the engine core)
    "structured": (32, {"max_tokens": 96, "structured_outputs": {"json": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                         "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "age", "tags"]}}}, 16),
    # moderate decode while another process runs GEMMs on the same GPU
    "neighbor": (32, {"max_tokens": 256, "ignore_eos": True}, 16),
    "steady": (64, {"max_tokens": 256, "ignore_eos": True}, 16),
    # a steady decode baseline, then the same load while another process runs GEMMs
    "steady48": (48, {"max_tokens": 256, "ignore_eos": True}, 16),
    "neighbor48": (48, {"max_tokens": 256, "ignore_eos": True}, 16),
    # many clients reading streamed tokens (server-sent events): per-token work in the API server
    "stream128": (128, {"max_tokens": 200, "ignore_eos": True, "stream": True,
                        "stream_options": {"include_usage": True}}, 16),
    # a flood of short requests asking for one token: per-request work in the API server
    "flood": (256, {"max_tokens": 1}, 6),
}


async def _read_stream(resp: aiohttp.ClientResponse) -> dict:
    """Read a streamed completion (server-sent events) to its end; return the last chunk that
    carries ``usage`` (``stream_options.include_usage``), or {} when none did."""
    usage: dict = {}
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[5:])
        if chunk.get("usage"):
            usage = chunk
    return usage


@dataclass
class PhaseCounts:
    sent: int = 0
    completed: int = 0
    failed: int = 0
    completion_tokens: int = 0
    errors: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"sent": self.sent, "completed": self.completed, "failed": self.failed,
                "completion_tokens": self.completion_tokens, "errors": dict(list(self.errors.items())[:5])}


async def run_pattern(base_url: str, model: str, kind: str, seconds: float, seed: int = 0) -> PhaseCounts:
    """Keep the pattern's requests in flight for ``seconds``; return what happened."""
    concurrency, body, prompt_words = PATTERNS[kind]
    rng = random.Random(seed)
    counts = PhaseCounts()
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one_client(i: int) -> None:
            while time.monotonic() < deadline:
                payload = dict(body, model=model, prompt=words(prompt_words, rng), seed=rng.randint(0, 1 << 30))
                counts.sent += 1
                try:
                    async with session.post(f"{base_url}/v1/completions", json=payload) as resp:
                        doc = await (_read_stream(resp) if payload.get("stream") and resp.status == 200
                                     else resp.json(content_type=None))
                        if resp.status != 200:
                            counts.failed += 1
                            key = f"{resp.status}: {str(doc)[:160]}"
                            counts.errors[key] = counts.errors.get(key, 0) + 1
                            await asyncio.sleep(0.2)
                            continue
                        counts.completed += 1
                        counts.completion_tokens += int((doc.get("usage") or {}).get("completion_tokens") or 0)
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                    counts.failed += 1
                    key = type(exc).__name__
                    counts.errors[key] = counts.errors.get(key, 0) + 1
                    await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(one_client(i)) for i in range(concurrency)]
        try:
            await asyncio.wait(tasks, timeout=seconds)
        finally:
            # the deadline passed with requests in flight: cancel them (the server aborts them)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return counts
