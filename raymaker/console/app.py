"""The web console's ASGI app, mounted by the API server under ``/console/``: server-rendered HTML
pages (Jinja2), charts as inline SVG, and one JSON route a page polls for its live log tail.

Read-only. With signatures on, a browser cannot sign SigV4, so the console signs its user in with an
access key id and secret checked against the same ``Directory`` the API uses, and keeps an HMAC-signed
session cookie (HttpOnly, SameSite=Strict); every read then goes through ``pages.Reader``, authorized
as the API authorizes it. Refusals and sign-ins are audited as the API's are. With signatures off
(loopback only) there is no sign-in: the pages read as the server's own user, as unsigned API calls do.
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import json
import mimetypes
import time
import urllib.parse
import uuid
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from raymaker.console import pages
from raymaker.console.sessions import COOKIE, SESSION_S, SessionSigner
from raymaker.engine.api import SageMakerAPI
from raymaker.engine.users import Caller, Directory
from raymaker.protocol.errors import (
    AccessDenied,
    InvalidSignature,
    ResourceNotFound,
    SageMakerError,
    UnrecognizedClient,
    ValidationError,
)
from raymaker.server.asgi import read_body

PREFIX = "/console"
MAX_FORM = 16 * 1024  # a sign-in form is a few hundred bytes
# Everything the page loads comes from this server; SVG charts use attributes, never inline styles.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
SIGN_IN_FAILED = "That access key ID and secret access key do not match an active key: check both, or ask an " \
                 "administrator for a key (raymaker users create NAME)."


class Console:
    """The console under ``PREFIX``. ``auth``: sign users in with their access keys (``directory``)."""

    def __init__(self, api: SageMakerAPI, *, auth: bool, directory: Directory | None = None,
                 session_s: float = SESSION_S):
        if auth and directory is None:
            raise ValueError("a console that signs users in needs the server's Directory of access keys")
        self.api, self.auth, self.directory = api, auth, directory
        self.sessions = SessionSigner(session_s)
        self.templates = Environment(loader=PackageLoader("raymaker.console", "templates"),
                                     autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(when=when, duration=duration, status_class=status_class, age=age)
        self.templates.globals.update(prefix=PREFIX, kinds=pages.KINDS)
        folder = resources.files("raymaker.console") / "static"
        self.static = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        status, body, headers = await self.handle(scope, receive)
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            + [(b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def handle(self, scope: dict[str, Any], receive: Any) -> tuple[int, bytes, dict[str, str]]:
        path, method = scope["path"], scope["method"]
        parts = [p for p in path.removeprefix(PREFIX).split("/") if p]
        if path == PREFIX:
            return redirect(PREFIX + "/")
        if parts[:1] == ["static"] and len(parts) == 2 and parts[1] in self.static:
            ctype = mimetypes.guess_type(parts[1])[0] or "application/octet-stream"
            return 200, self.static[parts[1]], {"Content-Type": ctype, "Cache-Control": "max-age=3600",
                                                "X-Content-Type-Options": "nosniff"}
        request = Request(scope)
        if parts == ["login"]:
            if not self.auth:
                return redirect(PREFIX + "/")
            if method == "POST":
                return await self.sign_in(request, receive)
            return self.html(200, "login.html", request, None, next=safe_next(request.query.get("next")))
        if parts == ["logout"] and method == "POST":
            return redirect(PREFIX + "/login", {"Set-Cookie": self.cookie("", request, max_age=0)})
        if method not in ("GET", "HEAD"):
            return self.html(405, "error.html", request, None, title="Not allowed",
                             message=f"The console only reads: {method} {path} changes nothing here. "
                                     "Use the API, the SDK or the raymaker command to make changes.")
        caller = self.signed_in(request)
        if self.auth and caller is None:
            if parts[:1] == ["api"]:
                return json_response(401, {"error": "Signed out: sign in again at " + PREFIX + "/login"})
            return redirect(f"{PREFIX}/login?next={urllib.parse.quote(path)}")
        read = pages.Reader(self.api, caller, request.source_ip, request.user_agent, request.id,
                            refused=lambda op, params, e: self.audit(op, params, e, caller, request))
        if not parts:
            return await self.render(request, caller, "overview.html", lambda: {
                "sections": [(kind, pages.list_rows(read, kind, 10)) for kind in pages.KINDS.values()]})
        kind = pages.KINDS.get(parts[0])
        if kind is not None and len(parts) == 1:
            return await self.render(request, caller, "list.html",
                                     lambda: {"kind": kind, "rows": pages.list_rows(read, kind)})
        if kind is not None and len(parts) == 2:
            return await self.render(request, caller, f"{kind.path.removesuffix('s').replace('-', '_')}.html",
                                     lambda: pages.DETAIL[kind.path](read, parts[1]))
        if parts[:1] == ["api"] and len(parts) == 4 and parts[3] == "tail" and parts[1] in pages.KINDS:
            return await self.tail(read, pages.KINDS[parts[1]], parts[2], request)
        return self.html(404, "error.html", request, caller, title="Not found",
                         message=f"The console has no page at {path}.")

    # --- pages ---------------------------------------------------------------------------------

    async def render(self, request: Request, caller: Caller | None, template: str,
                     build: Any) -> tuple[int, bytes, dict[str, str]]:
        try:
            # Several reads per page, some of which may wait on the database: off the event loop.
            context = await asyncio.to_thread(build)
        except AccessDenied as e:
            return self.html(403, "error.html", request, caller, title="Access denied", message=str(e))
        except (ResourceNotFound, ValidationError) as e:
            return self.html(404, "error.html", request, caller, title="Not found", message=e.message)
        except SageMakerError as e:
            return self.html(e.http_status if e.http_status >= 400 else 500, "error.html", request, caller,
                             title=e.code, message=e.message)
        return self.html(200, template, request, caller, **context)

    async def tail(self, read: pages.Reader, kind: pages.Kind, name: str,
                   request: Request) -> tuple[int, bytes, dict[str, str]]:
        after = request.query.get("after", "0")
        if not after.isdigit():
            return json_response(400, {"error": f"after={after!r}: give the last SequenceNumber the page holds"})
        try:
            answer = await asyncio.to_thread(pages.tail, read, kind, name, int(after))
        except SageMakerError as e:
            return json_response(403 if isinstance(e, AccessDenied) else 404 if isinstance(
                e, (ResourceNotFound, ValidationError)) else 500, {"error": e.message})
        return json_response(200, {**answer, "status_class": status_class(answer["status"])})

    def html(self, http_status: int, template: str, request: Request, caller: Caller | None,
             **context: Any) -> tuple[int, bytes, dict[str, str]]:
        body = self.templates.get_template(template).render(
            user=caller.name if caller else None, auth=self.auth, now=time.time(), path=request.path, **context)
        return http_status, body.encode(), {"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS}

    # --- signing in ----------------------------------------------------------------------------

    def signed_in(self, request: Request) -> Caller | None:
        if not self.auth or self.directory is None:
            return None
        key = self.sessions.read(request.cookies.get(COOKIE))
        found = self.directory.lookup(key) if key else None  # a deleted or deactivated key signs out
        return found[1] if found else None

    async def sign_in(self, request: Request, receive: Any) -> tuple[int, bytes, dict[str, str]]:
        form = await read_form(receive)
        key = form.get("access_key_id", "").strip()
        secret = form.get("secret_access_key", "")
        next_path = safe_next(form.get("next"))
        found = self.directory.lookup(key) if key and self.directory else None
        error: SageMakerError | None = None
        if found is None:
            error = UnrecognizedClient(f"The access key {key or '(none)'} is not an active key")
        elif not hmac.compare_digest(found[0].encode(), secret.encode()):
            error = InvalidSignature("The secret access key given with this key is not its secret")
        if error is not None:
            # Audited with the key it named (never the secret), as the API audits a bad signature.
            self.audit("ConsoleLogin", None, error, None, request, access_key=key or None)
            return self.html(401, "login.html", request, None, next=next_path, failed=SIGN_IN_FAILED, key=key)
        caller = found[1]
        self.audit("ConsoleLogin", None, None, caller, request)
        return redirect(next_path, {"Set-Cookie": self.cookie(self.sessions.issue(key), request)})

    def cookie(self, value: str, request: Request, max_age: float | None = None) -> str:
        age = int(self.sessions.lifetime_s if max_age is None else max_age)
        secure = "; Secure" if request.scheme == "https" else ""
        return f"{COOKIE}={value}; Path={PREFIX}; Max-Age={age}; HttpOnly; SameSite=Strict{secure}"

    def audit(self, operation: str, params: dict[str, Any] | None, error: SageMakerError | None,
              caller: Caller | None, request: Request, access_key: str | None = None) -> None:
        if caller is not None:
            identity: dict[str, Any] = caller.identity()
        else:
            identity = {"type": "Unknown", **({"accessKeyId": access_key} if access_key else {})}
        self.api.store.record_api_call(operation, params, error=error, caller=identity,
                                       source_ip=request.source_ip, user_agent=request.user_agent,
                                       request_id=request.id)


class Request:
    """What the console reads of an ASGI request."""

    def __init__(self, scope: dict[str, Any]):
        self.path = scope["path"]
        self.scheme = scope.get("scheme", "http")
        self.id = str(uuid.uuid4())
        self.source_ip = (scope.get("client") or ("", 0))[0]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.user_agent = headers.get("user-agent")
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(scope.get("query_string", b"").decode()).items()}
        self.cookies: dict[str, str] = {}
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name:
                self.cookies[name] = value


async def read_form(receive: Any) -> dict[str, str]:
    body = await read_body(receive, MAX_FORM)
    if body is None:
        return {}
    return {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console page on this server, never another site."""
    if value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value:
        return value
    return PREFIX + "/"


def redirect(location: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    return 303, b"", {"Location": location, **SECURITY_HEADERS, **(headers or {})}


def json_response(status: int, body: Any) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(body, default=str).encode(), {"Content-Type": "application/json",
                                                            **SECURITY_HEADERS}


# --- template filters ----------------------------------------------------------------------------

def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """12 s, 3 min 4 s, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return "-"
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def age(start: float | None, end: float | None = None, now: float | None = None) -> str:
    """How long something ran: start to end, or to now while it runs."""
    if start is None:
        return "-"
    return duration((end if end is not None else (now or time.time())) - start)


_STATUS_CLASSES = {
    "Completed": "ok", "InService": "ok",
    "InProgress": "busy", "Creating": "busy", "Updating": "busy", "SystemUpdating": "busy",
    "RollingBack": "busy", "Stopping": "busy", "Deleting": "busy",
    "Failed": "bad", "OutOfService": "bad",
    "Stopped": "off",
}


def status_class(status: str | None) -> str:
    return "status-" + _STATUS_CLASSES.get(status or "", "other")
