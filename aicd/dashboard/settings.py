"""The dashboard's settings, from the environment (secrets too: from the environment or files, never
logged, never in a URL). Invalid settings stop the start with a message that names the variable or the
file:line and what is wrong.

| variable | what |
|---|---|
| `AICD_DASHBOARD_TOKENS_FILE` | YAML file, `identity: token` per line (or `identity: sha256:<hex of the token>`): sign-in by token (login form, or `Authorization: Bearer`) |
| `AICD_DASHBOARD_TRUSTED_PROXIES` | addresses or networks (comma-separated) of an authenticating proxy (oauth2-proxy) whose identity header is trusted |
| `AICD_DASHBOARD_PROXY_HEADER` | that header: `X-Forwarded-User` (default) or `X-Forwarded-Email` |
| `AICD_DASHBOARD_OPERATORS` | identities who may pause, resume and abort any delivery (besides its approvers); `*`: anyone signed in |
| `AICD_DASHBOARD_READ` | `signed-in` (default when sign-in is set up) or `anyone` (default otherwise) |
| `AICD_DASHBOARD_SESSION_KEY` | key that signs session cookies and CSRF tokens (at least 32 characters; default: random per process) |
| `AICD_DASHBOARD_COMMIT_URL` | link for each GitOps commit, e.g. `https://github.com/{repo_path}/commit/{sha}` (default: the built-in diff view) |
| `AICD_DASHBOARD_POLL_S` | how often a page followed live asks Temporal for changes (default 1) |
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aicd.people import IDENTITY
from aicd.redact import remember_secret
from aicd.spec.yamlsafe import YamlReadError, read_yaml
from aicd.steering import parse_operators

log = logging.getLogger("aicd.dashboard")

TOKENS_FILE_ENV = "AICD_DASHBOARD_TOKENS_FILE"
TRUSTED_PROXIES_ENV = "AICD_DASHBOARD_TRUSTED_PROXIES"
PROXY_HEADER_ENV = "AICD_DASHBOARD_PROXY_HEADER"
OPERATORS_ENV = "AICD_DASHBOARD_OPERATORS"
READ_ENV = "AICD_DASHBOARD_READ"
SESSION_KEY_ENV = "AICD_DASHBOARD_SESSION_KEY"
COMMIT_URL_ENV = "AICD_DASHBOARD_COMMIT_URL"
POLL_ENV = "AICD_DASHBOARD_POLL_S"

PROXY_HEADERS = ("X-Forwarded-User", "X-Forwarded-Email")
MIN_TOKEN_LENGTH = 16
MIN_SESSION_KEY_LENGTH = 32
HASHED = re.compile(r"sha256:([0-9a-f]{64})")


class SettingsError(ValueError):
    """A setting is invalid; the message names it and says what is wrong."""


@dataclass(frozen=True)
class TokenTable:
    """Sign-in tokens: the SHA-256 of each token and whose it is (tokens themselves are not kept)."""

    by_digest: Mapping[str, str] = field(default_factory=dict)

    def identity(self, token: str) -> str | None:
        """Whose token this is; every entry is compared (in constant time) so timing says nothing."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        found = None
        for known, identity in self.by_digest.items():
            if secrets.compare_digest(known, digest):
                found = identity
        return found

    def holds(self, identity: str, tag: str) -> bool:
        """Whether `identity` still signs in with the token whose session tag (aicd.dashboard.auth) is `tag`."""
        return bool(tag) and any(
            who == identity and secrets.compare_digest(digest[: len(tag)], tag)
            for digest, who in self.by_digest.items()
        )

    def __bool__(self) -> bool:
        return bool(self.by_digest)


@dataclass
class DashboardSettings:
    tokens: TokenTable = field(default_factory=TokenTable, repr=False)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    proxy_header: str = PROXY_HEADERS[0]
    operators: frozenset[str] = frozenset()
    read_signed_in: bool = False
    session_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    commit_url: str | None = None
    poll_s: float = 1.0

    @property
    def sign_in(self) -> bool:
        """Whether anyone can be signed in at all (tokens or a trusted proxy)."""
        return bool(self.tokens) or bool(self.trusted_proxies)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> DashboardSettings:
        env = os.environ if env is None else env
        tokens_file = env.get(TOKENS_FILE_ENV, "").strip()
        settings = cls(
            tokens=load_tokens(Path(tokens_file)) if tokens_file else TokenTable(),
            trusted_proxies=parse_networks(env.get(TRUSTED_PROXIES_ENV, "")),
            proxy_header=_proxy_header(env.get(PROXY_HEADER_ENV, "")),
            operators=parse_operators(env.get(OPERATORS_ENV, "")),
            commit_url=_commit_url(env.get(COMMIT_URL_ENV, "")),
            poll_s=_poll(env.get(POLL_ENV, "")),
        )
        key = env.get(SESSION_KEY_ENV, "")
        if key:
            if len(key) < MIN_SESSION_KEY_LENGTH:
                raise SettingsError(f"{SESSION_KEY_ENV} must be at least {MIN_SESSION_KEY_LENGTH} characters")
            settings.session_key = hashlib.sha256(key.encode()).digest()
        read = env.get(READ_ENV, "").strip().lower()
        if read not in ("", "anyone", "signed-in"):
            raise SettingsError(f"{READ_ENV} must be anyone or signed-in, not {read!r}")
        settings.read_signed_in = read == "signed-in" or (read == "" and settings.sign_in)
        for key_name, value in overrides.items():
            setattr(settings, key_name, value)
        return settings


def load_tokens(path: Path) -> TokenTable:
    """The tokens file: a YAML mapping of identity to token (or to `sha256:<hex>` of the token)."""
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as error:
        raise SettingsError(f"{TOKENS_FILE_ENV}: cannot read {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s: %s can be read by other users; make it readable by the dashboard's user only",
            TOKENS_FILE_ENV,
            path,
        )
    try:
        document = read_yaml(raw)
    except YamlReadError as error:
        raise SettingsError(f"{path}:{error.mark.line}:{error.mark.col}: {error.message}") from None
    if not isinstance(document.data, dict) or not document.data:
        raise SettingsError(f"{path}:1:1: expected a mapping of identity to token")
    table: dict[str, str] = {}
    for identity, token in document.data.items():
        mark = document.mark_for((identity,))
        where = f"{path}:{mark.line}:{mark.col}"
        if not isinstance(identity, str) or not IDENTITY.fullmatch(identity):
            raise SettingsError(f"{where}: {identity!r} is not an identity (no spaces or control characters)")
        if not isinstance(token, str):
            raise SettingsError(f"{where}: {identity}: the token must be a string")
        hashed = HASHED.fullmatch(token)
        if hashed:
            digest = hashed.group(1)
        elif len(token) < MIN_TOKEN_LENGTH or token.startswith("sha256:"):
            raise SettingsError(
                f"{where}: {identity}: a token needs at least {MIN_TOKEN_LENGTH} characters"
                " (or sha256:<64 hex digits> of one)"
            )
        else:
            digest = hashlib.sha256(remember_secret(token).encode()).hexdigest()  # masked in every log line
        if digest in table:
            raise SettingsError(f"{where}: {identity}: the same token as {table[digest]}")
        table[digest] = identity
    return TokenTable(table)


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"{TRUSTED_PROXIES_ENV}: {item!r} is not an IP address or network") from None
    return tuple(networks)


def _proxy_header(text: str) -> str:
    if not text.strip():
        return PROXY_HEADERS[0]
    for header in PROXY_HEADERS:
        if header.lower() == text.strip().lower():
            return header
    raise SettingsError(f"{PROXY_HEADER_ENV} must be one of {', '.join(PROXY_HEADERS)}, not {text!r}")


def _commit_url(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    if "{sha}" not in text and "{short}" not in text:
        raise SettingsError(f"{COMMIT_URL_ENV} must contain {{sha}} (or {{short}}): {text!r}")
    if not text.startswith(("https://", "http://")):
        raise SettingsError(f"{COMMIT_URL_ENV} must be an http(s) URL: {text!r}")
    return text


def _poll(text: str) -> float:
    if not text.strip():
        return 1.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 60:
        raise SettingsError(f"{POLL_ENV} must be a number of seconds between 0.1 and 60, not {text!r}")
    return value
