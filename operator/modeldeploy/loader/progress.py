"""Download progress: the record the loader publishes, and how the operator reads and words it.

The record is compact JSON in one annotation of the download Job (`PROGRESS_ANNOTATION`):

    {"v":1,"state":"downloading","bytesDone":..,"bytesTotal":..,"filesDone":..,"filesTotal":..,
     "bytesPerSecond":..,"etaSeconds":..,"updated":"2026-01-01T00:00:00Z","message":..}

`state` is one of `listing`, `downloading`, `verifying`, `complete`, `failed`; `message` is the
loader's one-line reason when it failed. Everything here is pure.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

STATES = ("listing", "downloading", "verifying", "complete", "failed")
RECORD_VERSION = 1
GIB = 1024**3
MIB = 1024**2
KIB = 1024


@dataclass(frozen=True)
class Progress:
    state: str
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    updated: str
    bytes_per_second: float | None = None
    eta_seconds: int | None = None
    message: str | None = None

    @property
    def percent(self) -> int:
        """Whole percent, rounded down: 100 only once every byte is there."""
        if self.bytes_total <= 0:
            return 100 if self.state == "complete" else 0
        return min(100, self.bytes_done * 100 // self.bytes_total)


def encode_progress(progress: Progress) -> str:
    """The annotation's value (compact JSON, keys in camelCase)."""
    record: dict[str, Any] = {"v": RECORD_VERSION, "state": progress.state,
                              "bytesDone": progress.bytes_done,
                              "bytesTotal": progress.bytes_total,
                              "filesDone": progress.files_done,
                              "filesTotal": progress.files_total,
                              "updated": progress.updated}
    if progress.bytes_per_second is not None:
        record["bytesPerSecond"] = round(progress.bytes_per_second)
    if progress.eta_seconds is not None:
        record["etaSeconds"] = progress.eta_seconds
    if progress.message:
        record["message"] = progress.message
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _int(record: dict[str, Any], key: str) -> int | None:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def parse_progress(value: str | None) -> Progress | None:
    """The annotation's value -> Progress; None for anything missing, malformed or inconsistent
    (the annotation is written by a pod, so it is read as untrusted input)."""
    if not value or len(value) > 4096:
        return None
    try:
        record = json.loads(value)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("v") != RECORD_VERSION:
        return None
    state = record.get("state")
    updated = record.get("updated")
    counts = [_int(record, key) for key in ("bytesDone", "bytesTotal", "filesDone", "filesTotal")]
    if state not in STATES or not isinstance(updated, str) or len(updated) > 40:
        return None
    bytes_done, bytes_total, files_done, files_total = counts
    if bytes_done is None or bytes_total is None or files_done is None or files_total is None:
        return None
    if bytes_done > bytes_total or files_done > files_total:
        return None
    rate = record.get("bytesPerSecond")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) \
            or rate < 0:
        rate = None
    message = record.get("message")
    if not isinstance(message, str):
        message = None
    return Progress(state=state, bytes_done=bytes_done, bytes_total=bytes_total,
                    files_done=files_done, files_total=files_total, updated=updated,
                    bytes_per_second=float(rate) if rate is not None else None,
                    eta_seconds=_int(record, "etaSeconds"),
                    message=message[:500] if message else None)


def _number(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def format_size(done: int, total: int) -> str:
    """'163 of 440 GiB': both in the unit the total reads best in."""
    unit, name = next(((u, n) for u, n in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB"))
                       if total >= u), (1, "B"))
    if unit == 1:
        return f"{done} of {total} B"
    return f"{_number(done / unit)} of {_number(total / unit)} {name}"


def format_bytes(n: int) -> str:
    """'29 GiB', '1.5 MiB', '512 B'."""
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if n >= unit:
            return f"{_number(n / unit)} {name}"
    return f"{n} B"


def format_rate(bytes_per_second: float) -> str:
    """Decimal units, as network rates are given: '210 MB/s'."""
    for unit, name in ((1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")):
        if bytes_per_second >= unit:
            return f"{_number(bytes_per_second / unit)} {name}"
    return f"{bytes_per_second:.0f} B/s"


def format_eta(seconds: int) -> str:
    if seconds < 60:
        return "less than a minute left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min left" if minutes else f"about {hours} h left"


def progress_message(progress: Progress) -> str:
    """The CacheReady condition's message, e.g.
    'Downloading 37% (163 of 440 GiB, 210 MB/s, about 23 min left)'."""
    size = format_size(progress.bytes_done, progress.bytes_total)
    if progress.state == "failed":
        return f"Download failed at {progress.percent}% ({size}): {progress.message or 'unknown'}"
    if progress.state == "listing":
        return "Downloading: listing the files of the revision"
    if progress.state == "verifying":
        return f"Downloading: checking the files already in the cache ({size})"
    if progress.state == "complete":
        return f"Downloaded {format_bytes(progress.bytes_total)} ({progress.files_total} files)"
    parts = [size]
    if progress.bytes_per_second:
        parts.append(format_rate(progress.bytes_per_second))
    if progress.eta_seconds is not None and progress.bytes_per_second:
        parts.append(format_eta(progress.eta_seconds))
    return f"Downloading {progress.percent}% ({', '.join(parts)})"


def progress_status(progress: Progress) -> dict[str, Any]:
    """`status.download` of a ModelDeployment."""
    status: dict[str, Any] = {
        "bytesDone": progress.bytes_done,
        "bytesTotal": progress.bytes_total,
        "percent": progress.percent,
        "filesDone": progress.files_done,
        "filesTotal": progress.files_total,
        "updated": progress.updated,
    }
    if progress.bytes_per_second is not None:
        status["bytesPerSecond"] = round(progress.bytes_per_second)
    if progress.eta_seconds is not None:
        status["etaSeconds"] = progress.eta_seconds
    return status


def as_dict(progress: Progress) -> dict[str, Any]:
    return asdict(progress)
