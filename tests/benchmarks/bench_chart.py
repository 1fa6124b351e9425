"""Benchmark of the chart stage: write_charts against a bare matplotlib script.

Five pairs x ten years of daily data. Times write_charts (five pair charts and the
overview, into an empty directory) and a bare matplotlib script that plots the same five
series into one PNG, alternating the two in the same run, and prints the medians and their
ratio (target <= 2.5). Wall time is the figure that counts; process CPU time (all threads)
is printed beside it because it barely moves when other work shares the machine. For scale
it also times the bare script writing six PNGs, one per chart that write_charts writes.

    .venv/bin/python tests/benchmarks/bench_chart.py [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ticker.charts.data import DPI, FIGSIZE  # noqa: E402
from ticker.charts.files import write_charts  # noqa: E402
from ticker.models import Day, Observation, Record, Series  # noqa: E402

TARGET_RATIO = 2.5
START = date(2015, 1, 1)
DAYS = 3653  # ten years
PER_USD = {"KGS": 87.0, "KZT": 485.0, "TJS": 10.9, "UZS": 12500.0, "TMT": 3.5}
VOLATILITY = {"KGS": 0.002, "KZT": 0.004, "TJS": 0.0015, "UZS": 0.002, "TMT": 0.0003}


def make_series(base: str, seed: int = 0) -> Series:
    """A random walk printed like the site: USD per unit with 5 decimals, change in %."""
    rng = random.Random(f"{base}-{seed}")
    level = PER_USD[base]
    points: list[Day] = []
    prev: Decimal | None = None
    for i in range(DAYS):
        level *= 1 + rng.gauss(0, VOLATILITY[base])
        level += (PER_USD[base] - level) * 0.002
        if rng.random() < 0.02:  # a day without a reading
            continue
        rate_text = f"{1 / level:.5f}"
        rate = Decimal(rate_text)
        change = Decimal(0) if prev is None else (rate - prev) / prev * 100
        change_text = f"{change:.2f}".rstrip("0").rstrip(".")
        prev = rate
        day = START + timedelta(days=i)
        points.append(Day("timesca", f"{base}/USD", day, rate_text, change_text))
    return Series("timesca", f"{base}/USD", tuple(points))


def render(series: list[Series], out: Path) -> None:
    """The chart stage: five pair charts and the overview."""
    report = write_charts(series, out)
    assert len(report.written) == len(series) + 1, report


def bare(series: list[Series], out: Path) -> None:
    """The baseline: plain pyplot, the five series as lines in one PNG of the same size."""
    _bare_png(series, out / "bare.png")


def bare_six(series: list[Series], out: Path) -> None:
    """For scale only: the same bare script writing six PNGs (one per pair + all five)."""
    for s in series:
        _bare_png([s], out / f"{s.pair.replace('/', '-')}.png")
    _bare_png(series, out / "all.png")


def _bare_png(series: list[Series], path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    for s in series:
        x = np.array([p.date for p in s.days], dtype="datetime64[D]")
        y = np.array([1 / float(p.rate) for p in s.days])
        ax.plot(x, y, label=s.pair)
    ax.legend()
    fig.savefig(path)
    plt.close(fig)


def timed(job: Callable[[list[Series], Path], None], series: list[Series]) -> tuple[float, float]:
    """Wall and process CPU seconds of one run into an empty directory."""
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        job(series, Path(tmp))
        return time.perf_counter() - wall, time.process_time() - cpu


BARE_SCRIPT = """
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
series = {}
with open(sys.argv[1], newline="") as fh:
    for row in csv.DictReader(fh):
        series.setdefault(row["pair"], []).append((row["date"], 1 / float(row["rate"])))
fig, ax = plt.subplots(figsize=(10, 6), dpi=120)
for pair, rows in series.items():
    ax.plot(np.array([d for d, _ in rows], dtype="datetime64[D]"), [v for _, v in rows], label=pair)
ax.legend()
fig.savefig(sys.argv[2])
"""


def command_level(series: list[Series], runs: int) -> None:
    """The whole commands, as a user runs them: `ticker chart --all` against a database
    holding the ten years, and a bare matplotlib script reading the same series from the
    CSV export, each a fresh process (start-up and imports included)."""
    import subprocess

    from ticker.store import Store
    from ticker.store.write import write_records

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "config.toml").write_text('[store]\npath = "t.duckdb"\n')
        by_day: dict[date, list[Observation]] = {}
        for s in series:
            for p in s.days:
                by_day.setdefault(p.date, []).append(Observation(s.pair, p.date, p.rate, p.change))
        pages = [
            Record(
                f"k{d}",
                "timesca",
                f"gen/{d}",
                None,
                None,
                f"h{d}",
                "ok",
                d,
                d,
                "header",
                1,
                8,
                None,
                tuple(qs),
            )
            for d, qs in sorted(by_day.items())
        ]
        with Store.open(root / "t.duckdb") as store:
            write_records(store, pages, datetime.now(UTC))
        cmd = [sys.executable, "-m", "ticker", "--config", str(root / "config.toml")]
        subprocess.run(
            [*cmd, "export", "--out", str(root / "all.csv")], check=True, capture_output=True
        )
        (root / "bare.py").write_text(BARE_SCRIPT)
        ours, base = [], []
        for i in range(runs + 1):
            t = time.perf_counter()
            subprocess.run(
                [*cmd, "chart", "--all", "--out", str(root / f"c{i}")],
                check=True,
                capture_output=True,
            )
            t_ours = time.perf_counter() - t
            t = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    str(root / "bare.py"),
                    str(root / "all.csv"),
                    str(root / f"b{i}.png"),
                ],
                check=True,
                capture_output=True,
            )
            t_base = time.perf_counter() - t
            if i:  # the first pair of runs warms the font cache and the disk
                ours.append(t_ours)
                base.append(t_base)
        o, b = statistics.median(ours), statistics.median(base)
        print(f"command `ticker chart --all` (6 PNGs)      median wall {o:.3f} s")
        print(f"command bare matplotlib script (1 PNG)    median wall {b:.3f} s")
        verdict = "ok" if o / b <= TARGET_RATIO else "OVER TARGET"
        print(f"ratio, whole commands: {o / b:.2f} (target <= {TARGET_RATIO}: {verdict})")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    t0 = time.perf_counter()
    series = [make_series(base) for base in PER_USD]
    points = sum(len(s.days) for s in series)
    print(
        f"data: {len(series)} pairs x 10 years, {points} points ({time.perf_counter() - t0:.2f} s)"
    )
    jobs = {
        "write_charts, 6 PNGs": render,
        "bare matplotlib, 1 PNG": bare,
        "bare matplotlib, 6 PNGs (scale)": bare_six,
    }
    for job in jobs.values():  # warm up: imports, font cache
        timed(job, series)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in jobs}
    for _ in range(args.runs):
        for name, job in jobs.items():
            results[name].append(timed(job, series))
    medians: dict[str, tuple[float, float]] = {}
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        medians[name] = (wall, cpu)
        each = " ".join(f"{r[0]:.3f}" for r in runs)
        print(f"{name:33s} median wall {wall:.3f} s, cpu {cpu:.3f} s  (wall runs: {each})")
    render_wall, render_cpu = medians["write_charts, 6 PNGs"]
    bare_wall, bare_cpu = medians["bare matplotlib, 1 PNG"]
    ratio = render_wall / bare_wall
    verdict = "ok" if ratio <= TARGET_RATIO else "OVER TARGET"
    print(f"ratio write_charts / bare (1 PNG): wall {ratio:.2f}, cpu {render_cpu / bare_cpu:.2f}")
    print(f"  target <= {TARGET_RATIO}: {verdict}")
    six_wall, six_cpu = medians["bare matplotlib, 6 PNGs (scale)"]
    print(
        f"ratio per PNG, write_charts / bare (6 PNGs each): wall {render_wall / six_wall:.2f}, "
        f"cpu {render_cpu / six_cpu:.2f}"
    )
    command_level(series, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
