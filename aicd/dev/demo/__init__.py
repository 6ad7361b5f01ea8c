"""`aicd demo`: a good release promoted and a bad one rolled back, on the embedded stack, end to end.

Everything is real and local: a source repo and a GitOps repo (bare Git repositories under
`<state>/demo/`), Temporal's dev server and the aicd worker, Prometheus, the local reconciler running the
demo app's versions behind traffic-splitting proxies, and a load generator. The demo

1. prepares `<state>/demo/` afresh (a new Temporal history, new repositories, new revisions each run),
   with release 1.0 built and running on every target, so each canary has a stable version to compare with;
2. starts the stack and writes the effective spec (the committed `delivery_specs/demo.yaml` with the
   repository paths, artifacts directory, interpreter and Prometheus URL filled in), validated by the loader;
3. merges release 1.1 (good) to `release/1.1` and delivers it: a staging canary that also rolls a feature
   flag out to 50% (setFlag) and ends with an end-to-end check, approval, a canary on prod-a, then a
   blue-green switch on prod-b (preview checked on its own port, one switch commit, the old version retired);
4. merges release 1.2 (30% of requests fail) to `release/1.2`: the analysis fails it in staging and the
   delivery rolls back with a commit;
5. checks what the targets serve afterwards, and stops every process it started.

`run_demo()` is the whole flow; the terminal (`aicd.cli.demo`) and the tests plug in through a
`DemoObserver` and the `before_stop` hook (which sees the stack still running).

Modules: `model` (releases, options, report, observer), `repos` (the Git repositories), `effective_spec`,
`state` (the state directory), `stack` (the processes), `flow` (the deliveries and `run_demo`).
"""

from aicd.dev.demo.effective_spec import effective_spec_text, load_demo_spec, write_effective_spec
from aicd.dev.demo.flow import check_serving, run_demo
from aicd.dev.demo.model import (
    BAD,
    DEFAULT_SPEC,
    GOOD,
    INITIAL,
    DemoError,
    DemoInterrupted,
    DemoObserver,
    DemoOptions,
    DemoReport,
    GitOpsCommit,
    LiveState,
    QuietObserver,
    Release,
    ReleaseOutcome,
    Traffic,
)
from aicd.dev.demo.repos import DemoLayout, DemoRepos, gitops_log, stable_at_head, values_at_head
from aicd.dev.demo.stack import TASK_QUEUE, DemoStack
from aicd.dev.demo.state import DEMO_DIR, exclusive, prepare, stop_leftovers

__all__ = [
    "BAD",
    "DEFAULT_SPEC",
    "DEMO_DIR",
    "GOOD",
    "INITIAL",
    "TASK_QUEUE",
    "DemoError",
    "DemoInterrupted",
    "DemoLayout",
    "DemoObserver",
    "DemoOptions",
    "DemoReport",
    "DemoRepos",
    "DemoStack",
    "GitOpsCommit",
    "LiveState",
    "QuietObserver",
    "Release",
    "ReleaseOutcome",
    "Traffic",
    "check_serving",
    "effective_spec_text",
    "exclusive",
    "gitops_log",
    "load_demo_spec",
    "prepare",
    "run_demo",
    "stable_at_head",
    "stop_leftovers",
    "values_at_head",
    "write_effective_spec",
]
