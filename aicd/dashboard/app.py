"""The dashboard's Starlette app: server-rendered pages (they read without JavaScript), server-sent events
that swap the changed regions of a page while a delivery runs, the human actions, sign-in.

Every page region is one template under templates/regions/; the page embeds them and the live stream sends
the ones whose HTML changed, so one rendering path serves both."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.client import Client
from temporalio.service import RPCError

from aicd.client import HUMAN_ACTIONS, ActionRefused
from aicd.dashboard import charts
from aicd.dashboard.auth import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSION_TTL_S,
    Identity,
    LoginThrottle,
    NotAuthenticated,
    SignInThrottled,
    csrf_problem,
    csrf_token,
    request_identity,
    set_cookie,
    sign,
    sign_session,
    steering_refusal,
    verify,
)
from aicd.dashboard.gitops import SHA, GitOpsUnreadable
from aicd.dashboard.live import Hub
from aicd.dashboard.service import DashboardService, NotFound
from aicd.dashboard.settings import DashboardSettings
from aicd.dashboard.views import DeliveryRow, DeliveryView, clock
from aicd.gateway.context import BodyTooLarge, read_body
from aicd.messages import PHASES, HumanAction
from aicd.plan import DELIVERY_ID

log = logging.getLogger("aicd.dashboard")

DELIVERY_REGIONS = (
    "phase",
    "summary",
    "controls",
    "graph",
    "timeline",
    "analysis",
    "fleets",
    "commits",
    "actions",
)
STAGE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
APP_NAME = re.compile(r"[a-z0-9-]{1,53}")
FORM_LIMIT = 16 * 1024
REASON_LIMIT = 500
NOTICE_COOKIE = "aicd_notice"
HEARTBEAT_S = 15.0
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
        " frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


def _num(value: float | None) -> str:
    """A number as a data attribute: full precision, empty when there is none."""
    return "" if value is None else repr(float(value))


TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("aicd.dashboard", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.globals["clock"] = clock
TEMPLATES.filters["num"] = _num
TEMPLATES.filters["fmt"] = charts.format_number
TEMPLATES.filters["ratio"] = charts.format_ratio


class Urls:
    """Links relative to where the dashboard is mounted (behind a proxy with a path prefix too)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def home(self, **query: str) -> str:
        params = urlencode({key: value for key, value in query.items() if value})
        return f"{self.root}/" + (f"?{params}" if params else "")

    def list_events(self, **query: str) -> str:
        params = urlencode({key: value for key, value in query.items() if value})
        return f"{self.root}/events" + (f"?{params}" if params else "")

    def delivery(self, delivery_id: str) -> str:
        return f"{self.root}/deliveries/{quote(delivery_id)}"

    def events(self, delivery_id: str) -> str:
        return f"{self.delivery(delivery_id)}/events"

    def action(self, delivery_id: str, kind: str) -> str:
        return f"{self.delivery(delivery_id)}/actions/{quote(kind)}"

    def commit(self, delivery_id: str, sha: str) -> str:
        return f"{self.delivery(delivery_id)}/commits/{quote(sha)}"

    def static(self, name: str) -> str:
        return f"{self.root}/static/{quote(name)}"

    def login(self, next_path: str = "") -> str:
        return f"{self.root}/login" + (f"?{urlencode({'next': next_path})}" if next_path else "")

    def login_post(self) -> str:
        return f"{self.root}/login"

    def logout(self) -> str:
        return f"{self.root}/logout"


@dataclass
class Viewer:
    """Who is looking, and what every page needs to know about them."""

    identity: Identity | None
    csrf: str  # the token its forms carry (bound to the CSRF cookie and the session)
    csrf_cookie: str
    new_csrf: bool
    urls: Urls
    request_path: str
    refused: str = ""  # a credential was given and is wrong: why
    refused_status: int = 401

    def context(self, settings: DashboardSettings) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "csrf": self.csrf,
            "urls": self.urls,
            "request_path": self.request_path,
            "sign_in": settings.sign_in,
        }


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _value in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class Dashboard:
    def __init__(self, settings: DashboardSettings, client: Callable[[], Awaitable[Client]]) -> None:
        self.settings = settings
        self.service = DashboardService(settings, client)
        self.hub = Hub(settings.poll_s)
        self.throttle = LoginThrottle()

    def app(self) -> ASGIApp:
        """The ASGI app; mount it at the root of a Starlette app (after that app's own routes)."""
        app = Starlette(
            routes=[
                Route("/", self.list_page, methods=["GET"]),
                Route("/events", self.list_events, methods=["GET"]),
                Route("/deliveries/{delivery_id}", self.delivery_page, methods=["GET"]),
                Route("/deliveries/{delivery_id}/events", self.delivery_events, methods=["GET"]),
                Route("/deliveries/{delivery_id}/actions/{kind}", self.action, methods=["POST"]),
                Route("/deliveries/{delivery_id}/commits/{sha}", self.commit_page, methods=["GET"]),
                Route("/login", self.login_page, methods=["GET"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Mount("/static", StaticFiles(packages=[("aicd.dashboard", "static")]), name="static"),
            ],
        )
        return SecurityHeaders(app)

    async def close(self) -> None:
        await self.hub.close()
        await self.service.close()

    # --- plumbing -------------------------------------------------------------------------------------------

    def identity(self, request: Request) -> Identity | None:
        """Who is asking (aicd.dashboard.auth). A bearer token is the sign-in form's token sent another way:
        its failures count against the address as the form's do, and a blocked address has no token tried."""
        if not request.headers.get("authorization"):
            return request_identity(request, self.settings)
        client = _client(request)
        if self.throttle.blocked(client):
            raise SignInThrottled("too many failed sign-ins; wait a few minutes")
        try:
            return request_identity(request, self.settings)
        except NotAuthenticated:
            self.throttle.failed(client)
            log.info("dashboard: failed sign-in by bearer token from %s", client)
            raise

    def viewer(self, request: Request) -> Viewer:
        refused, status = "", 401
        try:
            identity = self.identity(request)
        except NotAuthenticated as error:
            identity, refused, status = None, str(error), error.status
        token, cookie, new = csrf_token(request, self.settings)
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        urls = Urls(request.scope.get("root_path", ""))
        return Viewer(identity, token, cookie, new, urls, path, refused, status)

    def page(
        self, request: Request, viewer: Viewer, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        notice = verify(request.cookies.get(NOTICE_COOKIE, ""), self.settings.session_key)
        html = TEMPLATES.get_template(template).render(
            **viewer.context(self.settings), notice=notice, **context
        )
        response = HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})
        if viewer.new_csrf:
            set_cookie(response, request, self.settings, CSRF_COOKIE, viewer.csrf_cookie, SESSION_TTL_S)
        if notice is not None:
            response.delete_cookie(NOTICE_COOKIE, path=request.scope.get("root_path") or "/")
        return response

    def error(self, request: Request, viewer: Viewer, status: int, title: str, message: str) -> HTMLResponse:
        return self.page(request, viewer, "error.html", status, title=title, message=message)

    async def _reader(self, request: Request) -> Viewer | Response:
        """The viewer, or the answer for someone who may not read (a bad token; not signed in where
        reading needs it)."""
        viewer = self.viewer(request)
        if viewer.refused:
            return JSONResponse(
                {"ok": False, "message": f"not signed in: {viewer.refused}"},
                status_code=viewer.refused_status,
            )
        if self.settings.read_signed_in and viewer.identity is None:
            if request.headers.get("accept", "").startswith("text/event-stream"):
                return Response(status_code=401)
            return RedirectResponse(viewer.urls.login(viewer.request_path), status_code=303)
        return viewer

    def delivery_regions(self, view: DeliveryView, viewer: Viewer) -> dict[str, Markup]:
        steer_refusal = steering_refusal(viewer.identity, "pause", view.approvers, self.settings)
        context = {**viewer.context(self.settings), "view": view, "steer_refusal": steer_refusal}
        return {
            name: Markup(TEMPLATES.get_template(f"regions/{name}.html").render(context))
            for name in DELIVERY_REGIONS
        }

    def list_regions(
        self, rows: list[DeliveryRow], viewer: Viewer, limit: int, error: str = ""
    ) -> dict[str, Markup]:
        context = {**viewer.context(self.settings), "rows": rows, "limit": limit, "error": error}
        return {"deliveries": Markup(TEMPLATES.get_template("regions/deliveries.html").render(context))}

    # --- the list -------------------------------------------------------------------------------------------

    @staticmethod
    def _filters(request: Request) -> tuple[dict[str, str], str | None, str | None, bool]:
        app = request.query_params.get("app", "").strip()
        phase = request.query_params.get("phase", "").strip()
        running = request.query_params.get("running", "") in ("1", "true", "on")
        app = app if APP_NAME.fullmatch(app) else ""
        phase = phase if phase in PHASES else ""
        shown = {"app": app, "phase": phase, "running": "1" if running else ""}
        return shown, app or None, phase or None, running

    async def list_page(self, request: Request) -> Response:
        viewer = await self._reader(request)
        if isinstance(viewer, Response):
            return viewer
        shown, app, phase, running = self._filters(request)
        error = ""
        try:
            rows = await self.service.rows(app, phase, running)
        except (RPCError, RuntimeError, OSError) as failure:
            rows, error = [], f"Temporal cannot be reached now: {failure}"
        apps = sorted({row.app for row in rows if row.app})
        return self.page(
            request,
            viewer,
            "list.html",
            filters=shown,
            phases=PHASES,
            apps=apps,
            regions=self.list_regions(rows, viewer, 100, error),
            live_url=viewer.urls.list_events(**shown),
        )

    async def list_events(self, request: Request) -> Response:
        viewer = await self._reader(request)
        if isinstance(viewer, Response):
            return viewer
        _shown, app, phase, running = self._filters(request)

        async def produce() -> tuple[Any, bool]:
            return await self.service.rows(app, phase, running), False

        def fingerprint(rows: list[DeliveryRow]) -> Any:
            return tuple((r.delivery_id, r.phase, r.stage, r.state, r.duration) for r in rows)

        def render(rows: list[DeliveryRow]) -> tuple[dict[str, Markup], str]:
            return self.list_regions(rows, viewer, 100), ""

        key = ("list", app, phase, running)
        return self._stream(
            self.hub.follow(key, produce, fingerprint, HEARTBEAT_S), render, {"deliveries": "r-deliveries"}
        )

    # --- a delivery -----------------------------------------------------------------------------------------

    async def delivery_page(self, request: Request) -> Response:
        viewer = await self._reader(request)
        if isinstance(viewer, Response):
            return viewer
        delivery_id = request.path_params["delivery_id"]
        try:
            view = await self.service.view(delivery_id)
        except NotFound:
            return self.error(
                request, viewer, 404, "No such delivery", f"There is no delivery {delivery_id}."
            )
        except (RPCError, RuntimeError, OSError) as failure:
            return self.error(request, viewer, 503, "Temporal cannot be reached", str(failure))
        return self.page(
            request,
            viewer,
            "delivery.html",
            view=view,
            regions=self.delivery_regions(view, viewer),
            live_url=viewer.urls.events(delivery_id),
        )

    async def delivery_events(self, request: Request) -> Response:
        viewer = await self._reader(request)
        if isinstance(viewer, Response):
            return viewer
        delivery_id = request.path_params["delivery_id"]
        if not DELIVERY_ID.fullmatch(delivery_id):
            return Response(status_code=404)

        async def produce() -> tuple[Any, bool]:
            view = await self.service.view(delivery_id)
            return view, not view.running

        def fingerprint(view: DeliveryView) -> Any:
            return repr(view)

        last_phase: list[str] = []

        def render(view: DeliveryView) -> tuple[dict[str, Markup], str]:
            announce = ""
            if last_phase and last_phase[-1] != view.phase:
                announce = f"The delivery is now {view.phase}."
            last_phase[:] = [view.phase]
            return self.delivery_regions(view, viewer), announce

        ids = {name: f"r-{name}" for name in DELIVERY_REGIONS}
        return self._stream(
            self.hub.follow(("delivery", delivery_id), produce, fingerprint, HEARTBEAT_S), render, ids
        )

    def _stream(
        self,
        updates: AsyncIterator[tuple[Any, bool]],
        render: Callable[[Any], tuple[dict[str, Markup], str]],
        ids: dict[str, str],
    ) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            sent: dict[str, str] = {}
            yield "retry: 3000\n\n"
            try:
                async for snapshot, final in updates:
                    if snapshot is None:
                        yield ": keep-alive\n\n"
                        continue
                    regions, announce = render(snapshot)
                    changed = {
                        ids[name]: str(html) for name, html in regions.items() if sent.get(name) != str(html)
                    }
                    sent.update({name: str(html) for name, html in regions.items()})
                    if changed or announce:
                        yield _sse("update", {"regions": changed, "announce": announce})
                    if final:
                        yield _sse("end", {})
                        return
            finally:
                with contextlib.suppress(Exception):
                    await updates.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    # --- acting ---------------------------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        delivery_id = request.path_params["delivery_id"]
        kind = request.path_params["kind"]
        wants_json = "application/json" in request.headers.get("accept", "")
        root = request.scope.get("root_path") or "/"

        def answer(ok: bool, message: str, status: int) -> Response:
            if wants_json:
                return JSONResponse({"ok": ok, "message": message}, status_code=status)
            response = RedirectResponse(
                Urls(request.scope.get("root_path", "")).delivery(delivery_id), status_code=303
            )
            response.set_cookie(
                NOTICE_COOKIE,
                sign({"message": message, "ok": ok}, self.settings.session_key, 60),
                max_age=60,
                path=root,
                httponly=True,
                samesite="strict",
            )
            return response

        if not DELIVERY_ID.fullmatch(delivery_id) or kind not in HUMAN_ACTIONS:
            return answer(False, "no such delivery or action", 404)
        try:
            identity = self.identity(request)
        except NotAuthenticated as refused:
            return answer(False, f"not signed in: {refused}", refused.status)
        try:
            form = _form(await read_body(request, FORM_LIMIT))
        except BodyTooLarge:
            return answer(False, "the form is too large", 413)
        if identity is None:
            return answer(False, "sign in to act on a delivery: no action without an identity", 401)
        if identity.ambient:
            problem = csrf_problem(request, form.get(CSRF_FIELD, ""), self.settings)
            if problem:
                log.warning(
                    "dashboard: %s on %s by %s refused: %s", kind, delivery_id, identity.name, problem
                )
                return answer(False, f"refused: {problem}", 403)
        reason = " ".join(form.get("reason", "").split())[:REASON_LIMIT]
        stage = form.get("stage") or None
        if stage is not None and not STAGE_NAME.fullmatch(stage):
            return answer(False, "refused: that is not a stage name", 400)
        if kind == "abort" and form.get("confirm") != "yes":
            return answer(
                False, "tick the box to confirm the abort: it rolls back what this delivery changed", 400
            )
        try:
            approvers = await self.service.approvers(delivery_id)
        except NotFound:
            return answer(False, f"no delivery {delivery_id}", 404)
        refusal = steering_refusal(identity, kind, approvers, self.settings)
        if refusal:
            log.info("dashboard: %s on %s refused: %s", kind, delivery_id, refusal)
            return answer(False, f"refused: {refusal}", 403)
        action = HumanAction(identity.name, reason or "from the dashboard", stage, via="dashboard")
        try:
            outcome = await self.service.act(delivery_id, kind, action)
        except ActionRefused as refused:
            log.info(
                "dashboard: %s on %s by %s refused by the delivery: %s",
                kind,
                delivery_id,
                identity.name,
                refused,
            )
            return answer(False, f"refused: {refused}", 409)
        log.info("dashboard: %s on %s by %s: %s", kind, delivery_id, identity.name, outcome)
        return answer(True, f"{outcome} (as {identity.name})", 200)

    # --- commits --------------------------------------------------------------------------------------------

    async def commit_page(self, request: Request) -> Response:
        viewer = await self._reader(request)
        if isinstance(viewer, Response):
            return viewer
        delivery_id = request.path_params["delivery_id"]
        sha = request.path_params["sha"]
        try:
            view = await self.service.view(delivery_id)
        except NotFound:
            return self.error(
                request, viewer, 404, "No such delivery", f"There is no delivery {delivery_id}."
            )
        except (RPCError, RuntimeError, OSError) as failure:
            return self.error(request, viewer, 503, "Temporal cannot be reached", str(failure))
        if not SHA.fullmatch(sha) or sha not in {commit.sha for commit in view.commits}:
            return self.error(
                request, viewer, 404, "No such commit", f"{delivery_id} made no commit {sha[:40]}."
            )
        repo = (await self.service.plan(delivery_id)).gitops_repo
        context: dict[str, Any] = {"delivery_id": delivery_id, "sha": sha, "diff": None, "problem": ""}
        try:
            context["diff"] = await self.service.gitops.diff(repo, sha)
        except GitOpsUnreadable as unreadable:
            context["problem"] = f"The GitOps repository cannot be read now: {unreadable}"
        return self.page(request, viewer, "commit.html", **context)

    # --- sign-in ----------------------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        viewer = self.viewer(request)
        return self.page(
            request, viewer, "login.html", **self._login_context(request.query_params.get("next", ""))
        )

    def _login_context(self, next_path: str, problem: str = "") -> dict[str, Any]:
        return {
            "next": _local_path(next_path),
            "tokens": bool(self.settings.tokens),
            "proxy": bool(self.settings.trusted_proxies),
            "problem": problem,
        }

    async def login(self, request: Request) -> Response:
        viewer = self.viewer(request)
        client = _client(request)
        try:
            form = _form(await read_body(request, FORM_LIMIT))
        except BodyTooLarge:
            return self.page(
                request, viewer, "login.html", 413, **self._login_context("", "The form is too large.")
            )
        next_path = _local_path(form.get("next", ""))
        problem = csrf_problem(request, form.get(CSRF_FIELD, ""), self.settings)
        if problem:
            return self.page(
                request, viewer, "login.html", 403, **self._login_context(next_path, f"Refused: {problem}.")
            )
        if self.throttle.blocked(client):
            return self.page(
                request,
                viewer,
                "login.html",
                429,
                **self._login_context(next_path, "Too many failed sign-ins; wait a few minutes."),
            )
        token = form.get("token", "").strip()
        name = self.settings.tokens.identity(token) if self.settings.tokens else None
        if name is None:
            self.throttle.failed(client)
            log.info("dashboard: failed sign-in from %s", client)
            return self.page(
                request, viewer, "login.html", 401, **self._login_context(next_path, "Unknown token.")
            )
        log.info("dashboard: %s signed in from %s", name, client)
        response = RedirectResponse(next_path or viewer.urls.home(), status_code=303)
        set_cookie(
            response,
            request,
            self.settings,
            SESSION_COOKIE,
            sign_session(name, token, self.settings.session_key),
            SESSION_TTL_S,
        )
        return response

    async def logout(self, request: Request) -> Response:
        viewer = self.viewer(request)
        form = _form(await read_body(request, FORM_LIMIT))
        if csrf_problem(request, form.get(CSRF_FIELD, ""), self.settings):
            return self.error(
                request,
                viewer,
                403,
                "Refused",
                "The sign-out form was not this page's; reload and try again.",
            )
        response = RedirectResponse(viewer.urls.home(), status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=request.scope.get("root_path") or "/")
        return response


def _client(request: Request) -> str:
    """The address failed sign-ins are counted against (LoginThrottle)."""
    return request.client.host if request.client else "?"


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _form(body: bytes) -> dict[str, str]:
    """An urlencoded form (what browsers send by default), one value per field."""
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {key: values[0] for key, values in parsed.items() if values}


def _local_path(path: str) -> str:
    """Where to go after signing in: a path on this site only (never `//host` or a URL)."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path or any(ord(c) < 0x20 for c in path):
        return ""
    return path
