"""`aicd init`: templates listed from the package, every template scaffolds an app whose specs validate, whose
GitOps layout has a values file per target and whose Argo CD Applications point at it; the Python template's
app serves /health and Prometheus /metrics; bad input writes nothing. End to end: `aicd init` then
`aicd deliver` runs a first canary on a running `aicd dev` (the console commands, as a user types them)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from aicd.scaffold import local_targets, templates
from aicd.testing.dev_cli import aicd_command, running_aicd_dev
from aicd.testing.engine import commits
from tests.conftest import RunAicd

TEMPLATES = ("python", "node", "image")


def test_init_lists_the_packaged_templates(run_aicd: RunAicd) -> None:
    assert set(templates()) == set(TEMPLATES)
    text = run_aicd("init", "--list")
    assert text.returncode == 0
    assert [line.split()[0] for line in text.stdout.splitlines()] == sorted(TEMPLATES)
    assert "/health" in text.stdout and "Prometheus" in text.stdout
    listed = json.loads(run_aicd("init", "--list", "-o", "json").stdout)
    assert set(listed) == set(TEMPLATES) and all(listed.values())


@pytest.mark.parametrize("template", TEMPLATES)
def test_init_scaffolds_app_specs_gitops_and_argocd(template: str, tmp_path: Path, run_aicd: RunAicd) -> None:
    state = tmp_path / "state"
    done = run_aicd("init", "shop", "-t", template, "--state-dir", str(state), "-o", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    app = Path(made["directory"])
    assert app == tmp_path / "shop" and (app / "app.yaml").is_file() and (app / ".git").is_dir()
    checked = run_aicd("validate", made["spec"], made["local_spec"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    spec = yaml.safe_load(Path(made["spec"]).read_text())["spec"]
    for name, target in spec["targets"].items():
        values = yaml.safe_load((app / "gitops" / target["path"]).read_text())
        assert values["image"]["tag"] and values["canary"] == {"tag": "", "weight": 0}, name
        assert (app / "gitops" / Path(target["path"]).parent / "Chart.yaml").is_file()
    applications = list(yaml.safe_load_all(Path(made["argocd"]).read_text()))
    assert [a["metadata"]["name"] for a in applications] == ["shop-staging", "shop-production"]
    assert all(
        a["spec"]["source"]["path"] == f"apps/shop/{a['metadata']['labels']['aicd.dev/target']}"
        for a in applications
    )
    # The local targets' values files are on the embedded stack's GitOps repo, running a first version.
    for path in local_targets("shop").values():
        shown = subprocess.run(
            ["git", "--git-dir", made["local_gitops"], "show", f"main:{path}"], capture_output=True, text=True
        )
        assert yaml.safe_load(shown.stdout)["image"]["tag"] == "shop-initial", shown.stderr
    assert (state / "artifacts" / "shop-initial" / "app.yaml").is_file()
    # What the template is about: its own files, with the app's name filled in.
    files = {path.name for path in app.iterdir()}
    expected = {"python": {"app.py", "Dockerfile"}, "node": {"server.js", "package.json", "Dockerfile"}}
    assert expected.get(template, {"IMAGE.md"}) <= files
    assert "__APP__" not in "".join(
        p.read_text() for p in app.rglob("*") if p.is_file() and ".git" not in p.parts
    )
    assert ("build" in spec) == (template != "image")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("template", ["python", "node"])
def test_the_template_app_serves_health_and_metrics(template: str, tmp_path: Path, run_aicd: RunAicd) -> None:
    runtime = {"python": [sys.executable, "app.py"], "node": ["node", "server.js"]}[template]
    if shutil.which(runtime[0]) is None:
        pytest.skip(f"{runtime[0]} is not installed")
    assert (
        run_aicd("init", "web", "-t", template, "--state-dir", str(tmp_path / "s"), cwd=tmp_path).returncode
        == 0
    )
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "VERSION": "abc1234", "TRACK": "canary"}
    server = subprocess.Popen(runtime, cwd=tmp_path / "web", env=env, stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
        assert health.status_code == 200 and health.headers["x-version"] == "abc1234"
        for _ in range(3):
            assert httpx.get(f"{base}/", timeout=2).json() == {"app": "web", "version": "abc1234"}
        metrics = httpx.get(f"{base}/metrics", timeout=2).text
        assert 'http_requests_total{app="web",version="abc1234",track="canary",code="200"} 3' in metrics
        assert 'http_request_duration_seconds_count{app="web",version="abc1234",track="canary"} 3' in metrics
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_init_refuses_bad_input_and_writes_nothing(tmp_path: Path, run_aicd: RunAicd) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    for args, why in (
        (("Shop_1",), "a DNS label"),
        (("shop", "-t", "cobol"), "unknown template 'cobol'; templates are image, node, python"),
        ((), "name the app"),
    ):
        done = run_aicd("init", *args, *state, cwd=tmp_path)
        assert done.returncode == 2 and why in done.stderr, done.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    done = run_aicd("init", "shop", "--dir", "taken", *state, cwd=tmp_path)
    assert done.returncode == 2 and "exists and is not empty" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def test_init_then_deliver_runs_a_first_canary_on_aicd_dev(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_aicd_dev(state) as env:
        made = subprocess.run(
            [*aicd_command(), "init", "shop", "-o", "json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
        local_spec = json.loads(made.stdout)["local_spec"]
        delivered = subprocess.run(
            [*aicd_command(), "deliver", local_spec, "--revision", "main", "--wait"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert delivered.returncode == 0, delivered.stdout + delivered.stderr
        assert delivered.stdout.strip().endswith(": succeeded"), delivered.stdout
    revision = json.loads(made.stdout)["revision"]
    steps = [entry["Aicd-Step"] for entry in commits(str(state / "gitops.git")) if "Aicd-Step" in entry]
    assert steps == [
        f"{stage}/shop-{stage}/{step}"
        for stage in ("staging", "production")
        for step in ("0-setWeight", "2-setWeight", "promote")
    ]
    for path in local_targets("shop").values():
        shown = subprocess.run(
            ["git", "--git-dir", str(state / "gitops.git"), "show", f"main:{path}"],
            capture_output=True,
            text=True,
        )
        values = yaml.safe_load(shown.stdout)
        assert values["image"]["tag"] == revision[:7] and values["canary"]["weight"] == 0, values
