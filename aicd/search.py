"""Search attributes aicd registers (Keyword) and indexes deliveries by."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

APP = SearchAttributeKey.for_keyword("AicdApp")
STAGE = SearchAttributeKey.for_keyword("AicdStage")
PHASE = SearchAttributeKey.for_keyword("AicdPhase")

ALL = (APP, STAGE, PHASE)


def dev_server_args() -> list[str]:
    """`temporal server start-dev` arguments that register them."""
    args: list[str] = []
    for key in ALL:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args
