"""`strategy: {blueGreen: {...}}` (Argo Rollouts' words): the release is written as the *preview* (it runs
without live traffic), checked by the pre-promotion steps (verification runs, analysis, pauses), promoted by
switching the active version in one commit - the version it replaces is kept warm as `previous` - checked
again by the post-promotion steps, and after the scale-down delay the previous version is retired in a last
commit.

Rollback is Git's ordinary per-file restore (aicd.activities.gitops): before the switch it drops the preview;
after it, it switches back in one commit, to the previous version that still runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from aicd.spec.durations import format_duration
from aicd.spec.yamlsafe import Path
from aicd.steps import Step, parse_step
from aicd.steps.base import Finding, StepKind
from aicd.strategies.base import StrategyKind, StrategyRollout

if TYPE_CHECKING:
    from aicd.plan import WritePlan

DEFAULT_SCALE_DOWN_DELAY_S = 30  # Argo Rollouts' default
CHECK_KINDS = ("analysis", "verify", "pause")  # what may check a preview or a promoted release
_CHECKS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {"$ref": "#/$defs/step"},
}


@dataclass(frozen=True)
class BlueGreenStrategy(StrategyKind):
    pre_promotion: list[Step] = field(default_factory=list)
    post_promotion: list[Step] = field(default_factory=list)
    auto_promotion_enabled: bool = True
    auto_promotion_seconds: int = 0
    scale_down_delay_seconds: int = DEFAULT_SCALE_DOWN_DELAY_S
    kind: Literal["blueGreen"] = "blueGreen"

    name: ClassVar[str] = "blueGreen"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "description": "Blue-green: the release runs as the preview (no live traffic), is checked, then takes"
        " all traffic in one commit; the version it replaced stays warm for scaleDownDelaySeconds, then is"
        " retired. Rollback before the switch drops the preview; after it, it switches back in one commit.",
        "properties": {
            "autoPromotionEnabled": {
                "type": "boolean",
                "description": "Switch once the pre-promotion checks pass (default true); false: wait for a"
                " human to resume (`aicd resume`, Slack).",
            },
            "autoPromotionSeconds": {
                "type": "integer",
                "minimum": 0,
                "description": "With autoPromotionEnabled: wait this long after the pre-promotion checks"
                " before switching (default 0).",
            },
            "scaleDownDelaySeconds": {
                "type": "integer",
                "minimum": 0,
                "description": "How long the previous version stays warm after the switch, counted from"
                " it, post-promotion checks included (default 30): a rollback until then is instant.",
            },
            "prePromotionAnalysis": {
                **_CHECKS_SCHEMA,
                "description": "Checks of the preview before the switch: analysis, verify (e.g. an HTTP"
                " check of {{ preview.url }}) and pause steps, in order; a failure drops the preview.",
            },
            "postPromotionAnalysis": {
                **_CHECKS_SCHEMA,
                "description": "Checks after the switch, while the previous version is still warm:"
                " analysis, verify and pause steps; a failure switches back.",
            },
        },
    }

    @classmethod
    def parse(cls, value: Any) -> BlueGreenStrategy:
        value = value or {}
        pre = list(value.get("prePromotionAnalysis") or [])
        post = list(value.get("postPromotionAnalysis") or [])
        return cls(
            pre_promotion=[parse_step(index, step) for index, step in enumerate(pre)],
            post_promotion=[parse_step(len(pre) + index, step) for index, step in enumerate(post)],
            auto_promotion_enabled=bool(value.get("autoPromotionEnabled", True)),
            auto_promotion_seconds=int(value.get("autoPromotionSeconds", 0)),
            scale_down_delay_seconds=int(value.get("scaleDownDelaySeconds", DEFAULT_SCALE_DOWN_DELAY_S)),
        )

    @classmethod
    def step_lists(cls, value: Mapping[str, Any]) -> Iterator[tuple[str, list[Any]]]:
        for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
            yield key, list(value.get(key) or [])

    @classmethod
    def checks(cls, path: Path, value: Mapping[str, Any], spec: Mapping[str, Any]) -> Iterator[Finding]:
        """Its checks never move traffic (the switch does, once); the target files have blue-green keys."""
        for key, steps in cls.step_lists(value):
            for index, step in enumerate(steps):
                kind = next(iter(step), None) if isinstance(step, dict) else None
                if kind is not None and kind not in CHECK_KINDS:
                    yield (
                        (*path, key, index),
                        f"{kind} has no place in a blue-green check (one of {', '.join(CHECK_KINDS)});"
                        " the switch moves all traffic at once",
                    )
        write = spec.get("write") or {}
        for key in ("preview", "previous"):
            if key in write and write[key] is None:
                yield path, f"blue-green writes spec.write.{key}, which is null"
        if value.get("autoPromotionEnabled") is False and "autoPromotionSeconds" in value:
            yield (
                (*path, "autoPromotionSeconds"),
                "autoPromotionSeconds applies with autoPromotionEnabled: true",
            )

    def steps(self) -> list[StepKind]:
        return [*self.pre_promotion, *self.post_promotion]

    def plan_lines(self, write: WritePlan, artifact_tag: str) -> list[str]:
        from aicd.plan import assignments

        lines = [f"preview: {assignments(write.preview_values(artifact_tag))} (no live traffic)"]
        lines += [f"{step.id}: {step.plan_line(write, artifact_tag)}" for step in self.pre_promotion]
        if not self.auto_promotion_enabled:
            lines.append("wait for a human to promote (autoPromotionEnabled: false)")
        elif self.auto_promotion_seconds:
            lines.append(f"wait {format_duration(self.auto_promotion_seconds)} (autoPromotionSeconds)")
        values, copies = write.switch_values(artifact_tag)
        kept = ", ".join(f"{key}=<{source} before>" for key, source in copies.items())
        lines.append(f"promote (switch, one commit): {assignments(values)}, {kept}")
        lines += [f"{step.id}: {step.plan_line(write, artifact_tag)}" for step in self.post_promotion]
        delay = format_duration(self.scale_down_delay_seconds)
        lines.append(f"retire after {delay} from the switch: {assignments(write.retire_values())}")
        return lines

    async def run(self, rollout: StrategyRollout) -> None:
        write, tag = rollout.write, rollout.artifact_tag
        await rollout.enter("preview", f"preview {tag}: no live traffic", weight=0)
        await rollout.commit("preview", f"preview {tag}", write.preview_values(tag))
        for step in self.pre_promotion:
            await rollout.step(step)
        if not self.auto_promotion_enabled:
            await rollout.enter("preview", f"preview {tag} checked")
            await rollout.wait_for_human(f"preview {tag} is ready: resume to switch live traffic to it")
        elif self.auto_promotion_seconds:
            await rollout.enter(
                "preview", f"switching in {self.auto_promotion_seconds}s (autoPromotionSeconds)"
            )
            await rollout.sleep(self.auto_promotion_seconds)
        await rollout.enter("promote", f"switching live traffic to {tag}")
        values, copies = write.switch_values(tag)
        await rollout.commit("promote", f"promote {tag} (blue-green switch)", values, copies)
        switched = rollout.now()
        await rollout.enter("promoted", f"{tag} live; previous version kept warm", weight=100)
        for step in self.post_promotion:
            await rollout.step(step)
        remaining = self.scale_down_delay_seconds - (rollout.now() - switched)
        if remaining > 0:
            await rollout.enter("scale-down-delay", f"previous version warm for {remaining:.0f}s more")
            await rollout.sleep(remaining)
        await rollout.enter("retire", "retiring the previous version")
        await rollout.commit("retire", "retire the previous version", write.retire_values())
