"""CLI conventions a newcomer relies on: a quick start-up (no heavy module behind `--help` or `validate`),
`--version`, shell completion, `-o/--output text|json` on every command that prints data, help free of
type artefacts, `--log-format json` on the long-running commands, and a time-left / how-to-release line in
status. The commands that need Temporal are exercised in tests/test_cli_delivery.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import pytest
from rich.console import Console
from temporalio.testing import WorkflowEnvironment

from aicd.dashboard.views import _until
from aicd.messages import DeliveryStatus, TargetStatus
from aicd.status_view import render_status
from aicd.testing.engine import temporal_env
from tests.conftest import REPO_ROOT, RunAicd, aicd_env
from tests.helpers_spec import MINIMAL, rel
from tests.test_prometheus_tls import self_signed

__all__ = ["temporal_env"]

# Modules that must not load before a command that needs them runs.
HEAVY = ("temporalio", "numpy", "scipy", "kubernetes", "starlette", "jinja2", "uvicorn", "git", "slack_sdk")
CHECKOUT = "delivery_specs/checkout-api.yaml"
SHA = "4f2c1d9e5b6a4f2c1d9e5b6a4f2c1d9e5b6a4f2c"
# Every command that prints data, with arguments that make it print (or at least parse its options).
DATA_COMMANDS = ("validate", "plan", "status", "list", "analyze", "init", "argocd manifests")


def imported_modules(*args: str) -> set[str]:
    """Top-level names of the modules `python -m aicd ARGS` imports (Python's own -X importtime log)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "aicd", *args],
        cwd=REPO_ROOT,
        env=aicd_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    names = set()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", line)
        if match:
            names.add(match.group(1).split(".")[0])
    assert names, done.stderr[-2000:]
    return names


@pytest.mark.parametrize("args", [("--help",), ("validate", rel(MINIMAL))], ids=["help", "validate"])
def test_quick_commands_import_no_heavy_module(args: tuple[str, ...]) -> None:
    loaded = imported_modules(*args)
    assert "typer" in loaded  # the log is read right: the CLI's own framework shows
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_version(run_aicd: RunAicd) -> None:
    done = run_aicd("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"aicd {version('aic-delivery')}"


def test_completion_is_offered(run_aicd: RunAicd) -> None:
    out = run_aicd("--help").stdout
    assert "--install-completion" in out and "--show-completion" in out


def _commands(run_aicd: RunAicd) -> list[tuple[str, ...]]:
    """Every command and sub-command, from the help screens themselves."""
    found: list[tuple[str, ...]] = []
    pending: list[tuple[str, ...]] = [()]
    while pending:
        prefix = pending.pop()
        out = run_aicd(*prefix, "--help", env=aicd_env(COLUMNS="200")).stdout
        section = out.split("Commands", 1)[1] if "Commands" in out else ""
        subs = [tuple([*prefix, m]) for m in re.findall(r"^│ (\w[\w-]*)\s{2,}", section, re.M)]
        if prefix:
            found.append(prefix)
        pending += [sub for sub in subs if sub not in found]
    return found


def test_help_has_no_type_artefacts(run_aicd: RunAicd) -> None:
    commands = _commands(run_aicd)
    assert ("validate",) in commands and ("argocd", "manifests") in commands and len(commands) > 15
    for command in [(), *commands]:
        out = run_aicd(*command, "--help", env=aicd_env(COLUMNS="200")).stdout
        for artefact in ("<list[", "<bool>", "{PATH", "{SPEC", "{ID", "{spec}"):
            assert artefact not in out, (command, artefact, out)


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_every_data_command_has_output_option(run_aicd: RunAicd, command: str) -> None:
    out = run_aicd(*command.split(), "--help", env=aicd_env(COLUMNS="200")).stdout
    assert re.search(r"--output\S*\s+-o\S*\s+<text\|json>", out), out


def test_output_json_and_old_spellings_agree(run_aicd: RunAicd) -> None:
    new = run_aicd("validate", "-o", "json", rel(MINIMAL))
    old = run_aicd("validate", "--format", "json", rel(MINIMAL))
    assert new.returncode == old.returncode == 0
    assert json.loads(new.stdout) == json.loads(old.stdout) and json.loads(new.stdout)["ok"] is True
    plan = run_aicd("plan", CHECKOUT, "--revision", SHA, "--output", "json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["revision"] == SHA
    bad = run_aicd("plan", CHECKOUT, "-o", "yaml")
    assert bad.returncode == 2 and "yaml" in bad.stderr


def test_temporal_unreachable_says_what_to_do(run_aicd: RunAicd, tmp_path: Path) -> None:
    for args in (
        ("status", "delivery-x-0"),
        ("list", "-o", "json"),
        ("worker", "--state-dir", str(tmp_path)),
    ):
        done = run_aicd(*args, env=aicd_env(TEMPORAL_ADDRESS="127.0.0.1:1"))
        assert done.returncode == 1 and done.stdout == ""
        line = done.stderr.strip()
        assert len(line.splitlines()) == 1, line
        assert line.startswith("aicd: cannot reach Temporal at 127.0.0.1:1:"), line
        assert "`aicd dev`" in line and "TEMPORAL_ADDRESS" in line and "tonic" not in line, line


async def test_wrong_temporal_tls_settings_are_named_not_reported_as_unreachable(
    run_aicd: RunAicd, tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    """A malformed client key or certificate, or TLS against a plaintext server, is a usage error that
    names the setting; the server is there (the session's dev server, plaintext)."""
    address = temporal_env.client.service_client.config.target_host
    cert, key = self_signed(tmp_path)
    malformed = tmp_path / "malformed.pem"
    malformed.write_text("not PEM\n")
    for cert_path, key_path, expected in (
        (cert, malformed, f"TEMPORAL_TLS_CLIENT_KEY_PATH={malformed} is not a PEM private key"),
        (malformed, key, f"TEMPORAL_TLS_CLIENT_CERT_PATH={malformed} holds no PEM certificate"),
        (
            cert,
            key,
            "TLS is on (TEMPORAL_TLS* or the profile), but the server did not answer in TLS (a plaintext server?)",
        ),
    ):
        done = run_aicd(
            "status",
            "delivery-x-0",
            env=aicd_env(
                TEMPORAL_ADDRESS=address,
                TEMPORAL_TLS_CLIENT_CERT_PATH=str(cert_path),
                TEMPORAL_TLS_CLIENT_KEY_PATH=str(key_path),
            ),
        )
        line = done.stderr.strip()
        assert done.returncode == 2 and len(line.splitlines()) == 1, (done.returncode, line)
        assert line == f"aicd: cannot connect to Temporal at {address}: {expected}", line


async def test_long_running_commands_say_the_same_line_when_temporal_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`aicd watch` and `aicd dashboard` connect on first use and keep running: what they log is the line the
    other commands print, not the transport's text."""
    from aicd.cli.app import TemporalUnreachable, connect_explained

    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    with pytest.raises(TemporalUnreachable) as raised:
        await connect_explained()
    line = str(raised.value)
    assert line.startswith("cannot reach Temporal at 127.0.0.1:1:"), line
    assert "`aicd dev`" in line and "tonic" not in line and "\n" not in line, line


def _first_line(command: list[str], timeout: float = 30) -> str:
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=aicd_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + timeout
        line = ""
        while not line and time.monotonic() < deadline:
            line = process.stderr.readline()
        return line
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("command", ["serve", "watch"])
def test_log_format_json_on_gateway_and_watch(command: str, tmp_path: Path, run_aicd: RunAicd) -> None:
    args = [sys.executable, "-m", "aicd", command, "--specs", str(tmp_path), "--state-dir", str(tmp_path)]
    if command == "serve":
        args += ["--port", "0", "--no-dashboard"]
    line = _first_line([*args, "--log-format", "json"])
    record = json.loads(line)
    assert record["logger"] == "aicd.serve" and record["level"] in ("info", "warning"), record
    bad = run_aicd(*args[3:], "--log-format", "xml")
    assert bad.returncode == 2 and "--log-format must be one of text, json" in bad.stderr


# --- status: order, timed pauses, how to release a wait -------------------------------------------------------


def _text(status: DeliveryStatus, now: datetime | None = None) -> str:
    console = Console(width=160, record=True)
    console.print(render_status(status, now=now))
    return console.export_text()


def test_status_lists_targets_in_delivery_order_not_by_name() -> None:
    # Temporal's JSON hands the targets back sorted by name (prod-a before staging).
    status = DeliveryStatus(
        "delivery-x-1",
        "x",
        "a" * 40,
        "x:1",
        "running",
        targets={
            name: TargetStatus(name, stage, "git")
            for name, stage in (("prod-a", "production"), ("staging", "staging"), ("prod-b", "production"))
        },
        target_order=["staging", "prod-b", "prod-a"],
    )
    ordered = status.in_delivery_order()
    assert list(ordered.targets) == ["staging", "prod-b", "prod-a"]
    text = _text(ordered)
    assert text.index("staging  ") < text.index("prod-b") < text.index("prod-a")
    # A status from an older worker (no order known) still lists every target.
    legacy = DeliveryStatus("d", "x", "a" * 40, "x:1", "running", targets=dict(status.targets))
    assert sorted(legacy.in_delivery_order().targets) == ["prod-a", "prod-b", "staging"]


def test_timed_pause_shows_time_left_and_human_wait_says_how_to_release() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    waiting = TargetStatus(
        "prod",
        "production",
        "git",
        "progressing",
        1,
        "pause",
        wait_until=(now + timedelta(seconds=250)).isoformat(),
    )
    status = DeliveryStatus("delivery-x-2", "x", "a" * 40, "x:1", "running", targets={"prod": waiting})
    assert "1:pause (4m10s left)" in _text(status, now)
    # The dashboard shows the end as a clock time: right however long its page stays open.
    assert _until(waiting) == " (until 12:04:10 UTC)"
    assert "1:pause (0s left)" in _text(status, now + timedelta(hours=1))
    paused = DeliveryStatus(
        "delivery-x-2",
        "x",
        "a" * 40,
        "x:1",
        "paused",
        paused=True,
        pause_reason="lunch",
        targets={"prod": waiting},
    )
    text = _text(paused, now)
    assert "clock stopped" in text and "`aicd resume delivery-x-2` resumes" in text
    human = TargetStatus(
        "prod",
        "production",
        "git",
        "awaiting-resume",
        1,
        "pause",
        message="waiting at `pause: {}` until a human resumes it",
    )
    text = _text(DeliveryStatus("delivery-x-3", "x", "a" * 40, "x:1", "running", targets={"prod": human}))
    assert "`aicd resume delivery-x-3` releases it" in text


def test_failure_text_is_said_once() -> None:
    message = "2-analysis: errors above tolerance"
    failed = TargetStatus("prod", "production", "git", "rolled-back", message=message)
    status = DeliveryStatus(
        "delivery-x-4", "x", "a" * 40, "x:1", "failed", reason=f"prod: {message}", targets={"prod": failed}
    )
    assert _text(status).count(message) == 1


def test_setup_puts_aicd_on_the_path(tmp_path: Path) -> None:
    """After scripts/setup.sh, `aicd` works as typed: linked into a directory already on PATH."""
    bin_dir = tmp_path / ".local" / "bin"
    bin_dir.mkdir(parents=True)
    path = f"{bin_dir}:/usr/bin:/bin"
    env = {"HOME": str(tmp_path), "PATH": path, "LANG": "C.UTF-8"}
    done = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    link = bin_dir / "aicd"
    assert link.is_symlink() and link.resolve() == (REPO_ROOT / ".venv" / "bin" / "aicd").resolve()
    typed = subprocess.run(["aicd", "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert typed.returncode == 0 and typed.stdout.startswith("aicd "), typed.stderr
    # A file of that name that is not such a link is never replaced: setup says what to type instead.
    link.unlink()
    link.write_text("#!/bin/sh\necho mine\n")
    again = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and link.read_text() == "#!/bin/sh\necho mine\n"
    assert f'export PATH="{REPO_ROOT}/.venv/bin:$PATH"' in again.stdout


def test_import_help_names_the_default_track_label(run_aicd: RunAicd) -> None:
    # The importer loads inside its command; its help still states the default the command applies.
    from aicd.argo_rollouts.templates import DEFAULT_TRACK_LABEL

    out = run_aicd("import", "argo-rollout", "--help", env=aicd_env(COLUMNS="200")).stdout
    assert f"(default: {DEFAULT_TRACK_LABEL})" in out, out
