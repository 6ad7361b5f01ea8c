"""The delivery specs a gateway (or poller) serves: every spec file of a directory, reloaded when a file
changes (mtime/size poll), and which specs a push concerns (same repository, branch matching a glob).

A file that fails validation is logged with its file:line:col errors and does not stop the others. When a
file that was valid becomes broken, its last valid version keeps serving until it is fixed (like a server
that keeps its old configuration when a reload fails): a half-saved edit must not silently stop deliveries.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aicd.argo_rollouts.expand import template_files
from aicd.gateway.metrics import Metrics
from aicd.spec.loader import parse_spec_bytes, spec_files
from aicd.spec.model import DeliverySpec

log = logging.getLogger("aicd.gateway.specs")

# git's own rule: `[user@]host:path` without "://" (and no slash before the colon) is ssh.
SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?(?P<host>[^@/:]+):(?P<path>.+)$")


def repo_key(url: str) -> str | None:
    """One spelling per repository: https, ssh://, scp-like `git@host:org/repo.git`, with or without
    `.git`, any case of host (and path: GitHub and GitLab paths are case-insensitive); local paths and
    file:// URLs resolve to the real path."""
    url = url.strip()
    if not url:
        return None
    if "://" in url:
        parsed = urlsplit(url)
        if parsed.scheme == "file":
            return _local(parsed.path)
        host, path = (parsed.hostname or "").lower(), parsed.path
    elif url.startswith(("/", ".", "~")):
        return _local(url)
    elif match := SCP_LIKE.match(url):
        host, path = match.group("host").lower(), match.group("path")
    else:
        return _local(url)
    path = path.strip("/").removesuffix(".git").lower()
    return f"{host}/{path}" if host and path else None


def _local(path: str) -> str:
    resolved = os.path.realpath(os.path.expanduser(path)).rstrip("/")
    return "file:" + resolved.removesuffix(".git")


def branch_matches(branch: str, globs: Iterable[str]) -> bool:
    """Shell-style globs against the whole branch name (`*` also matches `/`). The name is only ever data."""
    return any(fnmatch.fnmatchcase(branch, glob) for glob in globs)


@dataclass(frozen=True)
class LoadedSpec:
    spec: DeliverySpec
    file: Path
    repo: str | None  # repo_key of spec.source.repo


Signature = tuple[int, int, int] | None  # mtime, size, inode; None: missing


@dataclass
class _FileState:
    signature: tuple[int, int, int]
    loaded: LoadedSpec | None  # the last valid version
    errors: list[str]
    # The Argo Rollouts template files the spec names, as they were when it was read: a change reloads it.
    sources: tuple[tuple[Path, Signature], ...] = ()


def _signature(path: Path) -> Signature:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class SpecDirectory:
    def __init__(self, root: Path, metrics: Metrics | None = None) -> None:
        self.root = root
        self.metrics = metrics
        self._files: dict[Path, _FileState] = {}
        self._by_app: dict[str, LoadedSpec] = {}
        self._lock = threading.Lock()
        self._missing_logged = False

    # --- reading --------------------------------------------------------------------------------------
    @property
    def specs(self) -> list[LoadedSpec]:
        return list(self._by_app.values())

    def by_app(self, app: str) -> LoadedSpec | None:
        return self._by_app.get(app)

    @property
    def errors(self) -> dict[str, list[str]]:
        return {str(path): state.errors for path, state in self._files.items() if state.errors}

    def for_push(self, repo_urls: Iterable[str], branch: str) -> list[LoadedSpec]:
        """The specs whose source repository is one of `repo_urls` and whose branch globs match `branch`."""
        keys = {key for url in repo_urls if url and (key := repo_key(url))}
        return [
            loaded
            for loaded in self._by_app.values()
            if loaded.repo in keys and branch_matches(branch, loaded.spec.branches)
        ]

    # --- reloading ------------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read changed, new and removed files; True when anything changed. Safe from any thread."""
        with self._lock:
            return self._reload()

    def _reload(self) -> bool:
        if not self.root.is_dir():
            if not self._missing_logged:
                log.error("spec directory %s does not exist; serving no specs", self.root)
                self._missing_logged = True
            changed = bool(self._files)
            self._files.clear()
            self._index()
            return changed
        self._missing_logged = False
        current: dict[Path, tuple[int, int, int]] = {}
        for path in spec_files([str(self.root)]):
            try:
                stat = path.stat()
            except OSError:
                continue
            current[path] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        changed = False
        for path in [p for p in self._files if p not in current]:
            log.info("spec file %s removed", path)
            del self._files[path]
            changed = True
        for path, signature in current.items():
            previous = self._files.get(path)
            if (
                previous is not None
                and previous.signature == signature
                and all(_signature(source) == seen for source, seen in previous.sources)
            ):
                continue
            self._files[path] = self._load(path, signature, previous)
            changed = True
        if changed:
            self._index()
        return changed

    def _load(self, path: Path, signature: tuple[int, int, int], previous: _FileState | None) -> _FileState:
        try:
            raw = path.read_bytes()
        except OSError as error:
            errors = [f"{path}:0:0: error: $: cannot read: {error.strerror or error}"]
            spec = None
            sources: tuple[tuple[Path, Signature], ...] = ()
        else:
            # Signatures before reading, so a template changed while the spec is read reloads it again.
            sources = tuple((source, _signature(source)) for source in template_files(raw, str(path)))
            spec, spec_errors = parse_spec_bytes(raw, str(path))
            errors = [str(error) for error in spec_errors]
        if spec is not None and not errors:
            log.info("loaded spec %s from %s", spec.name, path)
            return _FileState(signature, LoadedSpec(spec, path, repo_key(spec.source_repo)), [], sources)
        kept = previous.loaded if previous else None
        for line in errors:
            log.error("%s", line)
        if kept is not None:
            log.error("%s is invalid; still serving its last valid version (%s)", path, kept.spec.name)
        else:
            log.error("%s is invalid; not served", path)
        return _FileState(signature, kept, errors, sources)

    def _index(self) -> None:
        by_app: dict[str, LoadedSpec] = {}
        for path in sorted(self._files):
            loaded = self._files[path].loaded
            if loaded is None:
                continue
            other = by_app.get(loaded.spec.name)
            if other is not None:
                log.error("%s: app %s is already defined in %s; ignored", path, loaded.spec.name, other.file)
                continue
            by_app[loaded.spec.name] = loaded
        self._by_app = by_app
        if self.metrics is not None:
            self.metrics.set("aicd_specs_loaded", len(by_app))
            self.metrics.set("aicd_spec_errors", sum(1 for state in self._files.values() if state.errors))
