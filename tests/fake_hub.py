"""A loopback server that speaks the Hugging Face Hub's download protocol for files a test writes.

``GET|HEAD /{org}/{name}/resolve/{revision}/{path}`` answers with the headers ``huggingface_hub`` reads
(``ETag``, ``X-Repo-Commit``, ``Content-Length``) and honours ``Range`` (resumed downloads); anything else
is a 404 with the hub's ``X-Error-Code: EntryNotFound``. ``requests`` records every path asked for, so a
test can tell that a second run downloaded nothing. Point ``HF_ENDPOINT`` at ``url``.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, Path], cut_once: dict[str, int] | None = None) -> None:
        """``repos``: "org/name" -> a folder whose files the repository holds. ``cut_once``: file name ->
        bytes after which the first download of it drops the connection (a truncated download)."""
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        self.ranged: list[tuple[str, str, str]] = []  # (method, path, Range header) of ranged requests
        self.cut_once = dict(cut_once or {})
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                file = hub.resolve(self.path.split("?")[0])
                if file is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                start = 0
                ranged = self.headers.get("Range", "")
                if ranged:
                    hub.ranged.append((self.command, self.path, ranged))
                if ranged.startswith("bytes="):
                    start = int(ranged[6:].split("-")[0] or 0)
                self.send_response(206 if start else 200)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if body:
                    cut = hub.cut_once.pop(file.name, None) if self.command == "GET" else None
                    end = len(data) if cut is None else cut
                    for i in range(start, end, 1 << 16):
                        self.wfile.write(data[i : min(i + (1 << 16), end)])
                    if cut is not None:
                        self.close_connection = True  # the rest never comes: the client must resume

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def resolve(self, path: str) -> Path | None:
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        repo, rest = "/".join(parts[:2]), parts[4:]
        folder = self.repos.get(repo)
        if folder is None:
            return None
        file = folder.joinpath(*rest)
        return file if file.is_file() and folder in file.resolve().parents else None

    def downloads(self) -> list[str]:
        return [p for method, p in self.requests if method == "GET"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
