"""The parts of the spec's JSON Schema that the kinds own: `$defs.step` (aicd.steps), `$defs.strategy`
(aicd.strategies), `$defs.target` (aicd.targets) and `$defs.verification` (aicd.verification), built from each kind's fragment. The schema file stays the one document editors load and the
loader validates with; after adding or changing a kind, rewrite those parts of it (nothing else of the
file changes; a test fails while they differ):

    .venv/bin/python -m aicd.spec.schema
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aicd.steps import step_schema
from aicd.strategies import strategy_schema
from aicd.targets import target_schema
from aicd.verification import VERIFICATION_SCHEMA

GENERATED: dict[str, Callable[[], dict[str, Any]]] = {
    "step": step_schema,
    "target": target_schema,
    "strategy": strategy_schema,
    "verification": lambda: VERIFICATION_SCHEMA,
}
CHECKOUT_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "delivery-spec.v1alpha1.json"


def rewrite(text: str) -> str:
    """`text` (the schema file) with each generated definition replaced by what the kinds say now."""
    defs = text.index('"$defs"')
    for name, build in GENERATED.items():
        found = re.compile(rf'\n(?P<indent>[ ]*)"{re.escape(name)}": ').search(text, defs)
        if found is None:
            raise ValueError(f'no "$defs.{name}" in the schema file')
        start = found.end()
        _value, end = json.JSONDecoder().raw_decode(text, start)
        value = json.dumps(build(), indent=2, ensure_ascii=False).replace("\n", "\n" + found["indent"])
        text = text[:start] + value + text[end:]
    return text


def main() -> int:
    text = CHECKOUT_SCHEMA.read_text(encoding="utf-8")
    new = rewrite(text)
    if new != text:
        CHECKOUT_SCHEMA.write_text(new, encoding="utf-8")
        print(f"rewrote $defs {sorted(GENERATED)} in {CHECKOUT_SCHEMA}")
    else:
        print(f"{CHECKOUT_SCHEMA} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
