"""What an endpoint replica checks and records on each request it serves, wherever it listens: the
runtime's front door and each replica's own direct-ingress port alike (Serve's replicas take HTTP on
every interface), so no path to a model skips it.

- **Signatures.** While the service requires them (``users.runtime_auth_required``: from its first
  user on, or ``RAYMAKER_RUNTIME_AUTH=on``), an invocation must carry a valid SigV4 signature
  (``protocol.sigv4``) by an active access key, and the key's user must be allowed
  ``sagemaker:InvokeEndpoint`` on the endpoint's ARN (``protocol.iam_policy``). Refusals are SageMaker
  runtime's errors (403, or 400 AccessDeniedException). Identical invocations within a second carry
  identical signatures (boto3 signs them alike), so invocations are not checked for replays.
- **Keys** come from the job service (``JobService.access_key``) and are kept ``ttl_s`` seconds, so a
  request costs no call but the first per key in that time; a deleted key stops working within it.
- **Audit.** Every invocation is recorded, allowed or refused (CloudTrail leaves them out; raymaker does
  not). ``RAYMAKER_AUDIT_INVOCATIONS``: ``aggregate`` (default: one event per caller, endpoint, variant
  and outcome every ``flush_s`` seconds, with its ``invocationCount``, so a hot endpoint does not drown
  the trail and no invocation goes uncounted), ``each`` (one event per invocation) or ``off``. Events
  go to the job service in batches, fire-and-forget.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from raymaker.protocol.environment import resource_arn
from raymaker.protocol.errors import AccessDenied, SageMakerError
from raymaker.protocol.iam_policy import decide, denial, request_context
from raymaker.protocol.sigv4 import IncomingRequest, access_key_of, verify_asgi

AUDIT_ENV = "RAYMAKER_AUDIT_INVOCATIONS"
ACTION = "sagemaker:InvokeEndpoint"


ANONYMOUS: dict[str, Any] = {"type": "Anonymous"}


class Refused(Exception):
    """A request the guard refuses: the SageMaker error to answer, and who asked (for the trail)."""

    def __init__(self, error: SageMakerError, identity: dict[str, Any]):
        super().__init__(error.message)
        self.error, self.identity = error, identity


class _Stale(Exception):
    """The guard has no fresh entry for a key a request names: it asks the job service, then checks."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


class InvocationGuard:
    """One per replica. ``service``: the job service's actor name (namespace "raymaker")."""

    def __init__(self, service: str, *, ttl_s: float = 2.0, flush_s: float = 2.0):
        self.service_name, self.ttl_s, self.flush_s = service, ttl_s, flush_s
        mode = (os.environ.get(AUDIT_ENV) or "aggregate").strip().lower()
        if mode not in ("aggregate", "each", "off"):
            raise ValueError(f"{AUDIT_ENV} must be aggregate, each or off, not {mode!r}")
        self.mode = mode
        self._handle: Any = None
        self._required: dict[str, tuple[float, bool, str | None]] = {}  # endpoint ARN -> (when, on, owner)
        self._keys: dict[str, tuple[float, Any]] = {}
        # (key, endpoint ARN, owner) -> (the key's entry it was decided for, the decision): the policies
        # are asked again when the entry is read again (every ttl_s), as a policy change must show.
        self._decisions: dict[tuple[str, str, str | None], tuple[Any, str]] = {}
        self._counts: dict[tuple[Any, ...], list[Any]] = {}
        self._arns: dict[str, str] = {}  # endpoint -> ARN: this process's region and account do not change
        self._each: list[dict[str, Any]] = []
        self._flusher: asyncio.Task | None = None

    # --- the job service ---------------------------------------------------------------------

    def _service(self) -> Any:
        if self._handle is None:
            import ray

            self._handle = ray.get_actor(self.service_name, namespace="raymaker")
        return self._handle

    # The caches are read first on every request (a plain dict read, no coroutine); the job service is
    # asked only on a miss or after ttl_s.

    def _fresh(self, cache: dict[Any, tuple[Any, ...]], key: Any) -> tuple[Any, ...] | None:
        hit = cache.get(key)
        return hit if hit is not None and time.monotonic() - hit[0] < self.ttl_s else None

    async def _fetch_required(self, arn: str) -> tuple[float, bool, str | None]:
        """Whether checks are on, and who made the endpoint, as the job service says now."""
        required, owner = await self._service().runtime_auth.remote(arn)
        self._required[arn] = entry = (time.monotonic(), required, owner)
        return entry

    async def _fetch_key(self, access_key_id: str) -> tuple[float, Any]:
        found = await self._service().access_key.remote(access_key_id)
        _remember(self._keys, access_key_id, entry := (time.monotonic(), found))  # unknown keys too
        return entry

    # --- the check -----------------------------------------------------------------------------

    async def admit(self, scope: dict[str, Any], body: bytes, endpoint: str) -> dict[str, Any]:
        """The caller's audit identity; ``Refused`` for a request that may not invoke ``endpoint``."""
        if self._flusher is None:
            self._start_flusher()
        arn = self._arns.get(endpoint) or _remember(self._arns, endpoint, resource_arn("endpoint", endpoint))
        _, required, owner = self._fresh(self._required, arn) or await self._fetch_required(arn)
        if not required:
            return ANONYMOUS
        try:
            try:
                key = verify_asgi(scope, body, self._cached_secret)
                found = self._keys[key][1]
            except _Stale as stale:  # the key was not asked for within ttl_s: ask, then check
                asked = stale.key
                _, found = await self._fetch_key(asked)
                key = verify_asgi(scope, body, lambda k: found[0] if found and k == asked else None)
        except SageMakerError as e:
            key = access_key_of(IncomingRequest.from_asgi(scope, body))
            raise Refused(e, {"type": "Unknown", "accessKeyId": key} if key else {"type": "Unknown"}) from None
        _, identity, policies = found
        hit = self._decisions.get((key, arn, owner))
        if hit is not None and hit[0] is found:
            decision = hit[1]
        else:
            decision = decide(policies, ACTION, arn, request_context(identity.get("userName", ""), owner))
            _remember(self._decisions, (key, arn, owner), (found, decision))
        if decision != "allow":
            raise Refused(AccessDenied(denial(identity.get("arn"), ACTION, arn, decision)), identity)
        return identity

    def _cached_secret(self, access_key_id: str) -> str | None:
        """The key's secret as the job service said within ttl_s (None: no such key); ``_Stale`` if it
        was not asked within ttl_s."""
        hit = self._keys.get(access_key_id)
        if hit is None or time.monotonic() - hit[0] >= self.ttl_s:
            raise _Stale(access_key_id)
        return hit[1][0] if hit[1] else None

    # --- the audit trail -----------------------------------------------------------------------

    def record(
        self, identity: dict[str, Any], endpoint: str, variant: str, scope: dict[str, Any],
        error: tuple[str, str] | None,
    ) -> None:
        if self.mode == "off":
            return
        source_ip = (scope.get("client") or ("", 0))[0]
        agent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"user-agent"), None)
        now = time.time()
        if self.mode == "each":
            self._each.append(dict(event_name="InvokeEndpoint", params={"EndpointName": endpoint, "VariantName": variant},
                                   error=error, caller=identity, source_ip=source_ip, user_agent=agent, now=now))
            return
        key = (tuple(sorted(identity.items())), endpoint, variant, error[0] if error else "", source_ip)
        entry = self._counts.get(key)
        if entry is None:
            self._counts[key] = [1, now, now, error, agent]
        else:
            entry[0] += 1
            entry[2], entry[3], entry[4] = now, error, agent

    def _start_flusher(self) -> None:
        if self._flusher is None and self.mode != "off":
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the service may be restarting: keep the events for later
                pass

    def flush(self) -> None:
        """Send what was recorded to the job service (fire-and-forget)."""
        calls, self._each = self._each, []
        counts, self._counts = self._counts, {}
        for (identity, endpoint, variant, _, source_ip), (n, first, last, error, agent) in counts.items():
            calls.append(dict(
                event_name="InvokeEndpoint",
                params={"EndpointName": endpoint, "VariantName": variant, "invocationCount": n,
                        "firstInvocationTime": first, "lastInvocationTime": last},
                error=error, caller=dict(identity), source_ip=source_ip, user_agent=agent, now=last,
            ))
        if calls:
            try:
                self._service().record_invocations.remote(calls)
            except Exception:
                self._each = calls + self._each  # not sent: the next flush tries again
                raise


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    """``cache[key] = value``, bounded: names callers choose (keys, endpoints) must not grow it without end."""
    if len(cache) > 10_000:
        cache.clear()
    cache[key] = value
    return value
