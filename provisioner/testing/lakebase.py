"""A loopback stand-in of Databricks' Lakebase credential endpoints, backed by a real PostgreSQL role.

It answers what databricks-sdk calls (shapes from the SDK's ``service/database.py`` and ``service/postgres.py``):

* ``GET /.well-known/databricks-config``: the host metadata the SDK reads when a client is created;
* ``POST /api/2.0/database/credentials`` ``{"instance_names": [...], "request_id": ...}`` →
  ``{"token", "expiration_time"}`` (the instance API, ``w.database.generate_database_credential``);
* ``POST /api/2.0/postgres/credentials`` ``{"endpoint": "projects/…"}`` → ``{"token", "expire_time"}``
  (the endpoint API, ``w.postgres.generate_database_credential``).

Each credential it issues becomes the role's password on the real server (``ALTER ROLE … PASSWORD … VALID UNTIL``),
so the previous one stops working for new logins while open sessions go on, as a rotated token does. ``expire()``
makes the current password expire now, as an hour passing would. Requests need ``Authorization: Bearer <pat>``.
"""

from __future__ import annotations

import json
import secrets
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from psycopg import sql


class LakebaseStandIn:
    """Serves the credential endpoints on 127.0.0.1 and rotates ``role``'s password on ``admin_url``'s server."""

    def __init__(
        self,
        admin_url: str,
        role: str,
        *,
        instance: str = "lakebase-test",
        endpoint: str = "projects/p1/branches/main/endpoints/ep1",
        pat: str = "dapi-standin-pat",
        lifetime_s: float = 3600.0,
    ) -> None:
        self.admin_url, self.role, self.instance, self.endpoint = admin_url, role, instance, endpoint
        self.pat, self.lifetime_s = pat, lifetime_s
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.issued = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="lakebase-standin", daemon=True)

    @property
    def url(self) -> str:
        """The workspace URL to give databricks-sdk."""
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> LakebaseStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def expire(self) -> None:
        """The current password expires now (PostgreSQL checks VALID UNTIL at login only, as Lakebase does)."""
        self._alter(sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(sql.Identifier(self.role), sql.Literal("-infinity")))

    def _issue(self) -> tuple[str, datetime]:
        token = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + timedelta(seconds=self.lifetime_s)
        with self._lock:
            self._alter(
                sql.SQL("ALTER ROLE {} PASSWORD {} VALID UNTIL {}").format(
                    sql.Identifier(self.role), sql.Literal(token), sql.Literal(expires.isoformat())
                )
            )
            self.issued += 1
        return token, expires

    def _alter(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: tokens must not reach any log
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                standin.requests.append(("GET", self.path))
                if self.path == "/.well-known/databricks-config":
                    self._send(200, {"oidc_endpoint": f"{standin.url}/oidc", "workspace_id": "1234567890"})
                else:
                    self._send(404, {"error_code": "NOT_FOUND", "message": f"no such path {self.path}"})

            def do_POST(self) -> None:
                standin.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.headers.get("Authorization") != f"Bearer {standin.pat}":
                    self._send(401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."})
                    return
                if self.path == "/api/2.0/database/credentials":
                    if standin.instance not in body.get("instance_names", []):
                        self._send(404, {"error_code": "NOT_FOUND", "message": "Database instance not found."})
                        return
                    token, expires = standin._issue()
                    self._send(200, {"token": token, "expiration_time": expires.strftime("%Y-%m-%dT%H:%M:%SZ")})
                elif self.path == "/api/2.0/postgres/credentials":
                    if body.get("endpoint") != standin.endpoint:
                        self._send(404, {"error_code": "NOT_FOUND", "message": "Endpoint not found."})
                        return
                    token, expires = standin._issue()
                    self._send(200, {"token": token, "expire_time": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
                else:
                    self._send(404, {"error_code": "NOT_FOUND", "message": f"no such path {self.path}"})

        return Handler
