"""The console's sign-in session: a cookie naming the user's access key and an expiry, signed with an
HMAC key the server makes when it starts (a restart signs everyone out). The cookie holds no secret;
each request looks the key up again, so a deleted key or a changed policy holds at once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

COOKIE = "raymaker_console"
SESSION_S = 12 * 3600  # a working day


class SessionSigner:
    def __init__(self, lifetime_s: float = SESSION_S, key: bytes | None = None):
        self.lifetime_s = lifetime_s
        self._key = key or secrets.token_bytes(32)

    def issue(self, access_key_id: str, now: float | None = None) -> str:
        """A cookie value for ``access_key_id``, good for ``lifetime_s``."""
        expires = int((time.time() if now is None else now) + self.lifetime_s)
        body = base64.urlsafe_b64encode(json.dumps({"k": access_key_id, "e": expires}).encode()).decode()
        return f"{body}.{self._mac(body)}"

    def read(self, value: str | None, now: float | None = None) -> str | None:
        """The access key a cookie value names, or None: missing, forged, altered or expired."""
        if not value or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body.encode()))
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("k"), str) or not isinstance(data.get("e"), int):
            return None
        return data["k"] if data["e"] > (time.time() if now is None else now) else None

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
