"""Benchmark of the chart stage: render_charts against a bare matplotlib script.

Five pairs x ten years of daily data. Times render_charts (five pair charts and the
overview) into an empty directory, and a bare matplotlib script that plots the same five
series into one PNG, alternating the two in the same run; prints medians and their ratio.

    .venv/bin/python tests/benchmarks/bench_chart.py [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ticker.chart import DPI, FIGSIZE, render_charts  # noqa: E402
from ticker.models import Point, Series  # noqa: E402

TARGET_RATIO = 2.5
START = date(2015, 1, 1)
DAYS = 3653  # ten years
PER_USD = {"KGS": 87.0, "KZT": 485.0, "TJS": 10.9, "UZS": 12500.0, "TMT": 3.5}
VOLATILITY = {"KGS": 0.002, "KZT": 0.004, "TJS": 0.0015, "UZS": 0.002, "TMT": 0.0003}


def make_series(base: str, seed: int = 0) -> Series:
    """A random walk printed like the site: USD per unit with 5 decimals, change in %."""
    rng = random.Random(f"{base}-{seed}")
    level = PER_USD[base]
    points: list[Point] = []
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
        points.append(
            Point(START + timedelta(days=i), rate, rate_text, Decimal(change_text), change_text)
        )
    return Series("timesca", f"{base}/USD", tuple(points))


def run_render(series: list[Series]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = render_charts(series, Path(tmp))
        elapsed = time.perf_counter() - t0
        assert len(report.written) == len(series) + 1, report
    return elapsed


def run_bare(series: list[Series]) -> float:
    """The baseline: plain pyplot, the five series as lines in one PNG of the same size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
        for s in series:
            x = np.array([p.date for p in s.points], dtype="datetime64[D]")
            y = np.array([1 / float(p.rate) for p in s.points])
            ax.plot(x, y, label=s.pair)
        ax.legend()
        fig.savefig(Path(tmp) / "bare.png")
        plt.close(fig)
        elapsed = time.perf_counter() - t0
    return elapsed


def run_bare_six(series: list[Series]) -> float:
    """For scale only: the same bare script writing six PNGs (one per pair + all five)."""
    import matplotlib.pyplot as plt
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for name, group in [(s.pair, [s]) for s in series] + [("all", series)]:
            fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
            for s in group:
                x = np.array([p.date for p in s.points], dtype="datetime64[D]")
                y = np.array([1 / float(p.rate) for p in s.points])
                ax.plot(x, y, label=s.pair)
            ax.legend()
            fig.savefig(Path(tmp) / f"{name.replace('/', '-')}.png")
            plt.close(fig)
        elapsed = time.perf_counter() - t0
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    t0 = time.perf_counter()
    series = [make_series(base) for base in PER_USD]
    points = sum(len(s.points) for s in series)
    print(
        f"data: {len(series)} pairs, {points} points, generated in {time.perf_counter() - t0:.2f} s"
    )
    run_bare(series)  # warm up: imports, font cache
    run_render(series)
    render_times: list[float] = []
    bare_times: list[float] = []
    six_times: list[float] = []
    for _ in range(args.runs):
        bare_times.append(run_bare(series))
        render_times.append(run_render(series))
        six_times.append(run_bare_six(series))
    render_med = statistics.median(render_times)
    bare_med = statistics.median(bare_times)
    ratio = render_med / bare_med
    print(f"render_charts (6 PNGs): median {render_med:.3f} s  runs {_fmt(render_times)}")
    print(f"bare matplotlib (1 PNG): median {bare_med:.3f} s  runs {_fmt(bare_times)}")
    verdict = "ok" if ratio <= TARGET_RATIO else "OVER TARGET"
    print(f"ratio: {ratio:.2f} (target <= {TARGET_RATIO}) {verdict}")
    six_med = statistics.median(six_times)
    print(
        f"for scale, bare matplotlib writing 6 PNGs: median {six_med:.3f} s  runs {_fmt(six_times)}"
    )
    print(f"ratio per PNG (render_charts / bare, 6 PNGs each): {render_med / six_med:.2f}")
    return 0


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:.3f}" for t in times)


if __name__ == "__main__":
    raise SystemExit(main())
