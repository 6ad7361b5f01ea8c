"""Verification runs (Argo Rollouts' Job and Web metrics, Flagger's acceptance-test webhooks): a command or an
HTTP check run against a deployed target, retried a few times, whose failure fails the step like a failed
analysis. The same typed run serves the `verify` step (canary and blue-green) and a stage's `verify:` list
(end-to-end tests once every target of the stage is promoted).

A command is an argv list run exactly like the build and tests (aicd.activities.commands: a checkout of the
source at the delivery's revision, an explicit environment, named secrets, masked output); an HTTP check is
one request whose status and body are compared with what is expected. Placeholders are filled when the run
starts, from the fixed variables plus the target's URLs: `{{ url }}` (its live traffic), `{{ preview.url }}`
(a blue-green preview), `{{ canary.url }}` (the canary alone) - from the target's spec, or for `local` targets
from the embedded reconciler. Nothing here does I/O: the workflows run it through activities."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aicd.spec.durations import format_duration, parse_duration
from aicd.spec.placeholders import placeholders_in, render

DEFAULT_VERIFY_TIMEOUT_S = 5 * 60.0
DEFAULT_HTTP_TIMEOUT_S = 10.0
DEFAULT_RETRY_INTERVAL_S = 5.0
# Placeholders that name one target: a stage-level run using any of them runs once per target of the stage.
TARGET_VARIABLES = frozenset({"target", "url", "preview.url", "canary.url"})
# The target URL placeholders, and the target spec key each is read from.
URL_KEYS = {"url": "url", "preview.url": "previewUrl", "canary.url": "canaryUrl"}

VERIFICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "description": "A verification run: a command (argv) or an HTTP check against the deployed target,"
    " retried up to `retries` times; a run that still fails fails the step (rollback per scope).",
    "properties": {
        "name": {
            "type": "string",
            "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
            "description": "Name shown in status and logs.",
        },
        "command": {
            "$ref": "#/$defs/argv",
            "description": "The argv list, run in a checkout of the source at the delivery's revision like the"
            " tests; placeholders such as {{ target }}, {{ url }}, {{ preview.url }}, {{ canary.url }} are"
            " filled. Exit code 0 passes.",
        },
        "env": {
            "$ref": "#/$defs/env",
            "description": "Environment variables of the command (literal values).",
        },
        "secretEnv": {"$ref": "#/$defs/secretEnv", "description": "Secrets the command gets, by name."},
        "http": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "description": "One HTTP request; it passes when the status (and the body, with expectBody)"
            " is as expected.",
            "properties": {
                "url": {
                    "type": "string",
                    "pattern": "^(https?://|\\{\\{)",
                    "description": "URL to request, e.g. {{ preview.url }}/health.",
                },
                "method": {
                    "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                    "description": "HTTP method (default GET).",
                },
                "headers": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Request headers with literal values (never secrets).",
                },
                "secretHeaders": {
                    "type": "object",
                    "additionalProperties": {"$ref": "#/$defs/envName"},
                    "description": "Request headers whose values are secrets the worker holds, by name (as"
                    " secretEnv: AICD_COMMAND_SECRET_ENV, AICD_COMMAND_SECRET_DIR), e.g."
                    " {Authorization: SMOKE_TOKEN}.",
                },
                "body": {"type": "string", "description": "Request body."},
                "expectStatus": {
                    "oneOf": [
                        {"type": "integer", "minimum": 100, "maximum": 599},
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "integer", "minimum": 100, "maximum": 599},
                        },
                    ],
                    "description": "The status (or statuses) that pass (default 200).",
                },
                "expectBody": {
                    "type": "string",
                    "minLength": 1,
                    "description": "A regular expression (Python syntax) the response body must contain a"
                    " match of.",
                },
            },
        },
        "timeout": {
            "$ref": "#/$defs/duration",
            "description": "Time limit of one attempt (default 5m for a command, 10s for an HTTP check); an"
            " attempt that runs out of time has failed.",
        },
        "retries": {
            "type": "integer",
            "minimum": 0,
            "maximum": 100,
            "description": "How many times a failed attempt is tried again (default 0).",
        },
        "retryInterval": {
            "$ref": "#/$defs/duration",
            "description": "The wait before each retry (default 5s); a pause stops its clock.",
        },
    },
    "oneOf": [{"required": ["command"]}, {"required": ["http"]}],
}


@dataclass(frozen=True)
class HttpCheck:
    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict, hash=False)
    secret_headers: dict[str, str] = field(default_factory=dict, hash=False)  # header -> secret name
    body: str | None = None
    expect_status: tuple[int, ...] = (200,)
    expect_body: str | None = None


@dataclass(frozen=True)
class Verification:
    """One verification run as the spec says it; placeholders are filled by `rendered` when it runs."""

    name: str
    timeout_s: float
    retries: int = 0
    retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S
    argv: tuple[str, ...] = ()  # a command, or
    http: HttpCheck | None = None  # an HTTP check
    env: dict[str, str] = field(default_factory=dict, hash=False)
    secret_env: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Verification:
        http = raw.get("http")
        status = http.get("expectStatus", 200) if http else 200
        default_timeout = DEFAULT_HTTP_TIMEOUT_S if http else DEFAULT_VERIFY_TIMEOUT_S
        return cls(
            name=raw["name"],
            timeout_s=parse_duration(raw["timeout"]) if "timeout" in raw else default_timeout,
            retries=int(raw.get("retries", 0)),
            retry_interval_s=(
                parse_duration(raw["retryInterval"]) if "retryInterval" in raw else DEFAULT_RETRY_INTERVAL_S
            ),
            argv=tuple(raw.get("command", ())),
            http=(
                HttpCheck(
                    url=http["url"],
                    method=http.get("method", "GET"),
                    headers=dict(http.get("headers", {})),
                    secret_headers=dict(http.get("secretHeaders", {})),
                    body=http.get("body"),
                    expect_status=tuple(status) if isinstance(status, list) else (int(status),),
                    expect_body=http.get("expectBody"),
                )
                if http
                else None
            ),
            env=dict(raw.get("env", {})),
            secret_env=tuple(raw.get("secretEnv", ())),
        )

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def texts(self) -> list[str]:
        """Every text placeholders may be in."""
        if self.http is not None:
            return [self.http.url, *(self.http.headers.values()), self.http.body or ""]
        return [*self.argv, *self.env.values()]

    def variables_used(self) -> set[str]:
        return {name for text in self.texts() for name in placeholders_in(text)}

    @property
    def per_target(self) -> bool:
        """Whether it names a target (a stage-level run then runs once per target of the stage)."""
        return bool(self.variables_used() & TARGET_VARIABLES)

    def rendered(self, variables: Mapping[str, str]) -> Verification:
        """The run with every placeholder filled (ValueError names one without a value)."""
        fill = lambda text: render(text, variables)  # noqa: E731 - one line, used for every field
        http = self.http
        if http is not None:
            http = HttpCheck(
                url=fill(http.url),
                method=http.method,
                headers={key: fill(value) for key, value in http.headers.items()},
                secret_headers=dict(http.secret_headers),
                body=fill(http.body) if http.body is not None else None,
                expect_status=http.expect_status,
                expect_body=http.expect_body,
            )
        return Verification(
            self.name,
            self.timeout_s,
            self.retries,
            self.retry_interval_s,
            tuple(fill(arg) for arg in self.argv),
            http,
            {key: fill(value) for key, value in self.env.items()},
            self.secret_env,
        )

    def describe(self) -> str:
        if self.http is not None:
            what = f"{self.http.method} {self.http.url} expects {'/'.join(map(str, self.http.expect_status))}"
            if self.http.expect_body:
                what += f" and body ~ /{self.http.expect_body}/"
        else:
            what = " ".join(self.argv)
        tries = (
            f", {self.attempts} attempts {format_duration(self.retry_interval_s)} apart"
            if self.retries
            else ""
        )
        return f"verify {self.name}: {what} [timeout {format_duration(self.timeout_s)}{tries}]"


def body_matches(pattern: str, body: str) -> bool:
    return re.search(pattern, body) is not None


def target_urls(spec_urls: Mapping[str, str], reported: Mapping[str, str]) -> dict[str, str]:
    """A target's URLs by placeholder name: what its spec says, else what its driver reported (the embedded
    reconciler knows the ports it serves a local target on)."""
    return {
        name: spec_urls.get(name) or reported.get(name, "")
        for name in URL_KEYS
        if spec_urls.get(name) or reported.get(name)
    }
