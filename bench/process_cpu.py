"""`python -m bench.process_cpu [TARGET]`: CPU per event of each process under the ingest load.

One wrk run (10 s, 16 connections) against one target of `bench.ingest` (default
listener-sqlite); prints events/s, then the CPU time per event of wrk, of the server's process
and each of its children (the listener's writer), and of the PostgreSQL server's processes,
read from /proc. It tells which process is the bottleneck; the ratios come from `make bench`.
"""

import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

from bench.events import generate, write_requests
from bench.ingest import SECRET, parse_run, serving, wrk
from tests.support.postgres import PostgresServer, find_pg_bin
from tests.support.servers import child_processes, process_ids, process_stat

DURATION_S = 10
CONNECTIONS = 16


def cpu_seconds(pid: int) -> float:
    """User and system time of process `pid` so far (proc(5) fields 14 and 15)."""
    fields = process_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    total = 0.0
    for pid in process_ids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("postgres"):
                total += cpu_seconds(pid)
        except OSError:
            continue  # it ended meanwhile
    return total


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else "listener-sqlite"
    workdir = Path(tempfile.mkdtemp(prefix="pmf-cpu-"))
    server = None
    database_url = None
    if target.endswith("postgresql"):
        server = PostgresServer(find_pg_bin())  # type: ignore[arg-type]
        server.start()
        database_url = server.create_database("cpu")
    requests_file = workdir / "requests.txt"
    write_requests(generate(40_000), SECRET, requests_file)
    try:
        with serving(target, database_url) as (url, server_pid):
            pids = {"server": server_pid}
            for pid, command_line in child_processes(server_pid).items():
                name = "writer" if b"writer_process" in command_line else f"child {pid}"
                pids[name] = pid
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            load_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            postgres_before = postgres_cpu_seconds() if server else 0.0
            out = wrk(url, requests_file, duration=DURATION_S, connections=CONNECTIONS)
            load_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            postgres_after = postgres_cpu_seconds() if server else 0.0
            after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    finally:
        if server:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    run = parse_run(out, target, 1)
    events = run.events_per_s * DURATION_S
    print(f"{target}: {run.events_per_s:.0f} events/s, p50 {run.p50_ms} ms, p99 {run.p99_ms} ms")
    wrk_seconds = sum(
        getattr(load_after, field) - getattr(load_before, field)
        for field in ("ru_utime", "ru_stime")
    )
    rows = {"wrk": wrk_seconds}
    rows.update({name: after[name] - before[name] for name in pids})
    if server:
        rows["postgres (all processes)"] = postgres_after - postgres_before
    for name, seconds in rows.items():
        print(
            f"  {name:26} {seconds / events * 1e6:6.0f} µs per event, "
            f"{seconds / DURATION_S:5.0%} of a core"
        )


if __name__ == "__main__":
    main()
