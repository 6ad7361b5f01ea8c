"""Loopback stand-in for a hostile Git server over smart HTTP: it advertises whatever refs a test sets,
including names Git itself would never create (a real repository cannot hold them, a server can still send
them). Only the ref advertisement of protocol v0 is served (`GET .../info/refs?service=git-upload-pack`),
which is all `git ls-remote` reads; the real `git` client talks to it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def pkt_line(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


class GitHttpStandIn:
    def __init__(self) -> None:
        self.refs: dict[str, str] = {}  # ref name -> SHA, advertised as they are
        self.requests: list[str] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin.requests.append(self.path)
                if not self.path.endswith("/info/refs?service=git-upload-pack"):
                    self.send_error(404)
                    return
                body = pkt_line(b"# service=git-upload-pack\n") + b"0000"
                capabilities = b"\0agent=aicd-standin"
                for index, (ref, sha) in enumerate(sorted(standin.refs.items())):
                    body += pkt_line(
                        sha.encode() + b" " + ref.encode() + (capabilities if index == 0 else b"") + b"\n"
                    )
                body += b"0000"
                self.send_response(200)
                self.send_header("Content-Type", "application/x-git-upload-pack-advertisement")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, repo: str = "repo.git") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{repo}"

    def __enter__(self) -> GitHttpStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
