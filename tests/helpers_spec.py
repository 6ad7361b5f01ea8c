"""Helpers of the spec tests: fixture files, golden outputs, and invariants every validation result keeps.

The broken fixtures live in tests/data/broken/NAME.yaml, each beginning with a `# check: <semantic check>`,
`# schema: ...` or `# yaml: ...` comment; NAME.expected holds the exact `aicd validate` lines for it (paths
relative to the repository root). After a deliberate change of wording or position, regenerate them with
`python tests/helpers_spec.py --regen` and review the diff.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT / "tests" / "data"
BROKEN = DATA / "broken"
VALID = DATA / "valid"
EXAMPLE_SPECS = sorted((REPO_ROOT / "delivery_specs").glob("*.yaml"))
MINIMAL = VALID / "minimal.yaml"

# One validation problem as `aicd validate` prints it.
ERROR_LINE = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<path>\$.*?): (?P<message>.+)$"
)


def rel(path: Path) -> str:
    """`path` as the tests name it on the command line (relative to the repository root)."""
    return path.resolve().relative_to(REPO_ROOT).as_posix()


def broken_fixtures() -> list[Path]:
    return sorted(BROKEN.glob("*.yaml"))


def fixture_header(path: Path) -> tuple[str, str]:
    """(kind, detail) of the fixture's first-line comment: ("check", "check_unique_names"), ("schema", ...)."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = re.match(r"^# (check|schema|yaml): (.+)$", first)
    assert match, f"{path.name}: first line must be '# check|schema|yaml: ...', not {first!r}"
    return match.group(1), match.group(2).strip()


def expected_lines(path: Path) -> list[str]:
    return path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()


def example_documents() -> list[tuple[str, bytes, Any]]:
    """(name, raw bytes, parsed document) of every valid spec the tests mutate."""
    found = []
    for path in [*EXAMPLE_SPECS, MINIMAL]:
        raw = path.read_bytes()
        found.append((path.name, raw, yaml.safe_load(raw)))
    return found


def regenerate_goldens() -> None:
    for path in broken_fixtures():
        done = subprocess.run(
            [sys.executable, "-m", "aicd", "validate", rel(path)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        path.with_suffix(".expected").write_text(done.stdout, encoding="utf-8")
        print(f"{path.with_suffix('.expected').name}: {len(done.stdout.splitlines())} line(s)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--regen"]:
        regenerate_goldens()
    else:
        print(__doc__)
