"""Chart files: each chart written as a PNG carrying a fingerprint of its data, so a
chart whose data did not change is not rewritten; writes go through ticker.output."""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ticker.charts.data import (
    CHART_VERSION,
    DPI,
    Prepared,
    check_display,
    no_chart_reason,
    overview_chart,
    pair_chart,
    pair_filename,
    prepare,
    renderer_version,
    window_days,
    window_text,
)
from ticker.charts.draw import PairFigure, build_overview_figure
from ticker.charts.labels import currency_name
from ticker.models import Day, Series
from ticker.output import make_dir, write_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FINGERPRINT_KEY = "Ticker-Fingerprint"
OVERVIEW_NAME = "overview.png"
OVERVIEW_KEY = "overview"  # the `pair` of a skipped overview in ChartReport.skipped
STALE_TEMP_SECONDS = 3600.0
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class ChartReport:
    """What write_charts did: files written, files left as they were, pairs skipped."""

    written: tuple[Path, ...] = ()
    unchanged: tuple[Path, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (pair or "overview", reason)


def read_fingerprint(path: Path) -> str | None:
    """The fingerprint stored in a PNG's text chunk, or None (no file, not a whole PNG)."""
    found: str | None = None
    try:
        with path.open("rb") as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                return None
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return None  # truncated: no IEND
                length, kind = struct.unpack(">I4s", head)
                if kind == b"tEXt" and length < 4096:
                    key, _, value = fh.read(length).partition(b"\0")
                    if key == FINGERPRINT_KEY.encode():
                        found = value.decode("latin-1")
                    fh.seek(4, os.SEEK_CUR)
                elif kind == b"IEND":
                    return found
                else:
                    fh.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return None


def save_png(rgb: Any, path: Path, metadata: dict[str, str]) -> None:
    """Encode and write the PNG the way ticker.output writes every file: a regular file
    replaced whole (temporary file, rename), a link or device written through."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)

    def encode(fh: BinaryIO) -> None:
        Image.fromarray(rgb, "RGB").save(fh, "png", pnginfo=info, dpi=(DPI, DPI))

    write_file(path, encode)


class Writer:
    """Draws a Figure, then encodes and writes its PNG on one worker thread (PIL's encoder
    and the file system let go of the GIL) while the next chart is drawn."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ticker-chart-png")
        self.pending: list[Future[None]] = []

    def write(self, fig: Figure, path: Path, fingerprint: str, title: str) -> None:
        """Queue the PNG of `fig` as it is now (the Figure may be reused at once)."""
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = fig.canvas
        if not isinstance(canvas, FigureCanvasAgg):
            canvas = FigureCanvasAgg(fig)
        canvas.draw()
        rgb = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])  # a copy
        metadata = {
            "Title": title,
            "Software": f"ticker chart {CHART_VERSION}, matplotlib {renderer_version()}",
            FINGERPRINT_KEY: fingerprint,
        }
        self.pending.append(self.pool.submit(save_png, rgb, path, metadata))

    def close(self) -> None:
        """Wait for every queued file; raise the first error, if any."""
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def remove_stale_temps(out_dir: Path) -> None:
    """Remove temporary files an interrupted run left behind (older than an hour)."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for tmp in out_dir.glob(".*.png.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()


def write_charts(
    series: Sequence[Series],
    out_dir: Path,
    *,
    display: str = "per_usd",
    since: date | None = None,
    until: date | None = None,
    source_label: str = "",
    officials: Mapping[str, Sequence[Day]] | None = None,
) -> ChartReport:
    """Write one PNG per pair and overview.png to out_dir; unchanged charts are not rewritten.
    `officials`: the official rates of each pair's currency (by the pair), drawn under it."""
    check_display(display)
    if since and until and since > until:
        raise ValueError(f"the window starts ({since}) after it ends ({until})")
    out_dir = Path(out_dir)
    make_dir(out_dir)
    remove_stale_temps(out_dir)
    written: list[Path] = []
    unchanged: list[Path] = []
    skipped: list[tuple[str, str]] = []
    prepared: list[Prepared] = []
    seen: set[str] = set()
    figure: PairFigure | None = None  # one Figure, refilled for every pair
    writer = Writer()
    try:
        for s in series:
            if s.pair in seen:
                skipped.append((s.pair, f"{s.pair}: given twice (source {s.source}); drawn once"))
                continue
            seen.add(s.pair)
            points = window_days(s, since, until)
            reason = no_chart_reason(s.pair, points, since, until)
            if reason:
                skipped.append((s.pair, reason))
                continue
            prep = prepare(points, s.pair, display)
            prepared.append(prep)
            official = (officials or {}).get(s.pair, ())
            chart = pair_chart(prep, display, since, until, source_label, official)
            path = out_dir / pair_filename(s.pair)
            if read_fingerprint(path) == chart.fingerprint:
                unchanged.append(path)
                continue
            figure = figure or PairFigure()
            title = f"{chart.pair} {currency_name(chart.base)} {chart.since} to {chart.until}"
            writer.write(figure.show(chart), path, chart.fingerprint, title)
            written.append(path)
        if figure is not None:
            figure.fig.clear()

        overview = overview_chart(prepared, display, since, until, source_label)
        path = out_dir / OVERVIEW_NAME
        if overview is None:
            reason = f"overview: no pair has two or more days {window_text(since, until)}"
            skipped.append((OVERVIEW_KEY, reason))
        elif read_fingerprint(path) == overview.fingerprint:
            unchanged.append(path)
        else:
            fig = build_overview_figure(overview)
            title = f"Overview {overview.since} to {overview.until}"
            writer.write(fig, path, overview.fingerprint, title)
            fig.clear()
            written.append(path)
    finally:
        writer.close()
    return ChartReport(tuple(written), tuple(unchanged), tuple(skipped))
