"""Crash loop: `ticker backfill` killed with SIGKILL at random moments, many times.

The test (tests/test_crash.py) does 20 kills; this script does as many as you like, for
a longer soak. After every kill the store must open and hold only whole pages; each
round ends with a run to the end, whose export must equal an uninterrupted run's.

    .venv/bin/python tests/benchmarks/crash_loop.py               # 200 kills
    .venv/bin/python tests/benchmarks/crash_loop.py --kills 1000 --seed 7
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import ticker_subprocess  # noqa: E402
from pages import simulate, write_dumps  # noqa: E402
from test_crash import DAYS, _backfill, _fresh, verify  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from datetime import date

    with tempfile.TemporaryDirectory(prefix="ticker-crash-") as name:
        work = Path(name)
        root = work / "dumps"
        expected = {str(p): 5 for p in write_dumps(root, simulate(date(2019, 1, 1), DAYS))}
        ref = _fresh(work / "reference")
        ticker_subprocess(ref, "backfill", str(root), check=True)
        reference = ticker_subprocess(ref, "export", check=True).stdout
        spans = {}
        for small in (True, False):
            cfg = _fresh(work / "measure")
            t0 = time.monotonic()
            assert _backfill(cfg, root, small).wait(300) == 0
            spans[small] = time.monotonic() - t0

        rng = random.Random(args.seed)
        kills = rounds = partial = 0
        started = time.monotonic()
        while kills < args.kills:
            rounds += 1
            cfg = _fresh(work / "round")
            db = cfg.parent / "ticker.duckdb"
            while kills < args.kills:
                small = rng.random() < 0.75
                proc = _backfill(cfg, root, small)
                try:
                    proc.wait(rng.uniform(0.05, spans[small]))
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    stored = verify(db, expected) if db.exists() else 0
                    partial += 0 < stored < len(expected)
                else:
                    break
            ticker_subprocess(cfg, "backfill", str(root), check=True)
            assert verify(db, expected) == len(expected)
            assert ticker_subprocess(cfg, "export", check=True).stdout == reference
            print(f"round {rounds}: {kills} kills so far, {partial} mid-load", flush=True)
        print(
            f"{kills} kills in {rounds} rounds ({partial} left a partly loaded store), "
            f"every store whole, every export equal: {time.monotonic() - started:.0f} s"
        )


if __name__ == "__main__":
    main()
