"""Who is asking, and whether they may act.

Identity comes from one of three places, in this order:
- `Authorization: Bearer <token>` (scripts): the token table of AICD_DASHBOARD_TOKENS_FILE;
- an authenticating proxy (oauth2-proxy): its `X-Forwarded-User` (or `-Email`) header, believed only when
  the connection comes from one of AICD_DASHBOARD_TRUSTED_PROXIES (anyone else can send that header);
- the session cookie the login form sets after a valid token: HMAC-signed, HttpOnly, SameSite=Strict,
  Secure over HTTPS, valid for 12 hours and only while that token is in the tokens file (removing or
  replacing a token ends its sessions at the next start, even with a kept AICD_DASHBOARD_SESSION_KEY).

Browsers send cookies (and the proxy's own cookie) on their own, so every action that rides on them is
checked against cross-site request forgery: the form must carry the double-submit token of the CSRF cookie,
and a cross-site `Origin` / `Sec-Fetch-Site` is refused. A bearer token is never sent by a browser on its
own, so it needs no such check.

Who may do what: approve and reject go to the workflow, whose validator accepts only the listed approvers of
the stage. Pause, resume and abort the workflow accepts from anyone, so the dashboard decides, by the rule
the Slack gateway applies too (aicd.steering): the approvers of any stage of that delivery, and the
identities of AICD_DASHBOARD_OPERATORS. No identity, no action.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from aicd.dashboard.settings import DashboardSettings, TokenTable
from aicd.people import IDENTITY, Roster
from aicd.steering import may_steer

SESSION_COOKIE = "aicd_session"
CSRF_COOKIE = "aicd_csrf"
CSRF_FIELD = "csrf_token"
SESSION_TTL_S = 12 * 3600
SESSION_TAG_CHARS = 16


@dataclass(frozen=True)
class Identity:
    name: str
    via: str  # token | proxy | session

    @property
    def ambient(self) -> bool:
        """Sent by the browser on its own (cookie, proxy): actions need the CSRF check."""
        return self.via != "token"


class NotAuthenticated(Exception):
    """A credential was given and is wrong (a bad bearer token): refused, not treated as anonymous."""

    status = 401


class SignInThrottled(NotAuthenticated):
    """Too many failed sign-ins from this address lately (LoginThrottle): no token is tried, right or wrong."""

    status = 429


def peer_trusted(request: Request, settings: DashboardSettings) -> bool:
    """The connection itself (not a forwarded-for header) comes from a trusted proxy."""
    if not settings.trusted_proxies or request.client is None:
        return False
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(peer in network for network in settings.trusted_proxies)


def request_identity(request: Request, settings: DashboardSettings) -> Identity | None:
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("Authorization must be `Bearer <token>`")
        name = settings.tokens.identity(token.strip())
        if name is None:
            raise NotAuthenticated("unknown token")
        return Identity(name, "token")
    if peer_trusted(request, settings):
        # One value only: a proxy that adds its header to one the client sent (instead of replacing it) would
        # otherwise leave the client's first, and that is the one read.
        values = request.headers.getlist(settings.proxy_header)
        forwarded = values[0].strip() if len(values) == 1 else ""
        if forwarded and IDENTITY.fullmatch(forwarded):
            return Identity(forwarded, "proxy")
    name = read_session(request.cookies.get(SESSION_COOKIE, ""), settings.session_key, settings.tokens)
    return Identity(name, "session") if name else None


# --- sessions ----------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: dict[str, object], key: bytes, ttl_s: float, now: float | None = None) -> str:
    """`claims` with an expiry, HMAC-signed: what the session and notice cookies hold."""
    body = _b64(json.dumps({**claims, "exp": int((now or time.time()) + ttl_s)}).encode())
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(value: str, key: bytes, now: float | None = None) -> dict[str, object] | None:
    """The claims of a signed value, or None (absent, forged, expired)."""
    body, dot, signature = value.partition(".")
    if not dot:
        return None
    try:
        expected = hmac.new(key, body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = json.loads(_unb64(body))
    except (ValueError, TypeError):
        return None
    if (
        not isinstance(claims, dict)
        or not isinstance(claims.get("exp"), int)
        or claims["exp"] < (now or time.time())
    ):
        return None
    return claims


def session_tag(token: str) -> str:
    """What a session keeps of the token it was signed in with (the start of its SHA-256, as the tokens file
    may hold it): the session ends when that token leaves the tokens file or is replaced."""
    return hashlib.sha256(token.encode()).hexdigest()[:SESSION_TAG_CHARS]


def sign_session(
    name: str, token: str, key: bytes, now: float | None = None, ttl_s: float = SESSION_TTL_S
) -> str:
    return sign({"sub": name, "tok": session_tag(token)}, key, ttl_s, now)


def read_session(value: str, key: bytes, tokens: TokenTable, now: float | None = None) -> str | None:
    """The identity a session cookie names, or None (forged, expired, or its token no longer in `tokens`)."""
    claims = verify(value, key, now)
    if not claims:
        return None
    name, tag = claims.get("sub"), claims.get("tok")
    if not isinstance(name, str) or not IDENTITY.fullmatch(name) or not isinstance(tag, str):
        return None
    return name if tokens.holds(name, tag) else None


def secure_request(request: Request, settings: DashboardSettings) -> bool:
    """HTTPS as the browser sees it (a trusted proxy terminating TLS says so in X-Forwarded-Proto)."""
    if request.url.scheme == "https":
        return True
    return peer_trusted(request, settings) and request.headers.get("x-forwarded-proto", "").lower() == "https"


def set_cookie(
    response: Response, request: Request, settings: DashboardSettings, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=request.scope.get("root_path") or "/",
        httponly=True,
        samesite="strict",
        secure=secure_request(request, settings),
    )


# --- CSRF --------------------------------------------------------------------------------------------------


def csrf_token(request: Request) -> tuple[str, bool]:
    """The request's CSRF token and whether it is new (then the response must set the cookie)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) >= 32:
        return current, False
    return secrets.token_urlsafe(32), True


def csrf_problem(request: Request, submitted: str) -> str | None:
    """Why this state-changing request may be forged, or None."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return "cross-site request"
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc.lower() != host.lower():
            return f"request from another origin ({origin})"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not submitted or not secrets.compare_digest(cookie.encode(), submitted.encode()):
        return "missing or wrong CSRF token (reload the page and try again)"
    return None


# --- authorization ------------------------------------------------------------------------------------------


def steering_refusal(
    identity: Identity | None, kind: str, approvers: Roster, settings: DashboardSettings
) -> str | None:
    """Why `identity` may not `kind` (pause/resume/abort) this delivery, or None. Approve and reject are
    decided by the workflow's validators (the stage's approvers)."""
    if identity is None:
        return "sign in to act on a delivery"
    if may_steer(identity.name, "dashboard", kind, approvers, settings.operators):
        return None
    listed = ", ".join(approvers.names()) or "none"
    return (
        f"{identity.name} may not {kind} this delivery: only its approvers ({listed})"
        " and the dashboard's operators may"
    )


class LoginThrottle:
    """At most `limit` failed sign-ins per client address within `window_s`: guessing tokens stays slow."""

    def __init__(self, limit: int = 10, window_s: float = 300.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, client: str, now: float | None = None) -> bool:
        failures = self._failures.get(client)
        if not failures:
            return False
        now = now or time.monotonic()
        while failures and failures[0] < now - self.window_s:
            failures.popleft()
        return len(failures) >= self.limit

    def failed(self, client: str, now: float | None = None) -> None:
        if len(self._failures) > 10000:  # bounded memory under a spray from many addresses
            self._failures.clear()
        self._failures.setdefault(client, deque()).append(now or time.monotonic())
