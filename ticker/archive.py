"""Archive stage: every fetched page kept as a gzipped WARC file before it is parsed, so
`ticker backfill <archive dir>` can parse it again with the same capture time and source.

Layout: <dir>/YYYY-MM-DD/<YYYYmmddTHHMMSSZ>-<source>-<id>.warc.gz, one file per capture
in a directory per day (UTC). Each file is written to a hidden temporary name, flushed to
disk and renamed, so a reader never meets half a record: a crash leaves at most a hidden
.tmp file, which backfill does not read and a later writer to that directory removes.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ticker import __version__
from ticker.dumps import SOURCE_HEADER
from ticker.errors import ArchiveError

SUFFIX = ".warc.gz"
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

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True, warc_version="WARC/1.0")
    date = captured_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    info = writer.create_warcinfo_record(
        filename,
        {"software": f"ticker/{__version__}", "format": "WARC File Format 1.0"},
    )
    info.rec_headers.replace_header("WARC-Date", date)
    writer.write_record(info)
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
    return buf.getvalue()


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
    sync_dir: bool = True,
) -> Path:
    """Write one capture to the archive, durably; return its path. Raises ArchiveError.
    With `sync_dir=False` the file is whole on disk but its name is durable only after
    `sync_names` (a caller writing many files syncs each directory once)."""
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
    write_atomic(path, data, sync_dir=sync_dir)
    return path


def write_atomic(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory (unless
    `sync_dir` is False: then `sync_names` does it later)."""
    day = path.parent
    tmp = day / f".{path.name}.{os.getpid()}{_TMP_SUFFIX}"
    try:
        if not day.is_dir():
            day.mkdir(parents=True, exist_ok=True)
            if sync_dir:
                _fsync_dir(day.parent)
        _remove_stale_temps(day)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync_dir:
            _fsync_dir(day)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise ArchiveError(path, f"cannot write the page archive ({exc.strerror or exc})") from exc


def sync_names(paths: Iterable[Path]) -> None:
    """Make the names of files written with `sync_dir=False` durable: each directory
    holding them, and the one above (where a new day directory was made), is synced
    once. Raises ArchiveError."""
    days = {path.parent for path in paths}
    for directory in [*sorted(days), *sorted({day.parent for day in days})]:
        try:
            _fsync_dir(directory)
        except OSError as exc:
            raise ArchiveError(
                directory, f"cannot sync the page archive ({exc.strerror or exc})"
            ) from exc


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
