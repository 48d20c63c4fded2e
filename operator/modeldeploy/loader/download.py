"""Fill the cache: list, check space, fetch with resume, verify, mark complete (last, atomic).

Layout of the target volume:
    weights/<path>                     verified files only
    .modeldeploy-partial/<path>        bytes of a file being fetched (a retry resumes them)
    .modeldeploy-verified.json         size, mtime and digest of each verified file
    .modeldeploy-complete              `hub/model_id@revision`, written last
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from .contract import DOWNLOAD_EXCLUDES, MARKER_FILE, PARTIAL_DIR, VERIFIED_FILE, WEIGHTS_DIR
from .hubs import Hub, HubRefused, HubUnavailable, RemoteFile
from .progress import Progress
from .progress import format_bytes as human

RATE_WINDOW_SECONDS = 30.0
HASH_BLOCK = 8 * 1024 * 1024

EXIT_INVALID = 2
EXIT_HUB_REFUSED = 3
EXIT_NO_SPACE = 4
EXIT_VERIFY = 5
EXIT_UNREACHABLE = 6


class Stopped(Exception):
    """Another file's failure stops this transfer (its partial file stays, for a retry)."""


class Failure(Exception):
    """The loader stops: `line` is its last line, `code` its exit status."""

    def __init__(self, line: str, code: int) -> None:
        super().__init__(line)
        self.line, self.code = line, code
        self.progress: Progress | None = None  # how far it got, state "failed"


@dataclass(frozen=True)
class Options:
    target: Path
    coordinates: str
    excludes: tuple[str, ...] = DOWNLOAD_EXCLUDES
    retries: int = 5
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 60.0
    interval_seconds: float = 20.0
    workers: int = 8  # files fetched at once (as `hf download`)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# digests


def _digest(remote: RemoteFile) -> tuple[str, Any] | None:
    """(name, hash object primed as the hub computes it) or None where the hub gives none."""
    if remote.sha256:
        return "sha256", hashlib.sha256()
    if remote.git_sha1:
        h = hashlib.sha1(usedforsecurity=False)
        h.update(f"blob {remote.size}\0".encode())
        return "git-sha1", h
    return None


def _expected(remote: RemoteFile) -> str | None:
    return (remote.sha256 or remote.git_sha1 or "").lower() or None


def _feed(h: Any, path: Path, limit: int | None = None) -> None:
    with path.open("rb") as f:
        left = limit
        while left is None or left > 0:
            block = f.read(HASH_BLOCK if left is None else min(HASH_BLOCK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)


def digest_of_file(remote: RemoteFile, path: Path) -> str | None:
    primed = _digest(remote)
    if primed is None:
        return None
    _feed(primed[1], path)
    return str(primed[1].hexdigest())


# ---------------------------------------------------------------------------------------------
# progress


class Meter:
    """Bytes and files done, and the rate over the last 30 s (of bytes fetched by this run:
    bytes resumed from an earlier try count as done, not as speed)."""

    def __init__(self, bytes_total: int, files_total: int, clock: Callable[[], float]) -> None:
        self.bytes_total, self.files_total, self._clock = bytes_total, files_total, clock
        self.bytes_done = 0
        self.files_done = 0
        self.fetched = 0
        self.state = "listing"
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n
            self.fetched += n

    def adjust(self, delta: int) -> None:
        with self._lock:
            self.bytes_done += delta

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def snapshot(self, message: str | None = None) -> Progress:
        with self._lock:
            t = self._clock()
            self._samples.append((t, self.fetched))
            while len(self._samples) > 2 and t - self._samples[1][0] >= RATE_WINDOW_SECONDS:
                self._samples.popleft()
            t0, f0 = self._samples[0]
            rate = (self.fetched - f0) / (t - t0) if t - t0 >= 1.0 else None
            if self.state != "downloading":
                rate = None
            left = max(0, self.bytes_total - self.bytes_done)
            eta = round(left / rate) if rate else None
            return Progress(state=self.state, bytes_done=min(self.bytes_done, self.bytes_total),
                            bytes_total=self.bytes_total, files_done=self.files_done,
                            files_total=self.files_total, updated=now_iso(),
                            bytes_per_second=rate, eta_seconds=eta, message=message)


class Ticker:
    """Calls `emit` every `interval` seconds from a thread, also while a transfer stalls."""

    def __init__(self, emit: Callable[[], None], interval: float) -> None:
        self._emit, self._interval = emit, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._emit()


# ---------------------------------------------------------------------------------------------
# the steps


def _safe_relative(path: str) -> PurePosixPath:
    pure = PurePosixPath(path)
    if (not path or pure.is_absolute() or ".." in pure.parts or "\\" in path
            or pure.parts[0].startswith(".modeldeploy")):
        raise Failure(f"the hub listed a file path the loader will not write: {path!r}",
                      EXIT_HUB_REFUSED)
    return pure


def select(files: Iterable[RemoteFile], excludes: tuple[str, ...]) -> list[RemoteFile]:
    """The files to fetch: the listing less the excluded patterns (fnmatch on the path, as
    huggingface_hub's and modelscope's own ignore patterns)."""
    chosen = []
    for remote in files:
        _safe_relative(remote.path)
        if any(fnmatch.fnmatch(remote.path, pattern) for pattern in excludes):
            continue
        chosen.append(remote)
    return sorted(chosen, key=lambda r: r.path)


class Verified:
    """The record of verified files, so a retry does not hash hundreds of GiB again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            data = json.loads(path.read_text())
            self.files: dict[str, dict[str, Any]] = dict(data.get("files", {}))
        except (OSError, ValueError, AttributeError):
            self.files = {}

    def matches(self, remote: RemoteFile, final: Path) -> bool:
        entry = self.files.get(remote.path)
        if entry is None or not final.is_file():
            return False
        stat = final.stat()
        return (entry.get("size") == remote.size == stat.st_size
                and entry.get("mtimeNs") == stat.st_mtime_ns
                and entry.get("digest") == _expected(remote))

    def record(self, remote: RemoteFile, final: Path) -> None:
        stat = final.stat()
        with self._lock:
            self.files[remote.path] = {"size": stat.st_size, "mtimeNs": stat.st_mtime_ns,
                                       "digest": _expected(remote)}
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({"files": self.files}, sort_keys=True))
            os.replace(tmp, self.path)


def _no_space(options: Options, needed: int, total_needed: int, files: int) -> Failure:
    usage = shutil.disk_usage(options.target)
    return Failure(
        f"not enough space in {options.target} for {options.coordinates}: the remaining files"
        f" need {human(needed)} ({human(total_needed)} in all for {files} files); the volume"
        f" has {human(usage.free)} free of {human(usage.total)} (ENOSPC): give the cache a"
        " larger size (cache.size)", EXIT_NO_SPACE)


def _write_marker(target: Path, coordinates: str) -> None:
    marker = target / MARKER_FILE
    tmp = target / f"{MARKER_FILE}.tmp"
    with tmp.open("w") as f:
        f.write(coordinates)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, marker)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _retrying(what: Callable[[], Any], options: Options, sleep: Callable[[float], None],
              log: Callable[[str], None]) -> Any:
    tries = options.retries + 1
    for attempt in range(1, tries + 1):
        try:
            return what()
        except HubRefused as error:
            raise Failure(str(error), EXIT_HUB_REFUSED) from None
        except HubUnavailable as error:
            if attempt == tries:
                raise Failure(f"{error}; gave up after {tries} tries", EXIT_UNREACHABLE) from None
            pause = min(options.backoff_max_seconds, options.backoff_seconds * 2 ** (attempt - 1))
            log(f"{error}; try {attempt} of {tries}, next in {pause:g} s")
            sleep(pause)
    raise AssertionError("unreachable")


def download(hub: Hub, options: Options, publish: Callable[[Progress], None],
             log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> Progress:
    """The whole download; returns the final (complete) progress or raises Failure."""
    meter = Meter(0, 0, clock)
    try:
        return _download(hub, options, publish, log, sleep, meter)
    except Failure as failure:
        meter.state = "failed"
        failure.progress = meter.snapshot(message=failure.line)
        raise


def _download(hub: Hub, options: Options, publish: Callable[[Progress], None],
              log: Callable[[str], None], sleep: Callable[[float], None],
              meter: Meter) -> Progress:
    target = options.target
    marker = target / MARKER_FILE
    if marker.is_file() and marker.read_text() == options.coordinates:
        log(f"{options.coordinates} is already complete in {target}")
        recorded = Verified(target / VERIFIED_FILE).files.values()
        size = sum(int(entry.get("size", 0)) for entry in recorded)
        done = Progress("complete", size, size, len(recorded), len(recorded), now_iso())
        publish(done)
        return done
    if not target.is_dir():
        raise Failure(f"the target {target} is not a directory (the cache volume's mount)",
                      EXIT_INVALID)
    marker.unlink(missing_ok=True)

    lock = threading.Lock()

    def emit() -> None:  # one record at a time, in order, from this thread or the ticker
        with lock:
            publish(meter.snapshot())

    emit()
    listing = _retrying(hub.listing, options, sleep, log)
    files = select(listing.files, options.excludes)
    if not files:
        raise Failure(f"{options.coordinates} has no files to download (after excluding"
                      f" {', '.join(options.excludes)})", EXIT_HUB_REFUSED)

    weights, partials = target / WEIGHTS_DIR, target / PARTIAL_DIR
    verified = Verified(target / VERIFIED_FILE)
    meter.bytes_total = sum(r.size for r in files)
    meter.files_total = len(files)
    meter.state = "verifying"  # what an earlier try left: checked before anything is fetched
    stop = threading.Event()

    def fetch(remote: RemoteFile) -> None:
        try:
            _fetch_one(hub, listing.commit, remote, weights, partials, verified, meter,
                       options, sleep, log, stop)
        except BaseException:
            stop.set()  # before this worker takes the next file
            raise

    with Ticker(emit, options.interval_seconds):
        pending, needed = _survey(files, weights, partials, verified, meter)
        free = shutil.disk_usage(target).free
        log(f"{options.coordinates}: {len(files)} files, {human(meter.bytes_total)} in all;"
            f" {len(pending)} to fetch ({human(needed)}); {human(free)} free in {target}")
        if needed > free:
            raise _no_space(options, needed, meter.bytes_total, len(files))
        meter.state = "downloading"
        emit()
        with ThreadPoolExecutor(max(1, options.workers), thread_name_prefix="fetch") as pool:
            futures = [pool.submit(fetch, remote) for remote in pending]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()
                wait(futures)  # the others stop at their next chunk
                causes = [f.exception() for f in futures if not f.cancelled() and f.exception()]
                cause = next((e for e in causes if not isinstance(e, Stopped)), None)
                if cause is not None:
                    raise cause from None
                raise
    shutil.rmtree(partials, ignore_errors=True)  # only leftovers remain: every file is in place
    _write_marker(target, options.coordinates)
    meter.state = "complete"
    with lock:
        final_progress = meter.snapshot()
        publish(final_progress)
    return final_progress


def _survey(files: list[RemoteFile], weights: Path, partials: Path, verified: Verified,
            meter: Meter) -> tuple[list[RemoteFile], int]:
    """Which files are still to fetch, and how many bytes: a file in place counts when its
    record matches, or else when its digest does (hashed once, then recorded); a partial
    file counts for what it holds."""
    pending: list[RemoteFile] = []
    needed = 0
    for remote in files:
        final, partial = weights / remote.path, partials / remote.path
        if verified.matches(remote, final):
            meter.adjust(remote.size)
            meter.file_done()
            continue
        if final.is_file():
            if final.stat().st_size == remote.size and \
                    digest_of_file(remote, final) == _expected(remote):
                verified.record(remote, final)
                meter.adjust(remote.size)
                meter.file_done()
                continue
            final.unlink()
        have = partial.stat().st_size if partial.is_file() else 0
        if have > remote.size:
            partial.unlink()
            have = 0
        meter.adjust(have)
        needed += remote.size - have
        pending.append(remote)
    return pending, needed


def _fetch_one(hub: Hub, commit: str, remote: RemoteFile, weights: Path, partials: Path,
               verified: Verified, meter: Meter, options: Options,
               sleep: Callable[[float], None], log: Callable[[str], None],
               stop: threading.Event) -> None:
    final, partial = weights / remote.path, partials / remote.path
    partial.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {}

    def prime() -> None:
        primed = _digest(remote)
        state["hash"] = primed[1] if primed else None
        state["from_disk"] = False
        state["size"] = partial.stat().st_size if partial.exists() else 0
        if state["hash"] is not None and state["size"]:
            _feed(state["hash"], partial, state["size"])

    def on_write(data: bytes | None, n: int) -> None:
        if stop.is_set():
            raise Stopped(remote.path)
        meter.add(n)
        state["size"] += n
        if data is None:
            state["from_disk"] = True
        elif state["hash"] is not None and not state["from_disk"]:
            state["hash"].update(data)

    def on_truncate(size: int) -> None:
        meter.adjust(size - state["size"])
        state["size"] = size
        state["from_disk"] = True

    def attempt() -> None:
        if stop.is_set():
            raise Stopped(remote.path)
        prime()
        hub.fetch(remote, commit, partial, on_write, on_truncate)

    try:
        _retrying(attempt, options, sleep, log)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            left = meter.bytes_total - meter.bytes_done
            raise _no_space(options, left, meter.bytes_total, meter.files_total) from None
        raise
    size = partial.stat().st_size
    if size != remote.size:
        raise Failure(f"verification failed for {remote.path}: {size} bytes, the hub lists"
                      f" {remote.size}; a retry fetches it again", EXIT_VERIFY)
    expected = _expected(remote)
    if expected is not None:
        if state["from_disk"] or state["hash"] is None:
            got = digest_of_file(remote, partial)
        else:
            got = str(state["hash"].hexdigest())
        if got != expected:
            partial.unlink()
            kind = "sha256" if remote.sha256 else "git blob id"
            raise Failure(f"verification failed for {remote.path}: its {kind} is {got}, the"
                          f" hub publishes {expected}; the file was removed and a retry"
                          " fetches it again", EXIT_VERIFY)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, final)
    verified.record(remote, final)
    meter.file_done()
