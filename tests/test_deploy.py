"""The systemd units in deploy/: each runs the command it names, and each is hardened to
an exposure level of 2.0 or less as `systemd-analyze security` rates it offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = {"ticker.service": " run", "ticker-serve.service": " serve"}


def settings(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / unit).read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_each_unit_runs_its_command_as_the_ticker_user(unit: str) -> None:
    s = settings(unit)
    assert s["ExecStart"][0].endswith(UNITS[unit])
    assert s["User"] == ["ticker"] and s["KillSignal"] == ["SIGTERM"]


def test_the_server_writes_nothing_and_gives_way_to_the_daemon() -> None:
    s = settings("ticker-serve.service")
    assert "ReadWritePaths" not in s and s["ProtectSystem"] == ["strict"]
    assert int(s["Nice"][0]) > 0 and int(s["CPUWeight"][0]) < 100
    assert s["CPUQuota"] == ["100%"]  # one core's worth: another is left for the daemon
    daemon = settings("ticker.service")
    assert daemon["ReadWritePaths"] == ["/opt/ticker/db /opt/ticker/charts"]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_each_unit_is_exposed_2_or_less(unit: str) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(DEPLOY / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.0, proc.stdout
