"""Every output target of every command: a regular file (or a new path) is replaced whole,
a link, device or named pipe is written through, new files honour the umask and replaced
ones keep their mode; every bad place gives one `error:` line and an exit code and harms
nothing else; a stdout that is full or closed ends the command cleanly.

Read-only directories and full disks are bind or tmpfs mounts made inside a private mount
namespace (`unshare -m`), so they vanish with the process; where that is not permitted
those cases are skipped. Device nodes are made under tmp_path (never the system's own).
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import LOCAL_HTTP, Project, one_error_line, ticker_subprocess, write_config
from pages import DEC_09, MARCH_20, html_page, text_page
from servers import LocalServer, html

from ticker.charts.files import read_fingerprint

# each command that writes a file, with the arguments before --out; charts of one pair
COMMANDS: dict[str, tuple[str, ...]] = {
    "csv": ("export", "--format", "csv"),
    "json": ("export", "--format", "json"),
    "parquet": ("export", "--format", "parquet"),
    "chart": ("chart", "--all", "--pair", "KZT"),
}
EXPORTS = ("csv", "json", "parquet")
OLD = b"old contents\n"


@pytest.fixture(scope="module")
def loaded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of quotes (enough for a chart), charts in <project>/charts; made once."""
    project = Project(tmp_path_factory.mktemp("template") / "project", charts="charts")
    project.write("a.txt", text_page(MARCH_20, "20 March 2025"))
    project.write("b.txt", text_page(DEC_09, "09 December 2025"))
    result = project.backfill()
    assert result.exit_code == 0, result.output
    return project.root


@pytest.fixture
def loaded(loaded_template: Path, tmp_path: Path) -> Project:
    """A copy of the template project under this test's tmp_path."""
    shutil.copytree(loaded_template, tmp_path / "project")
    return Project(tmp_path / "project", charts="charts")


def expected_export(project: Project, fmt: str, scratch: Path) -> bytes:
    """The export written to a fresh regular file: what every target must receive."""
    out = scratch / f"expected.{fmt}"
    result = project.run("export", "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def mknod(path: Path, minor: int) -> Path:
    """A character device of the `mem` driver under tmp_path: 3 is null, 7 is full."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        os.close(os.open(path, os.O_WRONLY))
    except PermissionError as exc:
        pytest.skip(f"cannot make or open a device node here ({exc.strerror})")
    return path


def is_device(path: Path) -> bool:
    return stat.S_ISCHR(os.lstat(path).st_mode)


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@functools.cache
def _namespace_problem() -> str:
    """Why mounts in a private mount namespace cannot be made here, or ''."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    script = 'd=$(mktemp -d) && mount -t tmpfs probe "$d"; rc=$?; umount "$d"; rmdir "$d"; exit $rc'
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stderr.strip() or "not permitted" if probe.returncode else ""


def in_namespace(setup: str, after: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """In a private mount namespace (its mounts die with it): the shell line `setup`,
    then argv, then the shell line `after`; the exit code is argv's."""
    problem = _namespace_problem()
    if problem:
        pytest.skip(f"needs mounts in a private mount namespace: {problem}")
    script = f'set -e; {setup}; set +e; "$@"; rc=$?; {after or ":"}; exit $rc'
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- write through: links, devices, named pipes, /dev/stdout ------------------------------------


@pytest.mark.parametrize("fmt", EXPORTS)
def test_export_writes_through_a_symlink(loaded: Project, tmp_path: Path, fmt: str) -> None:
    expected = expected_export(loaded, fmt, tmp_path)
    target = tmp_path / f"target.{fmt}"
    target.write_bytes(OLD)
    target.chmod(0o640)
    link = tmp_path / f"link.{fmt}"
    link.symlink_to(target.name)
    result = loaded.run(*COMMANDS[fmt], "--out", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == target.name
    assert target.read_bytes() == expected
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_export_through_a_dangling_symlink_creates_its_target(
    loaded: Project, tmp_path: Path
) -> None:
    link = tmp_path / "link.csv"
    link.symlink_to("made.csv")
    assert loaded.run("export", "--out", str(link)).exit_code == 0
    assert link.is_symlink()
    assert (tmp_path / "made.csv").read_bytes() == expected_export(loaded, "csv", tmp_path)


@pytest.mark.parametrize("fmt", EXPORTS)
def test_export_writes_into_a_named_pipe(loaded: Project, tmp_path: Path, fmt: str) -> None:
    expected = expected_export(loaded, fmt, tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so the writer's open returns
    try:
        result = loaded.run(*COMMANDS[fmt], "--out", str(fifo))
        received = b""
        while chunk := os.read(reader, 1 << 16):
            received += chunk
    except BlockingIOError:  # nothing came and nobody writes
        pass
    finally:
        os.close(reader)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received == expected


@pytest.mark.parametrize("fmt", EXPORTS)
def test_export_to_a_link_to_stdout_reaches_stdout(
    loaded: Project, tmp_path: Path, fmt: str
) -> None:
    """/dev/stdout is a link to /proc/self/fd/1; here the link is made under tmp_path."""
    expected = expected_export(loaded, fmt, tmp_path)
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    proc = ticker_subprocess(
        loaded.config, *COMMANDS[fmt], "--out", str(link), timeout=60, text=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"


@pytest.mark.parametrize("fmt", EXPORTS)
def test_export_to_a_null_device_leaves_the_device(
    loaded: Project, tmp_path: Path, fmt: str
) -> None:
    null = mknod(tmp_path / "null", 3)
    result = loaded.run(*COMMANDS[fmt], "--out", str(null))
    assert result.exit_code == 0, result.output
    assert is_device(null) and null.stat().st_rdev == os.makedev(1, 3)
    assert temp_files(tmp_path) == []


def test_a_chart_file_that_is_a_symlink_stays_one(loaded: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(OLD)
    charts = loaded.root / "charts"
    charts.mkdir()
    (charts / "KZT-USD.png").symlink_to(elsewhere)
    result = loaded.run(*COMMANDS["chart"])
    assert result.exit_code == 0, result.output
    assert (charts / "KZT-USD.png").is_symlink()
    assert elsewhere.read_bytes().startswith(b"\x89PNG") and read_fingerprint(elsewhere)
    assert temp_files(charts) == []


# --- modes: the umask for new files, the old mode for replaced ones ------------------------------


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def written(project: Project, command: str, out: Path) -> Path:
    """Run `command` into `out` (a file, or the charts directory); the file it wrote."""
    result = project.run(*COMMANDS[command], "--out", str(out))
    assert result.exit_code == 0, result.output
    return out / "KZT-USD.png" if command == "chart" else out


@pytest.mark.parametrize("mask", [0o027, 0o002])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_new_file_honours_the_umask(
    loaded: Project, tmp_path: Path, umask: Callable[[int], int], command: str, mask: int
) -> None:
    umask(mask)
    out = tmp_path / ("charts" if command == "chart" else f"new.{command}")
    path = written(loaded, command, out)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize("mode", [0o604])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_replaced_file_keeps_its_mode(
    loaded: Project, tmp_path: Path, umask: Callable[[int], int], command: str, mode: int
) -> None:
    umask(0o077)
    out = tmp_path / ("charts" if command == "chart" else f"old.{command}")
    old = out / "KZT-USD.png" if command == "chart" else out
    old.parent.mkdir(exist_ok=True)
    old.write_bytes(OLD)
    old.chmod(mode)
    before = old.stat().st_ino
    path = written(loaded, command, out)
    assert path.read_bytes() != OLD
    assert path.stat().st_ino != before  # replaced whole, not rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == mode


# --- bad places: one error line, an exit code, nothing else harmed ------------------------------


@dataclass
class Place:
    """A bad output place: the --out value (None: the config's [charts] dir), its exit
    code, what the error line says, shell lines run before and after the command in a
    private mount namespace, and a check (given what `after` printed) that nothing else
    was harmed."""

    out: str | None
    code: int
    says: tuple[str, ...]
    setup: str = ""
    after: str = ""
    unharmed: Callable[[str], None] = field(default=lambda printed: None)


def target_in(d: Path, command: str) -> Path:
    """The file a command writes in directory d (a chart: the one pair drawn)."""
    return d / ("KZT-USD.png" if command == "chart" else f"x.{command}")


def out_in(d: Path, command: str) -> str:
    """The --out that makes a command write into directory d."""
    return str(d if command == "chart" else target_in(d, command))


def place_empty(root: Path, command: str) -> Place:
    return Place("", 2, ("--out is empty",))


def place_a_file(root: Path, command: str) -> Place:
    """A regular file where the chart directory should be."""
    return Place(str(root / "afile"), 2, ("afile", "is a file, not a directory"))


def place_a_directory(root: Path, command: str) -> Place:
    (root / "adir").mkdir()
    return Place(str(root / "adir"), 2, ("adir", "is a directory"))


def place_missing_directory(root: Path, command: str) -> Place:
    return Place(str(root / "nowhere" / "x.csv"), 2, ("nowhere", "does not exist"))


def place_under_a_file(root: Path, command: str) -> Place:
    says = "a part of the path is a file" if command == "chart" else "is not a directory"
    return Place(str(root / "afile" / "sub"), 2, ("afile/sub", says))


def place_in_proc(root: Path, command: str) -> Place:
    if not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    return Place("/proc/ticker-no-such-entry", 1, ("/proc/ticker-no-such-entry",))


def place_config_dir_is_a_file(root: Path, command: str) -> Place:
    charts = root / "project" / "charts"
    charts.write_bytes(OLD)

    def unharmed(printed: str) -> None:
        assert charts.read_bytes() == OLD

    return Place(None, 2, (str(charts), "is a file, not a directory"), unharmed=unharmed)


def place_a_directory_as_chart_file(root: Path, command: str) -> Place:
    png = root / "project" / "charts" / "KZT-USD.png"
    png.mkdir(parents=True)

    def unharmed(printed: str) -> None:
        assert png.is_dir() and not any(png.iterdir())
        assert temp_files(png.parent) == []

    return Place(None, 2, (str(png), "is a directory"), unharmed=unharmed)


def place_full_device(root: Path, command: str) -> Place:
    full = mknod(root / "full", 7)

    def unharmed(printed: str) -> None:
        assert is_device(full) and full.stat().st_rdev == os.makedev(1, 7)

    return Place(str(full), 1, (f"{full}: No space left on device",), unharmed=unharmed)


def place_read_only(root: Path, command: str) -> Place:
    """A read-only bind mount of a directory holding the old file."""
    d = root / "ro"
    d.mkdir()
    old = target_in(d, command)
    old.write_bytes(OLD)

    def unharmed(printed: str) -> None:
        assert old.read_bytes() == OLD
        assert temp_files(d) == []

    setup = f"mount --bind {d} {d}; mount -o remount,ro,bind {d} {d}"
    return Place(out_in(d, command), 1, (str(d), "Read-only file system"), setup, "", unharmed)


def place_disk_full(root: Path, command: str) -> Place:
    """A tmpfs filled to its last page, holding the old file; what is left in it is
    printed before the namespace (and the tmpfs) goes."""
    d = root / "small"
    d.mkdir()
    old = target_in(d, command)
    setup = (
        f"mount -t tmpfs -o size=64k tmpfs {d}; printf 'old contents\\n' > {old}; "
        f"dd if=/dev/zero of={d}/filler bs=4k 2>/dev/null || true"
    )
    after = f"echo '--- after'; cat {old}; ls -a {d}"

    def unharmed(printed: str) -> None:
        left = printed.split("--- after\n", 1)[1].split()
        assert left[:2] == ["old", "contents"]
        assert sorted(left[2:]) == sorted([".", "..", "filler", old.name])

    return Place(out_in(d, command), 1, (str(d), "No space left on device"), setup, after, unharmed)


EXPORT_PLACES: dict[str, Callable[[Path, str], Place]] = {
    "empty": place_empty,
    "a directory": place_a_directory,
    "a missing directory": place_missing_directory,
    "under a file": place_under_a_file,
    "in /proc": place_in_proc,
    "a full device": place_full_device,
    "a read-only directory": place_read_only,
    "a full disk": place_disk_full,
}
CHART_PLACES: dict[str, Callable[[Path, str], Place]] = {
    "empty": place_empty,
    "a file": place_a_file,
    "under a file": place_under_a_file,
    "in /proc": place_in_proc,
    "[charts] dir is a file": place_config_dir_is_a_file,
    "a chart file is a directory": place_a_directory_as_chart_file,
    "a read-only directory": place_read_only,
    "a full disk": place_disk_full,
}
CASES = [(c, p) for c in EXPORTS for p in EXPORT_PLACES] + [("chart", p) for p in CHART_PLACES]


@pytest.mark.parametrize(("command", "where"), CASES)
def test_a_bad_output_place_is_one_error_line(
    loaded: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, where: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative path gone wrong lands here, not in the checkout
    (tmp_path / "afile").write_bytes(OLD)
    places = CHART_PLACES if command == "chart" else EXPORT_PLACES
    place = places[where](tmp_path, command)
    args = [*COMMANDS[command], *([] if place.out is None else ["--out", place.out])]
    printed = ""
    if place.setup:
        proc = in_namespace(
            place.setup,
            place.after,
            sys.executable,
            "-m",
            "ticker",
            "--config",
            str(loaded.config),
            *args,
        )
        code, stderr, printed = proc.returncode, proc.stderr, proc.stdout
    else:
        result = loaded.run(*args)
        code, stderr = result.exit_code, result.stderr
    line = one_error_line(stderr)
    assert code == place.code, stderr
    for text in place.says:
        assert text in line
    place.unharmed(printed)
    assert (tmp_path / "afile").read_bytes() == OLD
    assert loaded.export("csv").count("\n") == 11  # the store is as it was


# --- stdout: full, or a reader that has gone -------------------------------------------------


@pytest.fixture(scope="module")
def live_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a source on 127.0.0.1 and two stored days; made once."""
    root = tmp_path_factory.mktemp("live")
    config = write_config(root, url="http://127.0.0.1:9/", http=LOCAL_HTTP | {"retries": 0})
    dumps = root / "dumps"
    dumps.mkdir()
    (dumps / "a.txt").write_text(text_page(MARCH_20, "20 March 2025"), encoding="utf-8")
    (dumps / "b.txt").write_text(text_page(DEC_09, "09 December 2025"), encoding="utf-8")
    proc = ticker_subprocess(config, "backfill", str(dumps), timeout=60)
    assert proc.returncode == 0, proc.stderr
    # drawn once here: the chart runs below find their PNG unchanged and only print
    proc = ticker_subprocess(config, *PRINTING["chart"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture
def live(live_template: Path, tmp_path: Path, server: LocalServer) -> Path:
    """A copy of the live template under this test's tmp_path, its source on this test's
    server; its config."""
    shutil.copytree(live_template, tmp_path / "live")
    server.route("/", html(html_page(day="09 December 2025")))
    return write_config(tmp_path / "live", url=server.url("/"), http=LOCAL_HTTP | {"retries": 0})


PRINTING = {
    "latest": ("latest",),
    "history": ("history", "KZT"),
    "export": ("export",),
    "check": ("check",),
    "status": ("status",),
    "backfill": ("backfill", "{dumps}"),
    "scrape": ("scrape",),
    "chart": ("chart", "--pair", "KZT"),
    "help": ("--help",),
}


def _args(name: str, config: Path) -> list[str]:
    return [a.replace("{dumps}", str(config.parent / "dumps")) for a in PRINTING[name]]


@pytest.mark.parametrize("name", list(PRINTING))
@pytest.mark.parametrize("kind", ["full", "closed"])
def test_stdout_that_cannot_be_written_is_one_error_line(live: Path, kind: str, name: str) -> None:
    """Stdout on a full device (`ticker latest > /dev/full`), or closed (`>&-`)."""
    if kind == "full":
        fd = os.open(mknod(live.parent / "full", 7), os.O_WRONLY)
        try:
            proc = ticker_subprocess(live, *_args(name, live), timeout=60, stdout=fd)
        finally:
            os.close(fd)
        says = "No space left on device (free some space or choose another place)"
    else:
        proc = ticker_subprocess(
            live, *_args(name, live), timeout=60, stdout=None, preexec_fn=lambda: os.close(1)
        )
        says = "it is closed (start ticker with it open)"
    assert one_error_line(proc.stderr) == f"error: standard output: {says}"
    assert proc.returncode == 1


@pytest.mark.parametrize("name", list(PRINTING))
def test_stdout_closed_by_its_reader_exits_quietly(live: Path, name: str) -> None:
    """`ticker export | head -1`: the reader has gone; no traceback, no noise at exit."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = ticker_subprocess(live, *_args(name, live), timeout=60, stdout=write_end)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert "error" not in proc.stderr.lower(), proc.stderr
    assert proc.returncode == 1
