"""One error tree for everything ticker reports to a user."""

from __future__ import annotations

from pathlib import Path


class TickerError(Exception):
    """Root of every error ticker raises on purpose; the CLI prints it as one line."""

    exit_code = 2


class ConfigError(TickerError):
    """The configuration file is missing, unreadable or has a bad key."""

    def __init__(self, path: Path | str, problem: str, hint: str = "") -> None:
        self.path = str(path)
        self.problem = problem
        message = f"{path}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class StoreLockedError(TickerError):
    """Another process holds the DuckDB file longer than lock_timeout."""

    def __init__(self, path: Path | str, waited: float, holder: str | None) -> None:
        self.path = str(path)
        self.waited = waited
        self.holder = holder
        who = f"by {holder}" if holder else "by another process"
        super().__init__(
            f"{path} is locked {who}; waited {waited:.0f} s. "
            "Retry when it is done, or raise [store] lock_timeout in the config."
        )


class StoreError(TickerError):
    """The database file cannot be opened or migrated."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {problem}")


class UsageError(TickerError):
    """A command was given an argument it cannot use (an unknown pair, a bad date)."""


class OutputError(TickerError):
    """A file, directory or stream ticker writes (export, charts, stdout) cannot be written.

    Exit code 2 when the path itself cannot name it (a directory where a file is wanted,
    a missing directory, a file in the way), 1 when writing it failed (read-only,
    permission denied, disk full, a device error)."""

    def __init__(self, path: Path | str, problem: str, hint: str = "", exit_code: int = 1) -> None:
        self.path = str(path)
        self.problem = problem
        self.exit_code = exit_code
        message = f"{path}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class InputError(TickerError):
    """One input file or page cannot be read; backfill lists these and goes on."""

    def __init__(self, origin: str, reason: str) -> None:
        self.origin = origin
        self.reason = reason
        super().__init__(f"{origin}: {reason}")


class FetchError(TickerError):
    """A live fetch failed; the attempt is recorded with this outcome."""

    def __init__(
        self,
        url: str,
        outcome: str,
        reason: str,
        *,
        status: int | None = None,
        nbytes: int = 0,
        retry_after: float | None = None,
    ) -> None:
        self.url = url
        self.outcome = outcome
        self.reason = reason
        self.status = status  # the HTTP status, when a response arrived
        self.nbytes = nbytes  # body bytes read before giving up
        self.retry_after = retry_after  # seconds a 429 or 503 asked to wait (Retry-After)
        super().__init__(f"{url}: {reason}")


class WebArchiveError(TickerError):
    """A public web archive stopped a recovery: it refuses connections or keeps asking to
    slow down (it may have blocked this address), or its index answered something that
    is not a listing. What was done is kept; the same command run later resumes."""

    exit_code = 1


class ArchiveError(TickerError):
    """A fetched page could not be written to the raw page archive."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(
            f"{path}: {problem}; check that [archive] dir is writable and has free space"
        )

    def __reduce__(self) -> tuple[type[ArchiveError], tuple[str, str]]:
        return (type(self), (self.path, self.problem))  # crosses to another process whole


class ServeError(TickerError):
    """`ticker serve` cannot start: the address cannot be listened on, or the extra it
    needs is not installed."""
