"""A custom serving container behind an endpoint replica or a transform instance: ``<image> serve`` with
``model.tar.gz`` extracted into ``/opt/ml/model``, the model's Environment, listening on port 8080
(``SAGEMAKER_BIND_TO_PORT``) in a network of its own, published on a free port of this node's loopback
only (whatever address the container binds, nothing beyond this node reaches it past the endpoint's
signature check), healthy once ``GET /ping``
answers 200 (2 s per ping, 4 minutes in all, as SageMaker), and requests proxied to ``POST
/invocations`` with their content type, accept and custom attributes (60 s each). A container that
exits is started again; meanwhile the server is unhealthy and requests wait for it. Closing sends
SIGTERM, then SIGKILL after 30 s (sagemaker-contract.md 3.1, 3.4).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import httptools

from raymaker.cluster.local import free_port
from raymaker.containers.runtime import ContainerRuntimeError, Runtime, find_runtime
from raymaker.serve.codecs import InvocationError
from raymaker.toolkit.container import run_in_container

PING_TIMEOUT_S = 2.0  # SageMaker's per-ping timeout
STARTUP_TIMEOUT_S = 240.0  # SageMaker: consistently healthy within 4 minutes, else the launch fails
INVOKE_TIMEOUT_S = 60.0  # SageMaker: a container answers /invocations within 60 s
STOP_GRACE_S = 30.0  # scale-in and updates: SIGTERM, SIGKILL 30 s later
STARTUP_ATTEMPTS = 3  # a container that exits this often before its first healthy ping fails to start
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
TARGET_VARIANT = "X-Amzn-SageMaker-Target-Variant"
CONTAINER_PORT = 8080  # SageMaker's: a serving container listens on 8080

logger = logging.getLogger(__name__)


class ContainerServer:
    """One running ``<image> serve`` and its supervisor thread, which starts it again when it exits."""

    def __init__(
        self,
        image: str,
        model_dir: str,
        environment: Mapping[str, str],
        *,
        name: str,
        owner: str,
        runtime: Runtime | None = None,
        cpus: float | None = None,
        memory_mib: int | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        grace_s: float = STOP_GRACE_S,
    ):
        self.image, self.model_dir, self.name, self.owner = image, model_dir, name, owner
        self.runtime = runtime or find_runtime()
        self.cpus, self.memory_mib, self.grace_s = cpus, memory_mib, grace_s
        self.port = free_port()
        self.environment = {**environment, "SAGEMAKER_BIND_TO_PORT": str(CONTAINER_PORT)}
        self.restarts = 0
        self._down_since = time.monotonic()
        self._healthy = threading.Event()
        self._closing = threading.Event()
        self._exited = threading.Event()
        self._local = threading.local()
        self._idle: list[socket.socket] = []  # ainvoke's kept connections
        self._log: list[str] = []  # the container's last lines, for a failure to start
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name=f"raymaker-{name}")
        self._supervisor.start()
        try:
            self._wait_healthy(startup_timeout_s)
        except BaseException:
            self.close()
            raise

    # --- life ---------------------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._closing.is_set():
            if self.restarts:
                # A free port can be taken between our pick and the runtime's bind (another process's
                # connection): each start gets a port of its own, so a lost race is not repeated.
                self.port = free_port()
            cmd = self.runtime.run_command(
                self.image, ["serve"], name=self.name, owner=self.owner, env=self.environment,
                mounts=[(self.model_dir, "/opt/ml/model", False)], cpus=self.cpus, memory_mib=self.memory_mib,
                network="bridge", publish=[("127.0.0.1", self.port, CONTAINER_PORT)],
            )
            self._exited.clear()
            watcher = threading.Thread(target=self._watch_health, daemon=True)
            watcher.start()
            code = run_in_container(cmd, self.name, self.runtime, env=self.environment, cwd=self.model_dir,
                                    on_line=self._line, stop=self._closing, grace_s=self.grace_s)
            self._down_since = time.monotonic()
            self._healthy.clear()
            self._exited.set()
            if self._closing.is_set():
                return
            self.restarts += 1
            logger.warning("container %s (%s) exited with %s; starting it again", self.name, self.image, code)
            time.sleep(min(5.0, 0.2 * self.restarts))  # a container that cannot start is not spun on

    def _line(self, line: str) -> None:
        self._log = (self._log + [line])[-20:]
        logger.info("[%s] %s", self.name, line)

    def _watch_health(self) -> None:
        """Ping until the container answers 200 (then it is healthy) or exits."""
        while not self._exited.is_set() and not self._closing.is_set():
            if self.ping():
                self._healthy.set()
                return
            time.sleep(0.05)

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._healthy.wait(0.05):
            if self.restarts >= STARTUP_ATTEMPTS:  # it exits each time: waiting longer changes nothing
                raise ContainerRuntimeError(
                    f"the container {self.image} exited {self.restarts} times before answering GET /ping"
                    + self._last_output()
                )
            if time.monotonic() > deadline:
                raise ContainerRuntimeError(
                    f"the container {self.image} did not answer GET /ping with 200 within {timeout_s:.0f} s "
                    f"(it must listen on $SAGEMAKER_BIND_TO_PORT, {CONTAINER_PORT})" + self._last_output()
                )

    def _last_output(self) -> str:
        # One line: a FailureReason is read as one.
        tail = " | ".join(line.strip() for line in self._log[-5:] if line.strip())
        return f"; its last output: {tail}" if tail else ""

    @property
    def healthy(self) -> bool:
        return self._healthy.is_set()

    @property
    def output(self) -> list[str]:
        """The container's last lines of output (at most 20)."""
        return list(self._log)

    def down_for(self) -> float:
        """Seconds since the container stopped answering (0 while healthy)."""
        return 0.0 if self._healthy.is_set() else time.monotonic() - self._down_since

    def close(self) -> None:
        """SIGTERM, SIGKILL after the grace period; waits for the container to be gone."""
        self._closing.set()
        self._supervisor.join(timeout=self.grace_s + 60)

    # --- requests -----------------------------------------------------------------------------

    def ping(self) -> bool:
        try:
            status, _, _ = self._request("GET", "/ping", b"", {}, PING_TIMEOUT_S, reuse=False)
        except OSError:
            return False
        return status == 200

    def execution_parameters(self) -> dict[str, Any] | None:
        """``GET /execution-parameters``'s JSON, or None when the container has none."""
        try:
            status, body, _ = self._request("GET", "/execution-parameters", b"", {}, PING_TIMEOUT_S, reuse=False)
        except OSError:
            return None
        if status != 200:
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def invoke(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None = None,
        target_variant: str | None = None,
    ) -> tuple[bytes, str, str | None]:
        """(body, content type, custom attributes) of the container's 200; InvocationError otherwise
        (its 4xx/5xx: 424 ModelError with its status and message, as SageMaker's runtime answers).
        Blocking: transform instances call it from their threads (``ainvoke`` is the replicas')."""
        headers = _invocation_headers(content_type, accept, custom_attributes, target_variant)
        for attempt in range(2):
            if not self._healthy.wait(INVOKE_TIMEOUT_S):
                raise self._unhealthy()
            try:
                status, out, resp = self._request("POST", "/invocations", body, headers, INVOKE_TIMEOUT_S)
                break
            except ConnectionRefusedError:  # it exited between our check and the call: nothing was sent
                if attempt:
                    raise self._restarting() from None
                # The supervisor sees an exit at once and clears ``healthy``: the next attempt waits for
                # the new container (a listener that was only briefly away is tried again at once).
                self._exited.wait(1.0)
            except TimeoutError:
                raise _timed_out() from None
            except OSError as e:
                raise _dropped(e) from None
        return self._answer(status, out, resp, accept)

    async def ainvoke(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None = None,
        target_variant: str | None = None,
    ) -> tuple[bytes, str, str | None]:
        """``invoke`` on the caller's event loop: a replica keeps taking requests while the container
        works on earlier ones (a container serves several at once, as SageMaker's do)."""
        headers = _invocation_headers(content_type, accept, custom_attributes, target_variant)
        for attempt in range(2):
            if not self._healthy.is_set() and not await asyncio.to_thread(self._healthy.wait, INVOKE_TIMEOUT_S):
                raise self._unhealthy()
            try:
                async with asyncio.timeout(INVOKE_TIMEOUT_S):  # no task of its own, unlike wait_for
                    status, out, resp = await self._arequest("POST", "/invocations", body, headers)
                break
            except ConnectionRefusedError:
                if attempt:
                    raise self._restarting() from None
                await asyncio.to_thread(self._exited.wait, 1.0)
            except TimeoutError:
                raise _timed_out() from None
            except OSError as e:
                raise _dropped(e) from None
        return self._answer(status, out, resp, accept)

    def _unhealthy(self) -> InvocationError:
        return InvocationError(503, "ServiceUnavailable", f"the container {self.image} is not healthy; retry shortly")

    def _restarting(self) -> InvocationError:
        return InvocationError(503, "ServiceUnavailable", f"the container {self.image} is restarting")

    @staticmethod
    def _answer(status: int, out: bytes, resp: Mapping[str, str], accept: str | None) -> tuple[bytes, str, str | None]:
        if status != 200:
            text = out.decode("utf-8", "replace")[:1000]
            raise InvocationError(424, "ModelError",
                                  f"Received server error ({status}) from primary with message \"{text}\"")
        return out, resp.get("content-type") or accept or "application/octet-stream", resp.get(CUSTOM_ATTRIBUTES.lower())

    def _head(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return head.encode("latin-1") + b"\r\n"

    def _request(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], timeout: float, *, reuse: bool = True
    ) -> tuple[int, bytes, dict[str, str]]:
        """One HTTP/1.1 exchange with the container: the request in one write with TCP_NODELAY (headers
        and body apart, or Nagle's delay, cost ~0.5 ms a request here), the response parsed by
        ``http.client``; a connection the container keeps open is kept for this thread's next one."""
        sock = getattr(self._local, "sock", None) if reuse else None
        fresh = sock is None
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        try:
            sock.sendall(self._head(method, path, body, headers) + body)
            resp = http.client.HTTPResponse(sock, method=method)
            resp.begin()
            data = resp.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            sock.close()
            self._local.sock = None
            if fresh:
                raise
            return self._request(method, path, body, headers, timeout, reuse=False)  # a stale kept connection
        except BaseException:
            sock.close()
            if reuse:
                self._local.sock = None
            raise
        keep = reuse and not resp.will_close
        if reuse:
            self._local.sock = sock if keep else None
        if not keep:
            sock.close()
        return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}

    async def _arequest(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], *, reuse: bool = True
    ) -> tuple[int, bytes, dict[str, str]]:
        """``_request`` on the event loop: a non-blocking socket driven by the loop's own socket calls
        (streams cost ~0.1 ms more a request here), the response parsed by httptools (uvicorn's parser);
        a connection the container keeps open is kept for the next call."""
        loop = asyncio.get_running_loop()
        sock = self._idle.pop() if reuse and self._idle else None
        fresh = sock is None
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", self.port))
            except BaseException:
                sock.close()
                raise
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        try:
            await loop.sock_sendall(sock, self._head(method, path, body, headers) + body)
            while not response.complete:
                data = await loop.sock_recv(sock, 65536)
                if not data:  # closed: a body without a length ends here
                    if not response.headers_done:
                        raise ConnectionResetError("the container closed the connection before answering")
                    break
                parser.feed_data(data)
        except (ConnectionResetError, BrokenPipeError):
            sock.close()
            if fresh or response.headers_done:
                raise
            return await self._arequest(method, path, body, headers, reuse=False)  # a stale kept connection
        except BaseException:
            sock.close()
            raise
        if reuse and response.complete and parser.should_keep_alive():
            self._idle.append(sock)
        else:
            sock.close()
        return parser.get_status_code(), b"".join(response.body), response.headers


class _Response:
    """httptools' callbacks: the response's headers and body as they arrive."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headers_done = self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def _invocation_headers(
    content_type: str | None, accept: str | None, custom_attributes: str | None, target_variant: str | None
) -> dict[str, str]:
    headers = {"Content-Type": content_type or "application/octet-stream"}
    if accept:
        headers["Accept"] = accept
    if custom_attributes is not None:
        headers[CUSTOM_ATTRIBUTES] = custom_attributes
    if target_variant is not None:
        headers[TARGET_VARIANT] = target_variant
    return headers


def _timed_out() -> InvocationError:
    return InvocationError(424, "ModelError", f"the container did not answer within {INVOKE_TIMEOUT_S:.0f} s")


def _dropped(error: OSError) -> InvocationError:
    return InvocationError(424, "ModelError", f"the container dropped the request: {error}")
