"""A throwaway redis-server for the tests: a free loopback port, no persistence."""

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from tests.support.postgres import free_port
from tests.support.waiting import wait_until


@contextmanager
def redis_server(binary: str) -> Iterator[str]:
    """redis-server answering on a free port: its URL, until the block ends."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pmf-redis-") as directory:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}"
        try:
            wait_for_redis(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def wait_for_redis(url: str, process: subprocess.Popen[bytes]) -> None:
    client = redis.Redis.from_url(url)
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError("redis-server exited")
            return bool(client.ping())

        wait_until(answers, timeout=30, what="redis-server", ignoring=(redis.ConnectionError,))
    finally:
        client.close()
