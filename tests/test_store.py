"""The store: migrations shipped in the package, the one write path and its rules (checked
against a model of them written here), and how a database file that cannot be used is
reported."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from conftest import cut_short, zero_bytes_of
from hypothesis import given, settings
from hypothesis import strategies as st

from ticker.check import snapshot
from ticker.errors import StoreError
from ticker.models import Observation, Record
from ticker.store import Store, read
from ticker.store.migrate import migrations
from ticker.store.write import Stager, WriteCounts, write, write_records

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def test_migrations_are_recorded_and_applied_once(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    with Store.open(db) as store:
        first = store.con.execute(
            "SELECT version, name, CAST(applied_at AS VARCHAR) FROM schema_migrations"
            " ORDER BY version"
        ).fetchall()
    with Store.open(db) as store:
        again = store.con.execute(
            "SELECT version, name, CAST(applied_at AS VARCHAR) FROM schema_migrations"
            " ORDER BY version"
        ).fetchall()
    expected = [(version, name) for version, name, _ in migrations()]
    assert [(v, n) for v, n, _ in first] == expected
    assert again == first
    assert expected[0] == (1, "initial")


def test_a_migration_below_the_newest_applied_is_applied_when_it_comes(tmp_path: Path) -> None:
    """A store made before a migration of another line of work (numbered below the newest
    it has) gets it once that migration comes."""
    db = tmp_path / "t.duckdb"
    with Store.open(db) as store:
        store.con.execute("DELETE FROM schema_migrations WHERE version = 3")
    with Store.open(db, read_only=True) as store:  # a reader opens it to write, and migrates
        versions = [
            v for (v,) in store.con.execute("SELECT version FROM schema_migrations").fetchall()
        ]
    assert sorted(versions) == [v for v, _, _ in migrations()]


def test_migration_files_are_numbered_in_order() -> None:
    found = migrations()
    versions = [version for version, _, _ in found]
    # from 001, each number once, in order; a number may be kept for a migration of
    # another line of work (a store takes it when it comes: see test_migrations_run_once)
    assert versions[0] == 1 and versions == sorted(set(versions))
    for _, _, sql in found:
        assert sql.lstrip().startswith("--")  # says what it does


def test_a_read_only_open_of_a_missing_file_reads_empty_and_creates_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "sub" / "dir" / "t.duckdb"
    with Store.open(db, read_only=True) as store:
        assert read.latest(store) == [] and read.daily(store) == []
        assert read.date_span(store) == (None, None)
        assert read.source_health(store, "timesca").last_attempt_ms is None
        store.verify()
    assert list(tmp_path.iterdir()) == []
    with Store.open(db) as store:  # a write open creates and migrates it
        assert read.latest(store) == []
    assert db.exists()


def test_a_file_that_is_not_a_database_is_a_clean_store_error(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    db.write_text("this is not a DuckDB file\n" * 100, encoding="utf-8")
    with pytest.raises(StoreError) as info:
        with Store.open(db, lock_timeout=1):
            pass
    assert str(info.value).startswith(f"{db}: ")


def _filled(db: Path) -> None:
    """A store with pages on 40 days (several blocks in the file)."""
    day = date(2025, 1, 1)
    pages = [_record(f"p{i}", day + timedelta(days=i), (f"0.{i:03d}", "0")) for i in range(40)]
    with Store.open(db) as store:
        _write(store, tmp_dir(db), pages, [("f1", "pages/f1.txt", 40)])


def _reads(store: Store) -> list[object]:
    """Every read the commands make of a store."""
    return [
        read.latest(store),
        read.history(store, "KZT/USD"),
        read.daily(store),
        read.series(store, "timesca", ["KZT/USD", "KGS/USD"]),
        read.date_span(store),
        read.source_health(store, "timesca"),
        read.loaded_file_keys(store),
        read.validators(store, "timesca", "https://timesca.com/"),
        snapshot(store),
    ]


def _cut_short(db: Path) -> None:  # a copy that stopped half way
    cut_short(db)


def _cut_in_last_block(db: Path) -> None:  # a copy that stopped a little short
    os.truncate(db, db.stat().st_size - 5000)


def _zeroed(db: Path) -> None:  # a few bytes of the observations' block lost
    zero_bytes_of(db, "observations")


def test_a_file_cut_short_is_refused_at_open(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    _filled(db)
    _cut_short(db)
    for read_only in (True, False):
        with pytest.raises(StoreError) as info:
            with Store.open(db, lock_timeout=1, read_only=read_only):
                pass
        assert str(info.value).startswith(f"{db}: not a usable DuckDB database (the file has ")
        assert str(info.value).endswith("a copy cut short?); move it aside to start afresh")


@pytest.mark.parametrize("damage", [_cut_short, _cut_in_last_block, _zeroed])
def test_every_read_of_a_damaged_file_is_its_result_or_a_store_error(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    db = tmp_path / "t.duckdb"
    _filled(db)
    with Store.open(db, read_only=True) as store:
        intact = _reads(store)
    damage(db)
    failed = 0
    for i in range(len(intact)):
        try:
            with Store.open(db, lock_timeout=1, read_only=True) as store:
                got = _reads(store)[i]
        except StoreError as exc:
            message = str(exc)
            assert message.startswith(f"{db}: not a usable DuckDB database ("), message
            assert message.endswith("); move it aside to start afresh"), message
            failed += 1
        else:
            assert got == intact[i]  # what could be read is right
    assert failed >= 1
    with pytest.raises(StoreError, match="not a usable DuckDB database"):
        with Store.open(db, lock_timeout=1, read_only=True) as store:
            store.verify()


@pytest.mark.parametrize(
    ("sql", "error"),
    [("SELEC 1", duckdb.ParserException), ("SELECT nope FROM daily", duckdb.BinderException)],
)
def test_a_sql_mistake_is_not_taken_for_damage(
    tmp_path: Path, sql: str, error: type[Exception]
) -> None:
    db = tmp_path / "t.duckdb"
    _filled(db)
    with pytest.raises(error):
        with Store.open(db, read_only=True) as store:
            store.con.execute(sql)


def test_the_file_is_closed_after_each_piece_of_work(tmp_path: Path) -> None:
    """Another process gets the file as soon as a piece of work is done (DuckDB lets one
    process open a file at a time; within a process a second connection would succeed
    anyway, so the check runs in a child process)."""
    db = tmp_path / "t.duckdb"
    with Store.open(db) as store:
        write_records(store, [_record("a", date(2025, 1, 1), ("0.1", "0"))], NOW)
        assert not _other_process_opens(db)  # held while the work goes on
    assert _other_process_opens(db)


def _other_process_opens(db: Path) -> bool:
    code = (
        "import duckdb, sys\n"
        "try:\n    duckdb.connect(sys.argv[1]).close()\n"
        "except duckdb.IOException:\n    sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(db)], check=False, timeout=60)
    return proc.returncode == 0


# --- the one write path and its rules ---------------------------------------------------


def _record(
    key: str,
    day: date | None,
    values: tuple[str, str | None] | None,
    source: str = "timesca",
    origin: str | None = None,
    url: str | None = None,
    captured_at: datetime | None = None,
    detail: str | None = None,
) -> Record:
    observations = (
        (Observation("KZT/USD", day, *values), Observation("KGS/USD", day, "0.01164", "0.87"))
        if values and day
        else ()
    )
    return Record(
        page_key=key,
        source=source,
        origin=origin or f"pages/{key}.txt",
        url=url,
        captured_at=captured_at,
        content_hash=f"hash-{key}",
        outcome="ok" if day else "undated",
        header_date=day,
        quote_date=day,
        date_basis="header" if day else None,
        parser_version=1,
        copies=8,
        detail=detail,
        observations=observations,
    )


def tmp_dir(db: Path) -> Path:
    stage = db.parent / "stage"
    stage.mkdir(exist_ok=True)
    return stage


def _write(
    store: Store, tmp: Path, records: list[Record], files: list[tuple[str, str, int]]
) -> WriteCounts:
    """A batch as backfill writes one: records and files staged, then written whole."""
    stager = Stager(tmp, f"batch{len(list(tmp.iterdir()))}")
    for n, record in enumerate(records):
        stager.add(7, n, record)
    for file_key, path, count in files:
        stager.add_file(file_key, path, count)
    stager.close()
    return write(store, [stager.pages_path], [stager.files_path], NOW)


def _tables(store: Store) -> dict[str, list[tuple[object, ...]]]:
    con = store.con
    return {
        "captures": con.execute(
            """SELECT id, source, origin, url, epoch_ms(captured_at), epoch_ms(loaded_at),
                      content_hash, page_key, outcome, header_date, quote_date, date_basis,
                      parser_version, copies, detail
               FROM captures ORDER BY id"""
        ).fetchall(),
        "observations": con.execute("SELECT * FROM observations ORDER BY ALL").fetchall(),
        "sightings": con.execute("SELECT * FROM sightings ORDER BY ALL").fetchall(),
        "loaded_files": con.execute(
            "SELECT file_key, path, pages, epoch_ms(loaded_at) FROM loaded_files ORDER BY ALL"
        ).fetchall(),
        "daily": con.execute(
            "SELECT source, pair, date, rate_text, change_text FROM daily ORDER BY ALL"
        ).fetchall(),
    }


def _counts(c: WriteCounts) -> tuple[int, ...]:
    return (c.pages_new, c.pages_known, c.new, c.already, c.revised)


class Model:
    """The store's rules, written out plainly: what a batch must add and count."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.versions: dict[tuple[str, str, date], list[tuple[str, str | None]]] = {}
        self.sightings: list[tuple[str, str, date, int]] = []

    def write(self, records: list[Record]) -> tuple[int, ...]:
        new_pages = known = new = already = revised = 0
        for r in records:
            if r.page_key in self.keys:
                known += 1
                continue
            self.keys.add(r.page_key)
            new_pages += 1
            for o in r.observations:
                versions = self.versions.setdefault((r.source, o.pair, o.date), [])
                value = (o.rate, o.change)
                if not versions:
                    new += 1
                elif value in versions:
                    already += 1
                else:
                    revised += 1
                if value not in versions:
                    versions.append(value)
                revision = versions.index(value) + 1
                self.sightings.append((r.source, o.pair, o.date, revision))
        return (new_pages, known, new, already, revised)

    def observations(self) -> list[tuple[object, ...]]:
        return sorted(
            (source, pair, day, i + 1, rate, change)
            for (source, pair, day), values in self.versions.items()
            for i, (rate, change) in enumerate(values)
        )


def test_a_batch_keeps_the_rules(tmp_path: Path) -> None:
    d = date(2025, 3, 20)
    batches = [
        (
            [
                _record("a", d, ("0.00199", "-0")),
                _record("b", d, ("0.00199", "-0")),  # same values: already stored
                _record("a", d, ("0.00199", "-0")),  # same page again: known
                _record("c", d, ("0.00201", "1.01")),  # other values: a revision
                _record("u", None, None),  # undated: a capture, no quotes
            ],
            [("key-1", "pages/a.txt", 3)],
        ),
        (
            [
                _record("d", d, ("0.00199", "-0")),
                _record("e", d, ("0.00202", "0"), url=""),  # a third value: revision 3
                _record("f", d + timedelta(days=1), ("0.00203", "0.5"), url="https://x/"),
            ],
            [("key-1", "pages/a.txt", 3), ("key-2", "pages/b.txt", 1)],
        ),
    ]
    db = tmp_path / "t.duckdb"
    with Store.open(db) as store:
        got = [_counts(_write(store, tmp_dir(db), *batch)) for batch in batches]
        tables = _tables(store)
    assert got == [(4, 1, 2, 3, 1), (3, 0, 2, 3, 1)]
    kzt = [row for row in tables["observations"] if row[1] == "KZT/USD"]
    assert [(r[3], r[5]) for r in kzt] == [
        (1, "0.00199"),
        (2, "0.00201"),
        (3, "0.00202"),
        (1, "0.00203"),
    ]
    assert [(k, p) for k, p, *_ in tables["loaded_files"]] == [
        ("key-1", "pages/a.txt"),
        ("key-2", "pages/b.txt"),
    ]


def test_observations_of_many_dates_and_without_a_change(tmp_path: Path) -> None:
    """A record of a kind that publishes a series (many dates in one response) and no
    day's change: each observation under its own date, the change stored as NULL."""
    days = [date(2025, 3, 17) + timedelta(days=i) for i in range(3)]
    record = Record(
        page_key="ref-1",
        source="reference",
        origin="https://rates.example/v2/rates",
        url=None,
        captured_at=NOW,
        content_hash="h",
        outcome="ok",
        header_date=None,
        quote_date=None,
        date_basis="record",
        parser_version=1,
        copies=0,
        detail=None,
        observations=tuple(Observation("USD/KZT", d, f"50{i}.5") for i, d in enumerate(days)),
    )
    with Store.open(tmp_path / "t.duckdb") as store:
        counts = write_records(store, [record], NOW)
        again = write_records(store, [replace(record, page_key="ref-2")], NOW)
        rows = store.con.execute(
            "SELECT date, rate_text, change_pct, change_text FROM daily ORDER BY date"
        ).fetchall()
        assert read.history(store, "USD/KZT")[0].change is None
    assert (counts.new, counts.already, again.new, again.already) == (3, 0, 0, 3)
    assert rows == [(d, f"50{i}.5", None, None) for i, d in enumerate(days)]
    assert set(counts.capture_ids) == {"ref-1"}


def test_staged_text_round_trips_exactly(tmp_path: Path) -> None:
    odd = 'a,b "c"\nd\r\ne\tf \\N ' + "\u00e9\u2022"
    record = _record(
        "k", date(2025, 1, 2), ("0.1", "0"), origin=odd, url="", detail=odd + "\nsecond line"
    )
    db = tmp_path / "t.duckdb"
    with Store.open(db) as store:
        _write(store, tmp_dir(db), [record], [(odd, odd, 1)])
        tables = _tables(store)
    assert tables["captures"][0][2:4] == (odd, "")
    assert tables["captures"][0][14] == odd + "\nsecond line"
    assert tables["loaded_files"][0][:2] == (odd, odd)


STAMPS = st.sampled_from(
    [None, datetime(2025, 1, 1, 6, tzinfo=UTC), datetime(2025, 1, 1, 9, tzinfo=UTC)]
)
RECORDS = st.builds(
    _record,
    key=st.sampled_from(["p1", "p2", "p3", "p4", "p5", "p6"]),
    day=st.sampled_from([date(2025, 1, 1), date(2025, 1, 2), None]),
    values=st.tuples(st.sampled_from(["0.1", "0.10", "0.2"]), st.sampled_from(["0", "-0", None])),
    source=st.sampled_from(["timesca", "mirror"]),
    url=st.sampled_from([None, "", "https://timesca.com/"]),
    captured_at=STAMPS,
)


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(batches=st.lists(st.lists(RECORDS, max_size=8), min_size=1, max_size=3))
def test_property_batches_follow_the_rules_and_their_size_does_not_matter(
    batches: list[list[Record]],
) -> None:
    """Any batches: the counts and the stored observations are the model's, and writing
    the same records one at a time (as a scrape does) stores the same."""
    model = Model()
    with tempfile.TemporaryDirectory() as tmp:
        db, single = Path(tmp) / "t.duckdb", Path(tmp) / "single.duckdb"
        with Store.open(db) as store:
            for batch in batches:
                assert _counts(_write(store, tmp_dir(db), batch, [])) == model.write(batch)
            stored = store.con.execute(
                "SELECT source, pair, date, revision, rate_text, change_text FROM observations"
            ).fetchall()
            sightings = store.con.execute(
                "SELECT source, pair, date, revision FROM sightings"
            ).fetchall()
            tables = _tables(store)
        with Store.open(single) as store:
            for record in (r for batch in batches for r in batch):
                write_records(store, [record], NOW)
            one_by_one = _tables(store)
    assert sorted(stored) == model.observations()
    assert sorted(sightings) == sorted(model.sightings)
    for name in ("observations", "sightings", "daily"):
        assert one_by_one[name] == tables[name]


def test_work_done_before_commit_lands_with_the_page_or_not_at_all(tmp_path: Path) -> None:
    """The scrape records its attempt inside the page's transaction: when that fails, the
    page is not stored either, and what was stored before is untouched."""
    db = tmp_path / "t.duckdb"
    with Store.open(db) as store:
        write_records(store, [_record("a", date(2025, 1, 1), ("0.1", "0"))], NOW)
        before = _tables(store)

        def fail(counts: WriteCounts) -> None:
            assert counts.new == 2  # the page's quotes are counted before the commit
            raise RuntimeError("the attempt could not be recorded")

        with pytest.raises(RuntimeError):
            write_records(
                store, [_record("b", date(2025, 1, 2), ("0.2", "-0"))], NOW, before_commit=fail
            )
        assert _tables(store) == before
        seen: list[int] = []
        write_records(
            store,
            [_record("b", date(2025, 1, 2), ("0.2", "-0"))],
            NOW,
            before_commit=lambda counts: seen.append(counts.new),
        )
        assert seen == [2] and len(_tables(store)["captures"]) == 2
