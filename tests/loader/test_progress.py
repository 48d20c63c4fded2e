"""The progress record: what the loader writes, what the operator reads and shows."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy.loader import Progress, parse_progress, progress_message, progress_status
from modeldeploy.loader.progress import encode_progress, format_eta

GIB = 1024**3
WHEN = "2026-12-02T01:00:00Z"


def downloading(done: int, total: int, rate: float | None, eta: int | None) -> Progress:
    return Progress("downloading", done, total, 3, 55, WHEN, bytes_per_second=rate,
                    eta_seconds=eta)


def test_message_has_the_documented_form() -> None:
    p = downloading(163 * GIB, 440 * GIB, 210e6, 23 * 60)
    assert progress_message(p) == "Downloading 37% (163 of 440 GiB, 210 MB/s, about 23 min left)"


@pytest.mark.parametrize(("progress", "message"), [
    (downloading(0, 29 * GIB, None, None), "Downloading 0% (0.0 of 29 GiB)"),
    (downloading(int(1.5 * GIB), 29 * GIB, 1.2e9, 23), "Downloading 5% (1.5 of 29 GiB, 1.2 GB/s,"
     " less than a minute left)"),
    (downloading(5 * 1024**2, 24 * 1024**2, 800e3, 3 * 3600 + 300),
     "Downloading 20% (5.0 of 24 MiB, 800 kB/s, about 3 h 5 min left)"),
    (downloading(440 * GIB - 1, 440 * GIB, 210e6, 0),
     "Downloading 99% (440 of 440 GiB, 210 MB/s, less than a minute left)"),
    (Progress("listing", 0, 0, 0, 0, WHEN), "Downloading: listing the files of the revision"),
    (Progress("verifying", 12 * GIB, 29 * GIB, 2, 9, WHEN),
     "Downloading: checking the files already in the cache (12 of 29 GiB)"),
    (Progress("complete", 440 * GIB, 440 * GIB, 55, 55, WHEN), "Downloaded 440 GiB (55 files)"),
    (Progress("failed", 10 * GIB, 40 * GIB, 1, 9, WHEN, message="the hub refused the token"),
     "Download failed at 25% (10 of 40 GiB): the hub refused the token"),
])
def test_messages(progress: Progress, message: str) -> None:
    assert progress_message(progress) == message


def test_eta_wording() -> None:
    assert [format_eta(s) for s in (0, 59, 60, 89, 90, 3599, 3600, 7260)] == [
        "less than a minute left", "less than a minute left", "about 1 min left",
        "about 1 min left", "about 2 min left", "about 1 h left", "about 1 h left",
        "about 2 h 1 min left"]


def test_status_dict_for_the_resource() -> None:
    p = downloading(163 * GIB, 440 * GIB, 210e6, 1380)
    assert progress_status(p) == {
        "bytesDone": 163 * GIB, "bytesTotal": 440 * GIB, "percent": 37,
        "bytesPerSecond": 210_000_000, "etaSeconds": 1380, "filesDone": 3, "filesTotal": 55,
        "updated": WHEN}
    # no rate yet: the keys are left out, not null
    assert set(progress_status(downloading(0, 1, None, None))) == {
        "bytesDone", "bytesTotal", "percent", "filesDone", "filesTotal", "updated"}


def test_round_trip_and_compact() -> None:
    p = Progress("failed", 1, 2, 0, 1, WHEN, bytes_per_second=3.0, eta_seconds=4, message="x")
    value = encode_progress(p)
    assert " " not in value
    assert parse_progress(value) == p


@pytest.mark.parametrize("value", [
    None, "", "not json", "[]", "{}", '{"v":2,"state":"downloading"}',
    '{"v":1,"state":"dancing","bytesDone":0,"bytesTotal":0,"filesDone":0,"filesTotal":0,'
    '"updated":"x"}',
    '{"v":1,"state":"downloading","bytesDone":5,"bytesTotal":4,"filesDone":0,"filesTotal":0,'
    '"updated":"x"}',
    '{"v":1,"state":"downloading","bytesDone":-1,"bytesTotal":4,"filesDone":0,"filesTotal":0,'
    '"updated":"x"}',
    '{"v":1,"state":"downloading","bytesDone":true,"bytesTotal":4,"filesDone":0,'
    '"filesTotal":0,"updated":"x"}',
    '{"v":1,"state":"downloading","bytesDone":1,"bytesTotal":4,"filesDone":0,"filesTotal":0}',
    "{" + " " * 5000 + "}",
])
def test_malformed_records_are_ignored(value: str | None) -> None:
    assert parse_progress(value) is None


def test_untrusted_extras_are_dropped_or_bounded() -> None:
    record = {"v": 1, "state": "failed", "bytesDone": 0, "bytesTotal": 0, "filesDone": 0,
              "filesTotal": 0, "updated": WHEN, "bytesPerSecond": "fast", "etaSeconds": -3,
              "message": "m" * 1000}
    p = parse_progress(json.dumps(record))
    assert p is not None
    assert (p.bytes_per_second, p.eta_seconds, len(p.message or "")) == (None, None, 500)


@given(st.text(max_size=300))
def test_parse_never_raises(value: str) -> None:
    parse_progress(value)


@given(done=st.integers(0, 10**15), extra=st.integers(0, 10**15),
       rate=st.none() | st.floats(0, 1e12), eta=st.none() | st.integers(0, 10**8))
def test_message_for_any_record(done: int, extra: int, rate: float | None,
                                eta: int | None) -> None:
    p = downloading(done, done + extra, rate, eta)
    message = progress_message(p)
    assert message.startswith(f"Downloading {p.percent}% (")
    assert 0 <= p.percent <= 100
    assert parse_progress(encode_progress(p)) is not None


def test_meter_rate_over_the_last_30_seconds_and_time_left() -> None:
    from modeldeploy.loader.download import Meter

    now = [0.0]
    meter = Meter(1000 * 10**6, 10, clock=lambda: now[0])
    meter.state = "downloading"
    meter.adjust(100 * 10**6)  # resumed from an earlier try: done, but not speed
    assert meter.snapshot().bytes_per_second is None
    for _ in range(60):  # 10 MB/s for a minute
        now[0] += 1.0
        meter.add(10 * 10**6)
        meter.snapshot()
    p = meter.snapshot()
    assert p.bytes_per_second == pytest.approx(10e6)
    assert p.bytes_done == 700 * 10**6
    assert p.eta_seconds == 30
    for _ in range(40):  # then stalled: the rate falls as the window moves on
        now[0] += 1.0
        meter.snapshot()
    stalled = meter.snapshot()
    assert stalled.bytes_per_second == 0
    assert stalled.eta_seconds is None
    assert progress_message(stalled) == "Downloading 70% (668 of 954 MiB)"
