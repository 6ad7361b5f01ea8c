"""The HTTP check of a verification run (aicd.verification): one request, its status and body compared with
what is expected. A check that does not pass is a result, not an error: the workflow decides whether to try
again (the run's `retries`) and fails the step when no attempt passed. A command run is the build's and tests'
runner (aicd.activities.commands): same environment, secrets and masking.

Secret headers are read on the worker from the secrets the operator allows (CommandSecrets, as `secretEnv`);
the response body's start reaches status only masked (every secret the worker holds) and redacted."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from aicd.activities.commands import SECRET_DIR_ENV, SECRET_ENV_NAMES_ENV, CommandSecrets
from aicd.errors import ErrorType
from aicd.redact import process_mask, redact
from aicd.spec.placeholders import placeholders_in
from aicd.verification import HttpCheck, body_matches

BODY_TAIL_CHARS = 1000  # of a response body, kept in status


@dataclass
class HttpCheckRequest:
    name: str  # the run's name, for messages
    check: HttpCheck  # placeholders filled
    timeout_s: float


@dataclass
class CheckResult:
    passed: bool
    detail: str  # what was seen: status, body match, or why no answer came
    output_tail: str = ""  # the start of the body (masked)
    seconds: float = 0.0
    status: int | None = None
    timed_out: bool = False


class VerificationActivities:
    def __init__(self, secrets: CommandSecrets | None = None) -> None:
        self.secrets = secrets if secrets is not None else CommandSecrets.from_env()

    @activity.defn(name="verify_http")
    async def http_check(self, request: HttpCheckRequest) -> CheckResult:
        check = request.check
        leftover = [name for text in (check.url, *check.headers.values()) for name in placeholders_in(text)]
        if leftover:
            raise ApplicationError(
                f"verify {request.name}: placeholders {leftover} have no value here",
                non_retryable=True,
                type=ErrorType.COMMAND_INVALID,
            )
        headers = dict(check.headers)
        missing = []
        for header, secret in check.secret_headers.items():
            value = self.secrets.value(secret)
            if value is None:
                missing.append(secret)
            else:
                headers[header] = value
        if missing:
            raise ApplicationError(
                f"verify {request.name}: secretHeaders {missing} not allowed on this worker: list worker"
                f" variables in {SECRET_ENV_NAMES_ENV} or put files of those names in {SECRET_DIR_ENV}",
                non_retryable=True,
                type=ErrorType.COMMAND_SECRET_MISSING,
            )
        mask = process_mask(extra=self.secrets.values())
        started = time.monotonic()
        # trust_env=False: a check reaches the URL it names, never through the worker's proxy settings.
        async with httpx.AsyncClient(timeout=request.timeout_s, trust_env=False) as client:
            try:
                response = await client.request(check.method, check.url, headers=headers, content=check.body)
            except httpx.TimeoutException:
                seconds = time.monotonic() - started
                return CheckResult(
                    False, f"no answer within {request.timeout_s:g}s", seconds=seconds, timed_out=True
                )
            except httpx.HTTPError as error:
                return CheckResult(
                    False,
                    redact(f"request failed: {type(error).__name__}: {error}", mask),
                    seconds=time.monotonic() - started,
                )
        seconds = time.monotonic() - started
        body = response.text
        # Masked whole, then cut: a secret or URL the cut runs through is never left half-recognised.
        tail = redact(body, mask)[:BODY_TAIL_CHARS]
        problems = []
        if response.status_code not in check.expect_status:
            expected = "/".join(map(str, check.expect_status))
            problems.append(f"status {response.status_code}, expected {expected}")
        if check.expect_body is not None and not body_matches(check.expect_body, body):
            problems.append(f"body has no match of /{check.expect_body}/")
        if problems:
            return CheckResult(False, "; ".join(problems), tail, seconds, response.status_code)
        matched = f", body ~ /{check.expect_body}/" if check.expect_body else ""
        return CheckResult(
            True, f"status {response.status_code}{matched}", tail, seconds, response.status_code
        )
