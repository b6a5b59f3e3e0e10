"""Flask app factory: wires the JobManager behind the v3 HTTP API. Views parse, call, serialize."""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, Request, Response, current_app, g, request
from flask.sessions import SessionInterface
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from master.agent_auth import BOOTSTRAP_PREFIX, Unauthenticated, is_agent_credential
from master.api.errors import ApiError, bad_request, error_response, validation_error
from master.api.standby import ROLE_HEADER, Forwarder, Routing
from master.job_manager import Conflict, Forbidden, JobManager, NotFound, NotLeader, StaleSession
from master.metrics import CONTENT_TYPE, MasterMetrics
from master.principals import Principal, load_principals, lookup, refusal

log = logging.getLogger("titus.api")
audit = logging.getLogger("titus.audit")

M = TypeVar("M", bound=BaseModel)

#: Paths the agents use; they take the agent token, never the API token.
AGENT_CHANNEL_SUFFIXES = ("/register", "/assignments", "/status")


#: Methods whose bodies the API reads; a body on them must be JSON (415 otherwise).
_BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class ApiConfig:
    api_token: str
    agent_token: str
    # Also enforced by the edge (master/edge.py) before the body is read; checked here again for bodies that
    # reach the app another way (a standby's forward, a test client).
    max_body_bytes: int = 1 << 20
    max_json_depth: int = 32
    # Token hash -> principal (master/principals.py); None: the API token alone, as the admin "operator".
    principals: Mapping[str, Principal] | None = None


def create_app(
    config: ApiConfig,
    manager: JobManager,
    routing: Routing | None = None,
    metrics: MasterMetrics | None = None,
) -> Flask:
    """`routing` tells a standby where the leader is; without it this master always serves (single master).

    `metrics` (master/metrics.py) gets every request's route, status and duration and serves `/metrics`.
    """
    from master.api import agents, credentials, jobs, management, openapi, scheduler, tasks
    from master.api.credentials import ENROL_PATH

    app = Flask("titus-master")
    app.session_interface = _NoSessions()  # the API is stateless: no cookie session per request
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MANAGER"] = manager
    app.config["API"] = config
    app.config["ROUTING"] = routing  # the console (master/ui) sends browsers on a standby to the leader
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes

    forward = Forwarder(routing) if routing is not None else None
    principals = config.principals
    if principals is None:
        principals = load_principals(config.api_token, None)
    app.config["PRINCIPALS"] = principals  # the console logs in with the same tokens and roles

    def unauthorized(message: str) -> Response:
        resp = error_response(401, message)
        resp.headers["WWW-Authenticate"] = 'Bearer realm="titus"'
        return resp

    @app.before_request
    def authenticate() -> Response | None:
        """Who is calling: the API token (users), an agent credential bound to one agent id (checked
        against the agent id in the path), the shared agent token (dev/compat mode only, unbound), or a
        bootstrap token (enrolment only). A standby forwards agent credentials and bootstrap tokens
        unchecked: the leader holds them and checks them."""
        g.started = time.perf_counter()
        path = request.path
        if not path.startswith("/api/v3/") or path == "/api/v3/openapi.json":
            return None
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        token = raw.strip() if scheme.lower() == "bearer" else ""
        leading = routing is None or routing.role() == "leader"
        g.agent_id = None
        g.principal = None
        if path == ENROL_PATH:
            if not token.startswith(BOOTSTRAP_PREFIX) or (leading and not manager.valid_bootstrap(token)):
                return unauthorized("enrolment takes a live bootstrap token (titus agent-tokens create)")
            g.bootstrap_token = token
        elif is_agent_channel(path):
            if is_agent_credential(token):
                if leading:
                    bound = manager.agent_for_credential(token)
                    if bound is None:
                        return unauthorized("unknown or revoked agent credential")
                    agent_id, g.agent_instance_id = bound
                    claimed = (request.view_args or {}).get("agent_id")
                    if claimed is not None and claimed != agent_id:
                        return error_response(403, f"this credential is agent {agent_id}'s, "
                                                   f"not {claimed}'s")
                    g.agent_id = agent_id
            elif not (config.agent_token and _same(token, config.agent_token)):
                return unauthorized("missing or invalid agent credential (agent channel: enrol with a"
                                    " bootstrap token, or the shared agent token in dev/compat mode)")
        else:
            principal = lookup(principals, token)
            if principal is None:
                return unauthorized("missing or invalid bearer token")
            why = refusal(principal.role, request.method, path)
            if why is not None:
                return error_response(403, f"{principal.email}: {why}")
            g.principal = principal
        body_refusal = _check_body(config)
        if body_refusal is not None:
            return body_refusal
        return forward() if forward is not None else None

    @app.after_request
    def tag_role(resp: Response) -> Response:
        principal = g.get("principal")
        if principal is not None and request.method not in ("GET", "HEAD"):
            # The audit log: every change a caller asked for and its outcome (logger titus.audit).
            audit.info("%s %s by %s: %d", request.method, request.path, principal.email, resp.status_code,
                       extra={"principal": principal.name, "email": principal.email, "role": principal.role,
                              "method": request.method, "path": request.path, "status": resp.status_code})
        if routing is not None and ROLE_HEADER not in resp.headers:
            resp.headers[ROLE_HEADER] = routing.role()
        if metrics is not None and "started" in g:
            rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
            if not rule.endswith("/assignments"):  # long polls last by design
                metrics.on_request(request.method, rule, resp.status_code, time.perf_counter() - g.started)
        return resp

    def has_api_token() -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and lookup(principals, token.strip()) is not None

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus exposition of this master (a standby serves its own, mostly empty, figures).

        It tells job, task and agent counts, so it takes the API token (Prometheus: `authorization:`).
        """
        if not has_api_token():
            resp = error_response(401, "missing or invalid bearer token (/metrics takes the API token)")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="titus"'
            return resp
        if metrics is None:
            return error_response(404, "metrics are not enabled on this master")
        return Response(metrics.render(), mimetype=None, content_type=CONTENT_TYPE)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.fields)

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound) -> Response:
        return error_response(404, str(exc))

    @app.errorhandler(Unauthenticated)
    def unauthenticated(exc: Unauthenticated) -> Response:
        return unauthorized(str(exc))

    @app.errorhandler(Forbidden)
    def forbidden(exc: Forbidden) -> Response:
        return error_response(403, str(exc))

    @app.errorhandler(Conflict)
    def conflict(exc: Conflict) -> Response:
        return error_response(409, str(exc))

    @app.errorhandler(StaleSession)
    def stale_session(exc: StaleSession) -> Response:
        return error_response(409, str(exc), [{"path": "sessionEpoch", "reason": "stale session"}])

    @app.errorhandler(NotLeader)
    def not_leader(exc: NotLeader) -> Response:
        resp = error_response(503, f"this master cannot accept writes: {exc}")
        resp.headers["Retry-After"] = "1"
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error; see the master's log")

    @app.get("/healthz")
    def healthz() -> Response | dict[str, Any]:
        """200 while this master is useful (leading, or a standby that forwards); 503 once deposed.

        Without a token it says only that: up (200, `{"status": "ok"}`) or down (503). With the API token it
        also says its role, the leader's URL, the epoch and counts (what HA tooling and operators need); an
        anonymous prober learns nothing about the cluster.
        """
        role = routing.role() if routing is not None else "leader"
        leader = routing.leader_url() if routing is not None else None
        if manager.fenced or role == "deposed":
            resp = error_response(503, "down")
            resp.headers["Retry-After"] = "1"
            return resp
        if not has_api_token():
            return {"status": "ok"}
        if role != "leader":
            return {"status": "ok", "role": role, "leader": leader}
        return {"status": "ok", "role": "leader", "leader": leader, "epoch": manager.epoch,
                "jobs": len(manager.jobs), "agents": len(manager.agents)}

    app.register_blueprint(jobs.bp)
    app.register_blueprint(tasks.bp)
    app.register_blueprint(agents.bp)
    app.register_blueprint(management.bp)
    app.register_blueprint(openapi.bp)
    from master.api.eviction import bp as eviction_bp  # its own module: Titus's eviction API
    app.register_blueprint(eviction_bp)
    app.register_blueprint(scheduler.bp)
    from master.ui import bp as ui_bp  # the web console (/ui): its own cookie auth, see master/ui/auth.py
    app.register_blueprint(ui_bp)
    app.register_blueprint(credentials.bp)
    return app


class _NoSessions(SessionInterface):
    def open_session(self, app: Flask, request: Request) -> None:
        return None

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        return None


def manager() -> JobManager:
    from flask import current_app

    m: JobManager = current_app.config["MANAGER"]
    return m


def is_agent_channel(path: str) -> bool:
    """The agents' own calls (register, long poll, report, log upload): agent credentials, not the API
    token."""
    return path.startswith("/api/v3/agent/instances/") and (
        path.endswith(AGENT_CHANNEL_SUFFIXES) or "/logs/" in path)


def _same(token: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (hmac refuses non-ASCII str)."""
    return bool(token) and bool(expected) and hmac.compare_digest(
        token.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def _check_body(config: ApiConfig) -> Response | None:
    """413 for a body over the limit, 415 for a body that is not JSON (before anything reads it)."""
    length = request.content_length
    if length is not None and length > config.max_body_bytes:
        return error_response(413, f"request body too large: at most {config.max_body_bytes} bytes",
                              [{"path": "(body)", "reason": f"at most {config.max_body_bytes} bytes"}])
    has_body = bool(length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if request.method in _BODY_METHODS and has_body:
        mimetype = request.mimetype
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            shown = request.headers.get("Content-Type") or "none"
            return error_response(415, f"request bodies must be application/json, not {shown}",
                                  [{"path": "Content-Type", "reason": "must be application/json"}])
    return None


def json_too_deep(raw: bytes, limit: int) -> bool:
    """True if arrays and objects nest deeper than `limit` anywhere in `raw`.

    Checked before any parser sees the bytes: deeply nested JSON made the stdlib parser raise RecursionError
    (a 500) and costs every recursive parser stack. Cheap for ordinary bodies (one C-speed count when there
    are fewer brackets than the limit); a deep body is refused after `limit` + 1 brackets.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for char in _BRACKETS.sub(b"", _STRINGS.sub(b"", raw)):
        if char in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[^\[\]{}]")


def caller_email() -> str | None:
    """The e-mail of the principal making this request (None on the agent channel)."""
    principal: Principal | None = g.get("principal")
    return principal.email if principal is not None else None


def parse_body(model: type[M], what: str, fill: Callable[[dict[str, Any]], None] | None = None) -> M:
    """The body as `model` (400 with field paths). `fill` supplies defaults that depend on the request
    (the caller's e-mail as owner): applied to the JSON object when the strict one-pass parse fails."""
    raw = request.get_data(cache=False)
    if not raw:
        raise bad_request(f"{what} is required in the request body", "(body)", "empty body")
    limit: int = current_app.config["API"].max_json_depth
    if json_too_deep(raw, limit):
        raise bad_request(f"request body nests arrays and objects deeper than {limit} levels", "(body)",
                          f"nesting deeper than {limit} levels")
    try:
        # The fast path: pydantic parses and validates the bytes in one pass (no dict in between).
        return model.model_validate_json(raw)
    except ValidationError:
        pass  # the slow path below names the problem exactly as it always did
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"request body is not valid JSON: {exc}", "(body)", "not valid JSON") from exc
    if not isinstance(data, dict):
        raise bad_request(f"{what} must be a JSON object", "(body)", "not a JSON object")
    if fill is not None:
        fill(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, what) from exc


#: The largest epoch-milliseconds value a time filter takes (year 2286); beyond it is a typo, not a time.
MAX_EPOCH_MS = 10**13


def time_window() -> Callable[[int], bool]:
    """`stateSince` / `stateBefore` (epoch ms): whether the time of an entity's current status (when it
    entered the state it is in, e.g. when it finished) is in [stateSince, stateBefore). Our extension of
    Titus's criteria: with jobState=Finished or taskStates=Finished it lists what finished in a window."""
    since = query_int("stateSince", 0, 0, MAX_EPOCH_MS)
    before = query_int("stateBefore", MAX_EPOCH_MS, 0, MAX_EPOCH_MS)
    if since >= before:
        raise bad_request("stateSince must be before stateBefore", "stateSince", "empty time window")
    return lambda at_ms: since <= at_ms < before


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise bad_request(f"query parameter {name} must be an integer", name, "not an integer") from exc
    if not low <= value <= high:
        raise bad_request(
            f"query parameter {name} must be between {low} and {high}",
            name,
            f"must be between {low} and {high}",
        )
    return value


def query_bool(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise bad_request(f"query parameter {name} must be true or false", name, "must be true or false")


def paginate(items: list[Any]) -> dict[str, Any]:
    page_size = query_int("pageSize", 100, 1, 1000)
    page = query_int("page", 0, 0, 1_000_000)
    cursor = request.args.get("cursor")
    if cursor:
        try:
            page = int(cursor)
        except ValueError as exc:
            raise bad_request("cursor is not one this server issued", "cursor", "unknown cursor") from exc
        if not 0 <= page <= 1_000_000:
            raise bad_request("cursor is not one this server issued", "cursor", "unknown cursor")
    start = page * page_size
    chunk = items[start : start + page_size]
    has_more = start + page_size < len(items)
    return {
        "items": chunk,
        "pagination": {
            "currentPage": {"pageNumber": page, "pageSize": page_size},
            "hasMore": has_more,
            "totalPages": (len(items) + page_size - 1) // page_size,
            "totalItems": len(items),
            "cursor": str(page + 1) if has_more else "",
        },
    }
