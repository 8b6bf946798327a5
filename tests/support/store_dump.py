"""The whole store as text, for tests that search it for what must never be kept."""

from sqlalchemy import Engine, MetaData, select

from finance_core.store.db import read_transaction


def store_text(engine: Engine) -> str:
    """Every row of every table, every column, as text."""
    metadata = MetaData()
    metadata.reflect(engine)
    with read_transaction(engine) as conn:
        return "\n".join(
            repr(tuple(row))
            for table in metadata.sorted_tables
            for row in conn.execute(select(table))
        )
