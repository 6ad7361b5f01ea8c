"""Redaction: credentials in URLs and secret values never reach a message, a log line or a stored output.
The masking is exercised on chunked streams (a secret split across reads is still masked), and the real
failure paths (git clone of the source and of the GitOps repo, git ls-remote of the poller) are run against
an unreachable URL with a password in it."""

from __future__ import annotations

import base64
import logging
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import ActivityInboundInterceptor, ActivityOutboundInterceptor, ExecuteActivityInput

from aicd.activities.commands import (
    OUTPUT_TAIL_BYTES,
    CommandActivities,
    CommandRequest,
    CommandResult,
    CommandSecrets,
)
from aicd.activities.drivers.base import SyncResult
from aicd.activities.failures import RedactActivityOutput, redacted_failure
from aicd.activities.gitops import GitOpsClone
from aicd.activities.prometheus import read_secret
from aicd.observability.logs import JsonFormatter
from aicd.redact import (
    MASK,
    RedactingFormatter,
    SecretMask,
    has_credentials,
    looks_secret,
    process_mask,
    redact,
    redact_credentials,
    redact_cut,
    remember_secret,
    watch_configured_secret_files,
)
from aicd.source import SourceError as PollError
from aicd.source import list_heads
from aicd.spec.model import SecretSource
from aicd.temporal import client_config
from aicd.testing.engine import make_repo

PASSWORD = "s3cret-pass-7f1d2a"
TOKEN = "ghs_0123456789abcdefTOKEN"
URL = f"http://deploy:{PASSWORD}@127.0.0.1:9/org/repo.git"  # port 9: nothing listens


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"https://user:{PASSWORD}@git.example.com/a.git", "https://user:***@git.example.com/a.git"),
        (f"https://x-access-token:{TOKEN}@github.com/o/r", "https://x-access-token:***@github.com/o/r"),
        (f"clone 'https://{TOKEN}@github.com/o/r' failed", "clone 'https://***@github.com/o/r' failed"),
        (f"https://u:p@ss{PASSWORD}@host/x", "https://u:***@host/x"),  # an unencoded '@' in the password
        (f"https://user:pa/ss{PASSWORD}@host/repo", "https://user:***@host/repo"),  # an unencoded '/'
        (f"https://u:a/b@c{PASSWORD}@host/r", "https://u:***@host/r"),  # '/' and '@'
        (f"https://u:{PASSWORD}@host/path/x@y", "https://u:***@host/path/x@y"),  # '@' in the path only
        (
            f'["https://u:{PASSWORD}@h/x","https://v:{TOKEN}@h2/y"]',
            '["https://u:***@h/x","https://v:***@h2/y"]',
        ),
        ("http://host:8080/a@b", "http://host:***@b"),  # over-masked: redaction errs on the safe side
        ("ssh://git@github.com/o/r.git", "ssh://git@github.com/o/r.git"),  # ssh's login user is no secret
        (f"ssh://git:{PASSWORD}@host/r", "ssh://git:***@host/r"),
        (
            "git@github.com:o/r.git and https://host/path?to=a@b",
            "git@github.com:o/r.git and https://host/path?to=a@b",
        ),
        # A credential in the query: its value only, the other parameters stay readable.
        (
            f"GET https://host/api?access_token={TOKEN}&page=2 failed",
            "GET https://host/api?access_token=***&page=2 failed",
        ),
        (f"{{{{ url }}}}/health?apiKey={PASSWORD}", "{{ url }}/health?apiKey=***"),
        (
            f"https://a.blob.core.windows.net/c?sv=2022&sig={PASSWORD}&se=1",
            "https://a.blob.core.windows.net/c?sv=2022&sig=***&se=1",
        ),
        ("https://host/search?author=bob&keyword=x", "https://host/search?author=bob&keyword=x"),
    ],
)
def test_credentials_in_urls_are_redacted(text: str, expected: str) -> None:
    assert redact_credentials(text) == expected
    assert PASSWORD not in redact_credentials(text) and TOKEN not in redact_credentials(text)


def test_redacting_a_long_text_full_of_urls_takes_linear_time() -> None:
    """Output with many `scheme://user:` and neither '@' nor whitespace (a minified JSON line) is the worst
    case of a password that may hold '/': each URL's scan is bounded, so this takes well under a second
    (unbounded, it would take minutes)."""
    for unit in ("a://u:", 'http://host:8080/x","', "a://u:@"):
        text = unit * (240_000 // len(unit))
        started = time.monotonic()
        redact_credentials(text)
        assert time.monotonic() - started < 5, unit


def test_a_text_cut_inside_a_url_is_redacted_as_the_rest_of_one() -> None:
    url = f"clone https://deploy:{PASSWORD}@git.example.com/r.git failed"
    at = url.index("@")
    for cut in range(at + 1):
        assert PASSWORD[-4:] not in redact_cut(url[cut:]), url[cut:]
        assert redact_cut(url[cut:]).endswith("@git.example.com/r.git failed")
    assert redact_cut(" done, see https://host/x?a=b@c") == " done, see https://host/x?a=b@c"
    assert redact_cut("ello world") == "ello world"


def test_credential_detection() -> None:
    assert has_credentials(URL) and has_credentials(f"https://x-access-token:{TOKEN}@github.com/o/r")
    assert not has_credentials("https://github.com/o/r.git") and not has_credentials("ssh://git@host/r")
    assert not has_credentials("git@github.com:o/r.git")
    # A token in the user name's place (GitHub and GitLab accept it) is a credential too ...
    assert has_credentials(f"https://{TOKEN}@github.com/o/r.git")
    assert has_credentials("https://glpat-0123456789abcdefghij@gitlab.example.com/o/r.git")
    assert has_credentials(f"https://{'0123456789abcdef' * 2}@github.com/o/r.git")  # an old 40-hex token
    # ... and so is a query parameter named for one, in a URL or after a spec's `{{ url }}` ...
    assert has_credentials("https://api.example.com/v1?access_token=abc&x=1")
    assert has_credentials("https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=abc%3D")
    assert has_credentials("{{ url }}/health?apiKey=abc") and has_credentials("https://h/?X-Amz-Signature=ab")
    assert not has_credentials("https://h/x?author=alice&keyword=x&token=") and not has_credentials(
        "?token=1"
    )
    # ... a user name is not (Bitbucket's and Azure DevOps' clone URLs carry one).
    assert not has_credentials("https://alice@bitbucket.org/team/repo.git")
    # Validation stays precise where redaction over-masks: '@' in a path is no credential.
    assert not has_credentials("http://host:8080/a@b") and not has_credentials("https://npm.example/@scope/p")
    assert not has_credentials("https://npm.example:4873/@scope/p")
    # A password with an unencoded '/' is one all the same: it would travel in every workflow's history.
    assert has_credentials("https://user:pa/ss@git.example.com/r.git") and has_credentials("https://u:a/b@h")
    assert not has_credentials("https://contoso@dev.azure.com/contoso/shop/_git/shop")


def test_secret_names() -> None:
    for name in (
        "SLACK_BOT_TOKEN",
        "AICD_GITHUB_WEBHOOK_SECRET",
        "TEMPORAL_API_KEY",
        "DB_PASSWORD",
        "aws_secret",
        "MYSQL_PWD",
        "DB_PASS",
        "SESSION_JWT",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ):
        assert looks_secret(name), name
    for name in ("PATH", "HOME", "LANG", "SSH_AUTH_SOCK", "AICD_TASK_QUEUE", "PWD", "OLDPWD"):
        assert not looks_secret(name), name


def test_mask_replaces_every_occurrence_longest_first() -> None:
    mask = SecretMask(["abcdefgh", "abcd", "xy"])  # "xy" is too short to be a secret
    assert mask.mask("1 abcdefgh 2 abcd 3 xy") == f"1 {MASK} 2 {MASK} 3 xy"
    key = "-----BEGIN KEY-----\nline-one-secret\nline-two-secret\n-----END KEY-----"
    assert "line-two-secret" not in SecretMask([key]).mask("printed: line-two-secret")


def test_masking_a_stream_cut_anywhere() -> None:
    secrets = [f"sentinel-{n}-{'x' * n}" for n in range(1, 6)]
    mask = SecretMask(secrets)
    rng = random.Random(7)
    text = "".join(
        f"line {i}: {rng.choice(secrets)} then {rng.choice(secrets)}{rng.choice(secrets)}\n"
        for i in range(200)
    )
    data = text.encode()
    for _ in range(50):
        out: list[bytes] = []
        writer = mask.writer(out.append)
        position = 0
        while position < len(data):
            step = rng.randint(1, 40)
            writer.write(data[position : position + step])
            position += step
        writer.close()
        masked = b"".join(out).decode()
        assert masked == mask.mask(text)
        assert not any(secret in masked for secret in secrets) and masked.count(MASK) == 600


def test_process_mask_holds_the_environments_secrets() -> None:
    mask = process_mask(
        {"SLACK_BOT_TOKEN": "xoxb-sentinel-1234", "PATH": "/usr/bin:/bin", "API_KEY": "short"}
    )
    assert mask.mask("xoxb-sentinel-1234 /usr/bin:/bin short") == f"{MASK} /usr/bin:/bin short"


def test_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    formatter = RedactingFormatter("%(message)s", SecretMask(["xoxb-sentinel-1234"]))
    try:
        raise RuntimeError(f"cannot reach {URL} with xoxb-sentinel-1234")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed: %s", (URL,), sys.exc_info())
    line = formatter.format(record)
    assert "Traceback" in line and PASSWORD not in line and "xoxb-sentinel-1234" not in line


def test_failure_chain_is_redacted() -> None:
    try:
        try:
            raise OSError(f"git says {URL}")
        except OSError as inner:
            raise ApplicationError(
                f"cannot push to {URL}", {"k": 1}, type="GitOpsUnreachable", non_retryable=True
            ) from inner
    except ApplicationError as error:
        redacted = redacted_failure(error, None)
    assert (
        PASSWORD not in redacted.message and redacted.type == "GitOpsUnreachable" and redacted.non_retryable
    )
    assert redacted.details == ({"k": 1},)
    cause = redacted.__cause__
    assert isinstance(cause, ApplicationError) and cause.type == "OSError" and PASSWORD not in cause.message


def test_heartbeat_details_are_redacted_on_their_way_to_temporal() -> None:
    """The worker's interceptor also wraps what an activity's heartbeats send (`aicd status` shows the last
    one): a URL's password or a secret the worker holds never reaches the server through them."""
    sent: list[tuple[Any, ...]] = []

    class Server(ActivityOutboundInterceptor):
        def heartbeat(self, *details: Any) -> None:
            sent.append(details)

    class Activity(ActivityInboundInterceptor):
        def init(self, outbound: ActivityOutboundInterceptor) -> None:
            self.outbound = outbound

    activity = Activity(cast(ActivityInboundInterceptor, None))
    RedactActivityOutput(SecretMask(["s3cret-value-123"])).intercept_activity(activity).init(
        Server(cast(ActivityOutboundInterceptor, None))
    )
    activity.outbound.heartbeat(f"argocd: sync failed for {URL}", {"note": "token s3cret-value-123"})
    assert sent == [(f"argocd: sync failed for {redact_credentials(URL)}", {"note": f"token {MASK}"})]
    assert PASSWORD not in str(sent)


async def test_source_checkout_failure_hides_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    request = CommandRequest("delivery-x-abcdef1", "build", ["true"], 10, URL, "a" * 40, "x:1")
    activities = CommandActivities(tmp_path / "state", CommandSecrets())
    with caplog.at_level(logging.DEBUG), pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(activities.run_command, request)
    assert raised.value.type == "SourceUnavailable" and "cannot check out" in raised.value.message
    assert "127.0.0.1:9" in raised.value.message
    assert PASSWORD not in raised.value.message and raised.value.__cause__ is None
    assert PASSWORD not in caplog.text


def test_gitops_clone_failure_hides_the_password(tmp_path: Path) -> None:
    clone = GitOpsClone(tmp_path / "state", URL, "main")
    with pytest.raises(ApplicationError) as raised, clone.locked():
        pass
    assert raised.value.type == "GitOpsUnreachable" and "cannot clone GitOps repo" in raised.value.message
    assert PASSWORD not in raised.value.message and raised.value.__cause__ is None


async def test_ls_remote_failure_hides_the_password() -> None:
    with pytest.raises(PollError) as raised:
        await list_heads(URL)
    assert "failed" in str(raised.value) and "127.0.0.1:9" in str(raised.value)
    assert PASSWORD not in str(raised.value)
    with pytest.raises(PollError) as option:
        await list_heads(f"--upload-pack=x {URL}")
    assert PASSWORD not in str(option.value)


async def test_an_output_tail_cut_inside_a_url_keeps_its_password_hidden(tmp_path: Path) -> None:
    """Only the last bytes of a command's output reach history, status and Slack. A URL whose scheme falls
    before that cut and whose password after it must still lose the password (the cut took away the
    `https://` the redaction recognises it by)."""
    source, revision = make_repo(tmp_path, "source", {"README": "app\n"})
    url = f"https://ci:{PASSWORD}@git.example.com/org/dep.git"
    cut = url.index(PASSWORD) + 3  # the tail starts three characters into the password
    after = "".join(f"padding line {n:04d} {'.' * 60}\n" for n in range(40))
    after = "x" * (OUTPUT_TAIL_BYTES - (len(url) - cut) - 1 - len(after)) + after
    script = f"import sys; sys.stdout.write('fatal: unable to access {url}\\n' + {after!r}); sys.exit(1)"
    request = CommandRequest(
        "delivery-x-abcdef1", "build", [sys.executable, "-c", script], 30, source, revision, "x:1"
    )
    activities = CommandActivities(tmp_path / "state", CommandSecrets())
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(activities.run_command, request)
    (result,) = raised.value.details
    assert PASSWORD[3:] not in result.output_tail and PASSWORD[3:] not in raised.value.message
    assert "@git.example.com/org/dep.git" in result.output_tail and "padding line 0039" in result.output_tail


PRINT_FILES = """
import sys
for path in sys.argv[1:]:
    print(path, "holds", open(path).read(), flush=True)
sys.exit(1)
"""


async def test_secrets_read_from_files_are_masked_in_output_failures_and_logs(tmp_path: Path) -> None:
    """Every secret the worker reads from a file, or hands to git, ssh and Temporal as one, is masked in a
    command's output (kept and shown), in activity failures and in log lines, also when the file is read or
    rotated after the formatter and the failure redaction were set up."""
    token = uuid.uuid4().hex
    secrets = {
        "prometheus": f"prom-basic-{token}",
        "pagerduty": f"pd-routing-{token}",
        "command": f"npm-dir-{token}",
        "git": f"git-store-{token}",
        "ssh": f"ssh-key-body-{token}",
        "tls": f"tls-key-body-{token}",
    }
    text_log = RedactingFormatter("%(message)s")  # set up before any of the secrets was read
    json_log = JsonFormatter()
    files = tmp_path / "files"
    files.mkdir()
    prometheus, pagerduty = files / "prometheus-password", files / "pagerduty-key"
    prometheus.write_text(secrets["prometheus"] + "\n")
    pagerduty.write_text(secrets["pagerduty"])
    secret_dir = files / "command-secrets"
    secret_dir.mkdir()
    (secret_dir / "NPM_TOKEN").write_text(secrets["command"] + "\n")
    store = files / "git-credentials"
    store.write_text(f"https://deploy:{secrets['git']}@git.example.com\n")
    ssh_key, tls_key = files / "ssh-privatekey", files / "tls.key"
    ssh_key.write_text(
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secrets['ssh']}\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    tls_key.write_text(f"-----BEGIN PRIVATE KEY-----\n{secrets['tls']}\n-----END PRIVATE KEY-----\n")
    # What the worker reads itself, as it reads it ...
    assert (
        read_secret(SecretSource(file=str(prometheus)), "prometheus basic-auth password")
        == secrets["prometheus"]
    )
    assert read_secret(SecretSource(file=str(pagerduty)), "PagerDuty routing key") == secrets["pagerduty"]
    # ... and what its configuration hands to git, ssh and Temporal (deploy/base/worker/worker.yaml's way).
    watch_configured_secret_files(
        {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "credential.helper",
            "GIT_CONFIG_VALUE_0": f"store --file={store}",
            "GIT_SSH_COMMAND": f"ssh -i {ssh_key} -o IdentitiesOnly=yes",
            "TEMPORAL_TLS_CLIENT_KEY_PATH": str(tls_key),
        }
    )
    # A command that prints them all (the command secret directory is read when the command starts).
    source, revision = make_repo(tmp_path, "source", {"README": "app\n"})
    printed = [prometheus, pagerduty, secret_dir / "NPM_TOKEN", store, ssh_key, tls_key]
    request = CommandRequest(
        "delivery-x-abcdef1",
        "build",
        [sys.executable, "-c", PRINT_FILES, *map(str, printed)],
        30,
        source,
        revision,
        "x:1",
    )
    activities = CommandActivities(tmp_path / "state", CommandSecrets(directory=secret_dir))
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(activities.run_command, request)
    (result,) = raised.value.details
    kept = Path(result.log_path).read_text()
    assert kept.count(" holds ") == len(printed) and MASK in kept
    for what, secret in secrets.items():
        for where, text in (
            ("kept log", kept),
            ("output tail", result.output_tail),
            ("failure", raised.value.message),
        ):
            assert secret not in text, f"{what} secret in the {where}"
    # An activity failure quoting them, and log lines, with no mask given: the process's read secrets.
    quoted = " ".join(secrets.values())
    failure = redacted_failure(RuntimeError(f"auth failed with {quoted}"), None)
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "login with %s", (quoted,), None)
    for where, text in (
        ("failure", failure.message),
        ("text log", text_log.format(record)),
        ("json log", json_log.format(record)),
    ):
        assert MASK in text and not any(secret in text for secret in secrets.values()), where

    # Rotated (and newly added) files: masked once read again, or, for what git reads, once they change.
    rotated = {name: f"{name}-rotated-{uuid.uuid4().hex}" for name in ("prometheus", "git", "command")}
    prometheus.write_text(rotated["prometheus"])
    store.write_text(f"https://deploy:{rotated['git']}@git.example.com\n")
    os.utime(store, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a different mtime, however fast
    (secret_dir / "LATER_TOKEN").write_text(rotated["command"])
    assert (
        read_secret(SecretSource(file=str(prometheus)), "prometheus basic-auth password")
        == rotated["prometheus"]
    )
    assert CommandSecrets(directory=secret_dir).value("LATER_TOKEN") == rotated["command"]
    quoted = " ".join(rotated.values())
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "login with %s", (quoted,), None)
    for text in (text_log.format(record), redacted_failure(RuntimeError(quoted), None).message):
        assert not any(secret in text for secret in rotated.values()), text


def test_the_temporal_tls_client_key_is_masked_once_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"tls-profile-key-{uuid.uuid4().hex}"
    key, cert = tmp_path / "client.key", tmp_path / "client.crt"
    key.write_text(f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n")
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot-secret\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(key))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(cert))
    assert redact(f"key: {secret}") == f"key: {secret}"  # unknown until the client's settings are read
    config = client_config("127.0.0.1:1")  # what connect() connects with
    assert config["target_host"] == "127.0.0.1:1"
    assert redact(f"key: {secret}") == f"key: {MASK}"


async def test_activity_results_are_redacted_on_their_way_to_temporal() -> None:
    """A sync's result quotes what the target said (an Argo CD message): a URL's password, a secret the worker
    holds or one it has read by name never reaches history through it, and the result keeps its type and its
    other values (a datetime stays one: the workflow reads the result back as its declared type)."""
    read_by_name = remember_secret(f"read-{uuid.uuid4().hex}")
    stamp = datetime(2026, 12, 5, tzinfo=UTC)
    said = SyncResult(
        "web",
        "abc123",
        True,
        f"synced from {URL}",
        {"note": "token s3cret-value-123", "env": [read_by_name], "at": stamp, "count": 3},
    )

    class Activity(ActivityInboundInterceptor):
        async def execute_activity(self, input: ExecuteActivityInput) -> Any:
            return said

    inbound = RedactActivityOutput(SecretMask(["s3cret-value-123"])).intercept_activity(
        Activity(cast(ActivityInboundInterceptor, None))
    )
    result = await inbound.execute_activity(cast(ExecuteActivityInput, None))
    assert isinstance(result, SyncResult) and result.healthy and result.revision == "abc123"
    assert result.message == f"synced from {redact_credentials(URL)}" and PASSWORD not in result.message
    assert result.details == {"note": f"token {MASK}", "env": [MASK], "at": stamp, "count": 3}
    assert said.message == f"synced from {URL}"  # the activity's own object is left as it was


def test_failure_details_are_redacted_through_dicts_lists_and_dataclasses() -> None:
    mask = SecretMask(["xoxb-sentinel-1234"])
    result = CommandResult("build", 1, 0.5, f"fatal: {URL}\ntoken xoxb-sentinel-1234", "/logs/build.log", "h")
    stamp = datetime(2026, 12, 3, tzinfo=UTC)
    error = ApplicationError(
        "failed",
        result,
        {"nested": [URL, ("xoxb-sentinel-1234", 3)], URL: True, "at": stamp},
        7,
        None,
        type="CommandFailed",
        non_retryable=True,
    )
    redacted = redacted_failure(error, mask)
    kept, nested, seven, none = redacted.details
    assert isinstance(kept, CommandResult) and kept.exit_code == 1 and kept.log_path == "/logs/build.log"
    assert kept.output_tail == "fatal: http://deploy:***@127.0.0.1:9/org/repo.git\ntoken ***"
    assert nested == {
        "nested": ["http://deploy:***@127.0.0.1:9/org/repo.git", ("***", 3)],
        "http://deploy:***@127.0.0.1:9/org/repo.git": True,
        "at": stamp.isoformat(),  # as the JSON converter writes it, which is what a workflow reads back
    }
    assert (seven, none) == (7, None) and redacted.type == "CommandFailed" and redacted.non_retryable
    assert result.output_tail.startswith(f"fatal: {URL}")  # the original is left as it was


def test_kubernetes_and_temporal_profile_credentials_are_masked_once_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Argo CD's driver reads (a kubeconfig's user token, password, client key, an auth provider's and an
    exec plugin's secrets) and a Temporal API key from a profile file: no variable's name gives them away, so
    they are masked once the worker's configuration is read, as the git credential store is."""
    token, password, refresh, plugin = (
        f"{what}-{uuid.uuid4().hex}" for what in ("kube", "pw", "refresh", "exec")
    )
    key_line = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + uuid.uuid4().hex
    key = f"-----BEGIN PRIVATE KEY-----\n{key_line}\n-----END PRIVATE KEY-----\n"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {"name": "a", "user": {"token": token}},
                    {
                        "name": "b",
                        "user": {
                            "password": password,
                            "client-key-data": base64.b64encode(key.encode()).decode(),
                        },
                    },
                    {
                        "name": "c",
                        "user": {
                            "auth-provider": {"config": {"refresh-token": refresh, "client-id": "public"}}
                        },
                    },
                    {
                        "name": "d",
                        "user": {
                            "exec": {
                                "env": [
                                    {"name": "VAULT_TOKEN", "value": plugin},
                                    {"name": "REGION", "value": "eu-west-1"},
                                ]
                            }
                        },
                    },
                ]
            }
        )
    )
    leaked = f"{token} {password} {refresh} {plugin} {key_line}"
    assert redact(leaked) == leaked  # unknown until the configuration is read
    header = f"hdr-{uuid.uuid4().hex}"  # git's http.extraHeader given in the environment
    watch_configured_secret_files(
        {
            "KUBECONFIG": f"{tmp_path / 'missing'}{os.pathsep}{kubeconfig}",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.https://git.example.com/.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {header}",
        }
    )
    assert redact(f"sent Bearer {header}") == f"sent {MASK}"
    assert redact(leaked) == " ".join([MASK] * 5)
    assert redact("client-id public in eu-west-1") == "client-id public in eu-west-1"
    api_key = f"tmprl-{uuid.uuid4().hex}"
    profile = tmp_path / "temporal.toml"
    profile.write_text(f'[profile.default]\naddress = "127.0.0.1:1"\napi_key = "{api_key}"\n')
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(profile))
    assert redact(f"key {api_key}") == f"key {api_key}"
    assert client_config()["api_key"] == api_key
    assert redact(f"key {api_key}") == f"key {MASK}"
