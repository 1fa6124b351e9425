"""The store: migrations, the two write paths (one page at a time, and staged batches)
keeping the same rules, and how a database file that cannot be used is reported."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from conftest import cut_short, zero_bytes_of
from hypothesis import given, settings
from hypothesis import strategies as st

from ticker.errors import StoreError
from ticker.models import Quote
from ticker.store import PageRecord, PageStager, Store, WriteCounts, migrations

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


def test_migration_files_are_numbered_in_order() -> None:
    found = migrations()
    versions = [version for version, _, _ in found]
    assert versions == list(range(1, len(found) + 1))
    for _, _, path in found:
        assert path.read_text(encoding="utf-8").lstrip().startswith("--")  # says what it does


def test_a_read_only_open_of_a_missing_file_reads_empty_and_creates_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "sub" / "dir" / "t.duckdb"
    with Store.open(db, read_only=True) as store:
        assert store.latest() == [] and store.daily() == []
        assert store.date_span() == (None, None)
        assert store.source_health("timesca").last_attempt_ms is None
        store.verify()
    assert list(tmp_path.iterdir()) == []
    with Store.open(db) as store:  # a write open creates and migrates it
        assert store.latest() == []
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
        store.write_pages(pages, [("f1", "pages/f1.txt", 40)], now=NOW)


def _reads(store: Store) -> list[object]:
    """Every read the commands make of a store."""
    from ticker.check import snapshot

    return [
        store.latest(),
        store.history("KZT/USD"),
        store.daily(),
        store.series("timesca", ["KZT/USD", "KGS/USD"]),
        store.date_span(),
        store.source_health("timesca"),
        store.loaded_file_keys(),
        store.validators("timesca", "https://timesca.com/"),
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
    db = tmp_path / "t.duckdb"
    with Store.open(db) as store:
        store.write_pages([_record("a", date(2025, 1, 1), ("0.1", "0"))], now=NOW)
    # another connection (as another process would) gets the file at once
    con = duckdb.connect(str(db))
    con.close()


# --- the two write paths -----------------------------------------------------------------


def _record(
    key: str,
    day: date | None,
    values: tuple[str, str] | None,
    source: str = "timesca",
    origin: str | None = None,
    url: str | None = None,
    captured_at: datetime | None = None,
    detail: str | None = None,
) -> PageRecord:
    quotes = (
        (Quote("KZT", "USD", *values), Quote("KGS", "USD", "0.01164", "0.87")) if values else ()
    )
    return PageRecord(
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
        quotes=quotes if day else (),
    )


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


def _write_both(
    tmp: Path, batches: list[tuple[list[PageRecord], list[tuple[str, str, int]]]]
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], dict[str, object], dict[str, object]]:
    one, staged = [], []
    for i, (pages, files) in enumerate(batches):
        with Store.open(tmp / "pages.duckdb") as store:
            one.append(_counts(store.write_pages(pages, files, now=NOW)))
        stager = PageStager(tmp, f"batch{i}")
        for n, page in enumerate(pages):
            stager.add_page(7, n, page)
        for file_key, path, count in files:
            stager.add_file(file_key, path, count)
        stager.close()
        with Store.open(tmp / "staged.duckdb") as store:
            got = store.write_staged([stager.pages_path], [stager.files_path], NOW)
            staged.append(_counts(got))
    with Store.open(tmp / "pages.duckdb") as store:
        a = _tables(store)
    with Store.open(tmp / "staged.duckdb") as store:
        b = _tables(store)
    return one, staged, a, b  # type: ignore[return-value]


def test_staged_batches_keep_the_rules_of_write_pages(tmp_path: Path) -> None:
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
    one, staged, a, b = _write_both(tmp_path, batches)
    assert one == staged == [(4, 1, 2, 3, 1), (3, 0, 2, 3, 1)]
    assert a == b
    kzt = [row for row in a["observations"] if row[1] == "KZT/USD"]  # type: ignore[attr-defined]
    assert [(r[3], r[5]) for r in kzt] == [
        (1, "0.00199"),
        (2, "0.00201"),
        (3, "0.00202"),
        (1, "0.00203"),
    ]


def test_staged_text_round_trips_exactly(tmp_path: Path) -> None:
    odd = 'a,b "c"\nd\r\ne\tf \\N ' + "\u00e9\u2022"
    record = _record(
        "k", date(2025, 1, 2), ("0.1", "0"), origin=odd, url="", detail=odd + "\nsecond line"
    )
    _, _, a, b = _write_both(tmp_path, [([record], [(odd, odd, 1)])])
    assert a == b
    assert a["captures"][0][2:4] == (odd, "")  # type: ignore[index]


STAMPS = st.sampled_from(
    [None, datetime(2025, 1, 1, 6, tzinfo=UTC), datetime(2025, 1, 1, 9, tzinfo=UTC)]
)
RECORDS = st.builds(
    _record,
    key=st.sampled_from(["p1", "p2", "p3", "p4", "p5", "p6"]),
    day=st.sampled_from([date(2025, 1, 1), date(2025, 1, 2), None]),
    values=st.tuples(st.sampled_from(["0.1", "0.10", "0.2"]), st.sampled_from(["0", "-0"])),
    source=st.sampled_from(["timesca", "mirror"]),
    url=st.sampled_from([None, "", "https://timesca.com/"]),
    captured_at=STAMPS,
)
BATCH = st.tuples(
    st.lists(RECORDS, max_size=8),
    st.lists(st.tuples(st.sampled_from(["f1", "f2"]), st.just("p"), st.integers(0, 3)), max_size=2),
)


@pytest.mark.slow
@settings(max_examples=20, deadline=None)
@given(batches=st.lists(BATCH, min_size=1, max_size=3))
def test_property_staged_writes_equal_page_writes(
    batches: list[tuple[list[PageRecord], list[tuple[str, str, int]]]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one, staged, a, b = _write_both(Path(tmp), batches)
    assert one == staged
    assert a == b


def test_work_done_before_commit_lands_with_the_page_or_not_at_all(tmp_path: Path) -> None:
    """The scrape records its attempt inside the page's transaction: when that fails, the
    page is not stored either, and what was stored before is untouched."""
    db = tmp_path / "t.duckdb"
    with Store.open(db) as store:
        store.write_pages([_record("a", date(2025, 1, 1), ("0.1", "0"))], now=NOW)
        before = _tables(store)

        def fail(counts: WriteCounts) -> None:
            assert counts.new == 2  # the page's quotes are counted before the commit
            raise RuntimeError("the attempt could not be recorded")

        with pytest.raises(RuntimeError):
            store.write_pages(
                [_record("b", date(2025, 1, 2), ("0.2", "-0"))], now=NOW, before_commit=fail
            )
        assert _tables(store) == before
        seen: list[int] = []
        store.write_pages(
            [_record("b", date(2025, 1, 2), ("0.2", "-0"))],
            now=NOW,
            before_commit=lambda counts: seen.append(counts.new),
        )
        assert seen == [2] and len(_tables(store)["captures"]) == 2
