"""The dumps stage: which files a backfill reads, and the pages in each (text, HTML,
gzip, WARC), with a clear reason for every file it cannot read."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pages import MARCH_20, WarcRecord, gz, html_page, text_page, warc_bytes

from ticker.dumps import MAX_PAGE_BYTES, expand, expand_names, is_page_file, read_pages
from ticker.errors import InputError


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# --- which files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("a.txt", True),
        ("a.TXT", True),
        ("a.text", True),
        ("a.html", True),
        ("a.htm", True),
        ("a.txt.gz", True),
        ("a.html.gz", True),
        ("a.warc", True),
        ("a.warc.gz", True),
        ("a.gz", False),
        ("a.md", False),
        ("a.json", False),
        ("warc", False),
    ],
)
def test_is_page_file(name: str, wanted: bool) -> None:
    assert is_page_file(name) is wanted


def test_expand_walks_directories_in_order_skipping_hidden_and_other_files(
    tmp_path: Path,
) -> None:
    root = tmp_path / "dumps"
    for name in ("b/2.txt", "b/1.html", "a/z.warc.gz", "c.txt", ".hidden/x.txt", "b/.x.txt"):
        write(root / name, "x")
    write(root / "notes.md", "x")

    files, missing = expand([str(root)])

    assert missing == []
    assert [str(p.relative_to(root)) for p in files] == [
        "c.txt",
        "a/z.warc.gz",
        "b/1.html",
        "b/2.txt",
    ]


def test_expand_globs_files_and_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d/x/1.txt", "x")
    write(tmp_path / "d/y/2.txt", "x")
    write(tmp_path / "d/y/3.html", "x")

    files, missing = expand(["d/**/*.txt", "d/y/2.txt", "./d/y", "d/*.none", "gone.txt"])

    assert [str(p) for p in files] == ["d/x/1.txt", "d/y/2.txt", "d/y/3.html"]
    assert missing == [
        ("d/*.none", "no file matches this pattern"),
        ("gone.txt", "no such file or directory"),
    ]


def test_expand_names_are_the_strings_of_expand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d/a.txt", "x")
    write(tmp_path / "d/e/b.txt", "x")
    for args in (["."], ["d"], ["./d/"], [str(tmp_path / "d")], ["d//e"], ["**/*.txt"]):
        files, _ = expand(args)
        names, _ = expand_names(args)
        assert names == [str(p) for p in files], args


def test_expand_reports_a_path_that_is_not_a_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    files, missing = expand([str(fifo)])
    assert files == []
    assert missing == [(str(fifo), "not a regular file or directory")]


# --- pages in a file --------------------------------------------------------------------------


def test_a_text_file_is_one_page(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", text_page())
    (page,) = read_pages(path)
    assert page.origin == str(path)
    assert page.body == text_page().encode("utf-8")
    assert page.captured_at is None and page.url is None and page.source is None


@pytest.mark.parametrize("name", ["a.txt.gz", "a.html.gz"])
def test_a_gzipped_page(tmp_path: Path, name: str) -> None:
    body = html_page() if "html" in name else text_page()
    path = write(tmp_path / name, gz(body))
    (page,) = read_pages(path)
    assert page.body == body.encode("utf-8")


@pytest.mark.parametrize("compress", [False, True])
def test_warc_records(tmp_path: Path, compress: bool) -> None:
    at = datetime(2025, 3, 20, 6, 30, tzinfo=UTC)
    records = [
        WarcRecord(html_page(MARCH_20), at, url="https://timesca.com/a"),
        WarcRecord("moved", at, status="301 Moved Permanently"),
        WarcRecord(b"\x89PNG", at, content_type="image/png"),
        WarcRecord(text_page(), at, content_type="text/plain", rec_type="resource"),
        WarcRecord(html_page(MARCH_20, None), datetime(2025, 3, 21, tzinfo=UTC)),
    ]
    path = write(tmp_path / "a.warc", warc_bytes(records, compress))

    pages = list(read_pages(path))

    assert [p.origin for p in pages] == [f"{path}#1", f"{path}#4", f"{path}#5"]
    assert pages[0].url == "https://timesca.com/a"
    assert pages[0].captured_at == at
    assert pages[0].content_type == "text/html; charset=utf-8"
    assert pages[1].body == text_page().encode("utf-8")
    assert pages[2].captured_at == datetime(2025, 3, 21, tzinfo=UTC)


def test_a_utf16_page_is_not_binary(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "\ufeff".encode("utf-16-le") + text_page().encode("utf-16-le"))
    (page,) = read_pages(path)
    assert page.body.startswith(b"\xff\xfe")


def test_the_largest_page_allowed_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    with path.open("wb") as fh:
        fh.write(b"x" * 100)
        fh.seek(MAX_PAGE_BYTES - 1)
        fh.write(b"\n")
    # sparse zeros read as binary: the size limit itself is not what refuses it
    with pytest.raises(InputError) as info:
        list(read_pages(path))
    assert "binary" in info.value.reason


def _errors(path: Path) -> tuple[list[str], InputError]:
    got: list[str] = []
    with pytest.raises(InputError) as info:
        for page in read_pages(path):
            got.append(page.origin)
    return got, info.value


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty file, no page in it"),
        ("blank.html", b"\n \t\r\n", "empty file, no page in it"),
        ("zeros.txt", bytes(1000), "binary data, not a text, HTML, gzip or WARC page dump"),
        ("cut.txt.gz", gz("x" * 5000)[:-10], "truncated gzip file (it ends before its end marker)"),
        ("bad.txt.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 50, "corrupt gzip file"),
        ("empty.txt.gz", gz(""), "empty file, no page in it"),
    ],
)
def test_a_file_that_cannot_be_read(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = write(tmp_path / name, data)
    got, error = _errors(path)
    assert got == []
    assert error.origin == str(path)
    assert error.reason.startswith(reason), error.reason
    assert str(error) == f"{path}: {error.reason}"


def test_a_gzip_bomb_stops_at_the_size_limit(tmp_path: Path) -> None:
    path = write(tmp_path / "bomb.txt.gz", gz(b"a" * (MAX_PAGE_BYTES + 10)))
    _, error = _errors(path)
    assert error.reason == "larger than 20 MB, not a page dump"


def test_a_huge_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.html"
    with path.open("wb") as fh:
        fh.truncate(MAX_PAGE_BYTES + 1)
    _, error = _errors(path)
    assert error.reason == "larger than 20 MB, not a page dump"


def test_a_warc_cut_short_keeps_the_pages_before(tmp_path: Path) -> None:
    first = WarcRecord(html_page(MARCH_20))
    head = len(warc_bytes([first], compress=True))
    data = warc_bytes([first, WarcRecord(html_page(MARCH_20, None))], compress=True)
    path = write(tmp_path / "cut.warc.gz", data[: head + (len(data) - head) // 2])

    got, error = _errors(path)

    assert got == [f"{path}#1"]
    assert "WARC" in error.reason


def test_garbage_after_a_warc_record(tmp_path: Path) -> None:
    good = warc_bytes([WarcRecord(html_page())], compress=False)
    path = write(tmp_path / "bad.warc", good + b"no WARC here\r\n\r\nat all")
    got, error = _errors(path)
    assert got == [f"{path}#1"]
    assert error.reason.startswith("corrupt WARC file")


def test_a_warc_cut_in_its_headers(tmp_path: Path) -> None:
    first = WarcRecord(html_page(MARCH_20))
    head = len(warc_bytes([first], compress=True))
    data = warc_bytes([first, first], compress=True)
    path = write(tmp_path / "cut.warc.gz", data[: head + 60])
    got, error = _errors(path)
    assert got == [f"{path}#1"]
    assert "WARC" in error.reason


def test_an_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path / "secret.txt", text_page())
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read a file with mode 000 (root)")
        _, error = _errors(path)
    finally:
        path.chmod(0o644)
    assert error.reason == "cannot be read: Permission denied"


def test_a_named_pipe_among_the_dumps_is_reported_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block forever
    with pytest.raises(InputError, match="not a regular file"):
        list(read_pages(fifo))
