"""`GET /api/v3/capacity`: the last plan with its reasons and the recent actions, behind a bearer token.

Served by werkzeug's threaded server on 127.0.0.1 in a daemon thread: one read-only endpoint does not
justify a WSGI deployment of its own.
"""

from __future__ import annotations

import hmac
import threading

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.serving import BaseWSGIServer, make_server

from capacity.controller import Controller


def create_status_app(controller: Controller, token: str) -> Flask:
    if not token:
        raise ValueError("the capacity status endpoint needs a token; set the configured token env var")
    app = Flask("capacity.status")

    @app.before_request
    def _require_token() -> ResponseReturnValue | None:
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return jsonify(error="missing or wrong bearer token"), 401
        return None

    @app.get("/api/v3/capacity")
    def capacity() -> ResponseReturnValue:
        status = controller.status
        return jsonify(
            leader=status.leader,
            dryRun=controller.dry_run,
            lastRunAt=status.last_run_at,
            errors=status.errors,
            plan=status.last_plan.to_json() if status.last_plan else None,
            recentActions=[a.to_json() for a in controller.recent_actions()],
        )

    return app


class StatusServer:
    def __init__(self, app: Flask, port: int = 0, host: str = "127.0.0.1") -> None:
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="capacity-status", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
