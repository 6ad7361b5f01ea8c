"""Chaos at small scale (issue 8): a handful of deliveries while every kind of fault is injected, judged from
Git and Temporal alone; and the judge itself shown to catch duplicated steps, lost commits and promotions past
an analysis that did not pass, so this suite cannot pass vacuously."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicd.dev.prometheus import find_prometheus
from aicd.testing.chaos import FAULT_KINDS, ChaosConfig, DeliveryRecord, TargetRecord, check_run, run_chaos
from aicd.testing.engine import git, make_repo
from aicd.trailers import CommitTrailers, commit_message

STEPS = [(0, "setWeight"), (1, "analysis"), (2, "setWeight")]
DELIVERY = "shop@" + "a" * 40


@pytest.mark.skipif(
    find_prometheus() is None, reason="needs Debian's prometheus (scripts/setup.sh installs it)"
)
@pytest.mark.slow
@pytest.mark.timeout(420)  # the run itself is bounded by its deadline; setup and teardown add some
def test_deliveries_stay_correct_under_every_kind_of_fault(tmp_path: Path) -> None:
    config = ChaosConfig(
        seed=7,
        deliveries=6,
        faults=len(FAULT_KINDS),
        start_span_s=25.0,
        fault_span_s=40.0,
        deadline_s=210.0,
        root=tmp_path / "chaos",
    )
    report = run_chaos(config)
    text = "\n".join(report.lines())
    check = report.check
    assert check.deliveries == 6, text
    assert check.correct == check.deliveries, text
    assert (check.duplicate_commits, check.lost_commits, check.unsafe_promotions) == (0, 0, 0), text
    assert all(report.faults[kind] >= 1 for kind in FAULT_KINDS), text
    assert not report.leftover_processes, text
    # Not vacuous: releases really went out, and the broken ones were really caught.
    assert check.outcomes["healthy:succeeded"] >= 1 and check.outcomes["broken:failed"] >= 1, text
    assert check.human_resumes == 0, text


def _commit(work: Path, step: str, content: str, delivery: str = DELIVERY) -> str:
    (work / "web.yaml").write_text(content)
    git("add", "-A", cwd=work)
    message = commit_message(f"aicd: {step}", CommitTrailers(delivery=delivery, step=step, actor="aicd"))
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@localhost",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        message,
        cwd=work,
    )
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def _repo(tmp_path: Path) -> tuple[str, Path]:
    bare, _ = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v0\n"})
    work = tmp_path / "work"
    git("clone", "-q", bare, str(work))
    return bare, work


def _record(
    healthy: bool, phase: str, looks: list[str], commits: list[str], reason: str = ""
) -> DeliveryRecord:
    target = TargetRecord("web", "prod", "web.yaml", STEPS, final_looks=looks)
    return DeliveryRecord(
        "delivery-shop",
        DELIVERY,
        healthy,
        phase,
        reason,
        reported_commits=commits,
        targets=[target],
        artifact_tag="v1",
    )


def test_checker_accepts_a_clean_run(tmp_path: Path) -> None:
    bare, work = _repo(tmp_path)
    shas = [
        _commit(work, "prod/web/0-setWeight", "image:\n  tag: v0\ncanary: v1\n"),
        _commit(work, "prod/web/2-setWeight", "image:\n  tag: v0\ncanary: v1\n"),
        _commit(work, "prod/web/promote", "image:\n  tag: v1\n"),
    ]
    result = check_run(bare, [_record(True, "succeeded", ["pass"], shas)])
    assert (result.correct, result.duplicate_commits, result.lost_commits, result.unsafe_promotions) == (
        1,
        0,
        0,
        0,
    ), result.problems


def test_checker_counts_a_duplicated_step_commit(tmp_path: Path) -> None:
    bare, work = _repo(tmp_path)
    shas = [_commit(work, "prod/web/0-setWeight", "a: 1\n"), _commit(work, "prod/web/0-setWeight", "a: 2\n")]
    result = check_run(bare, [_record(True, "paused", [], shas)])
    assert result.duplicate_commits == 1 and result.correct == 0


def test_checker_counts_a_promotion_past_a_failed_analysis(tmp_path: Path) -> None:
    bare, work = _repo(tmp_path)
    shas = [
        _commit(work, "prod/web/0-setWeight", "a: 1\n"),
        _commit(work, "prod/web/promote", "image:\n  tag: v1\n"),
    ]
    result = check_run(bare, [_record(False, "succeeded", ["fail"], shas)])
    assert result.unsafe_promotions == 1 and result.correct == 0
    assert any("broken release succeeded" in problem for problem in result.problems)
    # A later setWeight past an inconclusive analysis is as unsafe as the promote.
    result = check_run(bare, [_record(True, "failed", ["inconclusive"], shas, reason="x")])
    assert result.unsafe_promotions == 1


def test_checker_counts_lost_commits_and_unfinished_deliveries(tmp_path: Path) -> None:
    bare, work = _repo(tmp_path)
    sha = _commit(work, "prod/web/0-setWeight", "a: 1\n")
    result = check_run(bare, [_record(True, "running", [], [sha, "f" * 40])])
    assert result.lost_commits == 1 and result.correct == 0
    assert any("not a correct terminal state: running" in problem for problem in result.problems)
