"""Who may read what: the IAM decision for one request (``authorize``) and a List answer cut to what
the caller may Describe (``visible``), shared by the API (``server.app``) and the web console
(``raymaker.console``), so the two cannot disagree. Both read resources' makers through ``owners``:
the store's ``owners``, or the API's ``Owners`` cache of it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from raymaker.engine import iam
from raymaker.engine.store import JobStore
from raymaker.engine.users import Caller
from raymaker.protocol.errors import AccessDenied
from raymaker.protocol.iam_policy import denial, request_context

OwnersOf = Callable[[Sequence[str]], dict[str, str]]  # ARNs -> the makers recorded for them


class Owners:
    """The store's ``owners``, each ARN's answer remembered ``ttl_s`` (2 s, as ``users.Directory``
    remembers keys and policies), so a Describe or a waiter's poll costs no ownership query.

    A maker changes only when a name is made anew after a delete. The server ``forget``s the resource
    of every call that changes state, so its own process sees a new maker at once; another service
    process's remake of a name is seen within ``ttl_s``, as a rotated key or a changed policy is."""

    def __init__(self, store: JobStore, ttl_s: float = 2.0):
        self.store, self.ttl_s = store, ttl_s
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def __call__(self, arns: Sequence[str]) -> dict[str, str]:
        now = time.monotonic()
        out: dict[str, str] = {}
        missing = []
        for arn in arns:
            hit = self._cache.get(arn)
            if hit is None or now - hit[0] >= self.ttl_s:
                missing.append(arn)
            elif hit[1] is not None:
                out[arn] = hit[1]
        if missing:
            found = self.store.owners(missing)
            with self._lock:
                if len(self._cache) > 100_000:  # Lists of many resources must not grow it without end
                    self._cache.clear()
                for arn in missing:
                    self._cache[arn] = (now, found.get(arn))
            out.update(found)
        return out

    def forget(self, arn: str) -> None:
        with self._lock:
            self._cache.pop(arn, None)


def authorize(caller: Caller, operation: str, params: dict[str, Any], owners: OwnersOf) -> None:
    """AccessDenied, worded as AWS words it, unless the caller's policies allow the action on the
    resource, its maker known to conditions (``aws:ResourceTag/raymaker:owner``)."""
    action, resource = iam.action_of(operation), iam.resource_of(operation, params)
    owner = owners([resource]).get(resource) if resource != "*" else None
    decision = iam.decide(caller.policies, action, resource, request_context(caller.name, owner))
    if decision != "allow":
        raise AccessDenied(denial(caller.arn, action, resource, decision))


def visible(caller: Caller, result: dict[str, Any], owners_of: OwnersOf) -> dict[str, Any]:
    """A List answer with only what the caller may Describe: a user who may not see another's jobs does
    not find them listed either (a page may then hold fewer than MaxResults)."""
    for key, items in result.items():
        if not (isinstance(items, list) and items and isinstance(items[0], dict)):
            continue
        arns = [next((v for k, v in item.items() if k.endswith("Arn") and isinstance(v, str)), None) for item in items]
        if not any(arns):
            continue
        owners = owners_of([a for a in arns if a])
        kept = []
        for item, arn in zip(items, arns, strict=True):
            describe = _DESCRIBE.get(arn.split(":", 5)[-1].split("/", 1)[0]) if arn else None
            if describe is None or iam.decide(caller.policies, f"sagemaker:{describe}", arn,
                                              request_context(caller.name, owners.get(arn))) == "allow":
                kept.append(item)
        result = {**result, key: kept}
    return result


_DESCRIBE = {
    "training-job": "DescribeTrainingJob",
    "hyper-parameter-tuning-job": "DescribeHyperParameterTuningJob",
    "transform-job": "DescribeTransformJob",
    "endpoint": "DescribeEndpoint",
    "endpoint-config": "DescribeEndpointConfig",
    "model": "DescribeModel",
}
