"""CSV exports the dashboard offers: streamed in chunks, safe to open in a spreadsheet."""

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine

from finance_core.store.db import read_transaction

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_CHUNK = 500


def csv_chunks(
    header: Sequence[str], rows: Iterable[Sequence[object]], *, rows_per_chunk: int = ROWS_PER_CHUNK
) -> Iterator[str]:
    """CSV text: the header first, then a chunk every `rows_per_chunk` rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    yield _drain(buffer)
    for count, row in enumerate(rows, start=1):
        writer.writerow(row)
        if count % rows_per_chunk == 0:
            yield _drain(buffer)
    if buffer.tell():
        yield _drain(buffer)


Row = TypeVar("Row", covariant=True)


class Page(Protocol[Row]):
    """One page of a keyset-paginated listing (event_log.EventPage, audit.AuditPage)."""

    @property
    def rows(self) -> Sequence[Row]: ...

    @property
    def next_cursor(self) -> Any: ...


def keyset_rows(
    *, engine: Engine, read_page: Callable[[Connection, Any], Page[Row]]
) -> Iterator[Row]:
    """Every row of a listing, page after page, in one read transaction (one snapshot)."""
    with read_transaction(engine) as conn:
        after = None
        while True:
            page = read_page(conn, after)
            yield from page.rows
            if page.next_cursor is None:
                return
            after = page.next_cursor


def formula_safe(text: str) -> str:
    """Text a spreadsheet will not run as a formula (the exports are opened in Excel)."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def iso_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else ""


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
