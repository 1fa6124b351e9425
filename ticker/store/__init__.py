"""Store stage: the DuckDB file. `connect` opens it (bounded lock waits, a damaged file
refused), `migrate` keeps its schema (numbered SQL files in `migrations/`), `write` is
the one write path, `read` holds every query."""

from ticker.store.connect import Store

__all__ = ["Store"]
