"""Git webhooks: a push to a release branch of a spec's source repository starts a delivery of the pushed
commit. Checks run cheapest-first and before anything is parsed: body size, then the signature (GitHub) or
token (GitLab), then the replay memory (only signed requests may enter it, so forged ones cannot block real
ones), then JSON, its shape and the ref's name (Git's own rules). Every bad request gets a 4xx with a
one-line reason and nothing more in the log. Starting is idempotent by workflow ID: a push sent again
starts nothing new, and a push of a revision already delivered on a push whose `before` shows no move away
from it since is refused as a repeat (aicd.client.earlier_push_delivery)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aicd.client import earlier_push_delivery, start_delivery
from aicd.gateway.context import BodyTooLarge, Gateway, PayloadInvalid, error, parse_json_object, read_body
from aicd.gateway.metrics import reason_label
from aicd.gateway.signatures import github_refusal, gitlab_refusal
from aicd.gitrefs import ref_problem
from aicd.messages import Trigger
from aicd.plan import build_plan
from aicd.source import RevisionUnknown, SourceError, branch_head, resolve_revision

log = logging.getLogger("aicd.gateway.webhooks")
SHA = re.compile(r"\A[0-9a-f]{40}([0-9a-f]{24})?\Z")  # SHA-1, or SHA-256 repositories; \Z: no "\n" after


@dataclass
class Push:
    repo_urls: list[str]
    ref: str
    before: str
    after: str
    deleted: bool
    actor: str
    compare: str | None = None
    forced: bool = False  # a force-push: the branch's history was rewritten, `before` is not an ancestor

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    def event(self) -> str:
        """The push's identity: the same push delivered twice (or seen by the poller too) is one delivery; a
        force-push back to an older commit is a new push, and a new delivery."""
        before = "" if not self.before or set(self.before) == {"0"} else self.before
        return f"push:{self.branch}:{before}:{self.after}"

    def changes(self) -> str:
        """What changed, for the approval message: the pushed range when the branch existed before."""
        if not self.before or set(self.before) == {"0"}:
            return f"new branch at {self.after[:7]}"
        if self.forced:
            text = f"forced push: {self.before[:7]} replaced by {self.after[:7]} (history rewritten)"
        else:
            text = f"{self.before[:7]}..{self.after[:7]}"
        return f"{text} {self.compare}" if self.compare else text


# --- payloads -------------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def github_push(payload: dict[str, Any]) -> Push:
    repository = payload.get("repository")
    if not isinstance(repository, dict) or not isinstance(payload.get("ref"), str):
        raise PayloadInvalid("malformed push: no repository object or ref string")
    urls = [
        _text(repository.get(key))
        for key in ("clone_url", "ssh_url", "html_url", "url", "git_url", "svn_url")
    ]
    pusher = payload.get("pusher") if isinstance(payload.get("pusher"), dict) else {}
    sender = payload.get("sender") if isinstance(payload.get("sender"), dict) else {}
    after = _text(payload.get("after")).lower()
    return Push(
        repo_urls=[url for url in urls if url],
        ref=payload["ref"],
        before=_text(payload.get("before")).lower(),
        after=after,
        deleted=bool(payload.get("deleted")) or (bool(after) and set(after) == {"0"}),
        actor=_text((pusher or {}).get("name")) or _text((sender or {}).get("login")) or "github",
        compare=_text(payload.get("compare")) or None,
        forced=payload.get("forced") is True,
    )


def gitlab_push(payload: dict[str, Any]) -> Push:
    project = payload.get("project")
    if not isinstance(project, dict) or not isinstance(payload.get("ref"), str):
        raise PayloadInvalid("malformed push: no project object or ref string")
    repository = payload.get("repository") if isinstance(payload.get("repository"), dict) else {}
    urls = [
        _text(project.get(key)) for key in ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url")
    ]
    urls += [_text((repository or {}).get(key)) for key in ("git_http_url", "git_ssh_url", "homepage", "url")]
    after = _text(payload.get("after")).lower()
    before = _text(payload.get("before")).lower()
    checkout = payload.get("checkout_sha")
    web = _text(project.get("web_url"))
    return Push(
        repo_urls=[url for url in urls if url],
        ref=payload["ref"],
        before=before,
        after=after,
        deleted=checkout is None or (bool(after) and set(after) == {"0"}),
        actor=_text(payload.get("user_username")) or _text(payload.get("user_name")) or "gitlab",
        compare=f"{web}/-/compare/{before}...{after}" if web and before and set(before) != {"0"} else None,
    )


def _json(body: bytes, content_type: str) -> dict[str, Any]:
    if content_type.startswith("application/x-www-form-urlencoded"):  # GitHub's optional form encoding
        try:
            body = parse_qs(body.decode(), strict_parsing=True)["payload"][0].encode()
        except (ValueError, KeyError, UnicodeDecodeError):
            raise PayloadInvalid("malformed JSON: no payload field in the form") from None
    return parse_json_object(body)


# --- endpoints ------------------------------------------------------------------------------------------
def _refuse(gateway: Gateway, provider: str, status: int, reason: str) -> Response:
    gateway.metrics.inc("aicd_webhooks_refused_total", provider=provider, reason=reason_label(reason))
    log.warning("%s webhook refused (%d): %s", provider, status, reason)
    return error(status, reason)


def _ignore(
    gateway: Gateway, provider: str, reason: str, *, label: str | None = None, **extra: Any
) -> Response:
    gateway.metrics.inc(
        "aicd_webhooks_ignored_total", provider=provider, reason=label or reason_label(reason)
    )
    return JSONResponse({"result": "ignored", "reason": reason, **extra})


def _refuse_ref(gateway: Gateway, provider: str, push: Push) -> Response | None:
    """400 for a ref Git itself would refuse (it can only come from a forged or broken sender)."""
    problem = ref_problem(push.ref)
    if problem is None:
        return None
    return _refuse(gateway, provider, 400, f"invalid ref: {push.ref!r} {problem}")


async def github_hook(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    provider = "github"
    gateway.metrics.inc("aicd_webhooks_received_total", provider=provider)
    secret = gateway.settings.github_secret
    if not secret:
        return _refuse(gateway, provider, 503, "webhook secret not configured")
    signature = request.headers.get("x-hub-signature-256")
    if not signature:  # refused before a byte of the body is read: an unsigned sender costs nothing
        return _refuse(gateway, provider, 401, github_refusal(secret, b"", signature) or "unsigned")
    try:
        body = await read_body(request, gateway.settings.max_body_bytes)
    except BodyTooLarge:
        return _refuse(gateway, provider, 413, "body too large")
    refusal = github_refusal(secret, body, signature)
    if refusal:
        return _refuse(gateway, provider, 401, refusal)
    delivery = request.headers.get("x-github-delivery", "")
    if delivery and gateway.replays.seen(f"github:{delivery}"):
        gateway.metrics.inc("aicd_webhooks_refused_total", provider=provider, reason="replayed")
        return JSONResponse(
            {"result": "ignored", "reason": f"replayed delivery {delivery}: already received"}
        )
    try:
        payload = _json(body, request.headers.get("content-type", ""))
        event = request.headers.get("x-github-event", "")
        if event == "ping":
            return JSONResponse({"result": "pong"})
        if event != "push":
            shown = event if re.fullmatch(r"[a-z_]{1,64}", event) else "unknown"
            return _ignore(
                gateway, provider, f"event {shown}: only push starts deliveries", label="not_a_push"
            )
        push = github_push(payload)
    except PayloadInvalid as invalid:
        return _refuse(gateway, provider, 400, str(invalid))
    if refused := _refuse_ref(gateway, provider, push):
        return refused
    return await _start_for_push(gateway, provider, push, f"github:{delivery}" if delivery else None)


async def gitlab_hook(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    provider = "gitlab"
    gateway.metrics.inc("aicd_webhooks_received_total", provider=provider)
    token = gateway.settings.gitlab_token
    if not token:
        return _refuse(gateway, provider, 503, "webhook token not configured")
    # GitLab's token is a header: checked before a byte of the body is read.
    refusal = gitlab_refusal(token, request.headers.get("x-gitlab-token"))
    if refusal:
        return _refuse(gateway, provider, 401, refusal)
    try:
        body = await read_body(request, gateway.settings.max_body_bytes)
    except BodyTooLarge:
        return _refuse(gateway, provider, 413, "body too large")
    # GitLab keeps Idempotency-Key across its retries of one event.
    key = request.headers.get("idempotency-key", "")
    if key and gateway.replays.seen(f"gitlab:{key}"):
        gateway.metrics.inc("aicd_webhooks_refused_total", provider=provider, reason="replayed")
        return JSONResponse({"result": "ignored", "reason": f"replayed event {key}: already received"})
    try:
        payload = _json(body, request.headers.get("content-type", ""))
        # Project hooks say `object_kind`; system hooks (X-Gitlab-Event: System Hook) say `event_name`.
        kind = payload.get("object_kind") or payload.get("event_name")
        if kind != "push":
            shown = kind if isinstance(kind, str) and re.fullmatch(r"[a-z_]{1,64}", kind) else "unknown"
            return _ignore(
                gateway, provider, f"event {shown}: only push starts deliveries", label="not_a_push"
            )
        push = gitlab_push(payload)
    except PayloadInvalid as invalid:
        return _refuse(gateway, provider, 400, str(invalid))
    if refused := _refuse_ref(gateway, provider, push):
        return refused
    return await _start_for_push(gateway, provider, push, f"gitlab:{key}" if key else None)


async def _start_for_push(gateway: Gateway, provider: str, push: Push, replay_key: str | None) -> Response:
    branch = push.branch
    if branch is None:
        return _ignore(gateway, provider, f"not a branch: {push.ref}")
    if push.deleted:
        return _ignore(gateway, provider, f"branch deleted: {branch}")
    if not SHA.match(push.after):
        return _refuse(gateway, provider, 400, "after is not a commit SHA")
    await gateway.refresh_specs()
    matching = gateway.specs.for_push(push.repo_urls, branch)
    if not matching:
        return _ignore(gateway, provider, "no spec for this repository and branch", branch=branch)
    # A late or out-of-order event must never roll production back: deliver only the branch's head now.
    try:
        heads = {
            repo: await branch_head(repo, branch) for repo in {loaded.spec.source_repo for loaded in matching}
        }
    except SourceError as failure:
        log.error("%s push to %r: cannot read the source repository: %s", provider, branch, failure)
        return _refuse(gateway, provider, 503, "cannot read the source repository now; redeliver later")
    stale = {repo: head for repo, head in heads.items() if head != push.after}
    if stale:
        repo, head = next(iter(stale.items()))
        try:  # a commit the repository has never had is the sender's mistake, not a late event
            await resolve_revision(repo, push.after)
        except RevisionUnknown as unknown:
            return _refuse(gateway, provider, 422, f"unknown revision: {unknown}")
        except SourceError:
            pass
        now = f"now at {head[:7]}" if head else "deleted"
        return _ignore(gateway, provider, f"stale: {branch} is {now}, not at {push.after[:7]}", branch=branch)
    results = []
    try:
        client = await gateway.client()
        for loaded in matching:
            plan = build_plan(loaded.spec, push.after)
            earlier = await earlier_push_delivery(
                client, plan.app, branch, push.after, push.before, push.event()
            )
            if earlier is not None:
                repeat = (
                    f"{push.after[:7]} was delivered on a push before ({earlier}), and no push away from it"
                    f" to {push.before[:7] or 'nothing'} has started a delivery since: a repeat, not a new"
                    " push (deliver it again with `aicd deliver`)"
                )
                log.warning("%s push to %r of %s refused: %s", provider, branch, loaded.spec.name, repeat)
                gateway.metrics.inc("aicd_webhooks_refused_total", provider=provider, reason="repeated_push")
                results.append(
                    {"app": loaded.spec.name, "delivery_id": earlier, "result": "refused", "reason": repeat}
                )
                continue
            trigger = Trigger(
                provider, actor=push.actor, branch=branch, detail=push.changes(), event=push.event()
            )
            started = await start_delivery(
                client,
                plan,
                trigger,
                queue=gateway.settings.task_queue,
                index_search_attributes=gateway.settings.index_search_attributes,
            )
            outcome = "started" if started.started else "already started"
            name = (
                "aicd_gateway_deliveries_started_total"
                if started.started
                else "aicd_deliveries_already_started_total"
            )
            gateway.metrics.inc(name, source=provider)
            log.info(
                "%s push to %r of %s: %s %s", provider, branch, loaded.spec.name, started.delivery_id, outcome
            )
            results.append({"app": loaded.spec.name, "delivery_id": started.delivery_id, "result": outcome})
    except Exception as failure:  # Temporal unreachable or refusing: the sender may redeliver later
        log.error("%s push to %r: cannot start deliveries: %s", provider, branch, failure)
        return _refuse(gateway, provider, 503, "cannot start the delivery now; redeliver later")
    if replay_key:
        gateway.replays.remember(replay_key)  # only events that started or found a delivery
    refused = all(result["result"] == "refused" for result in results)
    return JSONResponse(
        {"result": results[0]["result"] if len(results) == 1 else "ok", "deliveries": results},
        status_code=409 if refused else 200,
    )
