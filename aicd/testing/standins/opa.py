"""Loopback stand-in for an OPA server's REST API, evaluating with regorus (OPA itself is a Go binary that
no package registry here ships): `PUT /v1/policies/{id}` loads a module (text/plain body, as `curl -X PUT
--data-binary @policy.rego` sends it), `DELETE /v1/policies/{id}` removes it, and the Data API
`POST /v1/data/{path}` with `{"input": ...}` answers `{"result": <the document at data.<path>>}`, or `{}`
when the path is undefined, as OPA does. A body that is not a JSON object with `input` is a 400
`{"code": "invalid_parameter", "message": ...}`; a module that does not parse is refused with a 400 too.
Every Data API request is recorded (`requests`) so a test sees the input document aicd sent."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aicd.dev.ports import bind_socket
from aicd.dev.proxy import RunningServer, start_server


@dataclass
class OpaStandin:
    modules: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _server: RunningServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/v1/policies/{id:path}", self._policy, methods=["PUT", "DELETE"]),
                Route("/v1/data/{path:path}", self._data, methods=["POST"]),
            ]
        )
        self._server = await start_server(app, bind_socket(port=self.port), "OPA stand-in")
        self.port = self._server.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()

    def _engine(self, modules: dict[str, str]) -> Any:
        import regorus

        engine = regorus.Engine()
        for name, source in sorted(modules.items()):
            engine.add_policy(name, source)
        return engine

    async def _policy(self, request: Request) -> Response:
        policy_id = request.path_params["id"]
        if request.method == "DELETE":
            if self.modules.pop(policy_id, None) is None:
                return JSONResponse(
                    {
                        "code": "resource_not_found",
                        "message": f"storage_not_found_error: policy id {policy_id!r}",
                    },
                    404,
                )
            return JSONResponse({})
        source = (await request.body()).decode()
        try:
            self._engine({**self.modules, policy_id: source})
        except RuntimeError as error:
            return JSONResponse(
                {"code": "invalid_parameter", "message": str(error).split("Stack backtrace")[0]}, 400
            )
        self.modules[policy_id] = source
        return JSONResponse({})

    async def _data(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as error:
            return JSONResponse(
                {"code": "invalid_parameter", "message": f"body contains malformed input document: {error}"},
                400,
            )
        if not isinstance(body, dict):
            return JSONResponse({"code": "invalid_parameter", "message": "body must be an object"}, 400)
        self.requests.append(body)
        path = request.path_params["path"].strip("/").replace("/", ".")
        engine = self._engine(self.modules)
        if "input" in body:
            engine.set_input_json(json.dumps(body["input"]))
        answer = json.loads(engine.eval_query_as_json(f"data.{path}" if path else "data"))
        results = answer.get("result") or []
        if not results:
            return JSONResponse({})
        return JSONResponse({"result": results[0]["expressions"][0]["value"]})
