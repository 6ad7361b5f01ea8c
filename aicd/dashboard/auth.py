"""Who is asking, and whether they may act.

Identity comes from one of three places, in this order:
- `Authorization: Bearer <token>` (scripts): the token table of AICD_DASHBOARD_TOKENS_FILE;
- an authenticating proxy (oauth2-proxy): its `X-Forwarded-User` (or `-Email`) header, believed only when
  the connection comes from one of AICD_DASHBOARD_TRUSTED_PROXIES (anyone else can send that header);
- the session cookie the login form sets after a valid token: HMAC-signed, HttpOnly, SameSite=Strict,
  Secure over HTTPS, valid for 12 hours and only while that token is in the tokens file (removing or
  replacing a token ends its sessions at the next start, even with a kept AICD_DASHBOARD_SESSION_KEY).

Browsers send cookies (and the proxy's own cookie) on their own, so every action that rides on them is
checked against cross-site request forgery: the form must carry the CSRF token of this browser and this
sign-in -- an HMAC, under the session key, of the browser's random CSRF cookie and of the session (its ID,
or the proxy's identity; none before signing in) -- so a token from another cookie jar or another session
is refused, even with a CSRF cookie planted by a sibling site. An `Origin` other than the dashboard's own
(scheme, host and port; the scheme as a trusted proxy's X-Forwarded-Proto says) and a cross-site
`Sec-Fetch-Site` are refused. A bearer token is never sent by a browser on its own, so it needs no such
check.

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
    forwarded = proxy_identity(request, settings)
    if forwarded:
        return Identity(forwarded, "proxy")
    name = read_session(request.cookies.get(SESSION_COOKIE, ""), settings.session_key, settings.tokens)
    return Identity(name, "session") if name else None


def proxy_identity(request: Request, settings: DashboardSettings) -> str | None:
    """The identity a trusted proxy's header names, or None."""
    if not peer_trusted(request, settings):
        return None
    # One value only: a proxy that adds its header to one the client sent (instead of replacing it) would
    # otherwise leave the client's first, and that is the one read.
    values = request.headers.getlist(settings.proxy_header)
    forwarded = values[0].strip() if len(values) == 1 else ""
    return forwarded if forwarded and IDENTITY.fullmatch(forwarded) else None


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
    # `sid`: this sign-in's own ID, which its CSRF tokens are bound to.
    claims: dict[str, object] = {"sub": name, "tok": session_tag(token), "sid": secrets.token_urlsafe(16)}
    return sign(claims, key, ttl_s, now)


def read_session(value: str, key: bytes, tokens: TokenTable, now: float | None = None) -> str | None:
    """The identity a session cookie names, or None (forged, expired, or its token no longer in `tokens`)."""
    session = _session(value, key, tokens, now)
    return session[0] if session else None


def _session(value: str, key: bytes, tokens: TokenTable, now: float | None = None) -> tuple[str, str] | None:
    """The identity and ID of a valid session cookie (the ID: its `sid`, or its signature if it has none)."""
    claims = verify(value, key, now)
    if not claims:
        return None
    name, tag = claims.get("sub"), claims.get("tok")
    if not isinstance(name, str) or not IDENTITY.fullmatch(name) or not isinstance(tag, str):
        return None
    sid = claims.get("sid")
    return (
        (name, sid if isinstance(sid, str) else value.rpartition(".")[2]) if tokens.holds(name, tag) else None
    )


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


def csrf_token(request: Request, settings: DashboardSettings) -> tuple[str, str, bool]:
    """The token this request's forms carry, the browser's CSRF cookie it is bound to, and whether that cookie
    is new (then the response must set it)."""
    nonce = request.cookies.get(CSRF_COOKIE, "")
    new = len(nonce) < 32
    if new:
        nonce = secrets.token_urlsafe(32)
    return _csrf_for(nonce, _csrf_binding(request, settings), settings.session_key), nonce, new


def _csrf_for(nonce: str, binding: str, key: bytes) -> str:
    return _b64(hmac.new(key, f"csrf\0{nonce}\0{binding}".encode(), hashlib.sha256).digest())


def _csrf_binding(request: Request, settings: DashboardSettings) -> str:
    """Who the request is signed in as, in the order request_identity reads it (a bearer token needs no CSRF
    token): the proxy's identity, the session's ID, or nobody yet (the sign-in form)."""
    forwarded = proxy_identity(request, settings)
    if forwarded:
        return f"proxy:{forwarded}"
    session = _session(request.cookies.get(SESSION_COOKIE, ""), settings.session_key, settings.tokens)
    return f"session:{session[1]}" if session else "anonymous"


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, netloc: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an origin, the port filled in from the scheme; ValueError for a bad one."""
    parts = urlsplit(f"{scheme}://{netloc}")
    port = parts.port or DEFAULT_PORTS.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def origin_problem(request: Request, settings: DashboardSettings) -> str | None:
    """Why the request's `Origin` is not the dashboard's own (scheme, host and port), or None. The scheme is
    the browser's: HTTPS on the connection or in a trusted proxy's X-Forwarded-Proto."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return None
    secure = secure_request(request, settings)
    host = request.headers.get("host", "")
    try:
        parts = urlsplit(origin)
        theirs = _origin(parts.scheme.lower(), parts.netloc)
        ours = _origin("https" if secure else request.url.scheme, host)
    except ValueError:
        return f"request from another origin ({origin})"
    if theirs == ours and ours[1]:
        return None
    # A TLS-terminating proxy aicd is not told about (no AICD_DASHBOARD_TRUSTED_PROXIES) hands on plain HTTP
    # with the browser's Host: an HTTPS origin of that host on its default port is then the page's own.
    explicit_port = ":" in host.rpartition("]")[2]  # after an IPv6 address's brackets
    untold_proxy = not secure and not peer_trusted(request, settings) and not explicit_port
    if untold_proxy and theirs == ("https", ours[1], 443) and ours[1]:
        return None
    return f"request from another origin ({origin})"


def csrf_problem(request: Request, submitted: str, settings: DashboardSettings) -> str | None:
    """Why this state-changing request may be forged, or None."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return "cross-site request"
    problem = origin_problem(request, settings)
    if problem:
        return problem
    nonce = request.cookies.get(CSRF_COOKIE, "")
    if not nonce or not submitted:
        return "missing or wrong CSRF token (reload the page and try again)"
    expected = _csrf_for(nonce, _csrf_binding(request, settings), settings.session_key)
    if not secrets.compare_digest(expected.encode(), submitted.encode()):
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
