"""Keeping secrets out of everything aicd stores or shows: Temporal history, status, logs, Slack.

Two kinds of leak, one module:
- credentials written into URLs (`https://user:token@host/repo.git`, `https://x-access-token:...@`):
  `redact_credentials` replaces the userinfo's secret part wherever a URL appears in a text;
- secret values the process holds (a command's `secretEnv`, SLACK_BOT_TOKEN, webhook secrets,
  TEMPORAL_API_KEY, any environment variable whose name looks secret): `SecretMask` replaces every literal
  occurrence with `***`, also in a byte stream cut into chunks (a command's output on its way to the log).

Secrets the process reads by name -- from a file (a Prometheus password file, the PagerDuty key, the files of
AICD_COMMAND_SECRET_DIR) or a variable the spec names -- go into one registry as they are read
(`remember_secret`); files the process only hands to others (git's credential store and SSH key, the Temporal
TLS client key) are watched and re-read when they change (`watch_secret_file`, `watch_configured_secret_files`).
`redact` always masks what the registry holds at that moment, so a secret read or rotated after a log
formatter or the failure redaction was set up is masked too.

Masking is literal, like CI systems do it: a secret printed in another encoding (base64, escaped) or in
parts is not recognised. Values too short to be a secret are not masked (masking `true` or `1` would only
garble the output); see `MIN_SECRET_CHARS` and `MIN_GUESSED_SECRET_CHARS`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_SECRET_CHARS = 4  # values named as secrets (secretEnv, the configured secrets)
MIN_GUESSED_SECRET_CHARS = 8  # values of variables that only look secret by name
# Variable names whose values are secrets (substring match, case-insensitive).
SECRET_NAME_PARTS = (
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "KEY",
    "CREDENTIAL",
    "PRIVATE",
    "COOKIE",
    "SIGNATURE",
    "AUTH",
    "DSN",
    "JWT",
    "_PWD",  # MYSQL_PWD (not PWD, the working directory)
    "_PASS",  # DB_PASS
    "OTLP_HEADERS",  # OTEL_EXPORTER_OTLP_HEADERS: an exporter's API key
)
NOT_SECRET_NAMES = frozenset({"SSH_AUTH_SOCK", "XAUTHORITY"})  # paths, not secrets

# scheme://userinfo@ up to the authority's last '@' (a password may hold an unencoded '@').
# A scheme is short: bounding it keeps the scan linear on long texts full of dots.
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<userinfo>[^/?#\s@]*(?:@[^/?#\s@]*)*)@"
)
# `scheme://user:password@` where the password may hold an unencoded '/' (or '?', '#', '@'): it ends at the
# first '@' after which an authority follows (no further '@' before the path). Redaction also masks the odd
# URL with '@' in its path (`http://host:8080/a@b` -> `http://host:***@b`), the safe side; validation
# (`has_credentials`) takes a port then a path for what it is (`_PORT_THEN_PATH`). Bounded quantifiers keep
# the scan linear on long texts with many `://` and no whitespace.
_URL_PASSWORD = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<user>[^/?#\s@:]{0,256}):(?P<password>[^\s]{0,1024}?)"
    r"@(?=[^\s@/?#]{0,320}(?:[/?#\s]|\Z))"
)
_PORT_THEN_PATH = re.compile(r"[0-9]{1,5}(?:[/?#]|\Z)")
# Schemes where a user name alone is no secret (ssh's login user); elsewhere a lone user name is often a
# token (`https://TOKEN@github.com/...`).
_USER_IS_PUBLIC = frozenset({"ssh", "git+ssh", "ssh+git"})


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret."""
    upper = name.upper()
    return upper not in NOT_SECRET_NAMES and any(part in upper for part in SECRET_NAME_PARTS)


def redact_credentials(text: str) -> str:
    """`text` with the secret part of every URL's userinfo replaced: `https://user:pw@h` -> `https://user:***@h`,
    `https://TOKEN@h` -> `https://***@h`; `ssh://git@h` keeps its (public) user name."""

    def replace(match: re.Match[str]) -> str:
        scheme, userinfo = match.group("scheme"), match.group("userinfo")
        user, colon, _password = userinfo.partition(":")
        if colon:
            return f"{scheme}{user}:{MASK}@"
        if scheme[:-3].lower() in _USER_IS_PUBLIC:
            return match.group(0)
        return f"{scheme}{MASK}@"

    text = _URL_PASSWORD.sub(lambda match: f"{match.group('scheme')}{match.group('user')}:{MASK}@", text)
    text = _URL_USERINFO.sub(replace, text)
    return _URL_QUERY.sub(_query_masked, text) if "?" in text else text


def _query_masked(match: re.Match[str]) -> str:
    """A URL up to its query's end with the value of each parameter named for a credential masked."""
    parameters = [
        f"{parameter.partition('=')[0]}={MASK}" if _carries_credential(parameter) else parameter
        for parameter in match.group("query").split("&")
    ]
    return match.group(0)[: match.start("query") - match.start()] + "&".join(parameters)


# A user name alone is a token when it has a provider's token prefix or is longer than user names are
# (`https://TOKEN@github.com/...`); a short one (`https://alice@bitbucket.org/...`, Azure DevOps' organisation
# name) is a public user name.
TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "gldt-", "glptt-", "xox")
MIN_TOKEN_USER_CHARS = 32


# A URL's query (a spec's URL may begin with a placeholder: `{{ url }}/health?...`), and the words of a query
# parameter's name that say its value is a credential (`?access_token=`, `?api_key=`, `?apiKey=`, an Azure
# SAS's `sig=`, S3's `X-Amz-Signature=`), compared word by word so that `author=` or `keyword=` are none.
_URL_QUERY = re.compile(
    r"(?:\b[A-Za-z][A-Za-z0-9+.-]{0,31}://|\{\{\s*[a-z.]*url\s*\}\})[^\s?#]*\?(?P<query>[^\s#]*)"
)
_CREDENTIAL_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "key",
        "apikey",
        "sig",
        "signature",
        "auth",
        "credential",
    }
)


def _carries_credential(parameter: str) -> bool:
    """Whether a query parameter (`name=value`, the name as written or %-encoded) holds a credential."""
    name, equals, value = parameter.partition("=")
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", unquote(name)).lower())
    return bool(equals and value) and any(word.removesuffix("s") in _CREDENTIAL_WORDS for word in words)


def has_credentials(text: str) -> bool:
    """Whether a URL in `text` carries a password (or a token in the password's place:
    `x-access-token:TOKEN@`), a token in the user name's place (`https://ghp_...@github.com/...`), or a
    query parameter named for one (`?access_token=...`)."""
    for match in _URL_USERINFO.finditer(text):
        user, colon, _password = match.group("userinfo").partition(":")
        if colon or user.lower().startswith(TOKEN_PREFIXES) or len(user) >= MIN_TOKEN_USER_CHARS:
            return True
    for match in _URL_PASSWORD.finditer(text):
        # A password holding an unencoded '/' (`https://user:pa/ss@host/`); a port and a path with '@' in it
        # (`http://host:8080/a@b`, an npm scope) is none.
        if not _PORT_THEN_PATH.match(match.group("password")):
            return True
    for match in _URL_QUERY.finditer(text):
        if any(_carries_credential(parameter) for parameter in match.group("query").split("&")):
            return True
    return False


# Tokens whose form gives them away (their providers chose these prefixes so scanners find them). Written into
# a spec, one would travel in every workflow's input and history.
KNOWN_TOKENS = (
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,})")),
    ("a GitLab token", re.compile(r"\bgl(?:pat|dt|ptt|rt)-[A-Za-z0-9_-]{20,}")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("an npm token", re.compile(r"\bnpm_[A-Za-z0-9]{36}")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)


def known_token(text: str) -> str | None:
    """What kind of well-known token `text` holds, or None."""
    return next((kind for kind, pattern in KNOWN_TOKENS if pattern.search(text)), None)


_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL
)


def redact_tokens(text: str) -> str:
    """`text` with every well-known token (KNOWN_TOKENS) and private key, to its END line, replaced by `***`:
    for messages that quote a value someone wrote (a spec's validation errors)."""
    text = _PRIVATE_KEY_BLOCK.sub(MASK, text)
    for _kind, pattern in KNOWN_TOKENS:
        text = pattern.sub(MASK, text)
    return text


class SecretMask:
    """Replaces every occurrence of the given secret values with `***`."""

    def __init__(self, values: Iterable[str] = (), min_chars: int = MIN_SECRET_CHARS) -> None:
        needles: set[bytes] = set()
        for value in values:
            # A multi-line secret (a key file) is also masked line by line, as tools print it that way too.
            for candidate in (value, *value.splitlines()):
                candidate = candidate.strip("\r\n")
                if len(candidate) >= min_chars:
                    needles.add(candidate.encode("utf-8", "surrogateescape"))
        self._set(needles)

    def _set(self, needles: set[bytes]) -> None:
        self._needles = frozenset(needles)
        ordered = sorted(needles, key=len, reverse=True)  # the longest first: no partial masks
        self._pattern = re.compile(b"|".join(re.escape(n) for n in ordered)) if ordered else None
        self.longest = len(ordered[0]) if ordered else 0

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __or__(self, other: SecretMask) -> SecretMask:
        merged = SecretMask()
        merged._set(set(self._needles | other._needles))
        return merged

    def _found_in(self, data: bytes) -> bool:
        # Substring search is much faster than the regex; most output holds no secret at all.
        return any(needle in data for needle in self._needles)

    def mask_bytes(self, data: bytes) -> bytes:
        if self._pattern is None or not self._found_in(data):
            return data
        return self._pattern.sub(MASK.encode(), data)

    def mask(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self.mask_bytes(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def writer(self, write: Callable[[bytes], object]) -> MaskingWriter:
        return MaskingWriter(self, write)

    def _safe_end(self, data: bytes) -> int:
        """How much of `data` can be masked and written now: all but a tail that may be the start of a
        secret continued in the next chunk, and never the middle of a secret."""
        end = max(0, len(data) - (self.longest - 1))
        if self._pattern is not None and self._found_in(data):
            for match in self._pattern.finditer(data):
                if match.start() < end < match.end():
                    return match.start()
        return end


class MaskingWriter:
    """A byte stream's chunks in, masked chunks out: holds back at most `longest - 1` bytes so a secret split
    across two chunks is still masked."""

    def __init__(self, mask: SecretMask, write: Callable[[bytes], object]) -> None:
        self._mask = mask
        self._write = write
        self._pending = b""

    def write(self, chunk: bytes) -> None:
        if not self._mask:
            self._write(chunk)
            return
        data = self._pending + chunk
        end = self._mask._safe_end(data)
        if end:
            self._write(self._mask.mask_bytes(data[:end]))
        self._pending = data[end:]

    def close(self) -> None:
        if self._pending:
            self._write(self._mask.mask_bytes(self._pending))
            self._pending = b""


class SecretRegistry:
    """The secret values this process has read by name, and the secret files it watches: what `redact` and
    `process_mask` mask besides what they are given. Thread-safe (log records come from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        # path -> (how its text gives its secrets, the (mtime, size, inode) it was last read at)
        self._files: dict[Path, tuple[Callable[[str], Iterable[str]], tuple[int, int, int] | None]] = {}
        self._mask = SecretMask()

    def remember(self, value: str) -> None:
        with self._lock:
            if value and value not in self._values:
                self._values.add(value)
                self._mask = SecretMask(self._values)

    def watch(self, path: Path, secrets: Callable[[str], Iterable[str]]) -> None:
        with self._lock:
            self._files.setdefault(path, (secrets, None))
        self._refresh(path)

    def mask(self) -> SecretMask:
        """The mask of everything read so far, a watched file that changed re-read first (one stat each)."""
        for path in list(self._files):
            self._refresh(path)
        return self._mask

    def _refresh(self, path: Path) -> None:
        secrets, seen = self._files[path]
        try:
            info = path.stat()
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp == seen:
                return
            text = path.read_bytes().decode("utf-8", "surrogateescape")
        except OSError:  # not there (yet): an optional Secret mount; looked at again next time
            return
        with self._lock:
            self._files[path] = (secrets, stamp)
        # A rotated file's old values stay: output written before the rotation may still quote them.
        for value in secrets(text):
            self.remember(value)


READ_SECRETS = SecretRegistry()


def remember_secret(value: str) -> str:
    """Note `value`, a secret this process just read by name, so every redaction from now on masks it; returns
    it (for `return remember_secret(value)`)."""
    READ_SECRETS.remember(value)
    return value


def watch_secret_file(
    path: str | os.PathLike[str], secrets: Callable[[str], Iterable[str]] | None = None
) -> None:
    """Mask the secrets of a file this process's tools read (the whole text, line by line, by default),
    re-read whenever it changes."""
    READ_SECRETS.watch(Path(path).expanduser(), secrets or (lambda text: [text.strip()]))


def credential_store_secrets(text: str) -> list[str]:
    """The passwords of a git credential store file (`https://user:token@host` lines), as written and decoded."""
    found = []
    for line in text.splitlines():
        try:
            password = urlsplit(line.strip()).password
        except ValueError:
            continue
        if password:
            found += [password, unquote(password)]
    return found


# Files git's default credential store and OpenSSH's default identities live in.
_DEFAULT_CREDENTIAL_STORES = ("~/.git-credentials",)
_DEFAULT_SSH_KEYS = tuple(
    f"~/.ssh/id_{kind}" for kind in ("rsa", "ecdsa", "ed25519", "dsa", "ecdsa_sk", "ed25519_sk")
)
TLS_CLIENT_KEY_PATH_ENV = "TEMPORAL_TLS_CLIENT_KEY_PATH"
# What the Kubernetes client (Argo CD's driver) reads: the kubeconfig, or the pod's service-account token.
KUBE_SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
_KUBECONFIG_USER_SECRETS = ("token", "password", "client-key-data")
MIN_KEY_LINE_CHARS = 16  # a decoded client key's lines worth masking (not its BEGIN/END armour)


def kubeconfig_secrets(text: str) -> list[str]:
    """The credentials of a kubeconfig's users: tokens, passwords and client keys (as written, decoded, and
    line by line), an auth provider's tokens and secrets, and an exec plugin's secret-named variables."""
    import base64
    import binascii

    import yaml  # here: the CLI's start does not pay for it

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    users = document.get("users") if isinstance(document, dict) else None
    found: list[str] = []
    for entry in users if isinstance(users, list) else []:
        user = entry.get("user") if isinstance(entry, dict) else None
        if not isinstance(user, dict):
            continue
        found += [str(user[key]) for key in _KUBECONFIG_USER_SECRETS if user.get(key)]
        if isinstance(user.get("client-key-data"), str):
            try:
                key = base64.b64decode(user["client-key-data"]).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                key = ""
            found += [key.strip()] + [
                line for line in key.splitlines() if len(line) >= MIN_KEY_LINE_CHARS and "-----" not in line
            ]
        provider = user.get("auth-provider")
        config = provider.get("config") if isinstance(provider, dict) else None
        if isinstance(config, dict):
            found += [str(value) for name, value in config.items() if value and looks_secret(str(name))]
        plugin = user.get("exec")
        variables = plugin.get("env") if isinstance(plugin, dict) else None
        for variable in variables if isinstance(variables, list) else []:
            if (
                isinstance(variable, dict)
                and variable.get("value")
                and looks_secret(str(variable.get("name")))
            ):
                found.append(str(variable["value"]))
    return [value for value in found if value]


def watch_configured_secret_files(environ: Mapping[str, str] | None = None) -> None:
    """Watch the secret files this process's configuration hands to its tools: git's credential store files
    (`credential.helper=store --file=...` given in GIT_CONFIG_*, and the default ones), the SSH identity of
    GIT_SSH_COMMAND (`-i FILE`, and the default ones), the Temporal TLS client key, and the Kubernetes
    credentials Argo CD's driver reads (KUBECONFIG or ~/.kube/config, the service-account token). Idempotent."""
    environ = os.environ if environ is None else environ
    count = environ.get("GIT_CONFIG_COUNT", "")
    config = [  # git's configuration given in the environment (the deployment sets the helper this way)
        (environ.get(f"GIT_CONFIG_KEY_{n}", "").lower(), environ.get(f"GIT_CONFIG_VALUE_{n}", ""))
        for n in range(int(count) if count.isdigit() else 0)
    ]
    xdg = environ.get("XDG_CONFIG_HOME") or "~/.config"
    stores = [*_DEFAULT_CREDENTIAL_STORES, f"{xdg}/git/credentials"]
    for key, value in config:
        words = _split(value)
        if key == "credential.helper" and words[:1] in (["store"], ["git-credential-store"]):
            for index, word in enumerate(words):
                if word.startswith("--file="):
                    stores.append(word.removeprefix("--file="))
                elif word == "--file" and index + 1 < len(words):
                    stores.append(words[index + 1])
    for store in stores:
        watch_secret_file(store, credential_store_secrets)
    for key, value in config:  # `http.extraHeader=Authorization: Bearer TOKEN` given to git this way
        if key.endswith(".extraheader") and ":" in value:
            credential = value.split(":", 1)[1].strip()
            for secret in (credential, credential.split()[-1] if credential else ""):
                if len(secret) >= MIN_SECRET_CHARS:
                    remember_secret(secret)
    keys = list(_DEFAULT_SSH_KEYS)
    ssh_commands = [value for key, value in config if key == "core.sshcommand"]
    for command in (environ.get("GIT_SSH_COMMAND", ""), *ssh_commands):
        words = _split(command)
        for index, word in enumerate(words):
            if word == "-i" and index + 1 < len(words):
                keys.append(words[index + 1])
            elif word.startswith("-i") and len(word) > 2:
                keys.append(word[2:])
    if environ.get(TLS_CLIENT_KEY_PATH_ENV):
        keys.append(environ[TLS_CLIENT_KEY_PATH_ENV])
    for key in keys:
        watch_secret_file(key)
    kubeconfigs = [path for path in environ.get("KUBECONFIG", "").split(os.pathsep) if path] or [
        "~/.kube/config"
    ]
    for kubeconfig in kubeconfigs:
        watch_secret_file(kubeconfig, kubeconfig_secrets)
    watch_secret_file(KUBE_SERVICE_ACCOUNT_TOKEN)


def _split(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the variables whose names look secret (SLACK_BOT_TOKEN, AICD_GITHUB_WEBHOOK_SECRET,
    TEMPORAL_API_KEY, ...)."""
    environ = os.environ if environ is None else environ
    return [value for name, value in environ.items() if value and looks_secret(name)]


def process_mask(environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> SecretMask:
    """The secrets this process holds: `extra` (named secrets), what the environment's names give away, and
    every secret it has read by name so far (READ_SECRETS)."""
    return (
        SecretMask(extra)
        | SecretMask(environment_secrets(environ), MIN_GUESSED_SECRET_CHARS)
        | READ_SECRETS.mask()
    )


def redact(text: str, mask: SecretMask | None = None) -> str:
    """Credentials in URLs, the given secret values and the secrets this process has read by name (as of now:
    READ_SECRETS) out of `text`."""
    return redactor(mask)(text)


def redactor(mask: SecretMask | None = None) -> Callable[[str], str]:
    """`redact` with READ_SECRETS as of now, for many texts at once (it stats the watched files once)."""
    masks = [mask, READ_SECRETS.mask()] if mask else [READ_SECRETS.mask()]

    def redact_text(text: str) -> str:
        text = redact_credentials(text)
        for each in masks:
            text = each.mask(text)
        return text

    return redact_text


# What `redact_cut` puts before a text cut from the end of a longer one: a scheme, so that a URL the cut ran
# through is still found by `_URL_USERINFO`.
_CUT = "cut://"


def redact_cut(text: str, mask: SecretMask | None = None) -> str:
    """`redact` for the end of a longer text whose start was cut away (the last bytes of a command's output):
    the cut may have fallen inside a URL, after the `scheme://` its credentials are found by
    (`...ss@git.example.com/r.git`), so the text's first word is read as the rest of one."""
    # Cut inside the `://` itself: only the part of it that was cut away goes before the text.
    cut = next(_CUT[: len(_CUT) - len(sep)] for sep in ("://", "//", "/", "") if text.startswith(sep))
    return redact(cut + text, mask).removeprefix(cut)


class RedactingFormatter(logging.Formatter):
    """Every formatted log line (message and traceback) without URL credentials or this process's secrets."""

    def __init__(self, fmt: str, mask: SecretMask | None = None) -> None:
        super().__init__(fmt)
        self._mask = mask if mask is not None else process_mask()

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._mask)
