"""The registries of step and target kinds: one list each, a duplicate or unknown kind fails loudly, the
schema file holds what the kinds say, and a plan's typed steps and targets cross Temporal's converter as
themselves - plans of running deliveries, made before the kinds were typed, included."""

from __future__ import annotations

import json

import pytest
from temporalio.converter import DataConverter

from aicd.kinds import KindRegistry
from aicd.plan import TargetPlan
from aicd.resources import schema_resource
from aicd.spec import schema as generated
from aicd.steps import STEP_KINDS, AnalysisStep, PauseStep, SetWeightStep, Step
from aicd.steps.unsupported import UNSUPPORTED_STEPS
from aicd.targets import TARGET_KINDS, ArgoCDTarget, EdgeTarget, GitTarget, LocalTarget
from aicd.targets.argocd import ChartRef
from aicd.targets.edge import SitesFile

CONVERTER = DataConverter.default.payload_converter


def round_trip(value: object, hint: object) -> object:
    (payload,) = CONVERTER.to_payloads([value])
    (decoded,) = CONVERTER.from_payloads([payload], [hint])  # type: ignore[list-item]
    return decoded


def test_the_schema_file_holds_what_the_kinds_say() -> None:
    text = schema_resource().read_text(encoding="utf-8")
    assert generated.rewrite(text) == text, "run: .venv/bin/python -m aicd.spec.schema"
    schema = json.loads(text)
    # Argo Rollouts' steps aicd lacks are listed too, each refused by name (aicd.steps.unsupported).
    assert sorted(schema["$defs"]["step"]["properties"]) == sorted([*STEP_KINDS.names, *UNSUPPORTED_STEPS])
    assert schema["$defs"]["target"]["properties"]["kind"]["enum"] == TARGET_KINDS.names


def test_a_kind_registered_twice_fails_at_once() -> None:
    with pytest.raises(ValueError, match="step kind 'pause' registered twice"):
        KindRegistry("step", [PauseStep, SetWeightStep, PauseStep])


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(
        KeyError, match=r"no step kind 'setweight'; known: \['analysis', 'pause', 'setWeight'\]"
    ):
        STEP_KINDS["setweight"]
    with pytest.raises(KeyError, match=r"no target kind 'argo'; known: \['argocd', 'edge', 'git', 'local'\]"):
        TARGET_KINDS["argo"]


@pytest.mark.parametrize(
    "step",
    [SetWeightStep(0, 10), PauseStep(1, None), PauseStep(2, 300.0), AnalysisStep(3, 600.0, ["error-rate"])],
)
def test_a_step_crosses_the_converter_as_its_kind(step: Step) -> None:
    decoded = round_trip([step], list[Step])
    assert decoded == [step] and type(decoded[0]) is type(step)  # type: ignore[index]


def test_steps_of_a_plan_made_before_typed_steps_decode_as_their_kinds() -> None:
    old = [
        {"index": 0, "kind": "setWeight", "weight": 10, "duration_s": None, "metrics": []},
        {"index": 1, "kind": "pause", "weight": None, "duration_s": None, "metrics": []},
        {"index": 2, "kind": "analysis", "weight": None, "duration_s": 60.0, "metrics": ["latency"]},
    ]
    assert round_trip(old, list[Step]) == [
        SetWeightStep(0, 10),
        PauseStep(1, None),
        AnalysisStep(2, 60.0, ["latency"]),
    ]


@pytest.mark.parametrize(
    "settings",
    [
        GitTarget(),
        LocalTarget("http://127.0.0.1:9"),
        ArgoCDTarget("web", context="use1", chart=ChartRef("charts.example.com", "web", "1.2.3")),
        EdgeTarget(
            sites=SitesFile("fleet.yaml"),
            batches=["50%", "100%"],
            max_failures="10%",
            site_kind="argocd",
            app="web-{{ site }}",
        ),
        EdgeTarget(sites=["a", "b"]),
    ],
)
def test_a_target_crosses_the_converter_as_its_kind(settings: object) -> None:
    plan = TargetPlan("t", settings.name, "a.yaml", None, 60.0, settings=settings)  # type: ignore[attr-defined]
    decoded = round_trip(plan, TargetPlan)
    assert decoded == plan and decoded.typed() == settings and type(decoded.typed()) is type(settings)  # type: ignore[attr-defined]


def test_a_target_of_a_plan_made_before_typed_targets_is_parsed_by_its_kind() -> None:
    old = {
        "name": "pops",
        "kind": "edge",
        "path": "edge/{{ site }}.yaml",
        "region": None,
        "progress_deadline_s": 600.0,
        "config": {
            "sites": {"file": "fleet.yaml"},
            "batches": ["10%", "100%"],
            "maxFailures": 2,
            "path": "x",
        },
    }
    decoded = round_trip(old, TargetPlan)
    assert decoded.typed() == EdgeTarget(
        sites=SitesFile("fleet.yaml"), batches=["10%", "100%"], max_failures=2
    )  # type: ignore[attr-defined]
