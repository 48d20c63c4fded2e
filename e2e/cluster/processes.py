"""Child processes of the e2e cluster: started in their own process group, logged to a file,
stopped as a group, and recorded so that another process (`down`) can stop them too."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Process:
    """A started component. `start_ticks` tells this process apart from a later one that
    happens to get the same pid (the kernel's start time, field 22 of /proc/PID/stat)."""

    name: str
    pid: int
    start_ticks: int
    log: Path

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "log": str(self.log)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Process:
        return cls(data["name"], int(data["pid"]), int(data["start_ticks"]), Path(data["log"]))

    def is_ours(self) -> bool:
        """True while the pid still belongs to the process this record describes."""
        return _start_ticks(self.pid) == self.start_ticks

    def is_running(self) -> bool:
        return self.is_ours() and _state(self.pid) not in ("Z", "X", None)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log})"
        return "\n".join(text.splitlines()[-lines:])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces
    return stat[stat.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it if the parent dies (even by SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    name: str,
    argv: list[str],
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    die_with_parent: bool = True,
) -> Process:
    """Starts argv in a new session (its own process group), stdout+stderr to LOG_DIR/NAME.log."""
    log = log_dir / f"{name}.log"
    with log.open("ab") as output:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    ticks = _start_ticks(child.pid)
    return Process(name, child.pid, ticks if ticks is not None else -1, log)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    """Collects the exit status when the process is our child; ignores it otherwise."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _wait_group_gone(process: Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(process.pid)
        leader_gone = not process.is_running()
        if not _group_alive(process.pid) or (leader_gone and not _other_members(process.pid)):
            _reap(process.pid)  # it may have exited since the first call
            return True
        time.sleep(0.05)
    return False


def _other_members(pgid: int) -> bool:
    """Whether any live process other than the leader is in the group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == pgid:
            continue
        fields = _stat_fields(int(entry.name))
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def stop(process: Process, grace: float = 10.0) -> None:
    """SIGTERM to the whole process group, SIGKILL after `grace` seconds."""
    if not process.is_ours():
        _reap(process.pid)
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        if _wait_group_gone(process, wait):
            return
    raise RuntimeError(f"{process.name} (pid {process.pid}) survived SIGKILL")


def stop_all(processes: list[Process], grace: float = 10.0) -> None:
    """Stops in reverse start order; tries every process even if one fails."""
    errors = []
    for process in reversed(processes):
        try:
            stop(process, grace)
        except RuntimeError as error:
            errors.append(str(error))
    if errors:
        raise RuntimeError("; ".join(errors))
