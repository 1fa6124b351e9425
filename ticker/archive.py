"""Archive stage: every fetched page kept as a gzipped WARC file before it is parsed, so
`ticker backfill <archive dir>` can parse it again with the same capture time and source.

Layout: <dir>/YYYY-MM-DD/<YYYYmmddTHHMMSSZ>-<source>-<id>.warc.gz, one file per capture
in a directory per day (UTC). Each file is written to a hidden temporary name, flushed to
disk and renamed, so a reader never meets half a record: a crash leaves at most a hidden
.tmp file, which backfill does not read and a later writer to that directory removes.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ticker import __version__
from ticker.dumps import SOURCE_HEADER
from ticker.errors import ArchiveError

SUFFIX = ".warc.gz"
GZIP_LEVEL = 6  # zlib's default
_TMP_SUFFIX = ".tmp"
_swept: set[Path] = set()  # day directories already cleared of stale temporary files


def archive_path(directory: Path, source: str, captured_at: datetime, record_id: str) -> Path:
    """Where one capture is kept. Only ticker's own values name it (the source name is
    validated by the config), never the page's content."""
    at = captured_at.astimezone(UTC)
    return directory / f"{at:%Y-%m-%d}" / f"{at:%Y%m%dT%H%M%SZ}-{source}-{record_id[:12]}{SUFFIX}"


def warc_bytes(
    *,
    url: str,
    source: str,
    captured_at: datetime,
    status: int,
    reason: str,
    http_version: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    record_id: str,
    filename: str,
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    """A gzipped WARC: a warcinfo record, then the response record (each its own gzip
    member), with WARC-Date = the capture time and WARC-Ticker-Source = the source.
    `extra_headers` are added to the response record (where a capture came from)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    # Written plain, each record then gzipped as a member of its own at zlib's default
    # level (warcio's own gzip takes level 9: four times the time for a JSON body of
    # 100 KB, for a file a few per cent smaller).
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=False, warc_version="WARC/1.0")
    date = captured_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    info = writer.create_warcinfo_record(
        filename,
        {"software": f"ticker/{__version__}", "format": "WARC File Format 1.0"},
    )
    info.rec_headers.replace_header("WARC-Date", date)
    writer.write_record(info)
    first = buf.tell()
    # The body is stored decoded: drop the transfer encodings and give its real length.
    kept = [
        (k, v) for k, v in headers if k.lower() not in ("content-encoding", "transfer-encoding")
    ]
    kept = [(k, v) for k, v in kept if k.lower() != "content-length"]
    kept.append(("Content-Length", str(len(body))))
    http_headers = StatusAndHeaders(f"{status} {reason}".strip(), kept, protocol=http_version)
    record = writer.create_warc_record(
        url,
        "response",
        payload=io.BytesIO(body),
        length=len(body),
        http_headers=http_headers,
        warc_headers_dict={
            "WARC-Date": date,
            "WARC-Record-ID": f"<urn:uuid:{uuid.UUID(hex=record_id)}>",
            SOURCE_HEADER: source,
            **(extra_headers or {}),
        },
    )
    writer.write_record(record)
    data = buf.getvalue()
    return _member(data[:first]) + _member(data[first:])


def _member(data: bytes) -> bytes:
    """One gzip member of `data`."""
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return packer.compress(data) + packer.flush()


def archive_page(
    directory: Path,
    *,
    url: str,
    source: str,
    captured_at: datetime,
    status: int,
    reason: str,
    http_version: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    record_id: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    durable: bool = True,
) -> Path:
    """Write one capture to the archive, durably; return its path. Raises ArchiveError.
    With `durable=False` the file is whole for every reader, but survives a power cut
    only after `settle` (a caller writing many files makes them durable at once)."""
    record_id = record_id or uuid.uuid4().hex
    path = archive_path(directory, source, captured_at, record_id)
    data = warc_bytes(
        url=url,
        source=source,
        captured_at=captured_at,
        status=status,
        reason=reason,
        http_version=http_version,
        headers=headers,
        body=body,
        record_id=record_id,
        filename=path.name,
        extra_headers=extra_headers,
    )
    write_atomic(path, data, durable=durable)
    return path


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory (without the
    fsyncs when not `durable`: `settle` does them later)."""
    day = path.parent
    tmp = day / f".{path.name}.{os.getpid()}{_TMP_SUFFIX}"
    try:
        if not day.is_dir():
            day.mkdir(parents=True, exist_ok=True)
            if durable:
                _fsync_dir(day.parent)
        _remove_stale_temps(day)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if durable:
            _fsync_dir(day)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise ArchiveError(path, f"cannot write the page archive ({exc.strerror or exc})") from exc


def settle(directory: Path) -> None:
    """Make the files written under `directory` with `durable=False` durable, all at once:
    one syncfs(2) of its file system (where the C library has none, os.sync()). Many
    small files cost one flush instead of three fsyncs each. Raises ArchiveError."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        raise ArchiveError(directory, f"cannot sync the page archive ({exc.strerror})") from exc
    try:
        syncfs = _syncfs()
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise ArchiveError(directory, f"cannot sync the page archive ({os.strerror(err)})")
    finally:
        os.close(fd)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(day: Path) -> None:
    """Remove temporary files that a writer which is no longer running left behind
    (their names carry the writer's PID). Done once per directory per process."""
    if day in _swept:
        return
    _swept.add(day)
    try:
        entries = list(os.scandir(day))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(_TMP_SUFFIX)):
            continue
        pid = name[: -len(_TMP_SUFFIX)].rpartition(".")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
