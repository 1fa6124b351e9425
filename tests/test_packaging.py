"""ticker installed as a package (not editable): what it needs at run time, the
migrations included, ships inside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ticker_env, ticker_subprocess, write_config
from pages import text_page

REPO = Path(__file__).resolve().parent.parent


def test_a_plain_install_backfills_and_draws(tmp_path: Path) -> None:
    """`pip install .` (here into a directory of its own, offline: the build backend is
    in the test environment), then `ticker backfill` and `ticker chart` run from it."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    project = tmp_path / "project"
    write_config(project, store="db/ticker.duckdb", lock_timeout=5)
    for day in ("20 March 2025", "21 March 2025"):
        (project / f"{day}.txt").write_text(text_page(day=day), encoding="utf-8")
    # the installed copy first on the path, run from a directory away from the checkout
    env = ticker_env({"PYTHONPATH": str(target)})

    def ticker(*args: str) -> subprocess.CompletedProcess[str]:
        return ticker_subprocess(None, *args, cwd=project, env={"PYTHONPATH": str(target)})

    where = subprocess.run(
        [sys.executable, "-c", "import ticker; print(ticker.__file__)"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(target)
    backfill = ticker("backfill", ".")
    assert backfill.returncode == 0, backfill.stderr
    assert "observations:             10 new" in backfill.stdout
    chart = ticker("chart")
    assert chart.returncode == 0, chart.stderr
    assert (project / "charts" / "KZT-USD.png").read_bytes().startswith(b"\x89PNG")
    # what `ticker serve` reads from its package ships too
    assert (target / "ticker" / "serve" / "openapi.json").is_file()
    assert (target / "ticker" / "serve" / "templates" / "report.html").is_file()
