"""Benchmark: the official rates, against the stand-in Frankfurter of the tests.

  1. `ticker reference` over 25 years of the five pairs (rates on every day: about 45,000
     rows, 25 requests of five years each) into an empty store, and that store checked
     with `ticker check`, against loading the same rows from a CSV file into a new
     DuckDB file with `read_csv` (a Python process that imports duckdb and does only
     that).
  2. `ticker check` over 10 years of both series (the ticker's pages and the official
     rates) against `ticker export` of the same store.

Every command runs as a subprocess with its output to pipes; the stand-in runs in this
process and answers every request from a cache filled beforehand. Figures are medians of
--runs runs, each into a new store.

Targets: reference and check <= 2x read_csv; check <= 3x export.

    .venv/bin/python tests/benchmarks/bench_reference.py
"""

from __future__ import annotations

import argparse
import csv
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from frankfurter import BANKS, PEG, Frankfurter, json_number, reference_config  # noqa: E402
from frankfurter import ticker_quotes as printed_quotes  # noqa: E402
from pages import text_page  # noqa: E402
from servers import LocalServer  # noqa: E402

from ticker.config import load_config  # noqa: E402
from ticker.reference import plan  # noqa: E402


def ticker_cmd() -> list[str]:
    script = Path(sys.executable).parent / "ticker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ticker"]


CPU: dict[str, list[float]] = {}  # CPU seconds (user + sys) of each command, by name


def timed(
    cmd: list[str], cwd: Path, name: str = ""
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Wall time of a command; its CPU time (steadier on a shared machine) into CPU."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.setdefault(name, []).append(usage.ru_utime + usage.ru_stime - cpu)
    return seconds, proc


def cpu(name: str) -> float:
    return statistics.median(CPU[name])


def must(
    proc: subprocess.CompletedProcess[bytes], what: str, codes: tuple[int, ...] = (0,)
) -> None:
    if proc.returncode not in codes:
        raise SystemExit(
            f"{what} failed ({proc.returncode}):\n{proc.stdout.decode()}{proc.stderr.decode()}"
        )


def warm(bank: Frankfurter, config_path: Path, since: date, until: date) -> int:
    """Answer every request the run will make once, so the runs are served from cache."""
    requests, _ = plan(load_config(config_path), since, until)
    for r in requests:
        path = r.url.split("//", 1)[1].split("/", 1)[1]
        bank._cache["/" + path] = bank.answer("/" + path)
    return len(requests)


def write_csv(rates: dict[str, dict[date, str]], path: Path) -> int:
    rows = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["date", "base", "quote", "rate", "provider"])
        for key, series in rates.items():
            quote = BANKS[key][0] if key in BANKS else PEG[0]
            for day, rate in series.items():
                out.writerow([day.isoformat(), "USD", quote, json_number(rate), key])
                rows += 1
    return rows


LOAD = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE rates AS SELECT * FROM read_csv($1, header = true)", [sys.argv[2]])
print(con.execute("SELECT count(*) FROM rates").fetchall()[0][0])
con.close()
"""


def backfill_part(work: Path, url: str, runs: int) -> None:
    since, until = date(2001, 1, 1), date(2025, 12, 31)
    rates = Frankfurter.synthetic(since, until, every_day=True)
    bank = Frankfurter(rates, today=until)
    rows = write_csv(rates, work / "rates.csv")
    with LocalServer() as server:
        server.route("/v2/rates", bank)
        load_s, ref_s, check_s = [], [], []
        for i in range(runs):
            run_dir = work / f"run{i}"
            run_dir.mkdir()
            cfg = reference_config(run_dir, url, server.url("/v2"))
            requests = warm(bank, cfg, since, until)
            seconds, proc = timed(
                [sys.executable, "-c", LOAD, str(run_dir / "csv.duckdb"), str(work / "rates.csv")],
                run_dir,
                "load",
            )
            must(proc, "read_csv")
            load_s.append(seconds)
            cmd = [*ticker_cmd(), "--config", str(cfg)]
            seconds, proc = timed(
                [*cmd, "reference", "--since", str(since), "--until", str(until)],
                run_dir,
                "reference",
            )
            must(proc, "ticker reference")
            ref_s.append(seconds)
            out = proc.stdout.decode()
            seconds, proc = timed([*cmd, "check"], run_dir, "check")
            must(proc, "ticker check", (0, 1))
            check_s.append(seconds)
    stored = sum(int(line.split(" new,")[0].rsplit(" ", 1)[1]) for line in out.splitlines()[1:])
    load, ref, chk = (statistics.median(v) for v in (load_s, ref_s, check_s))
    print(
        f"25 years, 5 pairs: {rows} rows, {requests} requests, {stored} stored (median of {runs})"
    )
    print(f"  read_csv into DuckDB      {load:6.2f} s  (CPU {cpu('load'):.2f} s)")
    print(
        f"  ticker reference          {ref:6.2f} s  {ref / load:5.2f}x read_csv  "
        f"(CPU {cpu('reference'):.2f} s)"
    )
    print(f"  ticker check              {chk:6.2f} s                  (CPU {cpu('check'):.2f} s)")
    ratio = (ref + chk) / load
    verdict = "ok" if ratio <= 2 else "over target"
    print(
        f"  ticker reference + check  {ref + chk:6.2f} s  {ratio:5.2f}x read_csv "
        f"(target <= 2x: {verdict}; CPU {(cpu('reference') + cpu('check')) / cpu('load'):.2f}x)"
    )


def check_part(work: Path, runs: int) -> None:
    since, until = date(2016, 1, 1), date(2025, 12, 31)
    rates = Frankfurter.synthetic(since - timedelta(days=14), until)
    bank = Frankfurter(rates, today=until)
    dumps = work / "dumps10"
    dumps.mkdir()
    day = since
    while day <= until:
        quotes = printed_quotes(rates, day)
        (dumps / f"{day}.txt").write_text(
            text_page(quotes, day=f"{day.day:02d} {day:%B %Y}"), encoding="utf-8"
        )
        day += timedelta(days=1)
    with LocalServer() as server:
        server.route("/v2/rates", bank)
        (work / "ten").mkdir()
        cfg = reference_config(work / "ten", "http://127.0.0.1:9/", server.url("/v2"))
        cmd = [*ticker_cmd(), "--config", str(cfg)]
        _, proc = timed([*cmd, "backfill", str(dumps)], work / "ten")
        must(proc, "backfill")
        warm(bank, cfg, since, until)
        _, proc = timed(
            [*cmd, "reference", "--since", str(since), "--until", str(until)], work / "ten"
        )
        must(proc, "reference")
    export_s, check_s = [], []
    for _ in range(runs):
        seconds, proc = timed([*cmd, "export"], work / "ten", "export")
        must(proc, "export")
        export_s.append(seconds)
        rows = proc.stdout.count(b"\n") - 1
        seconds, proc = timed([*cmd, "check"], work / "ten", "check10")
        must(proc, "check", (0, 1))
        check_s.append(seconds)
    export, chk = statistics.median(export_s), statistics.median(check_s)
    ratio = chk / export
    verdict = "ok" if ratio <= 3 else "over target"
    print(f"10 years of both series: {rows} rows exported (median of {runs})")
    print(f"  ticker export             {export:6.2f} s  (CPU {cpu('export'):.2f} s)")
    print(
        f"  ticker check              {chk:6.2f} s  {ratio:5.2f}x export (target <= 3x: {verdict}; "
        f"CPU {cpu('check10'):.2f} s, {cpu('check10') / cpu('export'):.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ticker-bench-reference-"))
    try:
        backfill_part(work, "http://127.0.0.1:9/", args.runs)
        check_part(work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
