"""`python -m bench.writer_cpu`: the writer's CPU time per event on SQLite, and where it goes.

The ingest bench's events (`bench.events.generate`: 60% subscription updates, 40% invoice
failures and payments), as the listener frames them, go through the writer process's own
`store()` in batches of its MAX_BATCH, in this process, on a fresh SQLite file: parsing, the
handlers, the statements with their triggers, the commits. The first quarter warms up; the
rest is measured as this process's CPU time per event (nothing else runs in it). `--profile`
measures under cProfile instead and prints the top costs (cProfile inflates Python's share).
"""

import argparse
import cProfile
import json
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from bench.events import generate
from finance_core.store import migrate
from finance_core.store.db import make_engine
from webhook_listener.writer_process import MAX_BATCH, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="under cProfile: the top costs")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="pmf-writer-cpu-"))
    try:
        engine = make_engine(f"sqlite:///{workdir}/writer.db")
        migrate.upgrade(engine)
        received = int(time.time() * 1_000_000)
        frames = [
            (n, received, json.dumps(event, separators=(",", ":")).encode())
            for n, event in enumerate(generate(args.events))
        ]
        batches = [frames[n : n + MAX_BATCH] for n in range(0, len(frames), MAX_BATCH)]
        warm = len(batches) // 4
        for batch in batches[:warm]:
            store(engine, batch)
        profile = cProfile.Profile() if args.profile else None
        started_cpu, started = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        for batch in batches[warm:]:
            store(engine, batch)
        if profile:
            profile.disable()
        measured = sum(len(batch) for batch in batches[warm:])
        cpu_us = (time.process_time() - started_cpu) / measured * 1e6
        wall_us = (time.perf_counter() - started) / measured * 1e6
        print(f"writer on SQLite: {cpu_us:.0f} µs of CPU per event, {wall_us:.0f} µs wall")
        if profile:
            pstats.Stats(profile).sort_stats("tottime").print_stats(20)
        engine.dispose()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
