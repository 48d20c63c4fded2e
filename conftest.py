"""Run-wide test policy: a skipped test fails the run.

`make test` installs every tool the tests use, so a skip means something is missing or broken,
and a silent skip hides it. Only what cannot exist on the machine may skip: a test that needs a
GPU says so with a reason starting with one of ALLOWED_SKIP_REASONS, e.g.

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: ...")

Every other skip (pytest.skip, importorskip, skipif) is listed with its reason at the end of the
run, and the run fails.
"""

from __future__ import annotations

import pytest

ALLOWED_SKIP_REASONS = ("needs a GPU",)


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, line, message = longrepr
        return f"{message.removeprefix('Skipped: ')} ({path}:{line})"
    return str(longrepr)


class SkipPolicy:
    def __init__(self) -> None:
        self.refused: list[str] = []
        self.allowed: list[str] = []

    def _record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        reason = _reason(report)
        allowed = reason.startswith(ALLOWED_SKIP_REASONS)
        (self.allowed if allowed else self.refused).append(f"{report.nodeid}: {reason}")

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.allowed:
            terminalreporter.section("skipped, allowed (nothing to run them on here)")
            for line in self.allowed:
                terminalreporter.line(line)
        if self.refused:
            terminalreporter.section("skipped, NOT allowed: the run fails", red=True, bold=True)
            for line in self.refused:
                terminalreporter.line(line)
            terminalreporter.line(
                "A test may skip only for what cannot exist here (reason starting with "
                f"{' or '.join(repr(r) for r in ALLOWED_SKIP_REASONS)}). For a missing tool or "
                "package, `make test` (scripts/setup.sh) installs everything the tests need.")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.refused and session.exitstatus in (pytest.ExitCode.OK,
                                                   pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(), "modeldeploy-skip-policy")
