"""Benchmark: `ticker backfill` of many page dumps against `grep -c` over the same files.

Generates N dumps of about 27 KB each (a real page's size: the ticker header with 8 copies
of 5 pairs, the date line, filler text), then, in one run:

  1. grep:     `find DIR -type f -exec grep -c KGS/USD {} +` (the page cache warmed first)
  2. backfill: `ticker backfill DIR` into an empty database, output not a terminal
  3. re-run:   `ticker backfill DIR` again over the unchanged files

Targets (issue 2): backfill <= 3x grep; re-run <= 0.25x the first run.

    .venv/bin/python tests/benchmarks/bench_backfill.py            # 20,000 files
    .venv/bin/python tests/benchmarks/bench_backfill.py --files 2000
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

PAIRS = ("KGS", "KZT", "TJS", "UZS", "TMT")
PAGE_BYTES = 27_000
FILES_PER_DIR = 1000
# Filler of our own: nothing here comes from a real article.
WORDS = (
    "river valley market bridge morning council harvest caravan ledger window orchard "
    "station lantern meadow copper granary quarry village thread pottery festival road "
    "weather mountain pasture timber canal courier archive bazaar tram square evening "
    "railway brick school garden notebook kettle workshop cotton melon apricot bicycle"
).split()


def ticker_cmd() -> list[str]:
    script = Path(sys.executable).parent / "ticker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ticker"]


def paragraphs(rng: random.Random, count: int) -> list[str]:
    out = []
    for _ in range(count):
        sentences = []
        for _ in range(rng.randint(3, 7)):
            words = rng.choices(WORDS, k=rng.randint(8, 18))
            sentences.append(" ".join(words).capitalize() + ".")
        out.append(" ".join(sentences))
    return out


def quotes_for(day: date, rng: random.Random) -> list[tuple[str, str, str]]:
    """Plausible values: a rate with 5 decimals and a change of up to 2 decimals."""
    base = {"KGS": 0.01144, "KZT": 0.00199, "TJS": 0.09168, "UZS": 0.00008, "TMT": 0.28573}
    out = []
    for code in PAIRS:
        rate = base[code] * (1 + rng.uniform(-0.05, 0.05))
        change = rng.choice(["0", "-0", f"{rng.uniform(-1, 1):.2f}".rstrip("0").rstrip(".")])
        out.append((code, f"{max(rate, 0.00001):.5f}", change))
    return out


def generate(root: Path, files: int, per_date: int, seed: int = 7) -> int:
    """Write the dumps under root (FILES_PER_DIR per subdirectory); returns total bytes."""
    rng = random.Random(seed)
    pool = paragraphs(rng, 400)
    # The dates end before today: a page dated in the future is refused.
    start = date(2025, 12, 31) - timedelta(days=files // per_date)
    total = 0
    quotes: list[tuple[str, str, str]] = []
    day = start
    for i in range(files):
        if i % per_date == 0:
            day = start + timedelta(days=i // per_date)
            quotes = quotes_for(day, rng)
        block = "".join(f"  \u2022 {c}/USD = {r} {ch}%\n" for _ in range(8) for c, r, ch in quotes)
        head = block.lstrip() + f"{day.day:02d} {day:%B %Y}\n\nPage {i} of the benchmark\n\n"
        body = [head]
        size = len(head)
        k = i * 7
        while size < PAGE_BYTES:
            para = pool[k % len(pool)]
            body.append(para + "\n\n")
            size += len(para) + 2
            k += 1
        data = "".join(body).encode("utf-8")
        sub = root / f"{i // FILES_PER_DIR:03d}"
        if i % FILES_PER_DIR == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"page_{i:06d}.txt").write_bytes(data)
        total += len(data)
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


CPU: dict[str, float] = {}  # CPU seconds (user + sys, all processes) of the last run of each


def timed(
    cmd: list[str], cwd: Path, name: str = ""
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Wall time of a command (its output to pipes, not a terminal); CPU time into CPU."""
    cpu, started = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True)
    CPU[name] = children_cpu() - cpu
    return time.perf_counter() - started, proc


def grep_once(dumps: Path, cwd: Path) -> float:
    cmd = ["find", str(dumps), "-type", "f", "-exec", "grep", "-c", "KGS/USD", "{}", "+"]
    seconds, proc = timed(cmd, cwd, "grep")
    if proc.returncode not in (0, 1):
        raise SystemExit(f"grep failed: {proc.stderr.decode()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000, help="dumps to generate")
    parser.add_argument("--per-date", type=int, default=5, help="pages per date")
    parser.add_argument("--keep", type=Path, help="use (and keep) this directory")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="ticker-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    dumps = work / "dumps"
    try:
        marker = work / f".generated-{args.files}-{args.per_date}"
        if not marker.exists():  # --keep DIR: the dumps of an earlier run are used again
            if dumps.exists():
                shutil.rmtree(dumps)
            for old in work.glob(".generated-*"):
                old.unlink()
            started = time.perf_counter()
            size = generate(dumps, args.files, args.per_date)
            marker.write_text(str(size), encoding="utf-8")
            print(
                f"generated {args.files} dumps, {size / 1e6:.0f} MB "
                f"({size / args.files / 1000:.1f} KB each) in {time.perf_counter() - started:.1f} s"
            )
        # Write the new files out now: the kernel flushing 500 MB of dirty pages in the
        # background would otherwise slow down whichever command runs meanwhile.
        os.sync()
        (work / "config.toml").write_text('[store]\npath = "bench.duckdb"\n', encoding="utf-8")
        for leftover in work.glob("bench.duckdb*"):
            leftover.unlink()
        ticker = [*ticker_cmd(), "--config", str(work / "config.toml"), "backfill", str(dumps)]

        grep_once(dumps, work)  # warm the page cache: both contenders read from memory
        grep_s = statistics.median(grep_once(dumps, work) for _ in range(3))
        first_s, first = timed(ticker, work, "first")
        if first.returncode != 0:
            raise SystemExit(f"backfill failed ({first.returncode}): {first.stderr.decode()}")
        rerun_s, rerun = timed(ticker, work, "rerun")
        if rerun.returncode != 0:
            raise SystemExit(f"re-run failed ({rerun.returncode}): {rerun.stderr.decode()}")

        print(first.stdout.decode().rstrip())
        print("--- re-run:")
        print(rerun.stdout.decode().rstrip())
        print("---")
        print(f"grep -c 'KGS/USD'    {grep_s:7.2f} s  (median of 3; CPU {CPU['grep']:.2f} s)")
        ratio = first_s / grep_s
        verdict = "ok" if ratio <= 3 else "over target"
        print(
            f"ticker backfill      {first_s:7.2f} s  {ratio:5.2f}x grep   (target <= 3x: {verdict})"
        )
        rerun_ratio = rerun_s / first_s
        verdict = "ok" if rerun_ratio <= 0.25 else "over target"
        print(
            f"re-run (unchanged)   {rerun_s:7.2f} s  {rerun_ratio:5.2f}x first "
            f"(target <= 0.25: {verdict})"
        )
        print(f"throughput           {args.files / first_s:7.0f} files/s")
        print(
            f"CPU time (all processes): backfill {CPU['first']:.2f} s, "
            f"re-run {CPU['rerun']:.2f} s: steadier than wall time on a shared machine"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
