"""CSV exports as the finance team opens them: in Excel, a page of rows at a time."""

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from finance_core.db import read_transaction

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class KeysetPage(Protocol):
    @property
    def rows(self) -> Sequence[Any]: ...
    @property
    def next_cursor(self) -> Any: ...


def keyset_csv(
    *,
    engine: Engine,
    header: Sequence[str],
    read_page: Callable[[Connection, Any], KeysetPage],
    values: Callable[[Any], Sequence[object]],
) -> Iterator[str]:
    """Every row that `read_page(conn, after)` pages through, as CSV chunks, a page each.

    One read transaction for the whole export, so that it is one consistent snapshot.
    """

    def pages() -> Iterator[list[Sequence[object]]]:
        with read_transaction(engine) as conn:
            after = None
            while True:
                page = read_page(conn, after)
                yield [values(row) for row in page.rows]
                if page.next_cursor is None:
                    return
                after = page.next_cursor

    return csv_chunks(header, pages())


def csv_chunks(header: Sequence[str], pages: Iterable[Iterable[Sequence[object]]]) -> Iterator[str]:
    """The header, then one chunk of CSV text per page of rows, as each page is read."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    yield _drain(buffer)
    for rows in pages:
        writer.writerows(rows)
        yield _drain(buffer)


def cell(text: str) -> str:
    """Text a spreadsheet will not run as a formula (the export is opened in Excel)."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def iso(value: datetime | None) -> str:
    """A UTC time to the second with a Z, or nothing."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else ""


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
