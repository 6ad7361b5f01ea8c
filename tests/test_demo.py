"""`aicd demo` end to end: real Temporal, Git, Prometheus and processes, no mocks (the slowest test file).

The full flow runs once with shorter analysis steps; a second run in the same state dir delivers a release
whose build serves another version than its tag, which only the demo's final check catches. Each checks that
no process is left behind. (tests/test_wheel.py interrupts the installed demo with SIGINT half-way;
tests/test_demo_under_load.py runs it on two busy cores.)
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from rich.console import Console

from aicd.cli.demo_view import render_live, render_summary
from aicd.dev.demo import (
    DEFAULT_SPEC,
    DEMO_DIR,
    GOOD,
    DemoError,
    DemoLayout,
    DemoOptions,
    DemoReport,
    DemoStack,
    LiveState,
    QuietObserver,
    Release,
    ReleaseOutcome,
    effective_spec_text,
    exclusive,
    prepare,
    run_demo,
    values_at_head,
)
from aicd.dev.processes import wait_gone
from aicd.flags import rollout_percent
from aicd.messages import DeliveryStatus
from aicd.spec.loader import load_spec

TARGETS = ("staging", "prod-a", "prod-b")
STAGING_FLAGS = "apps/demo-app/staging/flags.json"
# 5 s before the analysis (Prometheus discovers a new canary within ~5 s), then 4 intervals of 5 s: the
# judge passes a metric from 3 paired intervals (a bounded confidence sequence), one spare for a slow scrape.
ANALYSIS_S, PAUSE_S = 20.0, 5.0
LOAD_RATE = 15.0  # requests/s per target: plenty for the judge, and lighter on a 2-core machine
SAMPLES = 40


class Recorder(QuietObserver):
    """Keeps what Git says each target should run at the moment each delivery ends."""

    def __init__(self, layout: DemoLayout) -> None:
        super().__init__()
        self.layout = layout
        self.values: dict[str, Any] = {}
        self.last_frame: LiveState | None = None
        self.blue_green_frames: dict[str, str] = {}  # "preview"/"previous" -> the first frame showing it

    def progress(self, state: LiveState) -> None:
        super().progress(state)
        self.last_frame = state
        for role in ("preview", "previous"):
            if state.running["prod-b"].get(role) and role not in self.blue_green_frames:
                self.blue_green_frames[role] = rendered(render_live(state))

    def release_finished(self, outcome: ReleaseOutcome) -> None:
        super().release_finished(outcome)
        spec = load_spec(self.layout.spec)
        self.values[outcome.release.version] = values_at_head(self.layout, spec)


def git_show(layout: DemoLayout, revision: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{revision}:{path}"],
        cwd=layout.gitops_repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def prod_b_values(layout: DemoLayout, revision: str) -> Any:
    return yaml.safe_load(git_show(layout, revision, "apps/demo-app/prod-b/values.yaml"))


def rendered(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def children() -> set[int]:
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def versions_served(url: str, n: int) -> collections.Counter[tuple[int, str]]:
    answers: collections.Counter[tuple[int, str]] = collections.Counter()
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        for _ in range(n):
            response = client.get(f"{url}/")
            answers[(response.status_code, response.headers.get("x-version", "?"))] += 1
    return answers


def snapshot(before: set[int], seen: dict[str, Any]) -> Any:
    """A before_stop hook: with the stack still up, ask the proxies and the reconciler directly."""

    def hook(stack: DemoStack, report: DemoReport) -> None:
        assert stack.reconciler is not None
        seen["pids"] = children() - before
        seen["served"] = {
            name: versions_served(url, SAMPLES) for name, url in stack.reconciler.proxy_urls().items()
        }
        seen["running"] = {name: stack.reconciler.status(name) for name in report.targets}
        assert report.dashboard_url is not None
        with httpx.Client(base_url=report.dashboard_url, timeout=30.0, trust_env=False) as http:
            seen["dashboard"] = {
                o.delivery_id: http.get(f"/deliveries/{o.delivery_id}").text for o in report.outcomes
            }
            seen["dashboard"]["list"] = http.get("/").text

    return hook


def assert_serving_only(seen: dict[str, Any], tag: str) -> None:
    assert set(seen["served"]) == set(TARGETS)
    for name, answers in seen["served"].items():
        assert answers == {(200, tag): SAMPLES}, (name, answers)
    for name, running in seen["running"].items():
        assert running["healthy"] and running["stable"] == tag and running["canary"] is None, (name, running)


def assert_nothing_left(before: set[int], seen: dict[str, Any]) -> None:
    assert seen["pids"], "the stack ran as child processes"
    assert wait_gone(sorted(seen["pids"]), timeout=10) == []
    assert children() - before == set()


@pytest.mark.slow
def test_demo_promotes_the_good_release_and_rolls_back_the_bad_one(tmp_path: Path) -> None:
    before = children()
    options = DemoOptions(
        state_dir=tmp_path / "state",
        auto_approve=True,
        ui=False,
        temporal_port=0,
        load_rate=LOAD_RATE,
        analysis_duration=ANALYSIS_S,
        pause=PAUSE_S,
    )
    layout = DemoLayout(options.state_dir.resolve() / DEMO_DIR)
    recorder = Recorder(layout)
    seen: dict[str, Any] = {}
    report = run_demo(options, recorder, before_stop=snapshot(before, seen))
    assert report.ok, (report.problems, [o.problems for o in report.outcomes])
    good, bad = report.outcomes
    good_tag = good.revision[:7]
    app = "demo-app"

    # The good release: succeeded, weight 100 everywhere, approved by the listed approver, and Git agrees.
    assert good.status.phase == "succeeded"
    assert {n: (t.state, t.weight) for n, t in good.status.targets.items()} == {
        n: ("promoted", 100) for n in TARGETS
    }
    (smoke,) = good.status.verifications["staging"]  # the staging stage's end-to-end check
    assert (smoke.name, smoke.target, smoke.state) == ("smoke", "staging", "passed")
    assert [(a.kind, a.actor, a.stage) for a in good.status.actions] == [
        ("approve", "demo-user", "production")
    ]
    for name, values in recorder.values["1.1"].items():
        assert values["image"]["tag"] == good_tag and values["canary"]["weight"] == 0, (name, values)
    good_commits = [c for c in reversed(report.gitops_log) if c.delivery == f"{app}@{good.revision}"]
    # Every target in order: staging's canary weights, its flag rollout and promotion; prod-a's canary; then
    # prod-b blue-green: the preview, the switch (one commit) and the previous version retired.
    assert [c.step for c in good_commits] == [
        "staging/staging/0-setWeight",
        "staging/staging/3-setWeight",
        "staging/staging/4-setFlag",
        "staging/staging/promote",
        "production/prod-a/0-setWeight",
        "production/prod-a/3-setWeight",
        "production/prod-a/promote",
        "blue-green/prod-b/preview",
        "blue-green/prod-b/promote",
        "blue-green/prod-b/retire",
    ]
    # The switch, per Git: the preview ran the release while 1.0 took live traffic; the switch made it live
    # and kept 1.0 warm as the previous version; the retirement let 1.0 go.
    initial_tag = next(tag for tag, version in report.versions.items() if version == "1.0")
    prod_b = {c.step.rsplit("/", 1)[1]: prod_b_values(layout, c.sha) for c in good_commits[-3:]}
    assert (prod_b["preview"]["image"]["tag"], prod_b["preview"]["preview"]["tag"]) == (initial_tag, good_tag)
    assert prod_b["promote"]["image"]["tag"] == good_tag and prod_b["promote"]["preview"]["tag"] is None
    assert prod_b["promote"]["previous"]["tag"] == initial_tag
    assert prod_b["retire"]["image"]["tag"] == good_tag and prod_b["retire"]["previous"]["tag"] is None
    prod_b_status = good.status.targets["prod-b"]
    assert prod_b_status.strategy == "blueGreen"
    assert [(run.name, run.state) for run in prod_b_status.verifications] == [("preview-smoke", "passed")]
    # The flag rollout: one commit took new-checkout from off for everyone to "on" for half of staging's users;
    # the bad release never reached it, so the flag file at the end is still that one.
    flag_commit = next(c for c in good_commits if c.step.endswith("/4-setFlag"))
    assert (
        rollout_percent(git_show(layout, f"{flag_commit.sha}~1", STAGING_FLAGS), "new-checkout", "on") is None
    )
    flags_at_end = git_show(layout, "main", STAGING_FLAGS)
    assert rollout_percent(flags_at_end, "new-checkout", "on") == 50
    assert json.loads(flags_at_end)["flags"]["new-checkout"]["targeting"] == {
        "fractional": [["on", 50], ["off", 50]]
    }
    assert good.status.targets["staging"].flags == {"new-checkout": "on to 50%"}

    # The bad release: failed by the analysis on error rate at its first canary weight, rolled back in Git.
    assert bad.status.phase == "failed"
    assert "analysis failed" in bad.status.reason and "error-rate" in bad.status.reason
    bad_commits = [c for c in report.gitops_log if c.delivery == f"{app}@{bad.revision}"]
    assert [c.step for c in reversed(bad_commits)] == [
        "staging/staging/0-setWeight",
        "staging/staging/rollback",
    ]
    assert report.gitops_log[0].step == "staging/staging/rollback"  # the last word in Git
    assert report.gitops_log[-1].step == "" and "1.0" in report.gitops_log[-1].subject  # set up by hand
    for name, values in recorder.values["1.2"].items():
        assert values["image"]["tag"] == good_tag and values["canary"]["weight"] == 0, (name, values)

    # The dashboard the demo links to lists both releases; the bad one's chart says why it was rolled back.
    assert good.delivery_id in seen["dashboard"]["list"] and bad.delivery_id in seen["dashboard"]["list"]
    assert 'data-metric="error-rate" data-verdict="fail"' in seen["dashboard"][bad.delivery_id]
    assert 'class="rollback" data-target="staging"' in seen["dashboard"][bad.delivery_id]
    assert seen["dashboard"][good.delivery_id].count('class="node state-promoted"') == len(TARGETS)

    # Afterwards every target serves the good version only, with no canary running.
    assert_serving_only(seen, good_tag)
    assert seen["running"]["prod-b"]["preview"] is None and seen["running"]["prod-b"]["previous"] is None
    assert report.serving == {name: {good_tag: 30} for name in TARGETS}

    # What the terminal shows: the last live frame and the summary, rendered from this run's data.
    assert recorder.frames > 20 and recorder.last_frame is not None
    frame, summary = rendered(render_live(recorder.last_frame)), rendered(render_summary(report))
    assert "release 1.2" in frame and "running now" in frame and "traffic" in frame
    # While prod-b switched, the live view showed the preview (no live traffic yet), then 1.0 kept warm.
    preview_frame = recorder.blue_green_frames["preview"]
    assert re.search(rf"prod-b\s+1\.0 \({initial_tag}\).*preview 1\.1 \({good_tag}\)", preview_frame), (
        preview_frame
    )
    previous_frame = recorder.blue_green_frames["previous"]
    assert re.search(rf"prod-b\s+1\.1 \({good_tag}\).*previous 1\.0 \({initial_tag}\)", previous_frame), (
        previous_frame
    )
    for text in (
        "succeeded",
        "prod-b (blue-green switch)",
        "flags: staging new-checkout on to 50%",
        "failed",
        "staging/staging/rollback",
        "Prometheus",
        report.dashboard_url,
        good.delivery_id,  # with Temporal's UI off (as here) the summary names the deliveries instead of linking
        bad.delivery_id,
    ):
        assert text in summary, text
    assert "demo OK" in summary
    assert_nothing_left(before, seen)

    # A second run in the same state dir starts afresh (new repos, new Temporal history), here with a build
    # that answers as "c0ffee0" whatever its tag: every delivery step passes (healthy, no errors), so only the
    # demo's own final check can see that the targets do not serve what Git says, and it fails the demo.
    mislabelled = Release(
        "1.1",
        GOOD.branch,
        "a good release whose build answers as another version",
        0.0,
        claims_version="c0ffee0",
    )
    seen.clear()
    again = run_demo(
        dataclasses.replace(options, releases=(mislabelled,)), before_stop=snapshot(before, seen)
    )
    (rerun,) = again.outcomes
    assert rerun.status.phase == "succeeded" and rerun.as_expected, rerun.problems
    assert rerun.delivery_id not in {good.delivery_id, bad.delivery_id}
    assert [c.delivery for c in again.gitops_log[:-1]] == [f"{app}@{rerun.revision}"] * len(
        again.gitops_log[:-1]
    )
    assert not again.ok
    tag = rerun.revision[:7]
    for target in TARGETS:
        assert any(
            re.fullmatch(rf"{target} serves c0ffee0 \(\d+/\d+ answers\); Git says {tag}", problem)
            for problem in again.problems
        ), again.problems
    for name, answers in seen["served"].items():
        assert answers == {(200, "c0ffee0"): SAMPLES}, (name, answers)
    assert_nothing_left(before, seen)


# --- fast checks --------------------------------------------------------------------------------------------


def test_the_committed_spec_is_valid_and_queries_select_their_target() -> None:
    spec = load_spec(DEFAULT_SPEC)
    assert set(spec.targets) == set(TARGETS) and all(t.kind == "local" for t in spec.targets.values())
    assert spec.analysis is not None
    for query in [*spec.analysis.queries.values(), *spec.analysis.totals.values()]:
        for selector in ('app="demo-app"', 'target="{{ target }}"', 'track="{{ track }}"'):
            assert selector in query, query


def test_effective_spec_fills_in_this_run(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path / "demo")
    layout.root.mkdir()
    options = DemoOptions(analysis_duration=12, analysis_interval=4, pause=2.5)
    layout.spec.write_text(effective_spec_text(DEFAULT_SPEC, layout, "http://127.0.0.1:1234", options))
    spec = load_spec(layout.spec)
    assert spec.source_repo == str(layout.source_repo) and spec.gitops_repo == str(layout.gitops_repo)
    assert spec.analysis is not None and spec.analysis.prometheus.url == "http://127.0.0.1:1234"
    assert spec.analysis.interval_s == 4
    assert spec.build is not None and spec.build.command[0] == sys.executable
    assert spec.build.command[spec.build.command.index("--out") + 1] == str(layout.artifacts)
    assert all(test.argv[0] == sys.executable for test in spec.tests)
    steps = [step for stage in spec.stages for step in stage.steps]
    assert {s.duration_s for s in steps if s.kind == "analysis"} == {12}
    assert {s.max_duration_s for s in steps if s.kind == "analysis"} == {36}  # extends up to three times
    assert {s.duration_s for s in steps if s.kind == "pause"} == {2.5}
    assert yaml.safe_load(DEFAULT_SPEC.read_text())["spec"]["source"]["repo"] == ".aicd/demo/source.git"


def test_prepare_wipes_only_its_own_directory(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path / "demo")
    layout.root.mkdir()
    (layout.root / "precious.txt").write_text("not the demo's")
    with pytest.raises(DemoError, match="not made by `aicd demo`"):
        prepare(layout)
    assert (layout.root / "precious.txt").exists()
    (layout.root / "precious.txt").unlink()
    prepare(layout)  # an empty directory is fine; afterwards it carries the marker
    (layout.root / "leftover").write_text("from the last run")
    prepare(layout)
    assert [p.name for p in layout.root.iterdir()] == [".aicd-demo"]


def test_one_demo_per_state_dir(tmp_path: Path) -> None:
    with exclusive(tmp_path), pytest.raises(DemoError, match="another `aicd demo` runs"):
        with exclusive(tmp_path):
            pass
    with exclusive(tmp_path):  # released again
        pass


def test_the_summary_lists_what_went_wrong(tmp_path: Path) -> None:
    status = DeliveryStatus(
        "delivery-demo-app-abc", "demo-app", "abc1234" * 2, "demo-app:abc1234", "rejected"
    )
    status.reason = "stage production rejected by demo-user"
    outcome = ReleaseOutcome(GOOD, "abc1234" * 2, status.delivery_id, status, 30.0)
    outcome.problems.append("ended rejected, expected succeeded")
    report = DemoReport(
        state_dir=tmp_path, outcomes=[outcome], problems=["prod-a serves {'x': 30}, Git says y"]
    )
    text = rendered(render_summary(report))
    assert "demo NOT as expected" in text
    assert "release 1.1: ended rejected, expected succeeded" in text and "Git says y" in text
    assert "stage production rejected by demo-user" in text
