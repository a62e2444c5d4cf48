"""SageMaker's control plane on the wire: an ASGI app answering the JSON 1.1 protocol (``POST /`` with
``X-Amz-Target: SageMaker.<Operation>``) that boto3's ``sagemaker`` client speaks, in front of the
engine's one seam, ``SageMakerAPI.call``.

Each request goes: body read (at most ``MAX_BODY``) -> SigV4 checked against the caller's access key
(``protocol.sigv4``, botocore's signer) -> the operation from ``X-Amz-Target`` (a signature already
used for a request that changes something is refused as a replay) -> the
body decoded per the operation's input shape (``protocol.wire``, botocore's parser) -> the caller's
policies asked (``engine.iam``: Deny wins, nothing allowed by default) -> ``SageMakerAPI.call``, which
validates, runs and audits it (reads on the event loop, anything that may wait in a worker thread) ->
the answer encoded per the output shape.
A request refused before the call is audited here, with the access key it named, so every request
leaves a record whatever happened to it. Paths under ``/console/`` go to the web console
(``raymaker.console``), which reads through the same ``authorize`` / ``visible`` (``server.access``).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any

from raymaker.console.app import PREFIX as CONSOLE
from raymaker.console.app import Console
from raymaker.engine import iam
from raymaker.engine.api import SageMakerAPI
from raymaker.engine.users import Caller, Directory
from raymaker.protocol import wire
from raymaker.protocol.errors import (
    InvalidSignature,
    SageMakerError,
    SerializationException,
    UnknownOperationException,
)
from raymaker.protocol.sigv4 import (
    REPLAYED,
    IncomingRequest,
    ReplayCache,
    access_key_of,
    signature_of,
    verify_asgi,
)
from raymaker.server.access import Owners, authorize, visible
from raymaker.server.asgi import read_body

MAX_BODY = 8 * 1024 * 1024  # SageMaker's largest requests (a pipeline definition) are well under this


class APIServer:
    """The ASGI app. ``auth=False`` serves unsigned requests as the server's own OS user: only for a
    listener on loopback (``raymaker.server.run`` refuses it elsewhere)."""

    def __init__(self, api: SageMakerAPI, *, auth: bool = True, directory: Directory | None = None,
                 console: bool = True):
        self.api, self.auth = api, auth
        self.directory = directory or (Directory(api.store) if auth else None)
        self.replay = ReplayCache()
        self.owners = Owners(api.store)
        # The web console on the same port, behind the same keys and policies (raymaker.console).
        self.console = Console(api, auth=auth, directory=self.directory) if console else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if self.console is not None and (scope["path"] == CONSOLE or scope["path"].startswith(CONSOLE + "/")):
            await self.console(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        status, body, headers = await self._handle(scope, receive, request_id)
        headers = {"Content-Type": wire.CONTENT_TYPE, **headers, "x-amzn-RequestId": request_id}
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            + [(b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: dict[str, Any], receive: Any, request_id: str) -> tuple[int, bytes, dict[str, str]]:
        lower = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        source_ip = (scope.get("client") or ("", 0))[0]
        user_agent = lower.get("user-agent")
        target = lower.get("x-amz-target")
        operation: str | None = None
        params: dict[str, Any] | None = None
        caller: Caller | None = None
        body: bytes | None = None  # the request is decoded whole (IncomingRequest) only where needed
        try:
            body = await _read_body(receive, lower.get("content-length"))
            if self.auth:
                found: dict[str, Any] = {}

                def secret_for(key: str) -> str | None:  # one read gives the secret and its user
                    found["entry"] = self.directory.lookup(key)
                    return found["entry"][0] if found["entry"] else None

                verify_asgi(scope, body, secret_for)  # an unknown key raises: found holds the key's entry
                caller = found["entry"][1]
            if scope["method"] != "POST" or scope["path"] != "/":
                raise UnknownOperationException(
                    f"{scope['method']} {scope['path']} is not an operation: SageMaker's API takes POST / with "
                    "X-Amz-Target: SageMaker.<Operation> and an application/x-amz-json-1.1 body"
                )
            operation = wire.operation_from_target(target)
            if caller is not None and _changes_state(operation):
                # boto3 signs identical requests made within one second identically, so a repeated
                # read is normal; a repeated change is refused (reads repeat no harm a replay could do).
                signature = signature_of(IncomingRequest.from_asgi(scope, body))
                if not self.replay.check_and_add(signature or "", time.time()):
                    raise InvalidSignature(REPLAYED)
            params = wire.decode_request(operation, body)
            if caller is not None:
                authorize(caller, operation, params, self.owners)
                params = _own_audit_only(caller, operation, params)
        except SageMakerError as e:
            identity = caller.identity() if caller else _anonymous(
                IncomingRequest.from_asgi(scope, body) if body is not None else None
            )
            self.api.store.record_api_call(
                operation or (target or "").rpartition(".")[2] or "Unknown", params, error=e,
                caller=identity, source_ip=source_ip, user_agent=user_agent, request_id=request_id,
            )
            return wire.encode_error(e)
        call = functools.partial(
            self.api.call, operation, params, caller=caller.identity() if caller else None,
            source_ip=source_ip, user_agent=user_agent, request_id=request_id,
        )
        try:
            # A read is a few database reads and the audit row (~0.3 ms): run on the loop, as a worker
            # thread's hand-off costs more than that here (benchmarks/api_latency.py). Anything that may
            # wait (a Create listing S3, WaitForTrainingJob) runs in a thread.
            result = call() if operation.startswith(_READS) else await asyncio.to_thread(call)
            if caller is not None and operation.startswith("List"):
                result = visible(caller, result, self.owners)
            return 200, wire.encode_response(operation, result), {}
        except BaseException as e:  # noqa: BLE001 - audited by the call; answered in SageMaker's shape
            return wire.encode_error(e)
        finally:
            if caller is not None and not operation.startswith(_READS):
                # A resource made, remade or deleted: its maker is read afresh (access.Owners).
                self.owners.forget(iam.resource_of(operation, params))


def _own_audit_only(caller: Caller, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """ListAuditEvents shows a user their own calls, unless they may list the service's users (who
    may see who exists may see what they did)."""
    if operation != "ListAuditEvents" or iam.decide(caller.policies, "iam:ListUsers", "*") == "allow":
        return params
    return {**params, "Username": caller.name}


_READS = ("Describe", "List", "Get", "Search")


def _changes_state(operation: str) -> bool:
    return not operation.startswith((*_READS, "Wait"))


def _anonymous(request: IncomingRequest | None) -> dict[str, Any]:
    key = access_key_of(request) if request is not None else None
    return {"type": "Unknown", "accessKeyId": key} if key else {"type": "Unknown"}


async def _read_body(receive: Any, declared: str | None) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise SerializationException(f"The request body is {declared} bytes; the API takes at most {MAX_BODY}")
    body = await read_body(receive, MAX_BODY)
    if body is None:
        raise SerializationException(f"The request body is over {MAX_BODY} bytes, the most the API takes")
    return body
