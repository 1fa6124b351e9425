"""Output files (exports, charts): written whole, or through a link, device or pipe.

A regular file, or a path that does not exist yet, is written to a temporary file in the
same directory, flushed to disk and renamed over it, so a reader never sees half of it and
a failed write leaves the old file as it was. Anything else at the path (a symbolic link,
a device such as /dev/stdout or /dev/null, a named pipe) is opened and written through as
`> path` would: a link stays a link and its target gets the data. A new file gets the mode
0666 less the umask (and the directory's default ACL), like `> path`; a replaced file keeps
its mode (and its owner, where that is allowed). Every failure is one OutputError naming
the path, the cause and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ticker.errors import OutputError

TEMP_SUFFIX = ".tmp"  # temporary files are ".<stem>.<random><suffix>.tmp" beside the target

_HINTS = {
    errno.EACCES: "check that you may write there",
    errno.EPERM: "check that you may write there",
    errno.EROFS: "choose another place",
    errno.ENOSPC: "free some space or choose another place",
    errno.EDQUOT: "free some space or choose another place",
    errno.EFBIG: "choose another place",
    errno.ENOENT: "check that its directory exists and takes new files",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "it is a directory; give a file name",
    errno.ENAMETOOLONG: "choose a shorter name",
}


def output_error(path: Path | str, exc: OSError) -> OutputError:
    """An OSError met while writing `path`, as one line: the path, the cause, a hint."""
    problem = exc.strerror or str(exc)
    return OutputError(path, problem, _HINTS.get(exc.errno or 0, ""))


def check_file_place(path: Path) -> None:
    """Refuse a path that cannot name a file before any work is done: a directory, a
    directory that does not exist, a file where a directory should be (exit code 2)."""
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.stat(path).st_mode):
            raise OutputError(path, "is a directory", "give a file name", exit_code=2)
    parent = path.parent
    try:
        is_dir = stat.S_ISDIR(os.stat(parent).st_mode)
    except FileNotFoundError as exc:
        raise OutputError(
            path, f"directory {parent} does not exist", "create it first", exit_code=2
        ) from exc
    except NotADirectoryError:
        is_dir = False
    except OSError as exc:
        raise output_error(path, exc) from exc
    if not is_dir:
        raise OutputError(path, f"{parent} is not a directory", exit_code=2)


def make_dir(path: Path) -> None:
    """Create the output directory `path` (and its parents) unless it exists."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise OutputError(
            path, "is a file, not a directory", "remove it or choose another directory", 2
        ) from exc
    except NotADirectoryError as exc:
        raise OutputError(
            path, "a part of the path is a file, not a directory", "choose another directory", 2
        ) from exc
    except OSError as exc:
        raise output_error(path, exc) from exc


def write_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` with `write(binary file)`: a regular file or a new path is replaced
    whole, anything else is written through (see the module's docstring)."""
    check_file_place(path)
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise output_error(path, exc) from exc
    if st is None or stat.S_ISREG(st.st_mode):
        _replace(path, write, st)
    else:
        _write_through(path, write)


def write_bytes(path: Path, data: bytes) -> None:
    """write_file with the whole content at hand."""
    write_file(path, lambda fh: fh.write(data))


def _replace(path: Path, write: Callable[[BinaryIO], object], old: os.stat_result | None) -> None:
    """Temporary file beside `path`, flushed to disk, renamed over it."""
    try:
        fd, tmp = _create_temp(path)
    except OSError as exc:
        raise output_error(path, exc) from exc
    try:
        if old is not None:  # keep the replaced file's owner (where allowed) and mode
            with contextlib.suppress(OSError):
                os.fchown(fd, old.st_uid, old.st_gid)
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise output_error(path, exc) from exc
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _create_temp(path: Path) -> tuple[int, str]:
    """A new file beside `path`, created with mode 0666 so the umask applies as for `>`
    (tempfile.mkstemp would make it 0600)."""
    stem, dot, suffix = path.name.partition(".")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(100):
        tmp = str(path.parent / f".{stem}.{secrets.token_hex(4)}{dot}{suffix}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def _write_through(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Open the link, device or pipe at `path` as `> path` would and write into it."""
    try:
        with open(path, "wb") as fh:
            write(fh)
            fh.flush()
            if stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # a link to a regular file
                os.fsync(fh.fileno())
    except OSError as exc:
        raise output_error(path, exc) from exc
