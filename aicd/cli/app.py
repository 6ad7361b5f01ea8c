"""The `aicd` command: one Typer app; each area of commands lives in its own module of this package.

Start-up stays quick (`aicd --help`, `aicd validate`): command modules import Temporal, the web stack, Git
and the embedded stack inside the commands that use them, never at module level (tests/test_cli_conventions.py
checks `sys.modules` after `aicd --help`)."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer import core as typer_core

if TYPE_CHECKING:
    from temporalio.client import Client

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and the answer is "no" (refused update, unknown ID, unreachable Temporal)
EXIT_USAGE = 2  # bad arguments or invalid input


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


def output_option(*aliases: str) -> Any:
    """The one `-o/--output text|json` option of every command that prints data; `aliases` keep a
    command's older spelling working (`--format`/`-f`)."""
    return typer.Option(
        "--output", "-o", *aliases, help="text for people; json for machines.", case_sensitive=False
    )


OutputOption = Annotated[OutputFormat, output_option()]
JsonFlag = Annotated[bool, typer.Option("--json", hidden=True, help="Same as -o json.")]


LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="AICD_LOG_FORMAT",
        help="text, or json: one object per line (with the delivery context where there is one).",
    ),
]


def setup_logging(level: str, log_format: str) -> None:
    """The process's logging in `log_format`; a bad value is a usage error naming the choices."""
    from aicd.observability.logs import LOG_FORMATS, configure_logging

    if log_format not in LOG_FORMATS:
        raise fail(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}", EXIT_USAGE)
    configure_logging(level, log_format)


def wants_json(output: OutputFormat, json_flag: bool = False) -> bool:
    return json_flag or output is OutputFormat.json


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"aicd {version('aic-delivery')}")
        except PackageNotFoundError:
            typer.echo("aicd (not installed as a package)")
        raise typer.Exit(EXIT_OK)


app = typer.Typer(
    name="aicd",
    help=(
        "GitOps workflow engine and progressive-delivery orchestrator on Temporal.\n\n"
        "First steps: `aicd demo` (a live tour), `aicd dev` (the embedded stack), `aicd init --list`"
        " (app templates), `aicd deliver SPEC --revision REF`."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """GitOps workflow engine and progressive-delivery orchestrator on Temporal."""


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print one clear line to stderr and return the Exit to raise."""
    typer.echo(f"aicd: {message}", err=True)
    return typer.Exit(code)


TEMPORAL_HINT = "start the embedded stack with `aicd dev` (another shell), or set TEMPORAL_ADDRESS=host:port"


# What the client's TLS layer says (rustls through tonic) when the TLS settings are wrong, not the network:
# (its word, the setting to fix, what is wrong with it).
_TLS_SETTING_PROBLEMS = (
    ("PrivateKeyParseError", "TEMPORAL_TLS_CLIENT_KEY_PATH", "is not a PEM private key"),
    ("NoCertificatesPresented", "TEMPORAL_TLS_CLIENT_CERT_PATH", "holds no PEM certificate"),
    ("InvalidContentType", "", "the server did not answer in TLS (a plaintext server?)"),
)


def temporal_unreachable(address: str, error: BaseException) -> typer.Exit:
    """The one line for a Temporal that does not answer: where we looked and what to do. Wrong TLS settings
    are a usage error (exit 2) that names the setting."""
    problem = tls_setting_problem(address, error)
    if problem is not None:
        return fail(problem, EXIT_USAGE)
    return fail(_not_answering(address, error))


def tls_setting_problem(address: str, error: BaseException) -> str | None:
    """`cannot connect to Temporal at X: SETTING (value) <what is wrong>` when the TLS layer refused our own
    settings; None for anything else."""
    text = str(error)
    for word, setting, wrong in _TLS_SETTING_PROBLEMS:
        if word not in text:
            continue
        if not setting:
            return f"cannot connect to Temporal at {address}: TLS is on (TEMPORAL_TLS* or the profile), but {wrong}"
        value = os.environ.get(setting)
        where = f"{setting}={value}" if value else f"{setting} (or the profile's TLS settings)"
        return f"cannot connect to Temporal at {address}: {where} {wrong}"
    return None


def unreachable_message(address: str, error: BaseException) -> str:
    """`cannot reach Temporal at X: <what to do>`. The transport's own text (`tonic::transport::Error(...)`) is
    left out; any other reason (TLS, API key) is kept; wrong TLS settings are named (tls_setting_problem)."""
    return tls_setting_problem(address, error) or _not_answering(address, error)


def _not_answering(address: str, error: BaseException) -> str:
    text = " ".join(str(error).split())
    transport = not text or any(
        word in text for word in ("tonic", "transport", "Connection refused", "connect")
    )
    detail = "" if transport else f" ({text[:200]})"
    return f"cannot reach Temporal at {address}{detail}: {TEMPORAL_HINT}"


class TemporalUnreachable(RuntimeError):
    """Raised by the long-running commands' lazy connection: logged as its one line, retried on next use."""


async def connect_explained() -> Client:
    """connect() for `aicd watch` and `aicd dashboard`, which connect on first use and keep running: a
    Temporal that does not answer is reported as the same one line as the CLI's, not the transport's text."""
    from aicd.temporal import DEFAULT_ADDRESS, connect

    try:
        return await connect()
    except Exception as error:
        where = os.environ.get("TEMPORAL_ADDRESS") or DEFAULT_ADDRESS
        raise TemporalUnreachable(unreachable_message(where, error)) from None


# --- help without the type artefacts of Typer's renderer ---------------------------------------------------------
# Typer prints `<bool>` after flags, `<list[Path]>` after arguments and `{SPEC}` in the usage line; the
# argument's name and help already say what it is, so help shows names only (click's own convention).


def _argument_type(self: typer_core.TyperArgument, ctx: Any) -> str | None:
    return None


def _option_type(self: typer_core.TyperOption, ctx: Any) -> str | None:
    if self.metavar is not None:
        return self.metavar
    if self.is_flag:
        return None
    shown = self.display_type(ctx)
    if shown.startswith("<list[") and shown.endswith("]>"):
        shown = f"<{shown[6:-2]}>"
    return shown + ("..." if self.nargs != 1 or self.multiple else "")


def _usage_name(self: typer_core.TyperArgument) -> str:
    name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
    return name if self.nargs == 1 or name.endswith("...") else name + "..."


typer_core.TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign,assignment]
typer_core.TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
typer_core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
