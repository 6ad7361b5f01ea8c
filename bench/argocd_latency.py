"""Latency of an `argocd` target step: from "commit pushed" to "step marked healthy", through the loopback
Kubernetes/Argo CD stand-in with no simulated delay.

    .venv/bin/python bench/argocd_latency.py [STEPS]

Figures:
- step time: the driver's `sync` for one freshly pushed commit (read app, request sync, watch until healthy);
- stand-in Argo CD work: the time the stand-in spends playing Argo CD per operation (git rev-parse/show, three
  status writes) - what a real Argo CD would spend anyway, so it is not our overhead;
- stand-in GET: a bare GET of the Application through the same client - the API round trip floor.
Our overhead per step = mean step time - stand-in Argo CD work per operation. Goal: under 100 ms.
The last line is machine-readable: `steps=N overhead_ms_per_step=X standin_ms=Y`.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from aicd.activities.drivers.argocd import ArgoCDDriver
from aicd.activities.drivers.base import SyncRequest
from aicd.argocd_manifests import render_applications
from aicd.testing.standins.kube_argocd import GitOpsRepo, KubeArgoCD

APP = "bench-app"
VALUES = "apps/bench/prod/values.yaml"
GET_SAMPLES = 200


def _request(sha: str, kubeconfig: Path, step: int, gitops: str) -> SyncRequest:
    return SyncRequest(
        delivery_id="delivery-bench",
        stage="production",
        target="prod",
        kind="argocd",
        config={
            "kind": "argocd",
            "app": APP,
            "path": VALUES,
            "kubeconfig": str(kubeconfig),
            "context": "bench",
        },
        gitops_repo=gitops,
        gitops_branch="main",
        revision=sha,
        step=f"production/prod/{step}-setWeight",
        timeout_s=60.0,
    )


def _noop(*_details: Any) -> None:
    pass


async def _run(steps: int) -> tuple[float, float]:
    with (
        tempfile.TemporaryDirectory(prefix="aicd-bench-") as tmp,
        KubeArgoCD() as standin,
    ):
        root = Path(tmp)
        gitops = GitOpsRepo(root / "git")
        gitops.commit({VALUES: "image:\n  tag: v0\ncanary:\n  weight: 0\n"})
        (manifest,) = render_applications(
            "bench", gitops.url, "main", {"prod": {"kind": "argocd", "app": APP, "path": VALUES}}
        )
        standin.add_application(manifest)
        kubeconfig = standin.write_kubeconfig(root / "kubeconfig", context="bench")
        driver = ArgoCDDriver()

        # warm-up: client creation, imports, connection pool
        sha = gitops.commit({VALUES: "image:\n  tag: v1\ncanary:\n  weight: 1\n"})
        await driver.sync(_request(sha, kubeconfig, 0, gitops.url), _noop)
        busy0, ops0, requests0 = (
            standin.stats.controller_busy_s,
            standin.stats.operations,
            len(standin.requests),
        )

        step_ms: list[float] = []
        for i in range(1, steps + 1):
            sha = gitops.commit({VALUES: f"image:\n  tag: v{i}\ncanary:\n  weight: {i % 100}\n"})
            t0 = time.perf_counter()  # commit pushed
            result = await driver.sync(_request(sha, kubeconfig, i, gitops.url), _noop)
            step_ms.append((time.perf_counter() - t0) * 1000)  # step marked healthy
            assert result.healthy and result.revision == sha
        ops = standin.stats.operations - ops0
        controller_ms = (standin.stats.controller_busy_s - busy0) * 1000 / max(ops, 1)
        requests_per_step = (len(standin.requests) - requests0) / steps
        assert ops == steps, f"expected one sync per step, saw {ops}"

        api_client, _link = driver._client(driver_target(kubeconfig))
        api = k8s.CustomObjectsApi(api_client)
        api.get_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications", APP)
        get_ms: list[float] = []
        for _ in range(GET_SAMPLES):
            t0 = time.perf_counter()
            api.get_namespaced_custom_object("argoproj.io", "v1alpha1", "argocd", "applications", APP)
            get_ms.append((time.perf_counter() - t0) * 1000)

    mean_step = statistics.fmean(step_ms)
    standin_ms = statistics.fmean(get_ms)
    overhead = mean_step - controller_ms
    q = statistics.quantiles(step_ms, n=20) if len(step_ms) >= 2 else [mean_step] * 19
    print(f"steps                         {steps}")
    print(
        f"step time mean / p50 / p95    {mean_step:.1f} / {statistics.median(step_ms):.1f} / {q[18]:.1f} ms"
    )
    print(f"stand-in Argo CD work per op  {controller_ms:.1f} ms (git + status writes)")
    print(f"stand-in GET mean             {standin_ms:.2f} ms ({GET_SAMPLES} samples)")
    print(f"API requests per step         {requests_per_step:.1f}")
    print(
        f"our overhead per step         {overhead:.1f} ms (goal < 100 ms) = {overhead / standin_ms:.1f} x GET"
    )
    return overhead, standin_ms


def driver_target(kubeconfig: Path) -> Any:
    from aicd.activities.drivers.argocd import _Target

    return _Target.from_request(_request("0" * 40, kubeconfig, 0, "unused"))


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    overhead, standin_ms = asyncio.run(_run(steps))
    print(f"steps={steps} overhead_ms_per_step={overhead:.1f} standin_ms={standin_ms:.2f}")


if __name__ == "__main__":
    main()
