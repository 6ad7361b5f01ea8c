"""Add a label matcher to every series selector of a PromQL query (what prom-label-proxy does to enforce a
tenant label): Argo Rollouts queries measure one population, aicd's judge queries the canary and the stable
version apart, so `rate(http_requests_total{code=~"5.."}[1m])` becomes
`rate(http_requests_total{code=~"5..",track="{{ track }}"}[1m])`.

A small lexer, not a parser: it knows strings, comments, range brackets, matcher braces, function calls,
aggregations with `by`/`without` label lists, vector-matching keywords (`on`, `ignoring`, `group_left`,
`group_right`) and the other keywords; every identifier left over is a metric name. Everything else is copied
as written, so the result differs from the query only by the added matchers."""

from __future__ import annotations

import re
from collections.abc import Callable

_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"[0-9.][0-9A-Za-z_.]*")  # numbers and durations: 0.95, 1e3, 0x1f, 5m, 1h30m
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Followed by a parenthesised list of label names, not of expressions.
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", *_LABEL_LISTS}
_VECTOR_MATCHING = frozenset({"on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
}  # fmt: skip


class PromQLError(ValueError):
    """The query cannot be read (an unclosed string, brace or bracket)."""


def inject_label(query: str, label: str, value: str) -> str:
    """`query` with `label="value"` added to each series selector that does not match on `label` already."""
    matcher = f'{label}="{value}"'
    return _map_selectors(query, lambda _name, braces: _with_matcher(braces or "{}", label, matcher))


def selectors(query: str) -> list[str]:
    """Each series selector of the query as written, in order: `x{a="b"}`, `{__name__="x"}`, `up`."""
    found: list[str] = []

    def keep(name: str, braces: str) -> str:
        found.append(name + braces)
        return braces

    _map_selectors(query, keep)
    return found


def vector_matching(query: str) -> bool:
    """Whether the query joins vectors on labels (`on(...)`, `ignoring(...)`, `group_left`, `group_right`),
    as in filtering a metric by `* on(pod) group_left kube_pod_labels{...}`; strings and comments do not
    count."""
    keywords: list[str] = []
    _map_selectors(query, lambda _name, braces: braces, keywords)
    return not _VECTOR_MATCHING.isdisjoint(keywords)


def selector_count(query: str) -> int:
    """How many series selectors the query has (a constant such as `vector(1)` has none)."""
    return len(selectors(query))


def _map_selectors(query: str, rewrite: Callable[[str, str], str], keywords: list[str] | None = None) -> str:
    """`query` with the matcher braces of each series selector replaced by `rewrite(metric name, braces)` (""
    for a selector without a name, or a name without braces); everything else as written. A `{{ placeholder }}`
    outside strings and ranges is copied as written, not read as a selector. The keywords met (lower case)
    are appended to `keywords`."""
    out: list[str] = []
    position = 0
    length = len(query)
    while position < length:
        char = query[position]
        if char in "\"'`":
            end = _string_end(query, position)
            out.append(query[position:end])
            position = end
        elif char == "#":
            end = query.find("\n", position)
            end = length if end < 0 else end
            out.append(query[position:end])
            position = end
        elif char == "[":
            end = _closing(query, position, "[", "]")
            out.append(query[position:end])
            position = end
        elif query.startswith("{{", position) and (close := query.find("}}", position)) > 0:
            out.append(query[position : close + 2])
            position = close + 2
        elif char == "{":  # a selector without a metric name: {__name__=~"..."}
            end = _closing(query, position, "{", "}")
            out.append(rewrite("", query[position:end]))
            position = end
        elif char.isdigit() or (char == "." and position + 1 < length and query[position + 1].isdigit()):
            match = _NUMBER.match(query, position)
            assert match is not None
            out.append(match.group())
            position = match.end()
        elif (match := _IDENTIFIER.match(query, position)) is not None:
            word = match.group()
            position = match.end()
            out.append(word)
            following = _skip_space(query, position)
            next_char = query[following] if following < length else ""
            lowered = word.lower()
            if keywords is not None and lowered in _KEYWORDS:
                keywords.append(lowered)
            if lowered in _LABEL_LISTS and next_char == "(":
                end = _closing(query, following, "(", ")")
                out.append(query[position:end])
                position = end
            elif next_char == "(" or lowered in _KEYWORDS:
                continue  # a function call, or a keyword
            elif (
                lowered in _AGGREGATIONS
                and _IDENTIFIER.match(query, following) is not None
                and (query[following:].split(None, 1)[0].split("(", 1)[0].lower() in ("by", "without"))
            ):
                continue  # `sum by (le) (...)`
            elif next_char == "{" and not query.startswith("{{", following):
                end = _closing(query, following, "{", "}")
                out.append(query[position:following])
                out.append(rewrite(word, query[following:end]))
                position = end
            else:
                out.append(rewrite(word, ""))
        else:
            if char in "}]":
                raise PromQLError(f"unbalanced {char!r} at offset {position}")
            out.append(char)
            position += 1
    return "".join(out)


def _skip_space(query: str, position: int) -> int:
    while position < len(query) and query[position].isspace():
        position += 1
    return position


def _string_end(query: str, start: int) -> int:
    quote = query[start]
    position = start + 1
    while position < len(query):
        if query[position] == "\\" and quote != "`":
            position += 2
            continue
        if query[position] == quote:
            return position + 1
        position += 1
    raise PromQLError(f"unclosed string starting at offset {start}")


def _closing(query: str, start: int, opening: str, closing: str) -> int:
    """The offset just past the bracket that closes the one at `start` (strings inside are skipped)."""
    depth = 0
    position = start
    while position < len(query):
        char = query[position]
        if char in "\"'`":
            position = _string_end(query, position)
            continue
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return position + 1
        position += 1
    raise PromQLError(f"unclosed {opening!r} at offset {start}")


def _with_matcher(braces: str, label: str, matcher: str) -> str:
    """`{a="b"}` -> `{a="b",<matcher>}`, unless the braces match on `label` already."""
    inner = braces[1:-1]
    if _matches_label(inner, label):
        return braces
    stripped = inner.rstrip()
    if not stripped.strip():
        return "{" + matcher + "}"
    separator = "" if stripped.endswith(",") else ","
    return "{" + stripped + separator + matcher + inner[len(stripped) :] + "}"


def _matches_label(inner: str, label: str) -> bool:
    position = 0
    expect_name = True
    while position < len(inner):
        char = inner[position]
        if char in "\"'`":
            position = _string_end(inner, position)
            expect_name = False
            continue
        if char == ",":
            expect_name = True
        elif expect_name and (match := _LABEL.match(inner, position)) is not None:
            if match.group() == label:
                return True
            position = match.end()
            expect_name = False
            continue
        position += 1
    return False
