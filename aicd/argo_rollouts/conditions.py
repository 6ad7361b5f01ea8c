"""An Argo Rollouts metric's `successCondition`/`failureCondition` (expr-lang expressions over `result`) read
as the absolute limits aicd's judge checks on the canary: `min` and `max`.

Understood: a comparison of the measurement with a number - `result`, `result[0]`, `asFloat(result)`,
`asFloat(result[0])`, `default(result[0], 0)` or every point, `all(result, # < 1000)` / `all(result, {# < 1000})` - on either side,
several joined by `&&`, and no-data guards joined by `||` (`len(result) == 0`, `isNaN(result[0])`), which
aicd leaves to its no-data rule. Anything else (`==`, arithmetic, other functions) is refused by name: a
condition aicd cannot check is never dropped silently."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_VALUE = r"(?:result|result\[0\])"
# `default(result[0], 0)` gives a value when the query returned none: a no-data guard too.
_DEFAULT = rf"default\(\s*{_VALUE}\s*,\s*{_NUMBER}\s*\)"
_OPERAND = rf"(?:{_VALUE}|{_DEFAULT}|(?:asFloat|float)\(\s*(?:{_VALUE}|{_DEFAULT})\s*\))"
_OPERATOR = r"(?:>=|<=|>|<|==|!=)"
_COMPARISON_LEFT = re.compile(rf"^{_OPERAND}\s*(?P<op>{_OPERATOR})\s*(?P<number>{_NUMBER})$")
_COMPARISON_RIGHT = re.compile(rf"^(?P<number>{_NUMBER})\s*(?P<op>{_OPERATOR})\s*{_OPERAND}$")
_ALL = re.compile(
    rf"^all\(\s*result\s*,\s*\{{?\s*#\s*(?P<op>{_OPERATOR})\s*(?P<number>{_NUMBER})\s*\}}?\s*\)$"
)
_GUARDS = (
    re.compile(r"^len\(\s*result\s*\)\s*(?:==\s*0|<\s*1)$"),
    re.compile(rf"^(?:isNaN|isInf)\(\s*{_OPERAND}\s*\)$"),
    re.compile(r"^result\s*==\s*nil$"),
)
_NEGATED_GUARDS = (
    re.compile(r"^len\(\s*result\s*\)\s*(?:>\s*0|>=\s*1|!=\s*0)$"),
    re.compile(rf"^!\s*(?:isNaN|isInf)\(\s*{_OPERAND}\s*\)$"),
    re.compile(r"^result\s*!=\s*nil$"),
)
_FLIPPED = {">=": "<=", "<=": ">=", ">": "<", "<": ">", "==": "==", "!=": "!="}

Which = Literal["successCondition", "failureCondition"]


class ConditionError(ValueError):
    """A condition aicd cannot express as a limit; the message says what and why."""


@dataclass(frozen=True)
class Comparison:
    operator: str  # the measurement <operator> number
    number: float


@dataclass
class Limits:
    """What a metric's conditions come to: a floor and/or a ceiling on the canary's value, and notes that
    say, in words, where aicd's check differs from Argo's."""

    min: float | None = None
    max: float | None = None
    notes: list[str] = field(default_factory=list)


def parse_condition(text: str) -> tuple[list[Comparison], bool]:
    """The comparisons a condition requires (joined by `&&`), and whether it had no-data guards."""
    expression = _strip_parens(" ".join(text.split()))
    if not expression:
        raise ConditionError("is empty")
    alternatives = _split(expression, ("||", " or "))
    guarded = False
    required: list[str] = []
    for alternative in alternatives:
        if any(guard.match(alternative) for guard in _GUARDS):
            guarded = True
        elif required:
            raise ConditionError(
                f"{text.strip()!r} joins two comparisons with ||; aicd checks a floor and a ceiling that"
                " both hold (&&)"
            )
        else:
            required = _split(_strip_parens(alternative), ("&&", " and "))
    if not required:
        raise ConditionError(f"{text.strip()!r} compares the measurement with nothing")
    comparisons = []
    for part in required:
        part = _strip_parens(part)
        if any(guard.match(part) for guard in _NEGATED_GUARDS):
            guarded = True
            continue
        comparisons.append(_comparison(part, text))
        guarded = guarded or part.lstrip("(").startswith(("default(", "asFloat(default(", "float(default("))
    return comparisons, guarded


def limits(success: str | None, failure: str | None, *, failure_limit: int) -> Limits:
    """The canary's floor/ceiling from Argo's conditions, with notes on how aicd's check differs.

    Argo fails a measurement that breaks `failureCondition`, or (with no failureCondition) one that does not
    meet `successCondition`; with both, a measurement meeting neither is inconclusive. aicd's judge fails the
    step when the canary's median over the latest interval breaks `max`/`min`, so the failure side is what
    becomes the limit; where both are given, the success side is left to the judge's comparison with stable.
    """
    result = Limits()
    hard: Which | None = "failureCondition" if failure else ("successCondition" if success else None)
    if hard is None:
        result.notes.append(
            "no successCondition or failureCondition (Argo: every measurement inconclusive); the judge compares"
            " the canary with stable only, a change either way beyond the tolerance failing"
        )
        return result
    for which, text in (("failureCondition", failure), ("successCondition", success)):
        if text is None:
            continue
        try:
            comparisons, guarded = parse_condition(text)
        except ConditionError as error:
            raise ConditionError(f"{which} {error}") from None
        if guarded:
            result.notes.append(
                f"{which} {text.strip()!r} treats no data specially; aicd never passes on missing data (a metric"
                " without data is `nodata`, per spec.analysis.noDataLimit)"
            )
        if which != hard:
            result.notes.append(
                f"successCondition {text.strip()!r} is not a limit here (in Argo, values between it and the"
                " failureCondition are inconclusive): the judge instead passes the canary only when shown within"
                " the tolerance of stable"
            )
            continue
        for comparison in comparisons:
            _apply(result, comparison, which, text.strip())
    if failure_limit == 0:
        result.notes.append("a broken limit fails the step at once (critical), as Argo's failureLimit 0")
    else:
        result.notes.append(
            f"Argo tolerates {failure_limit} failed measurement(s) (failureLimit); aicd's limit is not critical:"
            " a broken limit fails the step if it is still broken at the end"
        )
    return result


def _apply(result: Limits, comparison: Comparison, which: Which, text: str) -> None:
    operator = comparison.operator
    if operator in ("==", "!="):
        raise ConditionError(
            f"{which} {text!r} tests equality; aicd's limits are a floor and a ceiling (use >=, <=, > or <)"
        )
    # The side of the measurement that is bad: a success condition states the good side.
    bad_above = operator in ("<", "<=") if which == "successCondition" else operator in (">", ">=")
    # aicd fails strictly beyond the limit (observed > max, observed < min); Argo's boundary value may differ.
    boundary_fails_in_argo = (
        operator in ("<", ">") if which == "successCondition" else operator in (">=", "<=")
    )
    bound = "max" if bad_above else "min"
    if getattr(result, bound) is not None:
        raise ConditionError(f"{which} {text!r} sets two {bound} limits; keep one")
    setattr(result, bound, comparison.number)
    where = "above" if bad_above else "below"
    note = f"{which} {text!r} -> {bound} {comparison.number:g}: the judge fails the canary {where} it"
    if boundary_fails_in_argo:
        note += f" (a value of exactly {comparison.number:g}, which Argo fails, passes aicd's limit)"
    result.notes.append(note)


def _comparison(part: str, text: str) -> Comparison:
    for pattern, flip in ((_COMPARISON_LEFT, False), (_COMPARISON_RIGHT, True), (_ALL, False)):
        match = pattern.match(part)
        if match:
            operator = _FLIPPED[match["op"]] if flip else match["op"]
            return Comparison(operator, float(match["number"]))
    raise ConditionError(
        f"{text.strip()!r}: aicd reads conditions that compare the measurement with a number (result >= 0.95,"
        f" result[0] < 500, all(result, # < 1000)); {part!r} is not one"
    )


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _split(text: str, separators: tuple[str, ...]) -> list[str]:
    """`text` split on the separators outside parentheses, brackets and braces."""
    parts: list[str] = []
    depth = 0
    start = 0
    position = 0
    while position < len(text):
        char = text[position]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            for separator in separators:
                if text.startswith(separator, position):
                    parts.append(text[start:position].strip())
                    position += len(separator)
                    start = position
                    break
            else:
                position += 1
            continue
        position += 1
    parts.append(text[start:].strip())
    return parts
