"""Server overhead: generated tokens/s through the HTTP server vs direct ``model.generate``.

Builds a randomly initialised DeepSeek-V2 folder (``--shape tiny`` on the CPU by default, or
``--shape deepseek-v2-lite``: DeepSeek-V2-Lite's real configuration, 15.7B parameters in bf16,
for a GPU machine), then for each concurrency C:

* direct: ``model.generate`` on a left-padded batch of the same C prompts, greedy,
  exactly ``--max-tokens`` new tokens each, in this process;
* server: ``python -m modeldeploy_serve`` on 127.0.0.1 with the same folder, C concurrent
  ``/v1/completions`` requests (token-id prompts, greedy, ``ignore_eos``) from C threads.

It prints tokens/s of both and the overhead ratio (direct / server; 1.00 = no overhead).
The two are measured one after the other, never at the same time, so they do not share the
machine. A benchmark, not a test: it asserts nothing about speed.

    python bench/serve_overhead.py                      # tiny model, CPU
    python bench/serve_overhead.py --shape deepseek-v2-lite --device cuda --concurrency 1 4 8
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "serve"))  # the modeldeploy-serve distribution

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes with enough GPUs.",
    "User: Hello, who are you?\n\nAssistant:",
    "DeepSeek-V2 is a mixture-of-experts language model.",
    "Models are served behind an OpenAI-compatible endpoint.",
    "What is the capital of France?",
    "0123456789 + - * / = ( ) [ ] { }",
    "Today the weather is fine and we learn together.",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prompt_ids(tokenizer: Any, n: int) -> list[list[int]]:
    return [list(tokenizer.encode(PROMPTS[i % len(PROMPTS)] + f" #{i}",
                                  add_special_tokens=True)) for i in range(n)]


class Direct:
    """``model.generate`` in this process."""

    def __init__(self, model_dir: str, dtype: str, device: str, max_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device
        self.max_tokens = max_tokens
        self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, dtype), local_files_only=True,
            device_map=device if device != "cpu" else None)
        model.eval()
        self.model = model

    def run(self, c: int) -> float:
        torch, pad = self.torch, self.tok.eos_token_id
        ids = prompt_ids(self.tok, c)
        width = max(len(p) for p in ids)
        dev = self.model.device
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in ids], device=dev)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids], device=dev)
        if self.device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            res = self.model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                                      max_new_tokens=self.max_tokens,
                                      min_new_tokens=self.max_tokens, pad_token_id=pad)
        if self.device != "cpu":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        assert res.shape[1] - width == self.max_tokens
        return c * self.max_tokens / elapsed

    def close(self) -> None:
        del self.model
        gc.collect()
        if self.device != "cpu":
            self.torch.cuda.empty_cache()


class Server:
    """``python -m modeldeploy_serve`` on 127.0.0.1, driven by the openai client."""

    def __init__(self, model_dir: str, dtype: str, max_batch: int, max_tokens: int,
                 extra: list[str]) -> None:
        import httpx
        from openai import OpenAI
        from transformers import AutoTokenizer

        self.max_tokens = max_tokens
        self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        port = free_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(REPO / "serve"), os.environ.get("PYTHONPATH", "")) if p))
        cmd = [sys.executable, "-m", "modeldeploy_serve", "--model", model_dir,
               "--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port),
               "--dtype", dtype, "--max-batch-size", str(max_batch), "--log-level", "warning",
               *extra]
        self.log = tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 1800
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                text = self.log.read().decode(errors="replace")
                self.close()
                raise SystemExit(f"server did not come up:\n{text}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=3600)
        self.pool = ThreadPoolExecutor(max_workers=max_batch)
        self.latencies: dict[int, list[float]] = {}
        self._one(prompt_ids(self.tok, 1)[0])  # warm-up

    def _one(self, ids: list[int]) -> tuple[int, float]:
        t0 = time.perf_counter()
        r = self.client.completions.create(model="bench", prompt=ids, max_tokens=self.max_tokens,
                                           temperature=0, extra_body={"ignore_eos": True})
        assert r.usage is not None
        return r.usage.completion_tokens, time.perf_counter() - t0

    def run(self, c: int) -> float:
        ids = prompt_ids(self.tok, c)
        t0 = time.perf_counter()
        results = list(self.pool.map(self._one, ids))
        elapsed = time.perf_counter() - t0
        assert all(n == self.max_tokens for n, _ in results)
        self.latencies.setdefault(c, []).extend(lat for _, lat in results)
        return sum(n for n, _ in results) / elapsed

    def close(self) -> None:
        if hasattr(self, "pool"):
            self.pool.shutdown()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        os.unlink(self.log.name)


def measure(runner: Direct | Server, c: int, repeats: int, into: dict[int, list[float]]) -> None:
    for _ in range(repeats):
        into.setdefault(c, []).append(runner.run(c))


def report(name: str, c: int, runs: dict[int, list[float]]) -> None:
    print(f"  {name:<6s}  C={c:<3d} {statistics.median(runs[c]):10.1f} tok/s "
          f"(runs: {', '.join(f'{r:.0f}' for r in runs[c])})", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=("tiny", "deepseek-v2-lite"), default="tiny")
    p.add_argument("--model-dir", help="use (or create) this folder instead of a temporary one")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", default=None, help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("server_args", nargs="*", help="extra server flags, after --")
    args = p.parse_args()
    dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")

    from modeldeploy_serve.tiny import build_model_folder

    tmp = None
    model_dir = args.model_dir
    if model_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="serve-bench-")
        model_dir = os.path.join(tmp.name, args.shape)
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        t0 = time.perf_counter()
        build_model_folder(model_dir, shape=args.shape, dtype=dtype, device=args.device)
        print(f"built a random {args.shape} model in {time.perf_counter() - t0:.1f}s",
              flush=True)
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")
          + f", dtype {dtype}, {args.max_tokens} new tokens per request", flush=True)
    direct_runs: dict[int, list[float]] = {}
    server_runs: dict[int, list[float]] = {}
    max_batch = max(args.concurrency)
    if args.device == "cpu":
        # both loaded at once and measured in turns, so load from other processes on the
        # machine hits both alike
        server = Server(model_dir, dtype, max_batch, args.max_tokens, args.server_args)
        direct = Direct(model_dir, dtype, args.device, args.max_tokens)
        try:
            for c in args.concurrency:
                direct.run(c)  # warm-up at this batch size
                server.run(c)
                for _ in range(args.repeats):
                    measure(direct, c, 1, direct_runs)
                    measure(server, c, 1, server_runs)
                report("direct", c, direct_runs)
                report("server", c, server_runs)
        finally:
            direct.close()
            server.close()
    else:  # one model in GPU memory at a time
        direct = Direct(model_dir, dtype, args.device, args.max_tokens)
        for c in args.concurrency:
            direct.run(c)
            measure(direct, c, args.repeats, direct_runs)
            report("direct", c, direct_runs)
        direct.close()
        server = Server(model_dir, dtype, max_batch, args.max_tokens, args.server_args)
        try:
            for c in args.concurrency:
                server.run(c)
                measure(server, c, args.repeats, server_runs)
                report("server", c, server_runs)
        finally:
            server.close()
    direct_tput = {c: statistics.median(v) for c, v in direct_runs.items()}
    server_tput = {c: statistics.median(v) for c, v in server_runs.items()}
    latency = {c: statistics.median(v) for c, v in server.latencies.items()}
    print("\n| concurrency | direct tok/s | server tok/s | overhead (direct/server) |")
    print("|---:|---:|---:|---:|")
    rows = []
    for c in args.concurrency:
        ratio = direct_tput[c] / server_tput[c]
        rows.append({"concurrency": c, "direct_tok_s": round(direct_tput[c], 1),
                     "server_tok_s": round(server_tput[c], 1), "overhead_ratio": round(ratio, 3),
                     "server_median_request_s": round(latency[c], 3)})
        print(f"| {c} | {direct_tput[c]:.1f} | {server_tput[c]:.1f} | {ratio:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": args.shape, "device": args.device,
                                               "dtype": dtype, "max_tokens": args.max_tokens,
                                               "rows": rows}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
