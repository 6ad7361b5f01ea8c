"""Rewrites imports of the old top-level packages to the one `aicd` namespace, in every .py file of the tree:

    from activities.gitops import X      ->  from aicd.activities.gitops import X
    import activities.sync               ->  import aicd.activities.sync
    from workflows import ALL_WORKFLOWS  ->  from aicd.workflows import ALL_WORKFLOWS
    from worker import build_worker      ->  from aicd.worker import build_worker

and module names spelled in strings ("activities.drivers.git" -> "aicd.activities.drivers.git"). It never
rewrites itself. Idempotent: a name
already under `aicd.` is left alone, so it can run again after merging branches written against the old
layout:

    .venv/bin/python scripts/codemod_namespace.py [PATH...]   # default: the repository; prints what it changed
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".git", "build", "dist", ".aicd", "node_modules", "__pycache__"}
OLD_PACKAGES = ("activities", "workflows")

# Modules that moved inside the namespace: the embedded stack into aicd.dev, the shared test infrastructure
# into aicd.testing. Longest names first; a name is rewritten with what follows it (`aicd.embedded.ports` ->
# `aicd.dev.ports`). The old names are split ("aicd" ".embedded") so this script never rewrites itself.
MOVED = {
    "aicd.devstack": "aicd.dev.temporal",
    "aicd.embedded": "aicd.dev",
    "aicd.demo_app": "aicd.dev.demo_app",
    "aicd.demo": "aicd.dev.demo",
    "tests.standins": "aicd.testing.standins",
    "tests.helpers_engine": "aicd.testing.engine",
    "tests.chaos.harness": "aicd.testing.chaos",
}
_MOVED = re.compile(
    r"(?<![\w.])(?P<name>"
    + "|".join(re.escape(name) for name in sorted(MOVED, key=len, reverse=True))
    + r")(?![\w])"
)

# `from activities...`, `import activities...`, `from workflows...`, at the start of a (possibly indented)
# line; never a name with a dot or a word character before it (`aicd.activities`, `my_workflows`).
_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)(?P<keyword>from|import)[ \t]+(?P<name>(?:activities|workflows)(?:\.\w+)*)\b", re.M
)
# `from worker import ...` / `import worker`: the top-level worker module is now aicd.worker.
_WORKER = re.compile(r"^(?P<indent>[ \t]*)(?P<keyword>from|import)[ \t]+worker\b(?!\.)", re.M)
# Module names in strings: "aicd.activities.drivers.git", 'aicd.workflows.edge_fleet'.
_STRING = re.compile(r"(?P<quote>[\"'])(?P<name>(?:activities|workflows)\.\w+(?:\.\w+)*)(?P=quote)")


def rewrite(text: str) -> str:
    text = _IMPORT.sub(lambda m: f"{m['indent']}{m['keyword']} aicd.{m['name']}", text)
    text = _WORKER.sub(lambda m: f"{m['indent']}{m['keyword']} aicd.worker", text)
    text = _STRING.sub(lambda m: f"{m['quote']}aicd.{m['name']}{m['quote']}", text)
    return _MOVED.sub(lambda m: MOVED[m["name"]], text)


def rewrite_spec(text: str) -> str:
    """A delivery spec's commands name modules too (`python -m aicd.demo_app.build`)."""
    return _MOVED.sub(lambda m: MOVED[m["name"]], text)


def python_files(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_file() and path.suffix == ".py":
            found.append(path)
            continue
        for file in sorted(path.rglob("*.py")):
            relative = file.relative_to(path).parts
            if SKIP_DIRS.isdisjoint(relative) and not file.is_symlink() and not _through_link(file, path):
                found.append(file)
    return found


def _through_link(file: Path, root: Path) -> bool:
    """A file reached through a symbolic link to a directory (aicd/workflows -> ../workflows) is rewritten
    where it really lives, once."""
    current = file.parent
    while current != root and current != current.parent:
        if current.is_symlink():
            return True
        current = current.parent
    return False


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv] or [ROOT]
    rewritten: list[str] = []
    for file in python_files(paths):
        if file.resolve() == Path(__file__).resolve():
            continue
        text = file.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            file.write_text(new, encoding="utf-8")
            rewritten.append(str(file))
            print(f"rewrote {file}")
    for spec in sorted((ROOT / "delivery_specs").glob("*.yaml")) if not argv else []:
        text = spec.read_text(encoding="utf-8")
        if (new := rewrite_spec(text)) != text:
            spec.write_text(new, encoding="utf-8")
            print(f"rewrote {spec}")
    changed = len(rewritten)
    print(f"{changed} file(s) changed")
    if rewritten:  # the new names sort differently: put the import blocks back in order
        subprocess.run(
            [str(Path(sys.executable).parent / "ruff"), "check", "--fix", "--select", "I", "-q", *rewritten],
            check=False,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
