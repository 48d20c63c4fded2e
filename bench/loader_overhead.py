"""Loader overhead: `python -m modeldeploy.loader` against a plain `hf download` of the same
files from the same local hub, in the same run.

Starts the Hugging Face-compatible hub of the loader's tests on 127.0.0.1 (tests/loader/
local_hub.py) with a random model of `--size-mib` MiB in `--shards` LFS files plus small
files, then, for each round, downloads it with `hf download --local-dir` (huggingface_hub's CLI,
8 workers, no hash check) and with the loader (8 workers; sizes and sha256 verified while
streaming, progress records, the completion marker) into fresh folders on the same disk, one
after the other. Prints seconds, MB/s and the ratio loader / hf (1.00 = no overhead). A
benchmark, not a test: it asserts nothing about speed.

    python bench/loader_overhead.py                       # 512 MiB in 4 shards, 2 rounds
    python bench/loader_overhead.py --size-mib 2048 --shards 8 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "loader"))

from local_hub import LocalHub, Repo  # noqa: E402


def model(size_mib: int, shards: int) -> Repo:
    rng = random.Random(1)
    files = {"config.json": b'{"model_type": "llama"}', "tokenizer.json": rng.randbytes(200_000)}
    shard = size_mib * 1024 * 1024 // shards
    lfs = set()
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        files[name] = rng.randbytes(shard)
        lfs.add(name)
    return Repo(files=files, lfs=lfs)


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the downloads go (default: a temporary folder)")
    args = parser.parse_args()

    repo = model(args.size_mib, args.shards)
    total = sum(len(d) for d in repo.files.values())
    hub = LocalHub({"bench/model": repo}).start()
    hf = shutil.which("hf", path=str(Path(sys.executable).parent)) or shutil.which("hf")
    if hf is None:
        raise SystemExit("the `hf` CLI (huggingface_hub) is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="loader-bench-", dir=args.workdir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(workdir / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "PYTHONPATH": str(REPO / "operator")}
    print(f"{len(repo.files)} files, {total / 1e6:.0f} MB, hub {hub.url}; "
          f"hf: {hf}; python {sys.version.split()[0]}")
    print(f"{'round':>5} {'hf download s':>14} {'MB/s':>7} {'loader s':>9} {'MB/s':>7} "
          f"{'loader/hf':>10}")
    try:
        for n in range(1, args.rounds + 1):
            a, b = workdir / f"hf-{n}", workdir / f"loader-{n}"
            b.mkdir()
            t_hf = timed([hf, "download", "bench/model", "--revision", "main",
                          "--local-dir", str(a), "--exclude", "original/*",
                          "--exclude", "consolidated*", "--exclude", "*.gguf"], env)
            t_loader = timed([sys.executable, "-m", "modeldeploy.loader", "--hub=huggingface",
                              "--model-id=bench/model", "--revision=main", f"--target={b}"],
                             env)
            for name, data in repo.files.items():
                assert (a / name).stat().st_size == len(data)
                assert (b / "weights" / name).stat().st_size == len(data)
            print(f"{n:>5} {t_hf:>14.2f} {total / t_hf / 1e6:>7.0f} {t_loader:>9.2f} "
                  f"{total / t_loader / 1e6:>7.0f} {t_loader / t_hf:>10.2f}", flush=True)
            shutil.rmtree(a)
            shutil.rmtree(b)
    finally:
        hub.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
