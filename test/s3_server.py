"""A throwaway S3 API server (moto's server mode) on a free loopback port,
and a tiny HTTP server that answers every request with one status, for the
object-store tier's tests."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
import urllib.request

from redis_server import free_port


def s3_missing() -> str | None:
    """Why the object-store tests cannot run here (None when they can)."""
    for module in ("obstore", "zstandard", "moto"):
        try:
            __import__(module)
        except ImportError:
            return f"the {module} Python package is not installed (pip install -e '.[test]')"
    return None


def s3_env(endpoint: str) -> dict[str, str]:
    """Credentials and endpoint as a user of a local S3 server sets them."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.close()
        raise RuntimeError("moto's S3 server did not start")

    def create_bucket(self, name: str) -> str:
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(req, timeout=10):
            pass
        return name

    def objects(self, bucket: str) -> list[str]:
        """Every object's name in ``bucket`` (through the S3 API, unsigned)."""
        import xml.etree.ElementTree as ET

        with urllib.request.urlopen(f"{self.endpoint}/{bucket}?list-type=2", timeout=10) as r:
            tree = ET.fromstring(r.read())
        return sorted(e.text or "" for e in tree.iter() if e.tag.endswith("}Key"))

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class StatusServer:
    """Answers every request with ``status`` (after ``delay_s``), on loopback;
    with ``cut``, reads half of a request's body and hangs up instead."""

    def __init__(self, status: int, delay_s: float = 0.0, cut: bool = False) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests += 1
                if outer.cut:
                    length = int(self.headers.get("Content-Length") or 0)
                    self.rfile.read(length // 2)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                time.sleep(outer.delay_s)
                body = b"<Error><Code>Failure</Code></Error>"
                try:
                    self.send_response(outer.status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.status = status
        self.delay_s = delay_s
        self.cut = cut
        self.requests = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_endpoint() -> str:
    """An endpoint nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


__all__ = ["S3Server", "StatusServer", "closed_endpoint", "s3_env", "s3_missing"]
