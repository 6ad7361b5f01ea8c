"""Shared test infrastructure, importable from tests/ and bench/ alike (as temporalio.testing is): the engine
fixtures (`engine`: a Temporal dev server, bare Git repos, specs from dicts, a worker per test, waiting on a
delivery's status), the loopback stand-ins the unchanged production code reaches through the official clients
(`standins`: Kubernetes/Argo CD, Slack, a Git HTTP server) and the fault-injection harness (`chaos`).
It needs the `test` extra (pytest, pytest-asyncio) besides `dev`."""
