"""aicd's data converter (aicd.temporal.DATA_CONVERTER): the same JSON on the wire and the same decoded values
as Temporal's default converter, with a dataclass's field types resolved once per class."""

from __future__ import annotations

import gc
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from aicd.activities import WorkerSettings
from aicd.messages import ActionRecord, DeliveryInput, DeliveryStatus, TargetStatus, Trigger
from aicd.temporal import DATA_CONVERTER, with_data_converter
from aicd.testing.engine import make_repo, plan_from, spec_document, temporal_env
from aicd.worker import build_worker

__all__ = ["temporal_env"]


@dataclass
class Inner:
    name: str
    weight: int = 0


@dataclass
class Outer:
    inner: Inner
    optional: Inner | None = None
    by_name: dict[str, Inner] = field(default_factory=dict)
    listed: list[Inner] = field(default_factory=list)
    computed: int = field(default=0, init=False)


def _delivery_input(tmp_path: Path) -> DeliveryInput:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": "image:\n  tag: v0\n"})
    document = spec_document(
        "converter",
        source,
        gitops,
        {"web": {"kind": "git", "path": "apps/web/values.yaml"}},
        [{"name": "prod", "targets": ["web"], "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}],
    )
    return DeliveryInput(plan_from(document, revision), Trigger("cli", "alice", branch="release/1"))


async def _round_trip(converter: DataConverter, value: Any, hint: type) -> tuple[bytes, Any]:
    (payload,) = await converter.encode([value])
    (decoded,) = await converter.decode([payload], [hint])
    return payload.data, decoded


async def test_aicd_types_travel_as_with_the_default_converter(tmp_path: Path) -> None:
    status = DeliveryStatus(
        "d-1",
        "web",
        "abc",
        "registry/web:abc",
        "progressing",
        targets={"web": TargetStatus("web", "prod", "git", "progressing", step_index=2, weight=50)},
        actions=[ActionRecord("pause", "alice", "2026-12-04T16:00:00Z", reason="look at it")],
        trigger=Trigger("github", "bob"),
    )
    for value, hint in ((_delivery_input(tmp_path), DeliveryInput), (status, DeliveryStatus)):
        ours = await _round_trip(DATA_CONVERTER, value, hint)
        default = await _round_trip(DataConverter.default, value, hint)
        assert ours == default
        assert ours[1] == value


async def test_nested_optional_mapped_listed_and_non_init_fields_decode() -> None:
    value = Outer(Inner("a", 1), Inner("b"), {"c": Inner("c", 3)}, [Inner("d", 4)])
    value.computed = 7
    _, decoded = await _round_trip(DATA_CONVERTER, value, Outer)
    assert decoded == value and decoded.computed == 7
    assert isinstance(decoded.by_name["c"], Inner) and isinstance(decoded.listed[0], Inner)


async def test_unknown_fields_are_ignored_and_a_missing_field_is_refused() -> None:
    converter = DATA_CONVERTER.payload_converter
    (payload,) = converter.to_payloads([{"name": "a", "weight": 2, "added_later": True}])
    assert converter.from_payloads([payload], [Inner]) == [Inner("a", 2)]
    (payload,) = converter.to_payloads([{"weight": 2}])
    with pytest.raises(Exception, match="name"):
        converter.from_payloads([payload], [Inner])
    (payload,) = converter.to_payloads([{"inner": {"name": 3}}])
    with pytest.raises(Exception, match="inner"):  # the field that failed is named
        converter.from_payloads([payload], [Outer])


async def test_field_types_are_resolved_once_per_class_and_dropped_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolved: list[type] = []
    real = typing.get_type_hints

    def counting(hint: Any, *args: Any, **kwargs: Any) -> Any:
        resolved.append(hint)
        return real(hint, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", counting)

    @dataclass
    class Local:  # as a workflow run's re-imported class: made, used, dropped
        inner: Inner

    for round in range(5):
        converter = DATA_CONVERTER.payload_converter  # the SDK makes one per serialization context
        (payload,) = converter.to_payloads([Local(Inner(f"x{round}"))])
        assert converter.from_payloads([payload], [Local]) == [Local(Inner(f"x{round}"))]
    assert resolved.count(Local) == 1
    assert resolved.count(Inner) <= 1  # once, or never if an earlier test resolved it

    from aicd.temporal import _DataclassFields

    assert Local in _DataclassFields._hints
    del Local, payload, counting
    resolved.clear()
    gc.collect()
    assert not any(cls.__name__ == "Local" for cls in _DataclassFields._hints)


async def test_a_worker_decodes_with_aicds_converter_whatever_client_it_is_given(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = temporal_env.client
    assert client.data_converter is not DATA_CONVERTER  # the environment's own client
    ours = with_data_converter(client)
    assert ours.data_converter is DATA_CONVERTER and ours.namespace == client.namespace
    assert with_data_converter(ours) is ours
    workers = build_worker(client, WorkerSettings(state_dir=tmp_path / "state"), "converter-queue")
    async with workers:
        assert {worker.client.data_converter is DATA_CONVERTER for worker in workers.workers} == {True}
    assert isinstance(ours, Client)
