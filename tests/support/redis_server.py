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
    with RedisServer(binary) as server:
        yield server.url


class RedisServer:
    """redis-server on a port of its own that a test may stop and start again (an outage)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self._directory = tempfile.TemporaryDirectory(prefix="pmf-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "RedisServer":
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        self.process = subprocess.Popen(
            [self.binary, *options, "no"],
            cwd=self._directory.name,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_redis(self.url, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._directory.cleanup()


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
