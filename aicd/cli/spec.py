"""`aicd validate` and `aicd plan`: check delivery specs and show what a delivery of one would do.

Any input gets a clean answer: every problem is one line `file:line:col: error: <json.path>: <message>`
(line and column 0 when the problem is the file itself: missing, unreadable, too big, not a spec directory).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import unicodedata
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aicd.cli.app import EXIT_OK, EXIT_USAGE, OutputFormat, app, fail, output_option

# The spec loader (jsonschema) and the planner load inside the commands: `aicd --help` stays quick.
if TYPE_CHECKING:
    from aicd.spec.errors import SpecError
    from aicd.spec.model import DeliverySpec

# Without --revision and without a local source repository to ask: Git's all-zero "null" SHA, announced on
# stderr, so a preview never passes for a real revision.
PLACEHOLDER_REVISION = "0" * 40


# -o/--output, and the older --format/-f
FormatOption = Annotated[OutputFormat, output_option("--format", "-f")]


# --- reading --------------------------------------------------------------------------------------------------


def one_line(text: str) -> str:
    """`text` safe to print as a single terminal line: control, format (bidi), separator and surrogate
    characters escaped, so no spec content can break the one-error-per-line contract or spoof output."""
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category[0] == "C" or category in ("Zl", "Zp"):
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def _file_error(file: str, message: str) -> SpecError:
    from aicd.spec.errors import SpecError

    return SpecError(file, 0, 0, "$", message)


def read_spec(path: Path, notes: list[str] | None = None) -> tuple[DeliverySpec | None, list[SpecError]]:
    """Parse the spec file at `path`; never raises for anything about the file or its content. `notes`
    receives what the reader should know about a valid spec (how Argo Rollouts templates were translated)."""
    from aicd.spec.loader import parse_spec_bytes
    from aicd.spec.yamlsafe import MAX_FILE_BYTES

    file = str(path)
    try:
        info = path.stat()
    except OSError as error:
        return None, [_file_error(file, f"cannot read: {error.strerror or error}")]
    if stat.S_ISDIR(info.st_mode):
        return None, [_file_error(file, "is a directory")]
    if not stat.S_ISREG(info.st_mode):
        return None, [_file_error(file, "not a regular file")]
    if info.st_size > MAX_FILE_BYTES:
        return None, [_file_error(file, f"file is {info.st_size} bytes; the limit is {MAX_FILE_BYTES} bytes")]
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)  # the file may grow after stat()
    except OSError as error:
        return None, [_file_error(file, f"cannot read: {error.strerror or error}")]
    if len(raw) > MAX_FILE_BYTES:
        return None, [_file_error(file, f"file is over the limit of {MAX_FILE_BYTES} bytes")]
    try:
        return parse_spec_bytes(raw, file, notes)
    except RecursionError:
        return None, [_file_error(file, "nesting too deep")]


def collect(paths: list[Path]) -> tuple[list[Path], list[SpecError]]:
    """The spec files named and found in the directories named (each once), and errors for names that
    exist as neither or name a directory without specs."""
    from aicd.spec.loader import SPEC_SUFFIXES, is_argo_manifest_file

    files: list[Path] = []
    errors: list[SpecError] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for path in paths:
        if path.is_dir():
            try:
                found = sorted(
                    p
                    for p in path.rglob("*")
                    if p.suffix in SPEC_SUFFIXES and p.is_file() and not is_argo_manifest_file(p)
                )
            except OSError as error:
                errors.append(_file_error(str(path), f"cannot list: {error.strerror or error}"))
                continue
            if not found:
                suffixes = ", ".join(f"*{suffix}" for suffix in SPEC_SUFFIXES)
                errors.append(_file_error(str(path), f"no delivery specs ({suffixes}) in this directory"))
            for file in found:
                add(file)
        else:
            add(path)  # missing or unreadable files are reported by read_spec, in order
    return files, errors


def _echo(text: str, err: bool = False) -> None:
    typer.echo(one_line(text), err=err)


def _tolerant_output() -> None:
    """Never die on printing: a terminal or pipe that cannot encode a character gets an escape."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


# --- aicd validate --------------------------------------------------------------------------------------------


@app.command()
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH...",
            help="Spec files, or directories: every *.yaml / *.yml inside (recursively) is checked.",
            show_default=False,
        ),
    ],
    output: FormatOption = OutputFormat.text,
) -> None:
    """Check delivery specs against the schema and the semantic rules.

    Prints `ok: FILE` for each valid spec and one line `file:line:col: error: <json.path>: <message>` for every problem (all problems of a file at once; line and column 0 when the problem is the file itself).

    A spec whose analysis steps name Argo Rollouts AnalysisTemplates gets `note: FILE: <json.path>: ...` lines saying how each template metric was translated and what the judge does instead of its successCondition/failureCondition.

    Exit status: 0 when every spec is valid, 2 otherwise. With -o json: {"ok", "files": [{"file", "ok", "errors", "notes"}], "errors"}.
    """
    from aicd.spec.errors import SpecError

    _tolerant_output()
    files, collect_errors = collect(paths)
    results: list[dict[str, Any]] = []
    all_errors: list[SpecError] = list(collect_errors)
    for error in collect_errors:
        results.append({"file": error.file, "ok": False, "errors": [error.to_dict()]})
    for path in files:
        notes: list[str] = []
        _spec, errors = read_spec(path, notes)
        all_errors.extend(errors)
        results.append(
            {
                "file": str(path),
                "ok": not errors,
                "errors": [error.to_dict() for error in errors],
                "notes": notes,
            }
        )

    if output is OutputFormat.json:
        document = {
            "ok": not all_errors,
            "files": results,
            "errors": [error.to_dict() for error in all_errors],
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        for result in results:
            if result["ok"]:
                _echo(f"ok: {result['file']}")
            for note in result.get("notes", ()):
                _echo(f"note: {note}")
            for error in result["errors"]:
                _echo(str(SpecError(**error)))
        bad = sum(1 for result in results if not result["ok"])
        if all_errors:
            _echo(f"aicd: {len(all_errors)} error(s) in {bad} of {len(results)} file(s)", err=True)
    raise typer.Exit(EXIT_USAGE if all_errors else EXIT_OK)


# --- aicd plan ------------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str | None:
    # The ceiling keeps git from answering for an enclosing repository when `repo` is none itself.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CEILING_DIRECTORIES": str(repo.resolve().parent)}
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, env=env
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def local_source_revision(spec: DeliverySpec) -> tuple[str, str] | None:
    """(SHA, ref) of the newest commit on a branch matching the spec's globs, when the source repository is
    a local path (relative paths count from the current directory); else None. HEAD when no branch matches."""
    from aicd.plan import REVISION

    repo = Path(spec.source_repo).expanduser()
    if "://" in spec.source_repo or not repo.exists():
        return None
    listing = _git(
        repo, "for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname:short)", "refs/heads"
    )
    for line in (listing or "").splitlines():
        sha, _, branch = line.partition(" ")
        if any(fnmatchcase(branch, glob) for glob in spec.branches):
            return sha, branch
    head = _git(repo, "rev-parse", "--verify", "-q", "HEAD")
    return (head.strip(), "HEAD") if head and REVISION.fullmatch(head.strip()) else None


@app.command()
def plan(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="The delivery spec.", show_default=False)],
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision",
            "-r",
            help=(
                "Commit SHA to plan (7 to 64 hex digits). Default: when the spec's source repo is a local Git"
                " repository, the newest commit on a branch matching spec.source.branches (else its HEAD);"
                " otherwise the all-zero placeholder 0000000000000000000000000000000000000000, announced on stderr."
            ),
            show_default=False,
        ),
    ] = None,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Validate SPEC and show the delivery it would run.

    Build, tests, provisioning, then each stage's approval gate, waves, targets and canary steps, exactly as the workflows execute them (-o json: the plan as data).

    Exit status 2 when the spec is invalid (the `aicd validate` lines, on stderr) or the revision is not a commit SHA.
    """
    from aicd.plan import REVISION, build_plan, render_tree
    from aicd.redact import redact_credentials

    _tolerant_output()
    if revision is not None and not REVISION.fullmatch(revision):
        raise fail(
            f"--revision {one_line(repr(revision))} is not a commit SHA (7 to 64 hex digits)", EXIT_USAGE
        )
    notes: list[str] = []
    spec, errors = read_spec(spec_path, notes)
    if errors or spec is None:
        if output is OutputFormat.json:
            typer.echo(json.dumps({"ok": False, "errors": [error.to_dict() for error in errors]}, indent=2))
        else:
            for error in errors:
                _echo(str(error), err=True)
        raise typer.Exit(EXIT_USAGE)
    if revision is None:
        found = local_source_revision(spec)
        if found is not None:
            revision, ref = found
            _echo(
                f"aicd: planning {ref} of {spec.source_repo} at {revision} (pass --revision to choose)",
                err=True,
            )
        else:
            revision = PLACEHOLDER_REVISION
            _echo(f"aicd: no --revision given; planning with the placeholder revision {revision}", err=True)
    try:
        delivery = build_plan(spec, revision)
    except ValueError as error:
        raise fail(one_line(str(error)), EXIT_USAGE) from None
    if output is OutputFormat.json:
        data = delivery.to_dict()
        for key in ("source_repo", "gitops_repo"):  # a token in a URL's user name is never printed
            data[key] = redact_credentials(data[key])
        typer.echo(json.dumps(data, indent=2, allow_nan=False))
    else:
        for line in render_tree(delivery).splitlines():
            _echo(line)
        for note in notes:  # how Argo Rollouts templates became aicd metrics
            _echo(f"note: {note}", err=True)
