"""SQLite's query plan of each statement a read runs, to check that it uses an index."""

from sqlalchemy import event

from finance_core.store import migrate, statements
from finance_core.store.db import make_engine, read_transaction


def sqlite_query_plans(tmp_path, table, read):
    """The SQLite query plan of each statement on `table` that `read(conn)` runs."""
    engine = make_engine(f"sqlite:///{tmp_path}/plans.db")
    migrate.upgrade(engine)
    executed = []

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(conn, cursor, statement, parameters, context, executemany):
        if table in statement and not statement.startswith("EXPLAIN"):
            executed.append((statement, parameters))

    # Statements compiled once and run on the driver (finance_core.store.statements) skip the event.
    run_on_driver = statements._execute

    def _capture_on_driver(conn, compiled, parameters):
        sql, constants = compiled
        if table in sql:
            executed.append((sql, {**(constants or {}), **parameters}))
        return run_on_driver(conn, compiled, parameters)

    statements._execute = _capture_on_driver
    try:
        with read_transaction(engine) as conn:
            read(conn)
    finally:
        statements._execute = run_on_driver
    with engine.connect() as conn:
        plans = [
            (
                statement,
                [
                    str(row[-1])
                    for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                ],
            )
            for statement, parameters in executed
        ]
    engine.dispose()
    return plans
