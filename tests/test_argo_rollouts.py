"""Argo Rollouts users paste their canary steps (tests/data/argo-rollouts/steps/, one step list per file, as it
stands under a Rollout's `strategy.canary.steps`) into an aicd spec: weights, pauses and Prometheus analysis
templates validate and plan to the same steps, then a promotion; every other step is refused by name.

Each case's `.expected` holds the plan (`step` lines, `note:` lines saying what the judge does instead of each
Argo condition) or the errors, with spec lines counted in the case file. After a deliberate change, regenerate
them with `python -m tests.test_argo_rollouts --regen` and review the diff."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from aicd.client import handle_for, start_delivery
from aicd.dev.prometheus import find_prometheus
from aicd.gateway.specs import SpecDirectory
from aicd.messages import Trigger
from aicd.plan import build_plan
from aicd.spec.durations import parse_duration
from aicd.spec.loader import load_spec, parse_spec_bytes
from aicd.steps import AnalysisStep, PauseStep, SetWeightStep
from aicd.steps.unsupported import UNSUPPORTED_STEPS
from aicd.testing.engine import (
    commits,
    make_repo,
    plan_from,
    running_worker,
    show,
    spec_document,
    temporal_env,
)
from tests.test_analysis_prometheus import exporters, scraping

__all__ = ["exporters", "temporal_env"]

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


def parse_pasted(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / SPEC_NAME).write_text(text, encoding="utf-8")
    shutil.copy(TEMPLATES, tmp_path / TEMPLATES.name)
    spec, errors = parse_spec_bytes(text.encode(), str(tmp_path / SPEC_NAME))
    assert spec is None
    return [str(error).removeprefix(f"{tmp_path / SPEC_NAME}:") for error in errors]


def test_templates_without_files_to_read_them_from_say_where_to_list_them(tmp_path: Path) -> None:
    text = pasted(CORPUS / "steps" / "analysis-success-rate.yaml").replace(
        "    analysisTemplates:\n      files: [analysis-templates.yaml]\n", ""
    )
    (error,) = parse_pasted(tmp_path, text)
    assert error.startswith(
        f"{HEAD_LINES - 2 + 5}:17: error: $.spec.stages[0].strategy.canary.steps[2].analysis.templates:"  # 2 lines fewer
    )
    assert "list the files that define them under spec.analysis.analysisTemplates.files" in error
    escaping = pasted(CORPUS / "steps" / "analysis-success-rate.yaml").replace(
        "files: [analysis-templates.yaml]", "files: [../../etc/passwd, /etc/hosts, missing.yaml]"
    )
    errors = parse_pasted(tmp_path, escaping)
    assert [error.split(": error: ")[1].split(":")[0] for error in errors] == [
        "$.spec.analysis.analysisTemplates.files[0]",
        "$.spec.analysis.analysisTemplates.files[1]",
        "$.spec.analysis.analysisTemplates.files[2]",
    ]
    assert "leaves the repository" in errors[0] and "is absolute" in errors[1] and "no such file" in errors[2]


def test_a_template_metric_named_like_a_different_spec_metric_is_refused(tmp_path: Path) -> None:
    text = pasted(CORPUS / "steps" / "analysis-success-rate.yaml").replace(
        "- name: errors", "- name: success-rate"
    )
    (error,) = parse_pasted(tmp_path, text)
    assert "$.spec.stages[0].strategy.canary.steps[2].analysis.templates: metric 'success-rate' of" in error
    assert "comes out differently from the metric of that name in spec.analysis.metrics" in error


def test_blue_green_checks_naming_templates_judge_the_templates_metrics(tmp_path: Path) -> None:
    """An Argo analysis step in a blue-green's pre-promotion checks (Argo users write their templates there) is
    read like one in a canary's steps: the template's metrics are judged, a missing arg is an error. It used
    to pass `aicd validate` untranslated and then judge every spec metric instead - the template's
    success-rate never looked at before the switch - and without the arg the template needs."""
    head = SPEC_HEAD.replace(
        "        canary:\n          steps:\n", "        blueGreen:\n          prePromotionAnalysis:\n"
    )
    step = f"{INDENT}- analysis: {{templates: [{{templateName: success-rate}}]}}\n"
    (error,) = parse_pasted(tmp_path, head + step)
    assert "$.spec.stages[0].strategy.blueGreen.prePromotionAnalysis[0].analysis.args:" in error
    assert "AnalysisTemplate success-rate needs arg 'service-name'" in error
    with_args = step.replace("]}", "], args: [{name: service-name, value: shop}]}")
    (tmp_path / SPEC_NAME).write_text(head + with_args, encoding="utf-8")
    spec, errors = parse_spec_bytes((tmp_path / SPEC_NAME).read_bytes(), str(tmp_path / SPEC_NAME))
    assert not errors and spec is not None
    (stage,) = build_plan(spec, REVISION).stages
    assert stage.strategy is not None
    (check,) = stage.strategy.pre_promotion
    assert isinstance(check, AnalysisStep) and check.metrics == ["success-rate"]


# --- where specs are served and validated --------------------------------------------------------------------


def spec_directory(tmp_path: Path) -> tuple[Path, Path]:
    """A spec directory holding a spec whose analysis names a template, and the templates file beside it."""
    directory = tmp_path / "specs"
    directory.mkdir()
    spec = directory / SPEC_NAME
    spec.write_text(pasted(CORPUS / "steps" / "analysis-success-rate.yaml"), encoding="utf-8")
    templates = directory / TEMPLATES.name
    shutil.copy(TEMPLATES, templates)
    return spec, templates


def test_validate_prints_how_templates_were_translated_and_skips_template_files(
    run_aicd: Any, tmp_path: Path
) -> None:
    spec, templates = spec_directory(tmp_path)
    done = run_aicd("validate", str(spec.parent))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"ok: {spec}"  # the templates file beside it is not taken for a broken spec
    assert any(
        line.startswith(
            f"note: {spec}: $.spec.stages[0].strategy.canary.steps[2].analysis: metric 'success-rate'"
        )
        and "successCondition 'result[0] >= 0.95' -> min 0.95" in line
        for line in lines
    ), lines
    plan = run_aicd("plan", str(spec), "--revision", REVISION)
    assert plan.returncode == 0, plan.stderr
    assert "analysis 5m on success-rate" in plan.stdout
    assert any(
        line.startswith(f"note: {spec}: ") and "-> min 0.95" in line for line in plan.stderr.splitlines()
    )
    # A broken template makes the spec invalid, located in the template file.
    templates.write_text(
        templates.read_text(encoding="utf-8").replace("result[0] >= 0.95", "result[0] == 0.95")
    )
    done = run_aicd("validate", str(spec))
    assert done.returncode == 2
    assert done.stdout.startswith(f"{templates}:15:5: error: $.spec.metrics[0].successCondition: "), (
        done.stdout
    )


def test_the_gateway_reloads_a_spec_when_its_template_file_changes(tmp_path: Path) -> None:
    spec, templates = spec_directory(tmp_path)
    directory = SpecDirectory(spec.parent)
    assert directory.reload()
    assert [loaded.spec.name for loaded in directory.specs] == ["shop"] and directory.errors == {}
    assert not directory.reload()

    def floor() -> float | None:
        (loaded,) = directory.specs
        analysis = loaded.spec.analysis
        assert analysis is not None
        return next(metric.min for metric in analysis.metrics if metric.name == "success-rate")

    assert floor() == 0.95
    templates.write_text(
        templates.read_text(encoding="utf-8").replace("result[0] >= 0.95", "result[0] >= 0.97")
    )
    os.utime(templates, ns=(10**18, 10**18))  # a change the mtime shows even within one clock tick
    assert directory.reload()
    assert floor() == 0.97


# --- the implicit promotion, run for real ----------------------------------------------------------------------


async def test_argo_steps_without_full_weight_promote_after_the_last_step(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Argo's steps as written (no `setWeight: 100`, a pause in integer seconds) run on real Temporal and Git:
    one commit per weight, then the promotion writes the release as stable with no canary traffic left."""
    source, revision = make_repo(tmp_path, "source", {"README": "app\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/shop/values.yaml": "image:\n  tag: v0\n"})
    steps = yaml.safe_load("[{setWeight: 20}, {pause: {duration: 1}}, {setWeight: 60}]")
    stages = [{"name": "production", "targets": ["prod"], "strategy": {"canary": {"steps": steps}}}]
    targets = {"prod": {"kind": "git", "path": "apps/shop/values.yaml"}}
    plan = plan_from(spec_document("shop", source, gitops, targets, stages), revision)
    async with running_worker(temporal_env.client, tmp_path / "state") as queue:
        await start_delivery(temporal_env.client, plan, Trigger("cli", "tester"), queue=queue)
        result = await handle_for(temporal_env.client, plan.delivery_id).result()
    assert result.phase == "succeeded", result.reason
    log = commits(gitops)[1:]
    assert [entry["Aicd-Step"] for entry in log] == [
        "production/prod/0-setWeight",
        "production/prod/2-setWeight",
        "production/prod/promote",
    ]
    assert "weight: 60" in show(gitops, log[1]["sha"], "apps/shop/values.yaml")
    promoted = show(gitops, "main", "apps/shop/values.yaml")
    assert f"tag: {plan.artifact_tag}" in promoted and "weight: 0" in promoted


# --- a translated template judging a real canary -----------------------------------------------------------

ERROR_RATIO_TEMPLATE = """\
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: error-ratio
spec:
  args:
  - name: app
  metrics:
  - name: error-ratio
    interval: 3s
    count: 5
    failureCondition: result[0] > 0.1
    provider:
      prometheus:
        address: http://prometheus.monitoring:9090
        query: |
          sum(rate(http_requests_total{app="{{args.app}}",code=~"5.."}[5s]))
          / sum(rate(http_requests_total{app="{{args.app}}"}[5s]))
"""


@pytest.mark.skipif(
    find_prometheus() is None, reason="needs Debian's prometheus (scripts/setup.sh installs it)"
)
async def test_a_translated_template_fails_a_broken_canary_on_real_prometheus(
    temporal_env: WorkflowEnvironment, exporters: list[str], tmp_path: Path
) -> None:
    """The Argo step and template as written, against the demo app's stable and canary exporters: the query
    is measured per track (the label aicd added), and the canary's 40% errors break the failureCondition's
    ceiling (critical, as failureLimit 0), so the delivery rolls back before any promotion."""
    prometheus = scraping(tmp_path, exporters)
    try:
        source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
        gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v0\n"})
        step = {"templates": [{"templateName": "error-ratio"}], "args": [{"name": "app", "value": "broken"}]}
        stages = [
            {
                "name": "prod",
                "targets": ["web"],
                "strategy": {"canary": {"steps": [{"setWeight": 50}, {"analysis": step}]}},
            }
        ]
        analysis = {
            "prometheus": {"url": prometheus.url},
            "interval": "3s",
            "analysisTemplates": {"files": ["templates/error-ratio.yaml"]},
        }
        document = spec_document(
            "broken", source, gitops, {"web": {"kind": "git", "path": "web.yaml"}}, stages, analysis=analysis
        )
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates" / "error-ratio.yaml").write_text(ERROR_RATIO_TEMPLATE, encoding="utf-8")
        (tmp_path / SPEC_NAME).write_text(yaml.safe_dump(document), encoding="utf-8")
        spec = load_spec(tmp_path / SPEC_NAME)
        assert spec.analysis is not None
        assert spec.analysis.queries["error-ratio"].count('track="{{ track }}"') == 2
        plan = build_plan(spec, revision)
        async with running_worker(temporal_env.client, tmp_path / "state") as queue:
            await start_delivery(temporal_env.client, plan, Trigger("cli", "t"), queue=queue)
            result = await handle_for(temporal_env.client, plan.delivery_id).result()
    finally:
        prometheus.stop()
    assert result.phase == "failed" and "analysis failed" in result.reason and "error-ratio" in result.reason
    steps = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert steps == ["prod/web/0-setWeight", "prod/web/rollback"]


# --- aicd import argo-rollout ------------------------------------------------------------------------------

ROLLOUTS = CORPUS / "rollouts"


def spec_with(stage: dict[str, Any], metrics: list[dict[str, Any]]) -> bytes:
    """A spec with an imported stage and metrics pasted in, as the output tells a user to."""
    document = yaml.safe_load(SPEC_HEAD + f"{INDENT}- setWeight: 100\n")
    spec = document["spec"]
    spec["analysis"].pop("analysisTemplates")
    spec["analysis"]["metrics"] = metrics or spec["analysis"]["metrics"]
    prod = spec["targets"]["prod"]  # each target with a file of its own, as the spec requires
    spec["targets"] = {target: {**prod, "path": f"apps/shop/{target}.yaml"} for target in stage["targets"]}
    spec["stages"] = [stage]
    return yaml.safe_dump(document).encode()


def imported(run_aicd: Any, *args: str) -> tuple[int, dict[str, Any], list[str]]:
    done = run_aicd("import", "argo-rollout", *args)
    return done.returncode, (yaml.safe_load(done.stdout) or {}), done.stderr.splitlines()


def test_import_carries_weights_and_pauses_over_as_argo_runs_them(run_aicd: Any) -> None:
    code, output, stderr = imported(run_aicd, "tests/data/argo-rollouts/rollouts/weights-only.yaml")
    assert code == 0, stderr
    assert stderr == []
    stage = output["stage"]
    assert stage["name"] == "production" and stage["targets"] == ["rollouts-demo"]
    rollout = yaml.safe_load((ROLLOUTS / "weights-only.yaml").read_text(encoding="utf-8"))
    source = rollout["spec"]["strategy"]["canary"]["steps"]
    spec, errors = parse_spec_bytes(spec_with(stage, []), "imported.yaml")
    assert not errors and spec is not None, errors
    (planned,) = build_plan(spec, REVISION).stages
    assert len(planned.steps) == len(source)
    for step, argo in zip(planned.steps, source, strict=True):
        if "setWeight" in argo:
            assert isinstance(step, SetWeightStep) and step.weight == argo["setWeight"]
        else:
            assert isinstance(step, PauseStep) and step.duration_s == argo_pause_seconds(argo["pause"])


def test_import_translates_the_analysis_template_of_the_rollouts_file(run_aicd: Any) -> None:
    code, output, stderr = imported(
        run_aicd, "tests/data/argo-rollouts/rollouts/canary-with-analysis.yaml", "--stage", "prod",
        "--target", "prod-use1", "--target", "prod-euw1",
    )  # fmt: skip
    assert code == 0, stderr
    # Routing is the chart's business: shown, not counted as lost.
    assert [line.split(": ")[1] for line in stderr] == ["left to the chart"] * 3
    assert any("$.spec.strategy.canary.trafficRouting" in line and ":49: " in line for line in stderr)
    stage = output["stage"]
    assert stage["name"] == "prod" and stage["targets"] == ["prod-use1", "prod-euw1"]
    assert stage["strategy"]["canary"]["steps"] == [
        {"setWeight": 5},
        {"pause": "2m"},
        {"setWeight": 20},
        {"analysis": {"duration": "10m", "metrics": ["http-success"]}},  # count 10 x interval 1m
        {"setWeight": 50},
        {"pause": "5m"},
    ]
    (metric,) = output["metrics"]
    assert (
        metric["min"] == 0.99 and metric["direction"] == "decrease" and "critical" not in metric
    )  # failureLimit 2
    assert 'service="checkout-api",code!~"5..",track="{{ track }}"' in metric["query"]
    spec, errors = parse_spec_bytes(spec_with(stage, output["metrics"]), "imported.yaml")
    assert not errors and spec is not None, errors
    assert spec.analysis is not None and spec.analysis.metrics[0].min == 0.99


def test_import_names_every_step_and_check_it_leaves_out(run_aicd: Any) -> None:
    code, output, stderr = imported(
        run_aicd, "tests/data/argo-rollouts/rollouts/mixed.yaml", "-t", "tests/data/argo-rollouts/analysis-templates.yaml",
    )  # fmt: skip
    assert code == 1
    lost = [line for line in stderr if ": not carried over: " in line]
    for name, line in (("setCanaryScale", 19), ("setHeaderRoute", 21), ("experiment", 28), ("plugin", 38)):
        assert any(
            f"mixed.yaml:{line}: not carried over: " in entry
            and f"Argo Rollouts step {name} is not supported by aicd: " in entry
            for entry in lost
        ), name
    assert any("canary.analysis: background analysis" in line for line in lost)
    assert any("analysis-templates.yaml:" in line and "uses the job provider" in line for line in lost)
    assert stderr[-1] == f"aicd: {len(lost)} thing(s) of Rollout storefront not carried over (above)"
    assert output["stage"]["strategy"]["canary"]["steps"] == [
        {"setWeight": 10}, {"pause": "1h"}, {"setWeight": 50}, {"pause": {}},
    ]  # fmt: skip
    # The background analysis's template is translated, for the analysis steps the user adds.
    assert [metric["name"] for metric in output["metrics"]] == ["success-rate"]


def test_import_finds_templates_in_the_argo_manifests_beside_the_rollout(
    run_aicd: Any, tmp_path: Path
) -> None:
    template, rollout = (ROLLOUTS / "canary-with-analysis.yaml").read_text(encoding="utf-8").split("---\n", 1)
    (tmp_path / "analysis.yaml").write_text(template, encoding="utf-8")
    (tmp_path / "rollout.yaml").write_text(rollout, encoding="utf-8")
    (tmp_path / "service.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n")
    done = run_aicd("import", "argo-rollout", "rollout.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [metric["name"] for metric in yaml.safe_load(done.stdout)["metrics"]] == ["http-success"]
    assert "# from AnalysisTemplate http-success (analysis.yaml:11)" in done.stdout
    # Named files replace the search: without the template, the step is reported, naming what was read.
    (tmp_path / "empty.yaml").write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: other}\nspec: {metrics: []}\n"
    )
    done = run_aicd("import", "argo-rollout", "rollout.yaml", "-t", "empty.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert "no AnalysisTemplate 'http-success' in rollout.yaml, empty.yaml" in done.stderr


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "blue-green.yaml",
            "blue-green.yaml:7:3: error: $.spec.strategy: Rollout rollout-bluegreen uses the blueGreen",
        ),
        ("not-a-rollout.yaml", "not-a-rollout.yaml:0:0: error: $: no Argo Rollouts Rollout"),
        ("missing.yaml", "missing.yaml:0:0: error: $: cannot read: No such file or directory"),
    ],
)
def test_import_refuses_input_without_a_canary_with_exit_2(run_aicd: Any, name: str, expected: str) -> None:
    done = run_aicd("import", "argo-rollout", f"tests/data/argo-rollouts/rollouts/{name}")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[0].startswith(f"tests/data/argo-rollouts/rollouts/{expected}")


def test_import_of_a_file_with_two_rollouts_asks_which(run_aicd: Any, tmp_path: Path) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(
        (ROLLOUTS / "weights-only.yaml").read_text(encoding="utf-8")
        + "---\n"
        + (ROLLOUTS / "mixed.yaml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    done = run_aicd("import", "argo-rollout", str(both))
    assert (
        done.returncode == 2
        and "2 Rollouts here (rollouts-demo, storefront); choose one with --name" in done.stderr
    )
    code, output, _ = imported(run_aicd, str(both), "--name", "rollouts-demo")
    assert code == 0 and output["stage"]["targets"] == ["rollouts-demo"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Rollout\nspec: [\n", encoding="utf-8")
    done = run_aicd("import", "argo-rollout", str(broken))
    assert done.returncode == 2 and done.stderr.startswith(f"{broken}:")


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
        sys.exit("usage: python -m tests.test_argo_rollouts --regen")
