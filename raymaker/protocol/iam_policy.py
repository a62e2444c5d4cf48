"""IAM's policy language, the part raymaker's permissions use: statements with ``Effect`` (Allow /
Deny), ``Action`` and ``Resource`` (strings or lists, ``*`` and ``?`` wildcards), and ``Condition``
with IAM's string operators and policy variables (``"StringEquals": {"aws:ResourceTag/raymaker:owner":
"${aws:username}"}``), evaluated as IAM does: an explicit Deny wins, else an Allow allows, else the
request is denied. ``NotAction``, ``NotResource``, ``Principal`` and other condition operators are
refused when a policy is stored, so no document is silently read more loosely than it was written. Pure: the API server and endpoint replicas both ask it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from raymaker.protocol.errors import ValidationError

Decision = Literal["allow", "deny", "implicit-deny"]

# The condition key a resource's maker is known by (IAM's resource-tag key form), and the policy a new
# user gets by default: everything on what they made, creating and listing (lists show only theirs).
OWNER_KEY = "aws:ResourceTag/raymaker:owner"
OWN_RESOURCES_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*",
         "Condition": {"StringEquals": {OWNER_KEY: "${aws:username}"}}},
        {"Effect": "Allow", "Action": ["sagemaker:Create*", "sagemaker:List*"], "Resource": "*"},
    ],
}

ADMINISTRATOR_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@functools.lru_cache(maxsize=4096)
def _pattern(glob: str, case_sensitive: bool) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile("".join(parts), 0 if case_sensitive else re.IGNORECASE)


def _matches(patterns: Iterable[str], value: str, *, case_sensitive: bool) -> bool:
    return any(_pattern(p, case_sensitive).fullmatch(value) for p in patterns)


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def decide(
    policies: Iterable[Mapping[str, Any]], action: str, resource: str, context: Mapping[str, str] | None = None
) -> Decision:
    """IAM's evaluation over the caller's policies (already checked by ``parse_policy``). ``context``:
    the request's condition keys (``aws:username``, ``aws:ResourceTag/raymaker:owner``, ...)."""
    allowed = False
    context = context or {}
    for policy in policies:
        for statement in policy["Statement"]:
            # Actions match case-insensitively (IAM's rule); ARNs case-sensitively.
            if not _matches(_as_list(statement["Action"]), action, case_sensitive=False):
                continue
            if not _matches(_as_list(statement["Resource"]), resource, case_sensitive=True):
                continue
            if not _conditions_hold(statement.get("Condition"), context):
                continue
            if statement["Effect"] == "Deny":
                return "deny"
            allowed = True
    return "allow" if allowed else "implicit-deny"


def request_context(username: str, owner: str | None) -> dict[str, str]:
    """The condition keys a request carries: who asks, and who made the resource (if a user did)."""
    context = {"aws:username": username}
    if owner is not None:
        context[OWNER_KEY] = owner
    return context


def denial(user_arn: str | None, action: str, resource: str, decision: Decision) -> str:
    """AccessDeniedException's message, worded as AWS words it."""
    why = (
        "with an explicit deny in an identity-based policy"
        if decision == "deny"
        else f"because no identity-based policy allows the {action} action"
    )
    return f"User: {user_arn} is not authorized to perform: {action} on resource: {resource} {why}"


# IAM's string condition operators; a key missing from the request matches no value, so the negated
# operators hold for it (IAM's rule).
_OPERATORS = {
    "StringEquals": (False, False),
    "StringNotEquals": (True, False),
    "StringLike": (False, True),
    "StringNotLike": (True, True),
}
_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def _substitute(value: str, context: Mapping[str, str]) -> str | None:
    """Policy variables (``${aws:username}``) from the request; None when one is missing."""
    missing = False

    def one(m: re.Match[str]) -> str:
        nonlocal missing
        if m[1] not in context:
            missing = True
            return ""
        return context[m[1]]

    out = _VARIABLE.sub(one, value)
    return None if missing else out


def _conditions_hold(conditions: Mapping[str, Any] | None, context: Mapping[str, str]) -> bool:
    for operator, keys in (conditions or {}).items():
        negated, like = _OPERATORS[operator]
        for key, values in keys.items():
            actual = context.get(key)
            wanted = [w for w in (_substitute(v, context) for v in _as_list(values)) if w is not None]
            if like:
                hit = actual is not None and _matches(wanted, actual, case_sensitive=True)
            else:
                hit = actual is not None and actual in wanted
            if hit == negated:
                return False
    return True


_UNSUPPORTED = ("NotAction", "NotResource", "NotPrincipal", "Principal")


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
        _check_condition(st.get("Condition"), where)
    return {**doc, "Statement": statements}


def _check_condition(condition: Any, where: str) -> None:
    if condition is None:
        return
    if not isinstance(condition, dict):
        raise ValidationError(f"{where} Condition must be a JSON object: operator -> {{key: value(s)}}")
    for operator, keys in condition.items():
        if operator not in _OPERATORS:
            raise ValidationError(
                f"{where} Condition operator {operator!r} is not one raymaker evaluates: use "
                f"{', '.join(_OPERATORS)}"
            )
        if not isinstance(keys, dict) or not keys:
            raise ValidationError(f"{where} Condition {operator} must map condition keys to values")
        for key, values in keys.items():
            items = [values] if isinstance(values, str) else values
            if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
                raise ValidationError(f"{where} Condition {operator} {key}: a string or a list of strings")
