"""`make demo` as a person sees it: run in a terminal (tmux), its screen read back.

The first run goes to Available for every seed example, then gets Ctrl-C; the second run
reuses the environment and the binaries and is stopped half-way. After each, no process that
the demo started is left (checked in /proc, as `ps` reads it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
NAMES = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in EXAMPLES]
PROMPT = "demo-test> "


class Terminal:
    """A tmux server of its own (its own socket), one window of 160x50 running bash."""

    def __init__(self, socket: Path, env: dict[str, str]) -> None:
        self.socket = socket
        self.env = env
        self.tmux("new-session", "-d", "-s", "demo", "-x", "160", "-y", "50",
                  "bash --norc --noprofile")
        self.tmux("set-option", "-t", "demo", "history-limit", "5000")

    def tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-S", str(self.socket), *args], env=self.env,
                                capture_output=True, text=True, check=True, timeout=30)
        return result.stdout

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "demo", line, "Enter")

    def ctrl_c(self) -> None:
        self.tmux("send-keys", "-t", "demo", "C-c")

    def screen(self) -> str:
        """What the terminal shows now (the visible 50 lines)."""
        return self.tmux("capture-pane", "-p", "-t", "demo")

    def history(self) -> str:
        """Everything the terminal printed, scrolled-off lines included."""
        return self.tmux("capture-pane", "-p", "-S", "-", "-t", "demo")

    def wait_for(self, text: str, timeout: float) -> str:
        """Waits until TEXT (a regular expression) is on the screen or in its history."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.history()
            if re.search(text, shown):
                return shown
            time.sleep(0.5)
        raise AssertionError(f"{text!r} not on the screen after {timeout:.0f}s; it shows:\n"
                             f"{self.history()[-6000:]}")

    def wait_for_prompt(self, timeout: float) -> None:
        """Waits until the shell's prompt is the last line: the command has returned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [line for line in self.screen().splitlines() if line.strip()]
            if lines and lines[-1] == PROMPT.strip():
                return
            time.sleep(0.5)
        raise AssertionError(f"no prompt after {timeout:.0f}s; the screen shows:\n"
                             f"{self.screen()}")

    def foreground(self) -> str:
        return self.tmux("display-message", "-p", "-t", "demo", "#{pane_current_command}").strip()

    def close(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], env=self.env,
                       capture_output=True, check=False, timeout=30)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (scripts/setup.sh lists what the tests need)")
    env = {**os.environ, "TERM": "xterm-256color", "MODELDEPLOY_DEMO_DIR": str(tmp_path / "demo")}
    env.pop("TMUX", None)
    term = Terminal(tmp_path / "tmux.sock", env)
    term.type(f"PS1='{PROMPT}'; cd {ROOT}")
    term.wait_for_prompt(timeout=30)
    try:
        yield term
    finally:
        term.close()


def processes_mentioning(text: str) -> list[str]:
    """`ps -ww -eo pid,args` lines whose command line contains TEXT (the demo's folder is in the
    arguments of every component: etcd's data dir, the certificates, the operator's config)."""
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True,
                        check=True)
    return [line for line in ps.stdout.splitlines()[1:] if text in line]


def table_rows(screen: str) -> dict[str, list[str]]:
    """The live table's last rows on the screen, by name."""
    rows: dict[str, list[str]] = {}
    for line in screen.splitlines():
        cells = line.split()
        if cells and cells[0] in NAMES:
            rows[cells[0]] = cells
    return rows


def test_make_demo_reaches_available_and_ctrl_c_leaves_nothing(terminal: Terminal,
                                                               tmp_path: Path) -> None:
    demo_dir = str(tmp_path / "demo")
    terminal.type("make demo")
    shown = terminal.wait_for("Press Ctrl-C to stop", timeout=300)
    screen = terminal.screen()
    (tmp_path / "screen-available.txt").write_text(screen)
    print(f"\n--- the demo's screen once everything is Available ---\n{screen}")

    assert "SIMULATED GPU" in shown and "kwok" in shown
    assert "control plane binaries:" in shown and "operator running: modeldeploy run" in shown
    assert f"All {len(NAMES)} ModelDeployments are Available" in shown
    rows = table_rows(screen)
    assert sorted(rows) == sorted(NAMES), screen
    for name, cells in rows.items():
        assert "Ready" in cells, (name, cells)
        assert "[###]" in cells, (name, cells)
    assert "NAME" in screen and "PROGRESS" in screen
    assert f"{len(NAMES)} of {len(NAMES)} Available" in screen
    assert "kubectl get md" in shown and "kubectl describe md" in shown
    assert f"source {demo_dir}/env" in shown
    assert ".svc.cluster.local:8000/v1" in shown

    # what the screen tells a person to try works, while the demo runs
    env_file = Path(demo_dir) / "env"
    listed = subprocess.run(["bash", "-c", f"source {env_file} && kubectl get md --no-headers"],
                            capture_output=True, text=True, check=True, timeout=60)
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()) == sorted(NAMES)
    assert all("Ready" in line for line in listed.stdout.splitlines()), listed.stdout
    assert processes_mentioning(demo_dir), "the demo's processes should be running now"

    terminal.ctrl_c()
    terminal.wait_for("Nothing of the demo is left running", timeout=60)
    terminal.wait_for_prompt(timeout=30)
    stopped = terminal.screen()
    (tmp_path / "screen-stopped.txt").write_text(stopped)
    print(f"--- after Ctrl-C ---\n{stopped}")
    assert terminal.foreground() == "bash"
    assert processes_mentioning(demo_dir) == []
    assert not Path(demo_dir).exists()


def test_make_demo_twice_reuses_and_ctrl_c_midway_leaves_nothing(terminal: Terminal,
                                                                 tmp_path: Path) -> None:
    demo_dir = str(tmp_path / "demo")
    terminal.type("make demo")
    terminal.wait_for("operator running", timeout=300)
    terminal.ctrl_c()
    terminal.wait_for("Nothing of the demo is left running", timeout=60)
    terminal.wait_for_prompt(timeout=30)
    assert processes_mentioning(demo_dir) == []

    terminal.tmux("clear-history", "-t", "demo")
    terminal.type("clear; make demo")
    shown = terminal.wait_for("kubectl apply -f examples/", timeout=300)
    assert "up to date" in shown  # the environment is reused, not reinstalled
    assert "building" not in shown  # and so are the binaries
    terminal.ctrl_c()  # half-way: downloads still running
    shown = terminal.wait_for("Nothing of the demo is left running", timeout=60)
    terminal.wait_for_prompt(timeout=30)
    print(f"\n--- a second run, stopped half-way ---\n{terminal.screen()}")
    assert "SIGINT received" in shown
    assert terminal.foreground() == "bash"
    assert processes_mentioning(demo_dir) == []
