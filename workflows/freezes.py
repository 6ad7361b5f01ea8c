"""FreezeBoardWorkflow: the organisation's stop button. `aicd freeze [--app GLOB]` adds a freeze,
`aicd unfreeze [--app GLOB]` lifts it; every delivery's gate activity reads the board (its memo `freezes`,
which needs no worker to answer, unlike a query) before a stage starts, so a freeze holds every matching delivery at its next stage, and lifting it lets
them go at their next recheck. One long-lived workflow (ID aicd-freezes): updates with validators tell the
caller at once what was refused; it continues as new before its history grows long."""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from aicd.messages import FREEZE_BOARD_WORKFLOW, FREEZES_MEMO, FREEZES_QUERY, HumanAction

# Continue as new after this many updates: the board's state is small, its history need not be.
UPDATES_PER_RUN = 500


@dataclass
class FreezeBoardInput:
    freezes: list[dict[str, str]] = field(default_factory=list)  # carried across continue-as-new


@dataclass
class FreezeChange:
    action: HumanAction  # who, why (reason), from where
    app: str = "*"  # a glob of app names; "*" is every app


@workflow.defn(name=FREEZE_BOARD_WORKFLOW)
class FreezeBoardWorkflow:
    @workflow.init
    def __init__(self, input: FreezeBoardInput) -> None:
        self.board: list[dict[str, str]] = list(input.freezes)
        self.updates = 0

    @workflow.query(name=FREEZES_QUERY)
    def freezes(self) -> list[dict[str, str]]:
        return self.board

    @workflow.update(name="freeze")
    def freeze(self, change: FreezeChange) -> str:
        self.updates += 1
        self.board = [
            *self.board,
            {
                "app": change.app,
                "actor": change.action.actor,
                "reason": change.action.reason,
                "since": workflow.now().isoformat(),
            },
        ]
        self._publish()
        return f"froze {'every app' if change.app == '*' else change.app}"

    @freeze.validator
    def _validate_freeze(self, change: FreezeChange) -> None:
        if not change.action.reason.strip():
            raise ValueError("a freeze needs a reason (--reason): it is shown on every delivery it holds")
        if any(existing["app"] == change.app for existing in self.board):
            raise ValueError(f"{change.app} is already frozen")

    @workflow.update(name="unfreeze")
    def unfreeze(self, change: FreezeChange) -> str:
        self.updates += 1
        self.board = [existing for existing in self.board if existing["app"] != change.app]
        self._publish()
        return f"unfroze {'every app' if change.app == '*' else change.app}"

    @unfreeze.validator
    def _validate_unfreeze(self, change: FreezeChange) -> None:
        if not any(existing["app"] == change.app for existing in self.board):
            frozen = ", ".join(existing["app"] for existing in self.board) or "nothing"
            raise ValueError(f"{change.app} is not frozen (frozen: {frozen})")

    def _publish(self) -> None:
        workflow.upsert_memo({FREEZES_MEMO: self.board})

    @workflow.run
    async def run(self, input: FreezeBoardInput) -> None:
        await workflow.wait_condition(lambda: self.updates >= UPDATES_PER_RUN)
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(FreezeBoardInput(list(self.board)), memo={FREEZES_MEMO: self.board})
