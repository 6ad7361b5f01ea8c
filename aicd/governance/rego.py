"""Rego, evaluated in process with regorus (Microsoft's Rego interpreter in Rust, as the `celine-regorus`
wheels package its upstream releases), for the embedded default and tests; platform teams that run OPA point
the policy at their server instead (aicd.activities.governance asks its REST API).

Why not `opa-eval` (the regorus-based package the issue names): it loads exactly one .rego file per
evaluator, so a policy split over modules (a package and its helpers) cannot load, and its bundled regorus
formats `sprintf` wrongly (`sprintf("%s in %s", ["a", "b"])` gives "ain b": the space after each verb is
dropped), which would garble every deny message. regorus itself has neither problem.

A policy package answers with `deny` (a set of messages, or objects with `msg`) and optionally `warn`;
conftest, Gatekeeper and OPA's own examples use the same shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class PolicyError(ValueError):
    """A module does not parse, or the evaluation failed (the message names file:line:col)."""


@dataclass
class PolicyDecision:
    deny: list[str] = field(default_factory=list)
    warn: list[str] = field(default_factory=list)


def _clean(error: BaseException) -> str:
    """regorus' message without the Rust backtrace RUST_BACKTRACE adds."""
    text = str(error).split("Stack backtrace:")[0].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    where = next((line[3:].strip() for line in lines if line.startswith("-->")), "")
    what = next((line for line in lines if line.startswith("error:")), lines[-1] if lines else "")
    return f"{where}: {what}" if where else what


def messages(value: Any) -> list[str]:
    """deny/warn as messages: strings as they are, objects by their `msg`, anything else as JSON."""
    if value is None:
        return []
    items = value if isinstance(value, list | set | tuple) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("msg"), str):
            out.append(item["msg"])
        else:
            out.append(json.dumps(item, sort_keys=True))
    return sorted(out)


def decision_of(document: Any) -> PolicyDecision:
    """The decision in a package's document (`{"deny": [...], "warn": [...]}`)."""
    if document is None:
        return PolicyDecision()
    if not isinstance(document, dict):
        raise PolicyError(f"the policy package is not a document with deny/warn rules: {document!r:.200}")
    return PolicyDecision(messages(document.get("deny")), messages(document.get("warn")))


def evaluate(modules: dict[str, str], package: str, input_document: dict[str, Any]) -> PolicyDecision:
    """Evaluate `data.<package>` over `modules` (file name -> Rego source) with `input_document`."""
    import regorus  # the native engine loads only where a policy is evaluated

    engine = regorus.Engine()
    for name, source in sorted(modules.items()):
        try:
            engine.add_policy(name, source)
        except RuntimeError as error:
            raise PolicyError(_clean(error)) from None
    engine.set_input_json(json.dumps(input_document))
    if not any(policy_package(source) == package for source in modules.values()):
        raise PolicyError(f"no module declares package {package}; modules: {', '.join(sorted(modules))}")
    try:
        answer = json.loads(engine.eval_query_as_json(f"data.{package}"))
    except RuntimeError as error:
        raise PolicyError(_clean(error)) from None
    results = answer.get("result") or [{}]
    expressions = results[0].get("expressions") or [{}]
    return decision_of(expressions[0].get("value"))


def policy_package(source: str) -> str | None:
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("package "):
            return stripped.split()[1]
    return None


def run_tests(modules: dict[str, str]) -> list[tuple[str, bool, str]]:
    """Every `test_*` rule of the modules (as `opa test` runs them): (rule, passed, error)."""
    import regorus

    engine = regorus.Engine()
    for name, source in sorted(modules.items()):
        engine.add_policy(name, source)
    results = []
    for name, source in sorted(modules.items()):
        package = policy_package(source)
        for line in source.splitlines():
            stripped = line.strip()
            if stripped.startswith("test_"):
                rule = stripped.split()[0].split("(")[0]
                try:
                    value = json.loads(engine.eval_rule_as_json(f"data.{package}.{rule}") or "null")
                    results.append((f"{name}:{rule}", value is True, ""))
                except RuntimeError as error:
                    results.append((f"{name}:{rule}", False, _clean(error)))
    return results
