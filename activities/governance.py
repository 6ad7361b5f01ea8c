"""The gate activity: asks every gate kind (aicd.gates) whether a stage may start, reading for them what they
need: files of the GitOps repository (policies, the calendar; through GitOpsActivities' clone), the freezes
set with `aicd freeze` (the freeze board workflow, by query), the reports the delivery's commands wrote on
this worker, Prometheus (carbon-aware timing) and an OPA server's Data API.

Reports live on the worker that ran the build (`$AICD_REPORTS_DIR`, never in Temporal history: a scanner's
report can quote what it found); the delivery asks that worker for its gate checks (its host queue,
aicd.workflows.common.host_queue). Should that worker be gone, another one answers with no reports - a
policy that needs a report should deny when it is missing, as the example policy warns."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from aicd.activities.commands import reports_dir
from aicd.activities.gitops import GitOpsActivities
from aicd.activities.prometheus import PrometheusProvider
from aicd.gates import GATE_KINDS, GateAnswer, GateRequest
from aicd.governance.rego import PolicyError
from aicd.messages import FREEZE_BOARD_ID, FREEZES_MEMO
from aicd.spec.model import PrometheusConfig

log = logging.getLogger(__name__)
MAX_REPORT_BYTES = 4 * 1024 * 1024  # a larger report is left out (and said so) rather than loaded
OPA_TIMEOUT_S = 10.0


class GovernanceActivities:
    def __init__(self, state_dir: Path, gitops: GitOpsActivities, client: Client) -> None:
        self.state_dir = state_dir
        self.gitops = gitops
        self.client = client

    @activity.defn(name="check_gates")
    async def check_gates(self, request: GateRequest) -> GateAnswer:
        answer = GateAnswer()
        for kind in GATE_KINDS:
            if kind.applies(request):
                await kind.check(self, request, answer)
        return answer

    # --- GateContext ---------------------------------------------------------------------------------
    async def gitops_files(self, repo: str, branch: str, paths: list[str], suffix: str) -> dict[str, str]:
        return await asyncio.to_thread(self.gitops.files_under, repo, branch, paths, suffix)

    async def global_freezes(self) -> list[dict[str, str]]:
        try:
            board = await self.client.get_workflow_handle(FREEZE_BOARD_ID).describe()
        except RPCError as error:  # no freeze was ever set: the board does not exist
            log.debug("no freeze board: %s", error)
            return []
        if board.status != WorkflowExecutionStatus.RUNNING:
            return []  # a board an operator terminated holds nothing
        freezes: list[dict[str, str]] = await board.memo_value(FREEZES_MEMO, default=[])
        return freezes

    async def reports(self, delivery_id: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            found: dict[str, Any] = {}
            folder = reports_dir(self.state_dir, delivery_id)
            if not folder.is_dir():
                return found
            for file in sorted(folder.glob("*.json")):
                if file.stat().st_size > MAX_REPORT_BYTES:
                    found[file.stem] = {"error": f"report larger than {MAX_REPORT_BYTES} bytes, not loaded"}
                    continue
                try:
                    found[file.stem] = json.loads(file.read_text(encoding="utf-8"))
                except (OSError, ValueError) as error:
                    found[file.stem] = {"error": f"not JSON: {error}"}
            return found

        return await asyncio.to_thread(read)

    async def prometheus_value(self, prometheus: PrometheusConfig, query: str) -> float | None:
        def ask() -> float | None:
            provider = PrometheusProvider(prometheus)
            try:
                return provider.instant(query)
            finally:
                provider.close()

        try:
            return await asyncio.to_thread(ask)
        except Exception as error:  # the weather never holds a delivery: no answer, no wait
            activity.logger.warning("carbon query %s failed: %s", query, error)
            return None

    async def opa_decision(self, url: str, package: str, input_document: dict[str, Any]) -> Any:
        endpoint = f"{url}/v1/data/{package.replace('.', '/')}"
        try:
            async with httpx.AsyncClient(timeout=OPA_TIMEOUT_S) as http:
                response = await http.post(endpoint, json={"input": input_document})
        except httpx.HTTPError as error:
            raise RuntimeError(f"OPA at {url} unreachable: {error}") from None  # retried by the activity
        if response.status_code >= 500:
            raise RuntimeError(f"OPA at {url} answered {response.status_code}")
        if response.status_code != 200:
            raise PolicyError(f"OPA at {endpoint} answered {response.status_code}: {response.text[:300]}")
        body = response.json()
        if "result" not in body:
            raise PolicyError(f"OPA has no document data.{package} (is the policy loaded on the server?)")
        return body["result"]
