"""The service's users, their access keys and their inline policies (IAM's CreateUser, CreateAccessKey,
PutUserPolicy, ... as raymaker's own operations), and ``Directory``: what the API server asks on every
signed request (a key's secret, its user and policies), cached for a moment.

A secret is returned once, by CreateAccessKey, and never again: no List or Get answers it, the audit
trail records requests (never responses), and nothing logs it. It is kept in the job database because
checking a SigV4 signature needs it, as AWS keeps it.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import threading
import time
from dataclasses import dataclass
from typing import Any

from raymaker.engine.context import Engine
from raymaker.engine.iam import IAM_OPERATIONS, parse_policy, user_arn
from raymaker.engine.store import JobStore, as_datetime
from raymaker.protocol.errors import ResourceInUse, ResourceNotFound, ValidationError

MAX_KEYS_PER_USER = 2  # IAM's limit: room to rotate (create the new key, move, delete the old one)
_UPPER = string.ascii_uppercase + string.digits


def _new_key_id() -> str:
    return "AKIA" + "".join(secrets.choice(_UPPER) for _ in range(16))  # AWS's 20-character form


def _new_secret() -> str:
    return secrets.token_urlsafe(30)  # 40 characters, as AWS's


def _user_row(store: JobStore, name: str) -> Any:
    row = store.connection().execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise ResourceNotFound(f"The user with name {name} cannot be found: check the UserName (ListUsers)")
    return row


def _user(row: Any) -> dict[str, Any]:
    return {"UserName": row["name"], "UserId": row["user_id"], "Arn": user_arn(row["name"]),
            "CreateDate": as_datetime(row["create_time"])}


def create_user(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    name = params["UserName"]
    user_id = "AIDA" + "".join(secrets.choice(_UPPER) for _ in range(17))
    try:
        with engine.store.transaction() as c:
            c.execute("INSERT INTO users (name, user_id, create_time) VALUES (?, ?, ?)", (name, user_id, time.time()))
    except engine.store.db.integrity_error:  # the primary key: names are unique, whatever their case
        raise ResourceInUse(f"User with name {name} already exists") from None
    return {"User": _user(_user_row(engine.store, name))}


def delete_user(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_row(engine.store, params["UserName"])["name"]
    with engine.store.transaction() as c:
        c.execute("DELETE FROM access_keys WHERE user_name = ?", (name,))
        c.execute("DELETE FROM user_policies WHERE user_name = ?", (name,))
        c.execute("DELETE FROM users WHERE name = ?", (name,))
    return {}


def list_users(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    size, after = int(params.get("MaxResults", 100)), params.get("NextToken") or ""
    rows = engine.store.connection().execute(
        "SELECT * FROM users WHERE name > ? ORDER BY name LIMIT ?", (after, size + 1)
    ).fetchall()
    out: dict[str, Any] = {"Users": [_user(r) for r in rows[:size]]}
    if len(rows) > size:
        out["NextToken"] = rows[size - 1]["name"]
    return out


def create_access_key(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_row(engine.store, params["UserName"])["name"]
    key, secret, now = _new_key_id(), _new_secret(), time.time()
    with engine.store.transaction() as c:
        have = c.execute("SELECT COUNT(*) FROM access_keys WHERE user_name = ?", (name,)).fetchone()[0]
        if have >= MAX_KEYS_PER_USER:
            raise ValidationError(
                f"User {name} already has {have} access keys, the most a user may have: delete one first "
                "(raymaker users rotate-key does both)"
            )
        c.execute(
            "INSERT INTO access_keys (access_key_id, user_name, secret, status, create_time) VALUES (?, ?, ?, ?, ?)",
            (key, name, secret, "Active", now),
        )
    return {"AccessKey": {"UserName": name, "AccessKeyId": key, "Status": "Active", "SecretAccessKey": secret,
                          "CreateDate": as_datetime(now)}}


def delete_access_key(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_row(engine.store, params["UserName"])["name"]
    with engine.store.transaction() as c:
        gone = c.execute(
            "DELETE FROM access_keys WHERE access_key_id = ? AND user_name = ?", (params["AccessKeyId"], name)
        ).rowcount
    if not gone:
        raise ResourceNotFound(f"The Access Key with id {params['AccessKeyId']} cannot be found for user {name}")
    return {}


def list_access_keys(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_row(engine.store, params["UserName"])["name"]
    rows = engine.store.connection().execute(
        "SELECT * FROM access_keys WHERE user_name = ? ORDER BY create_time", (name,)
    ).fetchall()
    return {"AccessKeyMetadata": [
        {"UserName": name, "AccessKeyId": r["access_key_id"], "Status": r["status"],
         "CreateDate": as_datetime(r["create_time"])} for r in rows
    ]}


def put_user_policy(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_row(engine.store, params["UserName"])["name"]
    parse_policy(params["PolicyDocument"])  # refused now, not when a request would be judged by it
    with engine.store.transaction() as c:
        c.execute(
            "INSERT INTO user_policies (user_name, policy_name, document) VALUES (?, ?, ?) "
            "ON CONFLICT (user_name, policy_name) DO UPDATE SET document = excluded.document",
            (name, params["PolicyName"], params["PolicyDocument"]),
        )
    return {}


def _policy_row(engine: Engine, params: dict[str, Any]) -> Any:
    name = _user_row(engine.store, params["UserName"])["name"]
    row = engine.store.connection().execute(
        "SELECT * FROM user_policies WHERE user_name = ? AND policy_name = ?", (name, params["PolicyName"])
    ).fetchone()
    if row is None:
        raise ResourceNotFound(f"The user policy with name {params['PolicyName']} cannot be found for user {name}")
    return row


def get_user_policy(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    row = _policy_row(engine, params)
    return {"UserName": row["user_name"], "PolicyName": row["policy_name"], "PolicyDocument": row["document"]}


def delete_user_policy(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    row = _policy_row(engine, params)
    with engine.store.transaction() as c:
        c.execute("DELETE FROM user_policies WHERE user_name = ? AND policy_name = ?",
                  (row["user_name"], row["policy_name"]))
    return {}


def list_user_policies(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_row(engine.store, params["UserName"])["name"]
    rows = engine.store.connection().execute(
        "SELECT policy_name FROM user_policies WHERE user_name = ? ORDER BY policy_name", (name,)
    ).fetchall()
    return {"PolicyNames": [r["policy_name"] for r in rows]}


OPERATIONS = {
    "CreateUser": create_user,
    "DeleteUser": delete_user,
    "ListUsers": list_users,
    "CreateAccessKey": create_access_key,
    "DeleteAccessKey": delete_access_key,
    "ListAccessKeys": list_access_keys,
    "PutUserPolicy": put_user_policy,
    "GetUserPolicy": get_user_policy,
    "DeleteUserPolicy": delete_user_policy,
    "ListUserPolicies": list_user_policies,
}
assert set(OPERATIONS) == IAM_OPERATIONS


# --- what a signed request is checked against -------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """The user a valid signature speaks for, as the audit trail's userIdentity names it."""

    name: str
    user_id: str
    access_key_id: str
    policies: tuple[dict[str, Any], ...]

    @property
    def arn(self) -> str:
        return user_arn(self.name)

    def identity(self) -> dict[str, Any]:
        """CloudTrail's userIdentity for an IAM user."""
        return {"type": "IAMUser", "userName": self.name, "principalId": self.user_id, "arn": self.arn,
                "accessKeyId": self.access_key_id}


class Directory:
    """Access keys, their users and policies, read from the job database and kept ``ttl_s`` seconds,
    so a signed request costs no database read; a deleted key or changed policy holds at most that
    long (in every server process, the one that made the change included)."""

    def __init__(self, store: JobStore, ttl_s: float = 2.0):
        self.store, self.ttl_s = store, ttl_s
        self._cache: dict[str, tuple[float, tuple[str, Caller] | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, access_key_id: str) -> tuple[str, Caller] | None:
        """(secret, caller) for an active key, None for an unknown or inactive one."""
        now = time.monotonic()
        hit = self._cache.get(access_key_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        found = self._read(access_key_id)
        with self._lock:
            if len(self._cache) > 10_000:  # unknown keys must not grow it without end
                self._cache.clear()
            self._cache[access_key_id] = (now, found)
        return found

    def secret_for(self, access_key_id: str) -> str | None:
        found = self.lookup(access_key_id)
        return found[0] if found else None

    def _read(self, access_key_id: str) -> tuple[str, Caller] | None:
        conn = self.store.connection()
        row = conn.execute(
            "SELECT k.secret, k.status, u.name, u.user_id FROM access_keys k JOIN users u ON u.name = k.user_name "
            "WHERE k.access_key_id = ?", (access_key_id,)
        ).fetchone()
        if row is None or row["status"] != "Active":
            return None
        docs = conn.execute("SELECT document FROM user_policies WHERE user_name = ?", (row["name"],)).fetchall()
        policies = tuple(parse_policy(json.loads(d["document"])) for d in docs)
        return row["secret"], Caller(row["name"], row["user_id"], access_key_id, policies)


RUNTIME_AUTH_ENV = "RAYMAKER_RUNTIME_AUTH"


def runtime_auth_required(store: JobStore) -> bool:
    """Whether endpoints take only signed invocations: ``RAYMAKER_RUNTIME_AUTH`` = ``on`` or ``off``;
    by default (``auto``) on once the service has a user, so one person's local mode stays as open as
    a script's own process, and a shared service is closed from its first user on."""
    mode = (os.environ.get(RUNTIME_AUTH_ENV) or "auto").strip().lower()
    if mode not in ("on", "off", "auto"):
        raise ValueError(f"{RUNTIME_AUTH_ENV} must be on, off or auto, not {mode!r}")
    if mode != "auto":
        return mode == "on"
    return store.connection().execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None
