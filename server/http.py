"""HTTP on the WebSocket port: versioned route groups behind one middleware chain.

``websockets`` hands every request to ``process_request`` before the opening
handshake; we route it here. A handler returns a :class:`Response` (plain HTTP) or
``None`` (go on with the WebSocket handshake — only the ``/api/v1/ws`` route does).

A middleware is ``Handler -> Handler``; a route's chain is its group's middleware
followed by the route's own, composed once at start-up. The pieces:

=====================  =====================================================  ==========
middleware             does                                                   failure
=====================  =====================================================  ==========
``request_log``        request id (``X-Request-Id``), one log line per request  —
``count``              ``chatcap_http_requests_total{route,status}``            —
``deadline``           ``asyncio.timeout(server.request_timeout_s)``            504
``basic_auth``         HTTP Basic → user (``open`` or ``users`` mode)           401
``bearer_auth``        ``Authorization: Bearer`` or ``?token=`` → user          401
``admin_auth``         the admin token (env ``CHATCAP_ADMIN_TOKEN``)            403/404
``handshake_guard``    subprotocol offered, per-IP connection cap and rate      400/429
=====================  =====================================================  ==========

Browsers: one allowlist, ``server.origins``, governs every route (see
:class:`OriginPolicy`): a request with an ``Origin`` header that is neither the
server's own origin nor allowed is refused 403 and logged (``http.origin_refused``) —
REST and the WebSocket handshake alike; an allowed one gets CORS headers, and its
preflight (``OPTIONS``) is answered 204. A request without ``Origin`` (not a browser)
is not an origin question. ``server.web`` serves the chat page (``server/web/``) at
``/`` and its files at ``/web/<name>``.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from chatcap.protocol import SUBPROTOCOLS, HistoryPage
from chatcap.protocol.messages import ROOM_MAX_CHARS
from server.auth import AuthError, bearer_token
from server.clock import now_s
from server.errors import StoreReadError
from server.hub import deliver_frame
from server.logs import event

API = "/api/v1"
PROTOBUF_TYPE = "application/x-protobuf"
# REST history answers one `chat.v1.Envelope` (its `history` case), as the WebSocket does
PROTOBUF_HISTORY_TYPE = f"{PROTOBUF_TYPE}; proto=chat.v1.Envelope"
WEB_DIR = Path(__file__).with_name("web")
WEB_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
CORS_MAX_AGE_S = 600
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id"
CORS_EXPOSE_HEADERS = "X-Request-Id, Retry-After, WWW-Authenticate"


@dataclass(slots=True)
class HttpContext:
    """What a handler and its middleware know about one request."""

    app: Any
    connection: ServerConnection
    request: Request
    path: str
    query: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    route: str = "unmatched"
    request_id: str = ""
    user: str | None = None

    @property
    def ip(self) -> str:
        address = self.connection.remote_address
        return str(address[0]) if address else "unknown"


Handler = Callable[[HttpContext], Awaitable[Response | None]]
Middleware = Callable[[Handler], Handler]


# ---------------------------------------------------------------------------- responses


def response(status: int, body: bytes, content_type: str, **headers: str) -> Response:
    h = Headers()
    h["Content-Type"] = content_type
    h["Content-Length"] = str(len(body))
    h["Connection"] = "close"
    h["Cache-Control"] = "no-store"
    for name, value in headers.items():
        h[name.replace("_", "-")] = value
    return Response(status, HTTPStatus(status).phrase, h, body)


def json_response(status: int, obj: Any, **headers: str) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return response(status, body, "application/json", **headers)


def error_response(status: int, code: str, message: str, **headers: str) -> Response:
    return json_response(status, {"error": code, "message": message}, **headers)


# ---------------------------------------------------------------------------- middleware

_ids = itertools.count(1)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_log(inner: Handler) -> Handler:
    async def handle(ctx: HttpContext) -> Response | None:
        offered = ctx.request.headers.get("X-Request-Id", "")
        ctx.request_id = offered if _SAFE_ID.match(offered) else f"r{next(_ids):x}"
        started = now_s()
        resp = await inner(ctx)
        status = resp.status_code if resp is not None else 101
        if resp is not None:
            resp.headers["X-Request-Id"] = ctx.request_id
        level = logging.INFO if status < 500 else logging.WARNING
        if ctx.route != "ws" or status != 101:  # upgrades are logged by the session
            event(
                ctx.app.log,
                "http.request",
                level,
                id=ctx.request_id,
                route=ctx.route,
                status=status,
                ip=ctx.ip,
                ms=round((now_s() - started) * 1000, 3),
            )
        return resp

    return handle


def count(inner: Handler) -> Handler:
    async def handle(ctx: HttpContext) -> Response | None:
        resp = await inner(ctx)
        status = resp.status_code if resp is not None else 101
        ctx.app.metrics.http_requests.labels(ctx.route, str(status)).inc()
        return resp

    return handle


def deadline(inner: Handler) -> Handler:
    async def handle(ctx: HttpContext) -> Response | None:
        try:
            async with asyncio.timeout(ctx.app.scenario.server.request_timeout_s):
                return await inner(ctx)
        except TimeoutError:
            return error_response(504, "timeout", "request deadline exceeded")

    return handle


def basic_auth(inner: Handler) -> Handler:
    async def handle(ctx: HttpContext) -> Response | None:
        try:
            header = ctx.request.headers.get("Authorization")
            check = ctx.app.authenticator.check_basic
            # users mode runs scrypt (~0.1 s of CPU): off the event loop
            ctx.user = (
                check(header)
                if ctx.app.scenario.server.auth == "open"
                else await asyncio.to_thread(check, header)
            )
        except AuthError as exc:
            if _from_a_script(ctx.request):
                # a page's fetch(): a Basic challenge would make the browser hold the 401
                # for its own log-in prompt; the page reads the JSON reason instead
                return error_response(
                    401,
                    "unauthorized",
                    exc.reason,
                    WWW_Authenticate='Chatcap-Basic realm="chatcap"',
                )
            return error_response(
                401,
                "unauthorized",
                exc.reason,
                WWW_Authenticate='Basic realm="chatcap", charset="UTF-8"',
            )
        return await inner(ctx)

    return handle


def _from_a_script(request: Request) -> bool:
    """A page's ``fetch()``, not a navigation or a non-browser client: fetch metadata
    (``Sec-Fetch-Mode`` other than ``navigate``; same-origin GETs carry no ``Origin``)
    or, from older browsers, a cross-origin ``Origin``."""
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode != "navigate"
    return request.headers.get("Origin") is not None


def bearer_auth(inner: Handler) -> Handler:
    async def handle(ctx: HttpContext) -> Response | None:
        token = bearer_token(ctx.request.headers.get("Authorization"), ctx.query.get("token"))
        if token is None:
            return error_response(
                401,
                "unauthorized",
                "missing bearer token",
                WWW_Authenticate='Bearer realm="chatcap"',
            )
        try:
            ctx.user = ctx.app.tokens.verify(token, ctx.app.wall_time())
        except AuthError as exc:
            return error_response(
                401,
                "unauthorized",
                exc.reason,
                WWW_Authenticate='Bearer realm="chatcap", error="invalid_token"',
            )
        return await inner(ctx)

    return handle


def admin_auth(inner: Handler) -> Handler:
    async def handle(ctx: HttpContext) -> Response | None:
        secret = ctx.app.admin_token
        if not secret:
            return error_response(
                404, "not_found", "admin routes are off (set CHATCAP_ADMIN_TOKEN to enable them)"
            )
        given = bearer_token(ctx.request.headers.get("Authorization"), None) or ""
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return error_response(403, "forbidden", "admin token required")
        return await inner(ctx)

    return handle


def handshake_guard(inner: Handler) -> Handler:
    async def handle(ctx: HttpContext) -> Response | None:
        app = ctx.app
        offered = [
            p.strip()
            for v in ctx.request.headers.get_all("Sec-WebSocket-Protocol")
            for p in v.split(",")
        ]
        if not any(p in SUBPROTOCOLS for p in offered):
            return error_response(
                400,
                "bad_subprotocol",
                f"offer one of the subprotocols {', '.join(SUBPROTOCOLS)}; "
                f"got {', '.join(offered) or 'none'}",
            )
        if app.hub.by_ip.get(ctx.ip, 0) >= app.scenario.server.max_connections_per_ip:
            return error_response(
                429, "too_many_connections", "per-IP connection limit reached", Retry_After="1"
            )
        decision = app.handshake_limiter.try_acquire(ctx.ip, app.clock())
        if not decision.allowed:
            wait_s = max(1, int(decision.retry_after_s + 0.999))
            return error_response(
                429, "handshake_rate", "too many handshakes from this IP", Retry_After=str(wait_s)
            )
        return await inner(ctx)

    return handle


# ---------------------------------------------------------------------------- origins


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """``server.origins`` as a rule: which browser origins may use the server.

    The server's own origin (the scheme it serves and the request's ``Host``) is always
    allowed, so the page at ``/`` works whatever the list says; ``"*"`` allows any.
    """

    allowed: frozenset[str]
    scheme: str = "http"

    @classmethod
    def from_config(cls, origins: Sequence[str], *, tls: bool) -> OriginPolicy:
        return cls(frozenset(o.lower() for o in origins), "https" if tls else "http")

    def allows(self, origin: str, host: str | None) -> bool:
        origin = origin.lower()
        if "*" in self.allowed or origin in self.allowed:
            return True
        return host is not None and origin == f"{self.scheme}://{host.lower()}"


def cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
        "Vary": "Origin",
    }


def preflight_response(origin: str) -> Response:
    resp = response(204, b"", "text/plain")
    del resp.headers["Content-Type"]
    for name, value in cors_headers(origin).items():
        resp.headers[name] = value
    resp.headers["Access-Control-Allow-Methods"] = "GET, OPTIONS"
    resp.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
    resp.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
    return resp


# ---------------------------------------------------------------------------- routing


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    pattern: re.Pattern[str]
    handler: Handler


class RouteGroup:
    """Routes under one prefix sharing a middleware list (e.g. ``/api/v1``)."""

    def __init__(self, prefix: str, middleware: Sequence[Middleware] = ()) -> None:
        self.prefix = prefix.rstrip("/")
        self.middleware = tuple(middleware)
        self.routes: list[Route] = []

    def add(self, name: str, path: str, handler: Handler, *extra: Middleware) -> None:
        regex = re.sub(
            r"\{(\w+)\}",
            r"(?P<\1>[^/]+)",
            re.escape(self.prefix + path).replace(r"\{", "{").replace(r"\}", "}"),
        )
        chained = handler
        for mw in reversed(self.middleware + extra):
            chained = mw(chained)
        self.routes.append(Route(name, re.compile(f"^{regex}$"), chained))


class Router:
    def __init__(self, app: Any, groups: Sequence[RouteGroup]) -> None:
        self.app = app
        self.groups = groups
        cfg = app.scenario.server
        self.origins = OriginPolicy.from_config(cfg.origins, tls=cfg.tls.enabled)
        self.not_found = request_log(count(_not_found))
        self.wrong_method = request_log(count(_method_not_allowed))
        self.refused_origin = request_log(count(_origin_refused))
        self.preflight = request_log(count(_preflight))

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        split = urlsplit(request.path)
        try:
            query = dict(parse_qsl(split.query, max_num_fields=20))
        except ValueError:
            query = {}
        ctx = HttpContext(self.app, connection, request, split.path, query)
        origin = request.headers.get("Origin")
        for group in self.groups:
            for route in group.routes:
                match = route.pattern.match(split.path)
                if match:
                    ctx.route, ctx.params = route.name, match.groupdict()
                    if origin is not None and not self.origins.allows(
                        origin, request.headers.get("Host")
                    ):
                        return await self.refused_origin(ctx)
                    if request.method == "OPTIONS" and origin is not None:
                        return await self.preflight(ctx)
                    if request.method != "GET":  # every route, the upgrade included, is GET
                        return await self.wrong_method(ctx)
                    resp = await route.handler(ctx)
                    if resp is None:
                        connection.username = ctx.user or ""
                    elif origin is not None:
                        for name, value in cors_headers(origin).items():
                            resp.headers[name] = value
                    return resp
        return await self.not_found(ctx)


async def _not_found(ctx: HttpContext) -> Response:
    return error_response(404, "not_found", f"no route for {ctx.path}")


async def _origin_refused(ctx: HttpContext) -> Response:
    origin = ctx.request.headers.get("Origin", "")[:200]
    event(
        ctx.app.log,
        "http.origin_refused",
        logging.WARNING,
        id=ctx.request_id,
        route=ctx.route,
        origin=origin,
        ip=ctx.ip,
    )
    return error_response(
        403,
        "origin_refused",
        f"Origin {origin!r} is not in server.origins (add it, or '*', to let its pages in)",
    )


async def _preflight(ctx: HttpContext) -> Response:
    return preflight_response(ctx.request.headers.get("Origin", ""))


async def _method_not_allowed(ctx: HttpContext) -> Response:
    method = ctx.request.method[:16]
    return error_response(
        405, "method_not_allowed", f"{method} is not allowed on {ctx.path}; use GET", Allow="GET"
    )


# ---------------------------------------------------------------------------- handlers


async def healthz(ctx: HttpContext) -> Response:
    return json_response(200, {"status": "ok"})


async def readyz(ctx: HttpContext) -> Response:
    if ctx.app.draining:
        return json_response(503, {"status": "draining"})
    return json_response(200, {"status": "ready"})


async def metrics(ctx: HttpContext) -> Response:
    ctx.app.refresh_gauges()
    body, content_type = ctx.app.metrics.render()
    return response(200, body, content_type)


async def token(ctx: HttpContext) -> Response:
    assert ctx.user is not None
    now = ctx.app.wall_time()
    issued, expires_at = ctx.app.tokens.issue(ctx.user, now)
    return json_response(
        200,
        {
            "token": issued,
            "user": ctx.user,
            "expires_at_s": int(expires_at),  # Unix seconds, as the JWT's `exp`
            "expires_in_s": max(0, int(expires_at - now)),
        },
    )


def _int_arg(ctx: HttpContext, name: str, default: int, lo: int, hi: int) -> int:
    raw = ctx.query.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,19}", raw) or not lo <= int(raw) <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {raw[:32]!r}")
    return int(raw)


async def history(ctx: HttpContext) -> Response:
    room = unquote(ctx.params["room"])
    page_max = ctx.app.scenario.server.history_page_max
    if len(room) > ROOM_MAX_CHARS:
        return error_response(400, "bad_request", f"room name over {ROOM_MAX_CHARS} characters")
    try:
        after = _int_arg(ctx, "after_seq", 0, 0, 2**63 - 1)
        limit = _int_arg(ctx, "limit", min(100, page_max), 1, page_max)
    except ValueError as exc:
        return error_response(400, "bad_request", str(exc))
    try:
        rows = await ctx.app.read_store("history", room, after, limit + 1)
    except StoreReadError as exc:
        return error_response(503, "unavailable", str(exc), Retry_After="1")
    more = len(rows) > limit
    rows = rows[:limit]
    page = HistoryPage(
        room=room,
        messages=tuple(deliver_frame(r) for r in rows),
        has_more=more,
        next_after_seq=rows[-1].seq if rows else after,
    )
    wants_pb = PROTOBUF_TYPE in ctx.request.headers.get("Accept", "")
    codec = SUBPROTOCOLS["chat.v1.protobuf" if wants_pb else "chat.v1.json"]
    # one shape on both channels: the envelope a WebSocket client decodes (docs/server.md)
    content_type = PROTOBUF_HISTORY_TYPE if wants_pb else codec.content_type
    return response(200, codec.encode(page), content_type)


async def admin_faults(ctx: HttpContext) -> Response:
    faults = ctx.app.faults
    if ctx.query.get("clear") in ("1", "true"):
        faults.clear_runtime()
    changes: dict[str, float] = {}
    limits = {
        "store_latency_ms": (0.0, 60_000.0),
        "store_error_rate": (0.0, 1.0),
        "cpu_burn_us_per_msg": (0.0, 1e6),
    }
    for key, (lo, hi) in limits.items():
        if key in ctx.query:
            try:
                value = float(ctx.query[key])
            except ValueError:
                value = float("nan")
            if not lo <= value <= hi:
                return error_response(
                    400, "bad_request", f"{key} must be a number in {lo:g}..{hi:g}"
                )
            changes[key] = value
    if changes:
        faults.set_runtime(**changes)
    event(ctx.app.log, "admin.faults", id=ctx.request_id, **changes)
    return json_response(200, faults.snapshot(ctx.app.clock()))


async def websocket(ctx: HttpContext) -> None:
    return None  # go on with the opening handshake


@dataclass(frozen=True, slots=True)
class WebFiles:
    """The chat page's files (``server/web/``), read once at start-up."""

    files: dict[str, tuple[bytes, str]]

    @classmethod
    def load(cls, folder: Path = WEB_DIR) -> WebFiles:
        found = {}
        for path in sorted(folder.glob("*")) if folder.is_dir() else ():
            kind = WEB_TYPES.get(path.suffix)
            if kind and path.is_file() and re.fullmatch(r"[A-Za-z0-9_.-]+", path.name):
                found[path.name] = (path.read_bytes(), kind)
        return cls(found)

    def answer(self, name: str) -> Response:
        if name not in self.files:
            return error_response(404, "not_found", f"no file /web/{name[:64]}")
        body, kind = self.files[name]
        return response(
            200,
            body,
            kind,
            X_Content_Type_Options="nosniff",
            Content_Security_Policy=(
                "default-src 'self'; connect-src 'self' http: https: ws: wss:; "
                "img-src 'self' data:; frame-ancestors 'none'"
            ),
        )


def web_routes(group: RouteGroup, files: WebFiles) -> None:
    async def page(ctx: HttpContext) -> Response:
        return files.answer("index.html")

    async def asset(ctx: HttpContext) -> Response:
        return files.answer(ctx.params["name"])

    group.add("web_page", "/", page)
    group.add("web_file", "/web/{name}", asset)


def build_router(app: Any) -> Router:
    root = RouteGroup("", (request_log, count))
    if app.scenario.server.web:
        web_routes(root, WebFiles.load())
    root.add("healthz", "/healthz", healthz)
    root.add("readyz", "/readyz", readyz)
    root.add("metrics", "/metrics", metrics)
    v1 = RouteGroup(API, (request_log, count, deadline))
    v1.add("token", "/token", token, basic_auth)
    v1.add("history", "/rooms/{room}/messages", history, bearer_auth)
    v1.add("ws", "/ws", websocket, bearer_auth, handshake_guard)
    v1.add("admin_faults", "/admin/faults", admin_faults, admin_auth)
    return Router(app, (root, v1))
