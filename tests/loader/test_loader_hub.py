"""The loader run for real (`python -m modeldeploy.loader`, a separate process) against a
Hugging Face-compatible hub on 127.0.0.1, through huggingface_hub itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_hub import LocalHub, Repo, tiny_model, wait_until

from modeldeploy.loader import MARKER_FILE, Progress, parse_progress

BIG = "model.safetensors"
KEPT = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"}
MIB = 1024 * 1024
TIMEOUT = 120


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    gated = tiny_model(big_size=2 * MIB, seed=3)
    gated.gated = True
    server = LocalHub({"org/tiny": tiny_model(), "org/gated": gated}).start()
    try:
        yield server
    finally:
        server.stop()


def _env(hub: LocalHub, home: Path, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(home / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "30"}
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def _argv(target: Path, *extra: str, model: str = "org/tiny", revision: str = "main") -> list[str]:
    return [sys.executable, "-m", "modeldeploy.loader", "--hub=huggingface",
            f"--model-id={model}", f"--revision={revision}", f"--target={target}",
            f"--progress-file={target.parent / 'progress.jsonl'}", "--progress-interval=0.2",
            "--retries=2", "--backoff=0.1", *extra]


def run_loader(hub: LocalHub, target: Path, *extra: str, token: str | None = None,
               model: str = "org/tiny", revision: str = "main",
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(target, *extra, model=model, revision=revision),
                          env=_env(hub, target.parent, token), capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def records(target: Path) -> list[Progress]:
    path = target.parent / "progress.jsonl"
    parsed = [parse_progress(line) for line in path.read_text().splitlines()]
    assert all(p is not None for p in parsed), "every record the loader writes parses"
    return [p for p in parsed if p is not None]


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir()
    return path


def assert_complete(target: Path, repo: Repo) -> None:
    weights = target / "weights"
    found = {str(p.relative_to(weights)) for p in weights.rglob("*") if p.is_file()}
    assert found == KEPT
    for name in KEPT:
        assert (weights / name).read_bytes() == repo.files[name]
    assert (target / MARKER_FILE).read_text() == "huggingface/org/tiny@main"


def assert_not_complete(target: Path) -> None:
    assert not (target / MARKER_FILE).exists()
    assert not (target / f"{MARKER_FILE}.tmp").exists()


# ---------------------------------------------------------------------------------------------


def test_full_download_verified_marked_and_progress_in_order(hub: LocalHub, target: Path) -> None:
    result = run_loader(hub, target)
    assert result.returncode == 0, result.stderr
    assert last_line(result) == "download complete: huggingface/org/tiny@main (4 files)"
    repo = hub.repos["org/tiny"]
    assert_complete(target, repo)
    # every kept file fetched once, whole; the excluded ones never
    assert sorted(t.path for t in hub.transfers) == sorted(KEPT)
    assert all(t.start == 0 and t.sent == len(repo.files[t.path]) for t in hub.transfers)

    progress = records(target)
    order = ["listing", "verifying", "downloading", "complete"]
    assert [order.index(p.state) for p in progress] == sorted(order.index(p.state)
                                                             for p in progress)
    assert progress[0].state == "listing"
    downloading = [p for p in progress if p.state == "downloading"]
    assert downloading, "progress is published while downloading"
    assert [p.bytes_done for p in downloading] == sorted(p.bytes_done for p in downloading)
    total = sum(len(repo.files[n]) for n in KEPT)
    assert all(p.bytes_total == total and p.files_total == 4 for p in downloading)
    final = progress[-1]
    assert (final.state, final.percent, final.bytes_done, final.files_done) == \
        ("complete", 100, total, 4)

    # a second run finds the marker and fetches nothing
    hub.reset_log()
    again = run_loader(hub, target)
    assert again.returncode == 0, again.stderr
    assert last_line(again) == "download complete: huggingface/org/tiny@main (4 files)"
    assert "is already complete in" in again.stdout
    assert records(target)[-1].percent == 100
    assert hub.transfers == []


def test_killed_mid_file_resumes_with_only_the_missing_bytes(hub: LocalHub,
                                                              target: Path) -> None:
    repo = hub.repos["org/tiny"]
    size = len(repo.files[BIG])
    hub.hold(BIG, after=15 * MIB)  # the stream stalls there, as a slow hub would
    partial = target / ".modeldeploy-partial" / BIG
    process = subprocess.Popen(_argv(target), env=_env(hub, target.parent),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: partial.is_file() and partial.stat().st_size >= 10 * MIB)
        # progress keeps coming while the transfer stalls
        stalled_from = len(records(target))
        wait_until(lambda: len(records(target)) >= stalled_from + 3, timeout=10)
        # with a rate and an estimate of the time left, once a second of transfer is measured
        wait_until(lambda: any(p.bytes_per_second and p.eta_seconds is not None
                               for p in records(target)), timeout=10)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.communicate()
    assert_not_complete(target)
    have = partial.stat().st_size
    assert 0 < have < size
    first_run_sent = hub.sent(BIG)
    assert first_run_sent > have  # the server sent more than reached the disk

    hub.release()
    hub.reset_log()
    result = run_loader(hub, target)
    assert result.returncode == 0, result.stderr
    assert_complete(target, repo)
    # only the missing bytes of the big file, from where the disk left off; the small files,
    # complete and verified in the first run, are not fetched again
    assert [(t.path, t.start, t.sent) for t in hub.transfers] == [(BIG, have, size - have)]
    resumed = [p for p in records(target)[stalled_from:] if p.state == "downloading"]
    assert resumed and resumed[0].bytes_done >= have


def test_corrupted_file_fails_verification_and_nothing_is_marked(hub: LocalHub,
                                                                  target: Path) -> None:
    hub.corrupt(BIG)
    result = run_loader(hub, target, "--workers=1")  # in path order, one after the other
    assert result.returncode == 5, result.stderr
    line = last_line(result)
    assert line.startswith(f"error: verification failed for {BIG}: its sha256 is "), line
    assert "the hub publishes" in line
    assert_not_complete(target)
    assert not (target / "weights" / BIG).exists()
    assert not (target / ".modeldeploy-partial" / BIG).exists()
    assert records(target)[-1].state == "failed"
    assert records(target)[-1].message == line.removeprefix("error: ")

    # the hub serves the right bytes again: that file and the one after it are fetched, the
    # two verified before it are not
    hub.corrupted.clear()
    hub.reset_log()
    again = run_loader(hub, target)
    assert again.returncode == 0, again.stderr
    assert sorted(t.path for t in hub.transfers) == [BIG, "tokenizer.json"]
    assert_complete(target, hub.repos["org/tiny"])


def test_file_corrupted_on_the_volume_is_fetched_again(hub: LocalHub, target: Path) -> None:
    assert run_loader(hub, target).returncode == 0
    (target / MARKER_FILE).unlink()  # as after a revision change of the same claim
    weights = target / "weights" / BIG
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    hub.reset_log()
    result = run_loader(hub, target)
    assert result.returncode == 0, result.stderr
    assert [t.path for t in hub.transfers] == [BIG]
    assert_complete(target, hub.repos["org/tiny"])


def test_missing_revision(hub: LocalHub, target: Path) -> None:
    result = run_loader(hub, target, revision="v9.9")
    assert result.returncode == 3
    assert last_line(result) == (f"error: revision 'v9.9' of 'org/tiny' on {hub.url} does not"
                                 " exist")
    assert hub.transfers == []
    assert_not_complete(target)


def test_missing_repository(hub: LocalHub, target: Path) -> None:
    result = run_loader(hub, target, model="org/nothing")
    assert result.returncode == 3
    assert last_line(result).startswith(f"error: repository 'org/nothing' on {hub.url} does"
                                        " not exist")
    assert hub.transfers == []


def test_gated_repository_needs_a_token_and_refuses_a_bad_one(hub: LocalHub,
                                                              target: Path) -> None:
    result = run_loader(hub, target, model="org/gated")
    assert result.returncode == 3
    assert last_line(result) == (f"error: 'org/gated' on {hub.url} is a gated repository and"
                                 " no token is set: accept its terms on the hub and give the"
                                 " download a token (hubTokenSecretRef)")
    assert hub.transfers == []

    bad = run_loader(hub, target, model="org/gated", token="hf_wrong")
    assert bad.returncode == 3
    assert last_line(bad).startswith("error: the hub refused the token (401) for 'org/gated'")
    assert hub.transfers == []

    good = run_loader(hub, target, model="org/gated", token="hf_good_token")
    assert good.returncode == 0, good.stderr
    assert (target / MARKER_FILE).read_text() == "huggingface/org/gated@main"


def test_gated_file_refused_by_the_hub_without_token(hub: LocalHub, target: Path) -> None:
    """Where the listing does not say the repo is gated, the hub's own 401 GatedRepo on the
    first file is reported the same way, before any byte."""
    hub.repos["org/tiny"].gated = True
    hub.repos["org/tiny"].gated_in_listing = False
    result = run_loader(hub, target)
    assert result.returncode == 3
    assert "is a gated repository and no token is set" in last_line(result)
    assert hub.transfers == []


def _mount_tmpfs(path: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("a size-limited tmpfs needs root")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "volume"
    _mount_tmpfs(path, "8m")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_full_volume_refused_before_any_byte(hub: LocalHub, small_volume: Path) -> None:
    result = run_loader(hub, small_volume)
    assert result.returncode == 4
    line = last_line(result)
    assert line == (f"error: not enough space in {small_volume} for huggingface/org/tiny@main:"
                    " the remaining files need 24 MiB (24 MiB in all for 4 files); the volume"
                    " has 8.0 MiB free of 8.0 MiB (ENOSPC): give the cache a larger size"
                    " (cache.size)"), line
    assert hub.transfers == []
    assert_not_complete(small_volume)


@pytest.fixture
def medium_volume(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "volume"
    _mount_tmpfs(path, "30m")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_volume_filling_up_mid_download_is_enospc_with_numbers(hub: LocalHub,
                                                               medium_volume: Path) -> None:
    hub.hold(BIG, after=12 * MIB)
    partial = medium_volume / ".modeldeploy-partial" / BIG
    process = subprocess.Popen(_argv(medium_volume), env=_env(hub, medium_volume.parent),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: partial.is_file() and partial.stat().st_size >= 10 * MIB)
        # something else fills the volume while the loader waits for the hub
        filler = medium_volume / f"other-{uuid.uuid4().hex}"
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        hub.release()
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 4, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: not enough space in {medium_volume} for"
                           " huggingface/org/tiny@main: the remaining files need "), line
    assert "the volume has 0 B free of 30 MiB (ENOSPC)" in line
    assert_not_complete(medium_volume)


def test_unreachable_hub_bounded_retries(hub: LocalHub, target: Path) -> None:
    hub.stop()
    result = run_loader(hub, target)
    assert result.returncode == 6
    line = last_line(result)
    assert line.startswith(f"error: cannot reach the hub at {hub.url} (the file list): "), line
    assert line.endswith("; gave up after 3 tries")
    assert result.stdout.count("try ") == 2, result.stdout  # two pauses, then the last try


def test_hub_busy_then_back_is_retried(hub: LocalHub, target: Path) -> None:
    hub.fail_api = 2
    result = run_loader(hub, target)
    assert result.returncode == 0, result.stderr
    assert "the hub answered 503 for the file list of 'org/tiny'" in result.stdout
    assert_complete(target, hub.repos["org/tiny"])


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--revision", "--help", "revision '--help' starts with '-'"),
    ("--revision", "main/../x", "revision 'main/../x' contains '..'"),
    ("--model-id", "-org/x", "model id '-org/x' starts with '-'"),
    ("--model-id", "../etc", "model id '../etc' contains '..'"),
    ("--model-id", "a/b/c", "model id 'a/b/c' is not ORG/NAME"),
])
def test_flag_like_or_escaping_values_are_refused(hub: LocalHub, target: Path, flag: str,
                                                  value: str, says: str) -> None:
    argv = [a for a in _argv(target) if not a.startswith(flag + "=")] + [f"{flag}={value}"]
    result = subprocess.run(argv, env=_env(hub, target.parent), capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    assert result.returncode == 2
    assert last_line(result).startswith(f"error: {says}"), last_line(result)
    assert hub.requests == []


# ---------------------------------------------------------------------------------------------
# the ModelScope hub, through the modelscope library (its legacy file API on the same server)


def _modelscope_argv(hub: LocalHub, target: Path, *extra: str, model: str = "org/tiny",
                     ) -> list[str]:
    return [sys.executable, "-m", "modeldeploy.loader", "--hub=modelscope",
            f"--model-id={model}", "--revision=master", f"--target={target}",
            f"--endpoint={hub.url}", f"--progress-file={target.parent / 'progress.jsonl'}",
            "--progress-interval=0.2", "--retries=0", *extra]


def _modelscope_env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSCOPE")}
    return env | {"HOME": str(target.parent / "home"),
                  "MODELSCOPE_CACHE": str(target.parent / "modelscope")}


@pytest.fixture
def modelscope_hub(hub: LocalHub) -> LocalHub:
    pytest.importorskip("modelscope", reason="the loader extra (pip install '.[loader]')")
    hub.repos["org/tiny"].branches = ("master",)
    return hub


def test_modelscope_download_resumes_and_verifies(modelscope_hub: LocalHub,
                                                  target: Path) -> None:
    hub = modelscope_hub
    repo = hub.repos["org/tiny"]
    size = len(repo.files[BIG])
    hub.hold(BIG, after=6 * MIB)
    partial = target / ".modeldeploy-partial" / BIG
    process = subprocess.Popen(_modelscope_argv(hub, target), env=_modelscope_env(target),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: partial.is_file() and partial.stat().st_size >= 4 * MIB)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.communicate()
    have = partial.stat().st_size
    hub.release()
    hub.reset_log()
    result = subprocess.run(_modelscope_argv(hub, target), env=_modelscope_env(target),
                            capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr
    assert last_line(result) == "download complete: modelscope/org/tiny@master (4 files)"
    weights = target / "weights"
    for name in KEPT:
        assert (weights / name).read_bytes() == repo.files[name]
    assert (target / MARKER_FILE).read_text() == "modelscope/org/tiny@master"
    assert [(t.path, t.start, t.sent) for t in hub.transfers] == [(BIG, have, size - have)]
    assert records(target)[-1].state == "complete"


def test_modelscope_corrupted_and_missing(modelscope_hub: LocalHub, target: Path) -> None:
    hub = modelscope_hub
    hub.corrupt(BIG)
    result = subprocess.run(_modelscope_argv(hub, target), env=_modelscope_env(target),
                            capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 5, result.stderr
    assert last_line(result).startswith(f"error: verification failed for {BIG}: its sha256")
    assert_not_complete(target)

    missing = subprocess.run(_modelscope_argv(hub, target, model="org/nothing"),
                             env=_modelscope_env(target), capture_output=True, text=True,
                             timeout=TIMEOUT, check=False)
    assert missing.returncode == 3, missing.stderr
    assert last_line(missing) == (f"error: the file list of 'org/nothing' at revision 'master'"
                                  f" on {hub.url} does not exist (or is private)")
