"""Feature flags in GitOps style: changes to a flag in a flagd flag-definition file (OpenFeature's flagd JSON
format, https://flagd.dev/reference/flag-definitions/) that lives in the GitOps repository, next to the
target's values file. flagd, the OpenFeature operator or an in-process flagd provider reads the file; aicd
only ever commits it, one change per commit, so a rollback restores it like any other file.

A change can enable or disable a flag, change its default variant, or roll a variant out to a percentage of
evaluations with flagd's `fractional` operation (the rest get the default variant). aicd changes flags the
application already defines - it never invents a flag or a variant - and it never replaces targeting rules
it did not write: a flag whose targeting is anything but a `fractional` split cannot be rolled out by
percentage (ValueError, which the commit turns into a failed step without a commit)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

FlagState = Literal["ENABLED", "DISABLED"]


@dataclass(frozen=True)
class FlagChange:
    flag: str
    state: FlagState | None = None
    default_variant: str | None = None
    percent: int | None = None  # with `variant`: the share of evaluations that get `variant`
    variant: str | None = None

    def describe(self) -> str:
        parts = []
        if self.state is not None:
            parts.append("enable" if self.state == "ENABLED" else "disable")
        if self.default_variant is not None:
            parts.append(f"default variant {self.default_variant}")
        if self.percent is not None:
            parts.append(f"{self.variant} to {self.percent}%")
        return f"{self.flag}: {', '.join(parts)}"


def apply_flag_change(text: str, change: FlagChange, where: str = "") -> str:
    """The flag-definition file `text` with `change` made; the rest of the file is kept as it was (key order,
    indentation). ValueError names the file (`where`), the flag and what is wrong."""
    prefix = f"{where}: " if where else ""
    try:
        document = json.loads(text) if text.strip() else None
    except json.JSONDecodeError as error:
        raise ValueError(f"{prefix}not a flagd flag-definition file: invalid JSON ({error})") from None
    flags = document.get("flags") if isinstance(document, dict) else None
    if not isinstance(flags, dict):
        raise ValueError(f'{prefix}not a flagd flag-definition file: no "flags" object')
    flag = flags.get(change.flag)
    if not isinstance(flag, dict):
        raise ValueError(
            f"{prefix}flag {change.flag!r} is not defined (flags: {sorted(flags)}); aicd changes flags the"
            " application defines, it never adds one"
        )
    variants = flag.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ValueError(f"{prefix}flag {change.flag!r} has no variants")

    def known(variant: str, role: str) -> None:
        if variant not in variants:
            raise ValueError(
                f"{prefix}flag {change.flag!r}: {role} {variant!r} is not one of its variants {sorted(variants)}"
            )

    if change.state is not None:
        flag["state"] = change.state
    if change.default_variant is not None:
        known(change.default_variant, "default variant")
        flag["defaultVariant"] = change.default_variant
    if change.percent is not None:
        assert change.variant is not None, "the schema requires variant with percent"
        known(change.variant, "variant")
        rest = flag.get("defaultVariant")
        if not isinstance(rest, str) or rest not in variants:
            raise ValueError(
                f"{prefix}flag {change.flag!r}: a percentage rollout needs a default variant for the rest"
            )
        if rest == change.variant:
            raise ValueError(
                f"{prefix}flag {change.flag!r}: {change.variant!r} is already the default variant; roll out"
                " another variant, or change defaultVariant"
            )
        flag["targeting"] = _fractional(
            flag.get("targeting"), change.variant, change.percent, rest, prefix, change.flag
        )
    return _dump(document, text)


def _fractional(
    targeting: Any, variant: str, percent: int, rest: str, prefix: str, name: str
) -> dict[str, Any]:
    """flagd's `fractional` split: `variant` for `percent`% of evaluations, `rest` for the others. An existing
    split keeps its bucketing expression (the first argument when it is not a [variant, weight] pair)."""
    bucketing: list[Any] = []
    if targeting not in (None, {}):
        split = targeting.get("fractional") if isinstance(targeting, dict) and len(targeting) == 1 else None
        if not isinstance(split, list):
            raise ValueError(
                f"{prefix}flag {name!r} has targeting rules aicd did not write; a percentage rollout would"
                " replace them (change them by hand, or give the rollout its own flag)"
            )
        if split and isinstance(split[0], dict):
            bucketing = [split[0]]
    return {"fractional": [*bucketing, [variant, percent], [rest, 100 - percent]]}


def _dump(document: Any, original: str) -> str:
    """JSON in the original's indentation (two spaces when it has none), with its final newline."""
    found = re.search(r"\n([ \t]+)\S", original)
    indent: str | int = found.group(1) if found else 2
    text = json.dumps(document, indent=indent, ensure_ascii=False)
    return text + "\n" if original.endswith("\n") or not original else text


def rollout_percent(text: str, flag: str, variant: str) -> int | None:
    """The share (percent) of evaluations a fractional split gives `variant`, None without a split."""
    try:
        definition = json.loads(text)["flags"][flag]
    except (ValueError, KeyError, TypeError):
        return None
    split = (definition.get("targeting") or {}).get("fractional")
    if not isinstance(split, list):
        return None
    pairs = [item for item in split if isinstance(item, list) and len(item) == 2]
    total = sum(weight for _name, weight in pairs) or 1
    return round(100 * sum(weight for name, weight in pairs if name == variant) / total)
