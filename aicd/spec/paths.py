"""The one rule for paths a spec names inside the GitOps repository (a target's values file, an edge fleet's
file): relative, '/'-separated, and staying inside the work tree and out of Git's own directory. Validation
uses it on the spec's text; the run must refuse the same paths after placeholders are filled."""

from __future__ import annotations

import re
from collections.abc import Set

from aicd.spec.placeholders import ALLOWED_VARIABLES, PLACEHOLDER

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Placeholders whose values are plain names or hex digits, so they cannot add a '/' or '..' to a path.
TARGET_PATH_PLACEHOLDERS = frozenset({"site", "target", "revision", "revision.short"})


def repo_path_problem(path: str, placeholders: Set[str] = TARGET_PATH_PLACEHOLDERS) -> str | None:
    """What is wrong with `path` as a file inside a Git repository, or None. A placeholder of `placeholders`
    counts as one ordinary path part; any other known placeholder is refused (its value could be anything)."""
    for name in PLACEHOLDER.findall(path):
        if name in ALLOWED_VARIABLES and name not in placeholders:
            if not placeholders:
                return f"holds {{{{ {name} }}}}, but no placeholder is filled in this path"
            allowed = ", ".join(f"{{{{ {n} }}}}" for n in sorted(placeholders))
            return f"holds {{{{ {name} }}}}, whose value may not be a plain name; a path may hold {allowed}"
    text = PLACEHOLDER.sub("x", path)
    if not text:
        return "is empty"
    if control := _CONTROL.search(text):
        return f"contains the control character {control.group()!r}"
    if "\\" in text:
        return "contains a backslash; Git paths are separated by '/'"
    if text.startswith("/"):
        return "is absolute; name a path inside the GitOps repository"
    parts = text.split("/")
    if ".." in parts:
        return "leaves the GitOps repository through '..'"
    if any(part.lower().rstrip(". ") == ".git" for part in parts):  # `.GIT`, `.git.`: the same on some disks
        return "reaches into Git's own .git directory"
    if "." in parts or "" in parts:
        return "has a '.' or empty part ('./', '//' or a trailing '/'); write the plain relative path"
    return None
