"""A throwaway redis-server on a free loopback port, for tests that stop and break it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def redis_missing() -> str | None:
    """Why the Redis tests cannot run here (None when they can): they need the
    ``redis-server`` binary and the ``redis`` and ``zstandard`` packages (the
    ``redis`` extra, which ``.[test]`` includes)."""
    if redis_server_binary() is None:
        return "redis-server is not installed"
    for module in ("redis", "zstandard"):
        try:
            __import__(module)
        except ImportError:
            return f"the {module} Python package is not installed (pip install -e '.[test]')"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, *extra_args: str) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.extra_args = extra_args
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tac-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
                "--enable-debug-command", "yes",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


def unused_url() -> str:
    """A redis:// URL where nothing listens."""
    return f"redis://127.0.0.1:{free_port()}/0"


__all__ = ["RedisServer", "redis_server_binary", "unused_url", "os"]
