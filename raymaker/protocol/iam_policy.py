"""IAM's policy language, the part raymaker's permissions use: statements with ``Effect`` (Allow /
Deny), ``Action`` and ``Resource`` (strings or lists, ``*`` and ``?`` wildcards), evaluated as IAM
does: an explicit Deny wins, else an Allow allows, else the request is denied. ``NotAction``,
``NotResource``, ``Principal`` and ``Condition`` are refused when a policy is stored, so no document is
silently read more loosely than it was written. Pure: the API server and endpoint replicas both ask it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from raymaker.protocol.errors import ValidationError

Decision = Literal["allow", "deny", "implicit-deny"]


@functools.lru_cache(maxsize=4096)
def _pattern(glob: str, case_sensitive: bool) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile("".join(parts), 0 if case_sensitive else re.IGNORECASE)


def _matches(patterns: Iterable[str], value: str, *, case_sensitive: bool) -> bool:
    return any(_pattern(p, case_sensitive).fullmatch(value) for p in patterns)


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def decide(policies: Iterable[Mapping[str, Any]], action: str, resource: str) -> Decision:
    """IAM's evaluation over the caller's policies (already checked by ``parse_policy``)."""
    allowed = False
    for policy in policies:
        for statement in policy["Statement"]:
            # Actions match case-insensitively (IAM's rule); ARNs case-sensitively.
            if not _matches(_as_list(statement["Action"]), action, case_sensitive=False):
                continue
            if not _matches(_as_list(statement["Resource"]), resource, case_sensitive=True):
                continue
            if statement["Effect"] == "Deny":
                return "deny"
            allowed = True
    return "allow" if allowed else "implicit-deny"


_UNSUPPORTED = ("NotAction", "NotResource", "NotPrincipal", "Principal", "Condition")


def parse_policy(document: str | Mapping[str, Any]) -> dict[str, Any]:
    """The policy, checked, with ``Statement`` always a list; ValidationError naming what to change."""
    if isinstance(document, str):
        try:
            doc = json.loads(document)
        except ValueError as e:
            raise ValidationError(f"PolicyDocument is not JSON: {e}") from None
    else:
        doc = dict(document)
    if not isinstance(doc, dict) or "Statement" not in doc:
        raise ValidationError('PolicyDocument must be a JSON object with a "Statement" (IAM\'s policy grammar)')
    statements = doc["Statement"]
    statements = [statements] if isinstance(statements, dict) else statements
    if not isinstance(statements, list) or not statements:
        raise ValidationError("PolicyDocument's Statement must be a statement or a non-empty list of them")
    for i, st in enumerate(statements):
        where = f"PolicyDocument Statement[{i}]"
        if not isinstance(st, dict):
            raise ValidationError(f"{where} must be a JSON object")
        unsupported = [k for k in _UNSUPPORTED if k in st]
        if unsupported:
            raise ValidationError(
                f"{where} uses {', '.join(unsupported)}, which raymaker's policies do not support: "
                "write it with Effect, Action and Resource"
            )
        if st.get("Effect") not in ("Allow", "Deny"):
            raise ValidationError(f'{where} needs "Effect": "Allow" or "Deny", not {st.get("Effect")!r}')
        for key in ("Action", "Resource"):
            value = st.get(key)
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
                raise ValidationError(f"{where} needs {key}: a string or a non-empty list of strings")
        for action in _as_list(st["Action"]):
            if action != "*" and ":" not in action:
                raise ValidationError(
                    f"{where} Action {action!r} needs a service prefix, e.g. sagemaker:DescribeTrainingJob"
                )
    return {**doc, "Statement": statements}
