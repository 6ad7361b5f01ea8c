"""Git's own rules for ref names, so a name Git would refuse starts nothing (webhooks, the poller).

`refname_problem` is a port of `check_refname_format` in Git's refs.c (what `git check-ref-format REF`
answers, without options); `ref_problem` adds what `git check-ref-format --branch` adds for branches: no
leading '-' (it would read as an option) and not `HEAD`. tests/test_gitrefs.py holds both against the real
`git` on a corpus of names.
"""

from __future__ import annotations

LOCK_SUFFIX = ".lock"
# Characters refs.c's `refname_disposition` marks as bad (4) or as a pattern (5, '*').
_BAD_CHARACTERS = {
    " ": "a space",
    "~": "'~'",
    "^": "'^'",
    ":": "':'",
    "?": "'?'",
    "*": "'*'",
    "[": "'['",
    "\\": "a backslash",
}


def _component_problem(component: str) -> str | None:
    last = ""
    for character in component:
        if ord(character) < 0x20 or ord(character) == 0x7F:
            return "contains a control character"
        if character in _BAD_CHARACTERS:
            return f"contains {_BAD_CHARACTERS[character]}"
        if character == "." and last == ".":
            return "contains '..'"
        if character == "{" and last == "@":
            return "contains '@{'"
        last = character
    if not component:
        return "has an empty part ('//', or a leading or trailing '/')"
    if component.startswith("."):
        return "has a part that starts with '.'"
    if component.endswith(LOCK_SUFFIX):
        return "has a part that ends with '.lock'"
    return None


def refname_problem(ref: str) -> str | None:
    """Why Git refuses `ref` as a full ref name (`git check-ref-format`), or None when it is valid."""
    if ref == "@":
        return "is '@'"
    try:
        ref.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    components = ref.split("/")
    for component in components:
        if problem := _component_problem(component):
            return problem
    if ref.endswith("."):
        return "ends with '.'"
    if len(components) < 2:
        return "has only one part"
    return None


def ref_problem(ref: str) -> str | None:
    """Why `ref` (e.g. `refs/heads/release/1.2`) must start nothing, or None: Git's ref-name rules, and for a
    branch Git's branch-name rules too."""
    if problem := refname_problem(ref):
        return problem
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    if branch is not None and branch.startswith("-"):
        return "is a branch name that starts with '-'"
    if branch == "HEAD":
        return "is a branch named HEAD"
    return None
