"""AWS Signature Version 4 checked on incoming requests, with botocore's own signer computing the
signature the request should carry (no hand-written canonicalisation or crypto here).

Only the ``Authorization`` header form is read (what every boto3 client sends). Presigned query strings
(``X-Amz-Signature=`` in the URL) are not accepted: such a request carries no ``Authorization`` header
and is answered ``MissingAuthenticationTokenException``. The signing time comes from ``X-Amz-Date``
only (botocore never signs with ``Date``). ``X-Amz-Security-Token`` is not checked: raymaker issues no
session credentials, and the signature made with the key's secret is what authenticates the caller.

What the server checks, in this order (the codes and messages are AWS's where AWS has them):

1. no ``Authorization`` header: ``MissingAuthenticationTokenException``;
2. the header and the signing time are readable: ``Credential``, ``SignedHeaders`` and ``Signature``
   present, ``X-Amz-Date`` present and in ISO-8601 basic format, ``host`` signed, the algorithm
   ``AWS4-HMAC-SHA256``, a credential of 5 slash-delimited elements (``IncompleteSignatureException``,
   ``InvalidSignatureException`` for the unsigned host, as AWS answers); its scope names an accepted
   service, a region, the ``aws4_request`` terminator and X-Amz-Date's day (``InvalidSignatureException``);
3. the access key is known (``UnrecognizedClientException``);
4. ``X-Amz-Date`` is within ``MAX_SKEW_S`` of the server's clock, either way (``InvalidSignatureException``);
5. the signature matches, computed by botocore's ``SigV4Auth`` over exactly the headers the client
   listed in ``SignedHeaders``, the path and query as received, and the body (when the client sent
   ``X-Amz-Content-SHA256`` the body must hash to it; ``UNSIGNED-PAYLOAD`` is not accepted);
6. the signature was not accepted before (optional ``ReplayCache``). Only a valid signature enters the
   cache, so a forged request cannot block a genuine one.

A note on replays: a signature covers the request and its second, so a client that sends byte-identical
requests (same body, same signed headers) twice within one second sends the same signature twice, and the
second is refused as a replay. boto3 signs every attempt anew, so a retry a second or more later passes.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.credentials import Credentials

from raymaker.protocol.errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)

MAX_SKEW_S = 300.0
ALGORITHM = "AWS4-HMAC-SHA256"

MISSING_TOKEN = "Missing Authentication Token"
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
UNKNOWN_KEY = "The security token included in the request is invalid."
REPLAYED = "Signature already used: a signed request is accepted once; sign each request anew"
CONTENT_MISMATCH = "The provided 'x-amz-content-sha256' header does not match what was computed."

_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")


@dataclass(frozen=True)
class IncomingRequest:
    """A request as the server received it, before anything decoded it."""

    method: str  # "POST"
    path: str  # raw path as received, e.g. "/" or "/endpoints/ep/invocations" (percent-encoding as sent)
    query: str  # raw query string without "?", "" if none
    headers: Sequence[tuple[str, str]]  # as received (names any case, repeated names allowed)
    body: bytes

    @classmethod
    def from_asgi(cls, scope: dict[str, Any], body: bytes) -> IncomingRequest:
        """The request an ASGI server (uvicorn, Serve's replicas) hands over, with its body. Its header
        map is made in the same pass over the headers."""
        headers: list[tuple[str, str]] = []
        by_name: dict[str, list[str]] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers.append((name, value))
            values = by_name.get(lname := name.lower())
            if values is None:
                by_name[lname] = [value]
            else:
                values.append(value)
        request = cls(
            scope["method"],
            scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            body,
        )
        object.__setattr__(request, "_by_name", by_name)
        return request

    def header_map(self) -> dict[str, list[str]]:
        """Lower-case header name -> its values in arrival order; made once per request (the guard,
        ``access_key_of`` and ``verify`` all read it)."""
        by_name = self.__dict__.get("_by_name")
        if by_name is None:
            by_name = _header_map(self.headers)
            object.__setattr__(self, "_by_name", by_name)
        return by_name


class ReplayCache:
    """Signatures accepted within the last ``window_s`` (default 900 s: the skew window both ways plus
    margin); thread-safe; bounded memory (drops entries older than the window)."""

    def __init__(self, window_s: float = 900.0):
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = float(window_s)
        self._seen: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()
        self._lock = threading.Lock()

    def check_and_add(self, signature: str, now: float) -> bool:
        """True (and remembered) if ``signature`` was not seen within the window; False if it was."""
        with self._lock:
            horizon = now - self.window_s
            order, seen = self._order, self._seen
            while order and order[0][0] <= horizon:
                at, old = order.popleft()
                if seen.get(old) == at:
                    del seen[old]
            at = seen.get(signature)
            if at is not None and at > horizon:
                return False
            seen[signature] = now
            order.append((now, signature))
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


# --- botocore's signer, fed the request as received ------------------------------------------------


class _SignedHeaders(dict):
    """Lower-case header name -> its values in arrival order: what ``SigV4Auth.canonical_headers`` reads
    (iteration over names, ``get_all``), without building an ``HTTPHeaders``."""

    def get_all(self, name: str) -> list[str]:
        return self[name]


@functools.lru_cache(maxsize=256)  # a client lists the same SignedHeaders on every request
def _signed_names(value: str) -> tuple[list[str], str, list[str]]:
    """SignedHeaders' names (lower case, as listed), botocore's canonical list of them, and the order
    botocore's canonical_headers writes their lines in."""
    names = value.lower().split(";")
    return names, SigV4Auth.signed_headers(None, names), sorted(set(names))  # type: ignore[arg-type]


_LINES = SigV4Auth(None, "", "")  # canonical_headers and canonical_request read nothing of their signer


@functools.lru_cache(maxsize=4096)  # most signed headers (host, content type, date) repeat per client
def _canonical_line(name: str, values: tuple[str, ...]) -> str:
    """botocore's canonical line of one header: its canonical_headers of that header alone."""
    one = _SignedHeaders()
    one[name] = list(values)
    return _LINES.canonical_headers(one)


class _Received:
    """The slice of ``AWSRequest`` that ``SigV4Auth.canonical_request``/``string_to_sign``/``signature``
    read, with the canonical header lines and SignedHeaders list already made (botocore's, remembered).
    Per-request state lives here, so one signer serves every thread."""

    __slots__ = ("method", "url", "params", "headers", "body", "context", "lines", "listed")

    def __init__(self, method: str, url: str, payload: str, timestamp: str, lines: str, listed: str):
        self.method = method
        self.url = url
        self.params: dict[str, str] = {}  # empty: the query comes from the URL, raw, as signed
        self.headers = {"X-Amz-Content-SHA256": payload}  # botocore takes the payload's hash from here
        self.body = b""
        self.context = {"timestamp": timestamp}
        self.lines, self.listed = lines, listed


def _url_of(path: str, query: str) -> str:
    """The URL botocore's canonical_request reads the path and query from, as received."""
    if "?" in path:  # a server that hands over the request-target whole: '?' always starts the query
        path, _, in_path = path.partition("?")
        query = query or in_path
    return f"http://raymaker{path}?{query}" if query else f"http://raymaker{path}"


@functools.lru_cache(maxsize=1024)  # one method and URL per endpoint: the same on every request
def _request_lines(method: str, url: str) -> str:
    """The first three lines of botocore's canonical request (method, normalized path, canonical query),
    from botocore's own canonical_request of that method and URL."""
    made = SigV4Auth.canonical_request(_LINES, _Received(method, url, "", "", "", ""))  # type: ignore[arg-type]
    return "\n".join(made.split("\n", 3)[:3])


class _VerifyingSigV4(SigV4Auth):
    """``SigV4Auth`` over exactly the headers the client listed in ``SignedHeaders``, not the ones botocore
    would pick (every header but a blacklist)."""

    def string_to_sign(self, request: _Received, canonical_request: str) -> str:  # type: ignore[override]
        # botocore's string_to_sign ("\n".join of the algorithm, the time, credential_scope and the
        # canonical request's SHA-256), its scope made by botocore once a day and remembered.
        timestamp = request.context["timestamp"]
        scope = self.day_key(timestamp[0:8])[0]
        return f"{ALGORITHM}\n{timestamp}\n{scope}\n{hashlib.sha256(canonical_request.encode('utf-8')).hexdigest()}"

    def canonical_request(self, request: _Received) -> str:  # type: ignore[override]
        # botocore's canonical_request ("\n".join of method, path, query, canonical_headers + "\n",
        # signed_headers, payload hash), each part botocore's own, made once per value and remembered.
        return (
            f"{_request_lines(request.method, request.url)}\n{request.lines}\n\n{request.listed}\n"
            f"{request.headers['X-Amz-Content-SHA256']}"
        )

    def signature(self, string_to_sign: str, request: _Received) -> str:  # type: ignore[override]
        # botocore's last step, _sign(key, string_to_sign, hex=True), from the day's keyed state.
        mac = self.day_key(request.context["timestamp"][0:8])[1].copy()
        mac.update(string_to_sign.encode("utf-8"))
        return mac.hexdigest()

    def day_key(self, day: str) -> tuple[str, hmac.HMAC]:
        """The credential scope of requests signed on ``day`` (botocore's credential_scope) and the
        day's signing key as an HMAC's keyed state. botocore derives the key from the secret, the day,
        the region and the service at every call, with four of its five HMACs; they change once a day,
        so it is derived once a day with the same steps (botocore's _sign), and each request copies the
        last HMAC's keyed state."""
        cached = self._keyed
        if cached is None or cached[0] != day:
            k_date = self._sign(f"AWS4{self.credentials.secret_key}".encode(), day)
            k_service = self._sign(self._sign(k_date, self._region_name), self._service_name)
            key = self._sign(k_service, "aws4_request")
            scope = self.credential_scope(_Received("", "", "", day, "", ""))  # type: ignore[arg-type]
            cached = self._keyed = (day, scope, hmac.new(key, digestmod=_sha256))
        return cached[1], cached[2]

    _keyed: tuple[str, str, hmac.HMAC] | None = None


def _sha256(data: bytes = b"") -> Any:
    """hashlib's SHA-256, as a function of its own: hmac then keeps its keyed state as two hashlib
    objects, which a copy duplicates cheaply (OpenSSL's own HMAC, copied or one-shot, took about twice
    as long on a request that finds the machine's caches cold, as between a replica's requests)."""
    return hashlib.sha256(data)


@functools.lru_cache(maxsize=1024)
def _signer(access_key: str, secret: str, region: str, service: str) -> _VerifyingSigV4:
    """One signer per key, secret (so a rotated secret gets a fresh one), region and service. SigV4Auth
    keeps nothing but these, so sharing it across threads is safe; lru_cache is thread-safe."""
    return _VerifyingSigV4(Credentials(access_key, secret), service, region)


# --- parsing ------------------------------------------------------------------------------------------


class _Authorization(NamedTuple):
    algorithm: str
    credential: str | None
    signed_headers: str | None
    signature: str | None


def _parse_authorization(value: str) -> _Authorization:
    """The header's parts. Its Signature, written last as every SDK writes it, changes per request and
    the rest per client and day: that rest is parsed once (the whole header as usual otherwise)."""
    head, sep, signature = value.rpartition("Signature=")
    if sep and signature.isalnum() and head.endswith((" ", ",")):
        parts = _parse_parts(head)
        if parts.signature is None:
            return _Authorization(parts.algorithm, parts.credential, parts.signed_headers, signature)
    return _parse_parts(value)


@functools.lru_cache(maxsize=256)
def _parse_parts(value: str) -> _Authorization:
    algorithm, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    for part in rest.replace(",", " ").split():  # parts apart by commas and any whitespace
        name, eq, val = part.partition("=")
        if eq and name not in params:
            params[name] = val
    return _Authorization(
        algorithm, params.get("Credential"), params.get("SignedHeaders"), params.get("Signature")
    )


def _header_map(headers: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        values = out.get(lname)
        if values is None:
            out[lname] = [value]
        else:
            values.append(value)
    return out


def _stamp(t: float) -> str:
    return time.strftime(SIGV4_TIMESTAMP, time.gmtime(t))


@functools.lru_cache(maxsize=64)  # requests signed within the same second share it
def _parse_amz_date(value: str) -> float | None:
    if not _AMZ_DATE.fullmatch(value):
        return None
    try:  # datetime checks the ranges (month 13, hour 25...); strptime would too, 10x slower
        return datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
            tzinfo=UTC,
        ).timestamp()
    except ValueError:
        return None


def _authorization_of(request: IncomingRequest) -> _Authorization | None:
    """The request's Authorization header, parsed once per request (the guard reads the key, then
    ``verify`` the rest)."""
    parsed = request.__dict__.get("_authorization")
    if parsed is None:
        values = request.header_map().get("authorization")
        if not values:
            return None
        parsed = _parse_authorization(values[0])
        object.__setattr__(request, "_authorization", parsed)
    return parsed


def access_key_of(request: IncomingRequest) -> str | None:
    """The access key id the Authorization header names (for auditing refused requests), None if none."""
    auth = _authorization_of(request)
    return (auth.credential or "").partition("/")[0] or None if auth else None


def signature_of(request: IncomingRequest) -> str | None:
    """The Signature the Authorization header carries (for a replay check made after ``verify``)."""
    auth = _authorization_of(request)
    return auth.signature if auth else None


# --- the check --------------------------------------------------------------------------------------


def _refuse_incomplete(auth: _Authorization, auth_value: str, headers: dict[str, list[str]]) -> None:
    """IncompleteSignature naming every part the Authorization header or the date lacks."""
    missing = [
        f"Authorization header requires '{part}' parameter."
        for part, val in (
            ("Credential", auth.credential),
            ("Signature", auth.signature),
            ("SignedHeaders", auth.signed_headers),
        )
        if not val
    ]
    if not headers.get("x-amz-date"):
        missing.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            if "date" not in headers
            else "Authorization header requires existence of a 'X-Amz-Date' header (this service does not "
            "read the signing time from 'Date')."
        )
    raise IncompleteSignature(" ".join([*missing, f"Authorization={auth_value}"]))


def verify(
    request: IncomingRequest,
    secret_for: Callable[[str], str | None],
    *,
    services: Collection[str] = ("sagemaker",),
    now: float | None = None,
    replay: ReplayCache | None = None,
) -> str:
    """Checks the request's SigV4 signature; returns the access key id. Raises the errors above.
    ``secret_for(access_key_id)`` gives the secret, None if unknown. Check order: missing auth ->
    malformed -> unknown key -> skew -> signature -> replay (a replay check only after the signature is
    valid, so forged requests cannot poison the cache)."""
    headers = request.header_map()
    auth_values = headers.get("authorization")
    if not auth_values or not auth_values[0].strip():
        raise MissingAuthenticationToken(MISSING_TOKEN)
    auth_value = auth_values[0].strip()
    auth = _authorization_of(request)
    assert auth is not None

    # 2. malformed: the parts, then the date, the host, the algorithm, the credential's shape and scope
    amz_dates = headers.get("x-amz-date")
    if not (auth.credential and auth.signature and auth.signed_headers and amz_dates):
        _refuse_incomplete(auth, auth_value, headers)
    assert auth.credential and auth.signature and auth.signed_headers and amz_dates
    amz_date = amz_dates[0].strip()
    signed_at = _parse_amz_date(amz_date)
    if signed_at is None:
        raise IncompleteSignature(
            f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
        )
    signed_names, listed, ordered = _signed_names(auth.signed_headers)
    if "host" not in signed_names:
        raise InvalidSignature("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    if auth.algorithm != ALGORITHM:
        raise IncompleteSignature(
            f"Unsupported AWS 'algorithm': '{auth.algorithm}' (only {ALGORITHM} for now)."
        )
    services = (services,) if isinstance(services, str) else tuple(services)
    # The scope is the same all day for a client: checked once (the errors name the request's own date).
    access_key, region, service = _accepted_scope(auth.credential, amz_date[:8], services) or _scope_of(
        auth.credential, amz_date, services
    )

    # 3. the key
    secret = secret_for(access_key)
    if secret is None:
        raise UnrecognizedClient(UNKNOWN_KEY)

    # 4. the clock
    if now is None:
        now = time.time()
    if signed_at < now - MAX_SKEW_S:
        raise InvalidSignature(
            f"Signature expired: {amz_date} is now earlier than {_stamp(now - MAX_SKEW_S)} "
            f"({_stamp(now)} - {MAX_SKEW_S / 60:g} min.)"
        )
    if signed_at > now + MAX_SKEW_S:
        raise InvalidSignature(
            f"Signature not yet current: {amz_date} is still later than {_stamp(now + MAX_SKEW_S)} "
            f"({_stamp(now)} + {MAX_SKEW_S / 60:g} min.)"
        )

    # 5. the signature, by botocore's signer
    content_sha = headers.get("x-amz-content-sha256")
    # The body's hash as botocore's payload() makes it for a request it signs: always the SHA-256 (it
    # leaves the payload unsigned only over HTTPS, when told to), given here so botocore reads it as
    # the client's header.
    body_sha = hashlib.sha256(request.body).hexdigest()
    signer = _signer(access_key, secret, region, service)
    lines = [_canonical_line(name, tuple(headers.get(name, ()))) for name in ordered]
    received = _Received(
        request.method, _url_of(request.path, request.query),
        content_sha[0] if content_sha else body_sha, amz_date, "\n".join(lines), listed,
    )
    canonical = signer.canonical_request(received)
    expected = signer.signature(signer.string_to_sign(received, canonical), received)
    if not hmac.compare_digest(expected.encode(), auth.signature.encode("utf-8", "replace")):
        raise InvalidSignature(MISMATCH)
    if content_sha and content_sha[0].strip().lower() != body_sha:
        raise InvalidSignature(CONTENT_MISMATCH)

    # 6. once only
    if replay is not None and not replay.check_and_add(expected, now):
        raise InvalidSignature(REPLAYED)
    return access_key


@functools.lru_cache(maxsize=256)  # a client's credential is the same all day
def _accepted_scope(credential: str, day: str, services: tuple[str, ...]) -> tuple[str, str, str] | None:
    """``_scope_of`` for a request signed on ``day``; None where it would refuse."""
    try:
        return _scope_of(credential, day, services)
    except (IncompleteSignature, InvalidSignature):
        return None


def _scope_of(credential: str, amz_date: str, services: tuple[str, ...]) -> tuple[str, str, str]:
    """The credential's access key, region and service, if its scope is one this server accepts for a
    request signed at ``amz_date``; InvalidSignature or IncompleteSignature naming what is wrong if not."""
    scope = credential.rstrip("/").split("/")
    if len(scope) != 5 or not scope[0]:
        raise IncompleteSignature(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
            f"got '{credential}'"
        )
    access_key, day, region, service, terminator = scope
    wrong: list[str] = []
    if not region:
        wrong.append(f"Credential should be scoped to a valid region, not '{region}'.")
    if service not in services:
        wanted = (
            ", ".join(f"'{s}'" for s in sorted(services))
            if len(services) != 1
            else f"'{next(iter(services))}'"
        )
        wrong.append(f"Credential should be scoped to correct service: {wanted}.")
    if terminator != "aws4_request":
        wrong.append(
            f"Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."
        )
    if day != amz_date[:8]:
        wrong.append(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{day}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    if wrong:
        raise InvalidSignature(" ".join(wrong))
    return access_key, region, service


# --- the common case, in one function ---------------------------------------------------------------
# A replica checks every invocation, and between two of them the client, HAProxy and Serve run: the check
# finds the CPU's caches cold, where each Python call costs about a microsecond. So the request every
# boto3 client sends, as an ASGI server hands it over (lower-case header names, each once, the
# Signature last in Authorization, no X-Amz-Content-SHA256), is checked by verify_asgi in one function
# from the same remembered parts, each botocore's own, that verify uses. Anything else, and every
# request it does not accept, goes to verify, which accepts or refuses it as it would any request.


class _Client(NamedTuple):
    """What an Authorization header says but its Signature, which a client repeats all day."""

    access_key: str
    day: bytes  # the credential scope's day: X-Amz-Date's must be the same
    names: tuple[bytes, ...]  # the signed headers, in the order botocore writes their lines
    listed: str  # botocore's SignedHeaders line
    region: str
    service: str


@functools.lru_cache(maxsize=256)
def _client_of(head: bytes, services: tuple[str, ...]) -> _Client | None:
    """The Authorization header's parts before ``Signature=``, if verify would accept them whatever
    the request's date (its day is compared per request); None if not."""
    parts = _parse_parts(head.decode("latin-1"))
    if parts.algorithm != ALGORITHM or not parts.credential or not parts.signed_headers or parts.signature:
        return None
    names, listed, ordered = _signed_names(parts.signed_headers)
    day = parts.credential.rstrip("/").split("/")[1:2]
    accepted = _accepted_scope(parts.credential, day[0], services) if day and "host" in names else None
    if accepted is None:
        return None
    access_key, region, service = accepted
    return _Client(access_key, day[0].encode(), tuple(n.encode("latin-1") for n in ordered), listed, region, service)


@functools.lru_cache(maxsize=1024)  # one method and path per endpoint
def _asgi_request_lines(method: str, raw_path: bytes, query: bytes) -> str:
    """``_request_lines`` of a request as an ASGI server hands it over, read as verify reads it."""
    return _request_lines(method, _url_of(raw_path.decode("latin-1"), query.decode("latin-1")))


@functools.lru_cache(maxsize=4096)  # all but X-Amz-Date repeat per client; it changes once a second
def _header_lines(names: tuple[bytes, ...], values: tuple[bytes, ...]) -> str:
    """botocore's canonical header lines of headers each received once."""
    return "\n".join(_canonical_line(n.decode("latin-1"), (v.decode("latin-1"),)) for n, v in zip(names, values))


@functools.lru_cache(maxsize=64)
def _signing_time(value: bytes) -> float | None:
    return _parse_amz_date(value.decode("latin-1"))


def verify_asgi(
    scope: dict[str, Any],
    body: bytes,
    secret_for: Callable[[str], str | None],
    *,
    services: Collection[str] = ("sagemaker",),
    now: float | None = None,
) -> str:
    """``verify(IncomingRequest.from_asgi(scope, body), secret_for, ...)``, with the same outcome for
    every request (no replay check), in one function for the request every SDK sends."""
    headers = scope["headers"]
    values = dict(headers)
    auth, date = values.get(b"authorization"), values.get(b"x-amz-date")
    if type(services) is not tuple:
        services = (services,) if isinstance(services, str) else tuple(services)
    if (
        auth is not None and date is not None and len(values) == len(headers)
        and b"x-amz-content-sha256" not in values and (names := b"".join(values)).isascii() and names.islower()
    ):  # fmt: skip
        head, sep, signature = auth.rpartition(b"Signature=")
        client = _client_of(head, services) if sep and signature.isalnum() and head.endswith((b" ", b",")) else None
        if client is not None and date[:8] == client.day:
            secret = secret_for(client.access_key)
            signed_at = _signing_time(date)
            if now is None:
                now = time.time()
            if secret is not None and signed_at is not None and abs(signed_at - now) <= MAX_SKEW_S:
                lines = tuple(map(values.get, client.names))
                if None not in lines:
                    raw_path = scope["raw_path"] if "raw_path" in scope else scope["path"].encode()
                    canonical = (
                        f"{_asgi_request_lines(scope['method'], raw_path, scope.get('query_string', b''))}\n"
                        f"{_header_lines(client.names, lines)}\n\n{client.listed}\n{hashlib.sha256(body).hexdigest()}"
                    )
                    credential_scope, keyed = _signer(
                        client.access_key, secret, client.region, client.service
                    ).day_key(date[:8].decode())
                    mac = keyed.copy()
                    mac.update(
                        f"{ALGORITHM}\n{date.decode()}\n{credential_scope}\n"
                        f"{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}".encode()
                    )
                    if hmac.compare_digest(mac.hexdigest().encode(), signature):
                        return client.access_key
    return verify(IncomingRequest.from_asgi(scope, body), secret_for, services=services, now=now)
