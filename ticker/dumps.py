"""Dumps stage: saved pages (text, HTML, gzip, WARC) from files, directories and globs."""

from __future__ import annotations

import glob
import gzip
import os
import stat
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from ticker.errors import InputError
from ticker.models import Page

MAX_PAGE_BYTES = 20 * 1024 * 1024  # no real page comes near; a bigger one is not a page
MAX_HEADER_LINE = 64 * 1024  # a WARC or HTTP header line longer than this is no header
MAX_HEADER_BYTES = 1024 * 1024  # all the header lines of one WARC record
PAGE_SUFFIXES = (".txt", ".text", ".html", ".htm", ".warc")
SOURCE_HEADER = "WARC-Ticker-Source"  # written by ticker's own archive
_EARLIEST_STAMP = datetime.min.replace(tzinfo=UTC) + timedelta(days=2)
_GZIP_MAGIC = b"\x1f\x8b"
_WARC_MAGIC = b"WARC/"


def is_page_file(name: str) -> bool:
    """Whether a file found in a directory walk looks like a page dump by its name."""
    name = name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(PAGE_SUFFIXES)


def expand(args: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by the arguments (directories recursively, globs expanded), and the
    arguments that name nothing, each with its reason."""
    names, missing = expand_names(args)
    return [Path(name) for name in names], missing


def expand_names(args: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """expand, with each file as the string of its Path: a directory walk of tens of
    thousands of files spends most of its time building Path objects otherwise."""
    files: dict[str, None] = {}
    missing: list[tuple[str, str]] = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            _walk(path, files)
        elif path.is_file():
            files[str(path)] = None
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
            if not matches:
                missing.append((arg, "no file matches this pattern"))
            for match in matches:
                m = Path(match)
                if m.is_dir():
                    _walk(m, files)
                elif m.is_file():
                    files[str(m)] = None
        elif path.exists():
            missing.append((arg, "not a regular file or directory"))
        else:
            missing.append((arg, "no such file or directory"))
    return list(files), missing


def _walk(root: Path, files: dict[str, None]) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        # str(Path(dirpath) / name), with the Path built once per directory.
        base = str(Path(dirpath))
        prefix = "" if base == "." else base if base.endswith(os.sep) else base + os.sep
        for name in sorted(filenames):
            if is_page_file(name) and not name.startswith("."):
                files[prefix + name] = None


def read_pages(path: Path | str) -> Iterator[Page]:
    """Every page in one file. Raises InputError (naming the file) when it cannot be read;
    pages of a WARC file yielded before the fault stand."""
    origin = str(path)
    try:
        # O_NONBLOCK: a named pipe or a device among the dumps must not hang the run.
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)
    except OSError as exc:
        raise InputError(origin, f"cannot be read: {exc.strerror or exc}") from exc
    try:
        # A page is read whole with one read sized by fstat, without a file object: a
        # backfill reads tens of thousands (read(MAX_PAGE_BYTES + 1) would allocate 20 MB).
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(origin, "not a regular file (a pipe, socket or device); skipped")
        size = st.st_size
        body = os.read(fd, min(size, MAX_PAGE_BYTES) + 1)
        if body.startswith((_WARC_MAGIC, _GZIP_MAGIC)) or len(body) > size:
            os.lseek(fd, 0, os.SEEK_SET)
            with open(fd, "rb", closefd=False) as fh:
                if body.startswith(_WARC_MAGIC):
                    yield from _warc_pages(fh, origin)
                    return
                if body.startswith(_GZIP_MAGIC):
                    # A .warc.gz is read record by record, so that a fault keeps the pages
                    # before it: peek at the start of the stream, not the whole of it.
                    if _gunzip(fh, origin, len(_WARC_MAGIC)) == _WARC_MAGIC:
                        fh.seek(0)
                        yield from _warc_pages(fh, origin)
                        return
                    fh.seek(0)
                    body = _gunzip(fh, origin)
                else:  # it grew, or fstat does not know its size
                    body = _read_upto(fh, MAX_PAGE_BYTES + 1)
    except OSError as exc:
        raise InputError(origin, f"cannot be read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    yield Page(origin=origin, body=_check_body(body, origin))


def _check_body(body: bytes, origin: str) -> bytes:
    if len(body) > MAX_PAGE_BYTES:
        raise InputError(origin, f"larger than {MAX_PAGE_BYTES >> 20} MB, not a page dump")
    if not body or body.isspace():
        raise InputError(origin, "empty file, no page in it")
    if b"\0" in body[:8192] and not body.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(origin, "binary data, not a text, HTML, gzip or WARC page dump")
    return body


def _read_upto(fh: IO[bytes] | gzip.GzipFile, limit: int) -> bytes:
    """Up to `limit` bytes, in growing chunks rather than one buffer of `limit` bytes."""
    chunks: list[bytes] = []
    size, want = 0, 1 << 16
    while size < limit and (chunk := fh.read(min(want, limit - size))):
        chunks.append(chunk)
        size += len(chunk)
        want = min(want * 2, 1 << 22)
    return b"".join(chunks)


def _gunzip(fh: IO[bytes], origin: str, limit: int = MAX_PAGE_BYTES + 1) -> bytes:
    try:
        with gzip.GzipFile(fileobj=fh) as gz:
            return _read_upto(gz, limit)
    except EOFError as exc:
        raise InputError(origin, "truncated gzip file (it ends before its end marker)") from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(origin, f"corrupt gzip file ({exc})") from exc


class _HeaderCap:
    """Bounds what warcio reads as header lines. It reads them with an unbounded
    readline(), so a small .warc.gz that inflates to a gigabyte without a newline (a
    decompression bomb) would be read into memory whole."""

    def __init__(self, reader: Any, origin: str) -> None:
        self.origin = origin
        self.used = 0  # header bytes since the last record was yielded
        self._readline = reader.readline
        reader.readline = self.readline

    def readline(self, length: int | None = None) -> bytes:
        cap = MAX_HEADER_LINE + 1
        line: bytes = self._readline(cap if length is None or length < 0 else min(length, cap))
        self.used += len(line)
        if len(line) > MAX_HEADER_LINE or self.used > MAX_HEADER_BYTES:
            raise InputError(
                self.origin,
                f"WARC record headers over {MAX_HEADER_LINE >> 10} KB a line or "
                f"{MAX_HEADER_BYTES >> 20} MB a record: not a web archive (a decompression "
                "bomb?); not read further",
            )
        return line


def _warc_pages(fh: IO[bytes], origin: str) -> Iterator[Page]:
    """HTML (or text) response records of a WARC file, each with its WARC-Date."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    n = 0
    try:
        records = ArchiveIterator(fh, arc2warc=True)
        cap = _HeaderCap(records.reader, origin)
        last: Any = None
        for record in records:
            cap.used = 0
            _check_whole(last, origin)  # a skipped record is read through by now
            last = record
            if record.rec_type is None or record.length is None:
                # what a file cut inside a record's headers gives
                raise InputError(
                    origin,
                    f"truncated or corrupt WARC file: the record after {n} pages has no "
                    "WARC-Type or Content-Length; copy the file again",
                )
            if record.rec_type not in ("response", "resource"):
                continue
            n += 1
            where = f"{origin}#{n}"
            ctype = ""
            declared = record.rec_headers.get_header("Content-Length") or ""
            if not declared.strip().isdigit():
                # A file cut inside a record's headers can leave "Content-Length:" empty,
                # which warcio reads as an empty record: that is a torn file, not a page.
                raise InputError(
                    where,
                    "corrupt WARC file: a record without a valid Content-Length (the file "
                    "is cut or malformed); copy the file again",
                )
            if record.rec_type == "response":
                if record.http_headers is None:
                    wct = (record.rec_headers.get_header("Content-Type") or "").lower()
                    if "application/http" in wct:
                        raise InputError(
                            where,
                            "corrupt WARC file: an HTTP response record without its HTTP "
                            "headers (the file is cut or malformed)",
                        )
                    continue  # a response of another protocol (dns:, ...)
                status = record.http_headers.get_statuscode()
                if status != "200":
                    continue
                ctype = record.http_headers.get_header("Content-Type") or ""
            else:
                ctype = record.rec_headers.get_header("Content-Type") or ""
            if ctype and not ctype.lower().startswith(
                ("text/html", "text/plain", "application/xhtml")
            ):
                # JSON only from ticker's own archive: the responses of a JSON source
                if not (
                    ctype.lower().startswith("application/json")
                    and record.rec_headers.get_header(SOURCE_HEADER)
                ):
                    continue
            body = record.content_stream().read(MAX_PAGE_BYTES + 1)
            if len(body) > MAX_PAGE_BYTES:
                raise InputError(where, f"record larger than {MAX_PAGE_BYTES >> 20} MB")
            _check_whole(record, where)
            captured_at, capture_problem = _warc_date(record.rec_headers.get_header("WARC-Date"))
            yield Page(
                origin=where,
                body=body,
                captured_at=captured_at,
                capture_problem=capture_problem,
                url=record.rec_headers.get_header("WARC-Target-URI"),
                source=record.rec_headers.get_header(SOURCE_HEADER),
                content_type=ctype or None,
            )
        _check_whole(last, origin)
        # A file cut inside the headers of its last record ends the iteration quietly:
        # whatever follows the last whole record must be blank.
        fh.seek(records.offset)
        if fh.read(65536).strip():
            raise InputError(
                origin,
                f"truncated or corrupt WARC file after {n} records (it ends inside a record "
                "that is not whole); copy the file again",
            )
    except ArchiveLoadFailed as exc:
        raise InputError(
            origin, f"corrupt WARC file after {n} records ({_first_line(exc)})"
        ) from exc
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(
            origin, f"truncated or corrupt WARC file after {n} records ({exc})"
        ) from exc
    except (ValueError, IndexError, KeyError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        # warcio fails on broken headers in many ways (a record cut in its headers leaves
        # no WARC-Target-URI, and it calls .startswith on None).
        raise InputError(origin, f"malformed WARC record {n} ({_first_line(exc)})") from exc


def _check_whole(record: Any, where: str) -> None:
    """A file cut short (an interrupted copy or download) ends inside its last record:
    warcio then returns part of the record without complaint, and leaves the rest of
    its Content-Length unread."""
    missing = getattr(getattr(record, "raw_stream", None), "limit", 0)
    if isinstance(missing, int) and missing > 0:
        raise InputError(
            where,
            f"truncated WARC record: the file ends {missing} bytes before the record's end "
            f"(Content-Length {record.length}); copy the file again",
        )


def _warc_date(value: str | None) -> tuple[datetime | None, str | None]:
    """A record's capture time, or why its WARC-Date is no usable time (None, None when
    it has none)."""
    if not value or not value.strip():
        return None, None
    try:
        stamp = datetime.fromisoformat(value.strip())
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        # Every time zone must be able to show it: the first hours of year 1 cannot be
        # shown in all of them. (A stamp in the future is refused when the page is read.)
        if stamp.astimezone(UTC) < _EARLIEST_STAMP:
            raise OverflowError
    except ValueError:
        return None, f"WARC-Date {value.strip()[:60]!r} is not a date and time"
    except OverflowError:
        return None, f"WARC-Date {value.strip()[:60]!r} is out of range"
    return stamp, None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
