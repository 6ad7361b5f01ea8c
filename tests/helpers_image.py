"""Building and running the container image here, where no registry serves a base image.

- The base image is made from Debian packages: `mmdebstrap` with Python into a tarball, imported with
  `buildah` - a stand-in for the official Python slim image the Containerfile defaults to (same Debian
  release as this machine, python3 and python3-venv). The package mirror is read from this machine's own apt
  sources at run time; none is written here.
- pip inside the build gets its packages from a wheelhouse made here (this machine reaches PyPI through its
  own pip configuration, which a container does not share), mounted into the build's RUN steps and named by
  the Containerfile's PIP_FIND_LINKS / PIP_NO_INDEX build arguments.
- Both are cached under $AICD_IMAGE_CACHE (default ~/.cache/aicd/image-test), keyed by what goes into them,
  and the base image stays in buildah's storage, so only the first run pays for them; buildah's layer cache
  keeps the dependency layer of the image until pyproject.toml changes.
- buildah builds with chroot isolation and runs with `--isolation chroot --network host`, as root (the
  machine has no Docker engine, and `podman run` fails here on setrlimit).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the Containerfile needs of its base: python3 with venv (the slim image has both), apt, and what the
# slim image carries besides (certificates, netbase, tzdata).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "netbase", "tzdata")
RECIPE_VERSION = "1"  # bump when the way the base image is made changes
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
WHEELS_IN_BUILD = "/tmp/aicd-wheels"


class ImageToolError(RuntimeError):
    pass


def cache_dir() -> Path:
    configured = os.environ.get("AICD_IMAGE_CACHE")
    root = Path(configured) if configured else Path.home() / ".cache" / "aicd" / "image-test"
    root.mkdir(parents=True, exist_ok=True)
    return root


def missing_tools() -> list[str]:
    return [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]


def run(
    *argv: str, timeout: float = 900.0, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise ImageToolError(
            f"{' '.join(argv[:4])}... exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


# --- the Debian mirror this machine uses -----------------------------------------------------------------
def host_codename() -> str:
    fields = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    codename = fields.get("VERSION_CODENAME", "").strip('"')
    if fields.get("ID", "").strip('"') != "debian" or not codename:
        raise ImageToolError(
            "the image test makes its base from this machine's Debian release; /etc/os-release names none"
        )
    return codename


def debian_sources(codename: str) -> list[str]:
    """One-line apt sources (`deb URI SUITE main`) for the Debian release `codename` and its -updates and
    -security suites, as this machine's apt is configured (one-line .list and deb822 .sources files)."""
    entries: list[tuple[str, str]] = []
    files: list[Path] = []
    for source in APT_SOURCES:
        files += sorted(source.glob("*")) if source.is_dir() else [source] if source.is_file() else []
    for file in files:
        if file.suffix == ".list":
            for line in file.read_text().splitlines():
                parts = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
                if len(parts) >= 3 and parts[0] == "deb":
                    entries.append((parts[1], parts[2]))
        elif file.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", file.read_text()):
                fields = _deb822(stanza)
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                    entries += [
                        (uri, suite)
                        for uri in fields.get("URIs", "").split()
                        for suite in fields.get("Suites", "").split()
                    ]
    wanted = {codename, f"{codename}-updates", f"{codename}-security"}
    lines = sorted({f"deb {uri} {suite} main" for uri, suite in entries if suite in wanted})
    if not any(line.split()[2] == codename for line in lines):
        raise ImageToolError(f"no apt source for Debian {codename} in {', '.join(map(str, APT_SOURCES))}")
    return lines


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0].isspace() and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


# --- the base image ---------------------------------------------------------------------------------------
def base_image() -> tuple[str, dict[str, float]]:
    """The local base image's name, made (or found) for this machine's Debian release; and the seconds
    spent making it (`debootstrap_s`, `import_s`: 0 when cached)."""
    codename = host_codename()
    sources = debian_sources(codename)
    key = _key(RECIPE_VERSION, codename, platform.machine(), *BASE_PACKAGES, *sources)
    name = f"localhost/aicd-test-base:{codename}-{key}"
    timings = {"debootstrap_s": 0.0, "import_s": 0.0}
    if run("buildah", "inspect", "--type", "image", name, check=False).returncode == 0:
        return name, timings
    tarball = cache_dir() / f"base-{codename}-{key}.tar"
    if not tarball.is_file():
        began = time.monotonic()
        partial_tar = tarball.with_suffix(".partial")
        run(
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            codename,
            str(partial_tar),
            *sources,
            timeout=1200,
        )
        partial_tar.rename(tarball)
        timings["debootstrap_s"] = time.monotonic() - began
    began = time.monotonic()
    container = run("buildah", "from", "scratch").stdout.strip()
    try:
        run("buildah", "add", container, str(tarball), "/")
        run("buildah", "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env", "LANG=C.UTF-8", "--cmd", "python3", container)  # fmt: skip
        run("buildah", "commit", "--quiet", container, name)
    finally:
        run("buildah", "rm", container, check=False)
    timings["import_s"] = time.monotonic() - began
    return name, timings


# --- the wheelhouse ---------------------------------------------------------------------------------------
def requirements(extras: tuple[str, ...] = ("otel",)) -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [
        *project["dependencies"],
        *(dep for extra in extras for dep in project["optional-dependencies"][extra]),
    ]


def wheelhouse() -> tuple[Path, float]:
    """Wheels of every requirement of the image (and setuptools to build aicd itself), for this Python; and
    the seconds spent filling it (0 when cached)."""
    wanted = [*requirements(), "setuptools>=68", "wheel"]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    directory = cache_dir() / f"wheels-{tag}-{_key(*wanted)}"
    if (directory / ".complete").is_file():
        return directory, 0.0
    began = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(directory), *wanted, timeout=1200)
    (directory / ".complete").write_text("\n".join(wanted))
    return directory, time.monotonic() - began


# --- building and running ---------------------------------------------------------------------------------
def build_image(tag: str, base: str, wheels: Path) -> float:
    """Build the repository's Containerfile on `base`, pip reading only the wheelhouse (mounted read-only at
    a fixed path, so the build arguments - part of the layer cache's keys - stay the same from run to run);
    returns the seconds it took."""
    began = time.monotonic()
    run(
        "buildah", "build", "--isolation", "chroot", "--network", "host", "--layers", "--format", "docker",
        "--volume", f"{wheels}:{WHEELS_IN_BUILD}:ro",
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", "PIP_NO_INDEX=1",
        "--build-arg", f"PIP_FIND_LINKS={WHEELS_IN_BUILD}",
        "--build-arg", f"REVISION={_git_head()}",
        "--file", str(REPO_ROOT / "Containerfile"), "--tag", tag, str(REPO_ROOT),
        timeout=1800,
    )  # fmt: skip
    return time.monotonic() - began


def inspect_image(tag: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(run("buildah", "inspect", "--type", "image", tag).stdout)
    return found


def run_argv(container: str, argv: list[str], env: dict[str, str], volumes: list[Path]) -> list[str]:
    """`buildah run` of argv in the working container, on the host's network, with `volumes` mounted at the
    same paths."""
    options = ["--isolation", "chroot", "--network", "host"]
    for volume in volumes:
        options += ["--volume", f"{volume}:{volume}"]
    for key, value in env.items():
        options += ["--env", f"{key}={value}"]
    return ["buildah", "run", *options, container, "--", *argv]


def processes_with_env(key: str, value: str) -> list[int]:
    """PIDs whose environment has key=value: how the processes of one `buildah run` are found, since they
    leave its process group and, once it is gone, its process tree (chroot isolation has no PID namespace)."""
    wanted = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def stop_processes(pids: list[int], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL what is still there after `grace` seconds."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.1)


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _git_head() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"
