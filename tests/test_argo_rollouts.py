"""Argo Rollouts users paste their canary steps (tests/data/argo-rollouts/steps/, one step list per file, as it
stands under a Rollout's `strategy.canary.steps`) into an aicd spec: weights, pauses and Prometheus analysis
templates validate and plan to the same steps, then a promotion; every other step is refused by name.

Each case's `.expected` holds the plan (`step` lines, `note:` lines saying what the judge does instead of each
Argo condition) or the errors, with spec lines counted in the case file. After a deliberate change, regenerate
them with `python tests/test_argo_rollouts.py --regen` and review the diff."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicd.plan import build_plan
from aicd.spec.durations import parse_duration
from aicd.spec.loader import parse_spec_bytes
from aicd.steps import AnalysisStep, PauseStep, SetWeightStep
from aicd.steps.unsupported import UNSUPPORTED_STEPS

CORPUS = Path(__file__).resolve().parent / "data" / "argo-rollouts"
CASES = sorted((CORPUS / "steps").glob("*.yaml"))
TEMPLATES = CORPUS / "analysis-templates.yaml"
SPEC_NAME = "spec.yaml"
REVISION = "4f2c1d9e" * 5

# The spec every case's steps are pasted into, at its end (so a line of the case is a line of this plus an offset).
SPEC_HEAD = """\
apiVersion: aicd.dev/v1alpha1
kind: DeliverySpec
metadata:
  name: shop
spec:
  source:
    repo: https://git.example.com/shop.git
    branches: ["release/*"]
  build:
    command: ["make", "image", "TAG={{ revision.short }}"]
    artifact: "registry.example.com/shop:{{ revision.short }}"
  gitops:
    repo: https://git.example.com/gitops.git
  targets:
    prod: {kind: argocd, app: shop-prod, path: apps/shop/prod.yaml}
  analysis:
    prometheus: {url: "http://prometheus:9090"}
    analysisTemplates:
      files: [analysis-templates.yaml]
    metrics:
      - name: errors
        query: 'sum(rate(errors_total{track="{{ track }}"}[1m]))'
        kind: count
  stages:
    - name: production
      targets: [prod]
      strategy:
        canary:
          steps:
"""
HEAD_LINES = SPEC_HEAD.count("\n")
INDENT = " " * 12
SPEC_LOCATION = re.compile(rf"^{re.escape(SPEC_NAME)}:(?P<line>\d+):(?P<col>\d+): ")


def pasted(case: Path) -> str:
    """The spec with the case's steps pasted under `steps:`, as a user would."""
    lines = case.read_text(encoding="utf-8").splitlines()
    return SPEC_HEAD + "".join(f"{INDENT}{line}\n" if line.strip() else "\n" for line in lines)


def outcome(case: Path, directory: Path) -> list[str]:
    """What aicd makes of the case: the planned steps and notes, or the errors, spec lines counted in the case."""
    (directory / SPEC_NAME).write_text(pasted(case), encoding="utf-8")
    shutil.copy(TEMPLATES, directory / TEMPLATES.name)
    notes: list[str] = []
    previous = Path.cwd()
    os.chdir(directory)  # file names in messages stay relative, as a user runs `aicd validate spec.yaml`
    try:
        spec, errors = parse_spec_bytes((directory / SPEC_NAME).read_bytes(), SPEC_NAME, notes)
    finally:
        os.chdir(previous)
    if errors:
        return [_in_case(str(error), case) for error in errors]
    assert spec is not None
    (stage,) = build_plan(spec, REVISION).stages
    steps = [f"step {step.describe()}" for step in stage.steps] + ["step promote"]
    lines = [f"note: {note.removeprefix(SPEC_NAME + ': ')}" for note in notes]
    metrics = {metric.name: metric for metric in spec.analysis.metrics} if spec.analysis else {}
    queries = spec.analysis.queries if spec.analysis else {}
    for step in stage.steps:
        if isinstance(step, AnalysisStep):
            for name in step.metrics:
                metric = metrics[name]
                lines.append(
                    f"metric {name}: {metric.kind} direction={metric.direction} min={metric.min} max={metric.max}"
                    f" critical={metric.critical} query={' '.join(queries[name].split())}"
                )
    return steps + list(dict.fromkeys(lines))  # a metric judged at two steps is listed once


def _in_case(line: str, case: Path) -> str:
    match = SPEC_LOCATION.match(line)
    if match and int(match["line"]) > HEAD_LINES:
        column = int(match["col"]) - len(INDENT)
        return f"{case.name}:{int(match['line']) - HEAD_LINES}:{column}: " + line[match.end() :]
    return line


def expected(case: Path) -> list[str]:
    return case.with_suffix(".expected").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("case", CASES, ids=lambda path: path.stem)
def test_pasted_steps_give_the_expected_plan_or_errors(case: Path, tmp_path: Path) -> None:
    assert outcome(case, tmp_path) == expected(case)


def argo_steps(case: Path) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = yaml.safe_load(case.read_text(encoding="utf-8"))
    return steps


def argo_pause_seconds(value: dict[str, Any]) -> float | None:
    """A pause's duration as Argo Rollouts reads it: integer seconds, seconds in a string, or a Go duration."""
    duration = value.get("duration")
    if duration is None:
        return None
    if isinstance(duration, int) or str(duration).isdigit():
        return float(duration)
    return parse_duration(str(duration))


VALID_CASES = [
    case
    for case in CASES
    if case.with_suffix(".expected").exists() and expected(case) and expected(case)[0].startswith("step ")
]


@pytest.mark.parametrize("case", VALID_CASES, ids=lambda path: path.stem)
def test_every_weight_and_pause_lands_as_argo_would_run_it(case: Path, tmp_path: Path) -> None:
    """Step for step, the plan does what Argo Rollouts would: the same weights, the same pauses (in seconds
    as Argo reads them), an analysis where Argo analyses; then the promotion, with or without setWeight 100."""
    (tmp_path / SPEC_NAME).write_text(pasted(case), encoding="utf-8")
    shutil.copy(TEMPLATES, tmp_path / TEMPLATES.name)
    spec, errors = parse_spec_bytes((tmp_path / SPEC_NAME).read_bytes(), str(tmp_path / SPEC_NAME))
    assert not errors, errors
    assert spec is not None
    (stage,) = build_plan(spec, REVISION).stages
    source = argo_steps(case)
    assert len(stage.steps) == len(source)
    for planned, (kind, value) in zip(
        stage.steps, (next(iter(step.items())) for step in source), strict=True
    ):
        if kind == "setWeight":
            assert isinstance(planned, SetWeightStep) and planned.weight == value
        elif kind == "pause":
            assert isinstance(planned, PauseStep) and planned.duration_s == argo_pause_seconds(value)
        else:
            assert kind == "analysis" and isinstance(planned, AnalysisStep)
            # Argo's templates become named metrics; aicd's own form judges what it names (all, unnamed).
            assert bool(planned.metrics) == ("templates" in value)
            assert set(planned.metrics) <= {metric.name for metric in spec.analysis.metrics}  # type: ignore[union-attr]


def test_the_corpus_refuses_every_argo_step_aicd_lacks_by_name() -> None:
    refused = {}
    for case in CASES:
        for line in expected(case):
            match = re.search(r"Argo Rollouts step (\w+) is not supported by aicd: ", line)
            if match:
                refused[match[1]] = case.name
    assert sorted(refused) == sorted(UNSUPPORTED_STEPS)


def test_an_argo_step_list_without_final_full_weight_plans_a_promotion(tmp_path: Path) -> None:
    """The implicit promotion: the last planned action writes the release as stable, whatever the last step."""
    case = CORPUS / "steps" / "canary-demo.yaml"
    (tmp_path / SPEC_NAME).write_text(pasted(case), encoding="utf-8")
    shutil.copy(TEMPLATES, tmp_path / TEMPLATES.name)
    spec, errors = parse_spec_bytes((tmp_path / SPEC_NAME).read_bytes(), str(tmp_path / SPEC_NAME))
    assert spec is not None and not errors
    (stage,) = build_plan(spec, REVISION).stages
    assert [step.weight for step in stage.steps if isinstance(step, SetWeightStep)] == [20, 40, 60, 80]


def regenerate() -> None:
    import tempfile

    for case in CASES:
        with tempfile.TemporaryDirectory() as directory:
            lines = outcome(case, Path(directory))
        case.with_suffix(".expected").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        print(f"{case.with_suffix('.expected').name}: {len(lines)} line(s)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--regen"]:
        regenerate()
    else:
        sys.exit("usage: python tests/test_argo_rollouts.py --regen")
