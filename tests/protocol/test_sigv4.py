"""protocol.sigv4: requests signed by botocore itself (its SigV4Auth, and real boto3 clients caught before
they send) pass; every way of getting them wrong is refused with AWS's code and message."""

from __future__ import annotations

import datetime
import hashlib
import threading
from dataclasses import replace
from urllib.parse import urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from raymaker.protocol.errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)
from raymaker.protocol.sigv4 import MISMATCH, IncomingRequest, ReplayCache, access_key_of, verify, verify_asgi

KEY, SECRET = "AKIDRAYMAKER0001", "s3cr3t/Key+with/slashes"
OTHER_KEY, OTHER_SECRET = "AKIDRAYMAKER0002", "another-secret"
SECRETS = {KEY: SECRET, OTHER_KEY: OTHER_SECRET}
SIGNED_AT = datetime.datetime(2026, 12, 2, 8, 0, 0)  # botocore's clock while signing (naive UTC)
T0 = SIGNED_AT.replace(tzinfo=datetime.UTC).timestamp()
URL = "http://127.0.0.1:8443/"
BODY = b'{"MaxResults": 5}'


@pytest.fixture(autouse=True)
def botocore_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every signature in these tests is made at 2026-12-02T08:00:00Z."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: SIGNED_AT)


def _incoming(method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> IncomingRequest:
    """What the server receives: the client's headers plus the Host its HTTP library adds (botocore signs
    the host it derives from the URL; urllib3 sends the URL's netloc, the same value)."""
    parts = urlsplit(url)
    return IncomingRequest(method, parts.path or "/", parts.query, [("Host", parts.netloc), *headers], body)


def _str(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def signed(
    body: bytes = BODY,
    *,
    key: str = KEY,
    secret: str = SECRET,
    service: str = "sagemaker",
    region: str = "us-east-1",
    url: str = URL,
    headers: dict[str, str] | None = None,
) -> IncomingRequest:
    """A ListTrainingJobs request signed by botocore's SigV4Auth, as the server receives it."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers=headers
        or {"X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"},
    )
    SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    return _incoming("POST", url, [(k, _str(v)) for k, v in request.headers.items()], body)


def with_header(request: IncomingRequest, name: str, value: str) -> IncomingRequest:
    headers = [(k, value if k.lower() == name.lower() else v) for k, v in request.headers]
    return replace(request, headers=headers)


def without_header(request: IncomingRequest, name: str) -> IncomingRequest:
    return replace(request, headers=[(k, v) for k, v in request.headers if k.lower() != name.lower()])


def authorization(request: IncomingRequest) -> str:
    return next(v for k, v in request.headers if k.lower() == "authorization")


def check(request: IncomingRequest, **kwargs) -> str:
    kwargs.setdefault("now", T0)
    return verify(request, SECRETS.get, **kwargs)


# --- what passes -----------------------------------------------------------------------------------


def test_a_request_signed_by_botocore_passes_and_names_its_key():
    assert check(signed()) == KEY
    assert check(signed(key=OTHER_KEY, secret=OTHER_SECRET)) == OTHER_KEY


def test_header_names_in_any_case_and_a_host_on_the_default_port_pass():
    request = signed()
    lowered = replace(request, headers=[(k.lower(), v) for k, v in request.headers])
    assert check(lowered) == KEY
    assert check(signed(url="http://raymaker.example/")) == KEY


def test_a_request_from_an_asgi_server_is_read_as_received_and_checked_alike():
    """A request from an ASGI server maps its headers once; a copy with other headers maps its own."""
    request = signed()
    scope = {
        "method": "POST", "path": request.path, "raw_path": request.path.encode(), "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers] + [(b"x-twice", b"1"), (b"X-Twice", b"2")],
    }  # fmt: skip
    received = IncomingRequest.from_asgi(scope, BODY)
    assert received.header_map() == replace(received, headers=list(received.headers)).header_map()
    assert received.header_map()["x-twice"] == ["1", "2"]
    assert check(received) == KEY
    assert access_key_of(received) == KEY
    tampered = replace(received, headers=[(k, "SageMaker.DeleteEndpoint" if k == "x-amz-target" else v)
                                          for k, v in received.headers])  # fmt: skip
    with pytest.raises(InvalidSignature, match="does not match"):  # not the original's headers
        check(tampered)
    assert access_key_of(without_header(received, "Authorization")) is None


def test_the_authorization_header_is_read_alike_whatever_the_order_and_spacing_of_its_parts():
    """botocore writes the signature last; a client that orders or spaces the parts otherwise is read to
    the same outcome, and a signature but the one made for the request is refused."""
    request = signed()
    value = authorization(request)
    algorithm, rest = value.split(" ", 1)
    credential, names, signature = (part.strip() for part in rest.split(","))
    for other in (
        f"{algorithm} {signature}, {credential}, {names}",
        f"{algorithm}  {credential},{names} ,  {signature}",
        f"{algorithm} {names}, {credential}, {signature}",
    ):
        assert check(with_header(request, "Authorization", other)) == KEY
        assert access_key_of(with_header(request, "Authorization", other)) == KEY
    assert check(request) == KEY
    with pytest.raises(InvalidSignature, match="does not match"):
        check(with_header(request, "Authorization", value[:-8] + "00000000"))
    with pytest.raises(InvalidSignature, match="does not match"):  # the signature read is "ab"
        check(with_header(request, "Authorization", value.rpartition("=")[0] + "=ab cd"))


def test_a_query_string_and_an_odd_path_are_signed_as_received():
    request = signed(b"", url="http://127.0.0.1:8443/a/b%20c/?z=1&a=2&a=1&empty=")
    assert (request.path, request.query) == ("/a/b%20c/", "z=1&a=2&a=1&empty=")
    assert check(request) == KEY
    # a server that hands over the request-target whole (query in the path) is read the same way
    assert check(replace(request, path="/a/b%20c/?z=1&a=2&a=1&empty=", query="")) == KEY
    with pytest.raises(InvalidSignature):
        check(replace(request, query="z=1&a=2&a=1&empty=x"))


def test_a_client_sent_content_sha256_must_match_the_body():
    body = b"payload"
    sha = hashlib.sha256(body).hexdigest()
    request = signed(body, headers={"Content-Type": "application/json", "X-Amz-Content-SHA256": sha})
    assert check(request) == KEY
    # the body swapped, the header kept: the signature still matches, the body does not
    with pytest.raises(InvalidSignature, match="x-amz-content-sha256"):
        check(replace(request, body=b"other"))
    unsigned = signed(
        body, headers={"Content-Type": "application/json", "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    )
    with pytest.raises(InvalidSignature, match="x-amz-content-sha256"):
        check(unsigned)


class _Captured(Exception):
    """Raised from before-send: the request was signed and recorded, and nothing is sent."""


def _capture(service: str, call) -> IncomingRequest:
    client = boto3.client(
        service,
        endpoint_url="http://127.0.0.1:1",
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    seen: list[IncomingRequest] = []

    def before_send(request, **_):
        headers = [(k, _str(v)) for k, v in request.headers.items()]
        seen.append(_incoming(request.method, request.url, headers, request.body or b""))
        raise _Captured

    client.meta.events.register(
        f"before-send.{client.meta.service_model.service_id.hyphenize()}.*", before_send
    )
    with pytest.raises(_Captured):
        call(client)
    assert len(seen) == 1
    return seen[0]


def test_a_boto3_sagemaker_client_request_passes():
    request = _capture("sagemaker", lambda c: c.list_training_jobs(MaxResults=5, NameContains="ré"))
    assert dict(request.headers)["X-Amz-Target"] == "SageMaker.ListTrainingJobs"
    assert check(request) == KEY
    with pytest.raises(InvalidSignature, match="does not match"):
        check(replace(request, body=request.body.replace(b"5", b"6")))


def test_a_boto3_runtime_invocation_with_a_binary_body_and_an_encoded_path_passes():
    # sagemaker-runtime signs as "sagemaker" (its model's signingName)
    runtime = boto3.client(
        "sagemaker-runtime", region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET
    )
    assert runtime.meta.service_model.signing_name == "sagemaker"
    body = bytes(range(256))
    request = _capture(
        "sagemaker-runtime",
        lambda c: c.invoke_endpoint(
            EndpointName="my ep/x", Body=body, ContentType="application/octet-stream"
        ),
    )
    assert request.path == "/endpoints/my%20ep%2Fx/invocations"  # percent-encoded as botocore sends it
    assert request.body == body
    assert check(request) == KEY
    with pytest.raises(InvalidSignature, match="does not match"):
        check(replace(request, path="/endpoints/other/invocations"))
    with pytest.raises(InvalidSignature, match="does not match"):
        check(replace(request, body=body[:-1] + b"\x00"))


# --- what is refused --------------------------------------------------------------------------------


def test_no_authorization_header_is_a_missing_token():
    for request in (without_header(signed(), "Authorization"), with_header(signed(), "Authorization", "  ")):
        with pytest.raises(MissingAuthenticationToken) as e:
            check(request)
        assert e.value.message == "Missing Authentication Token"
        assert e.value.code == "MissingAuthenticationTokenException"


def test_a_garbage_authorization_header_is_an_incomplete_signature():
    with pytest.raises(IncompleteSignature) as e:
        check(with_header(signed(), "Authorization", "Bearer xyz"))
    assert e.value.message == (
        "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' "
        "parameter. Authorization header requires 'SignedHeaders' parameter. Authorization=Bearer xyz"
    )
    assert e.value.code == "IncompleteSignatureException" and e.value.http_status == 403


@pytest.mark.parametrize(
    ("mangle", "error", "message"),
    [
        (lambda a: a.replace("Signature=", "Sig="), IncompleteSignature, "requires 'Signature' parameter"),
        (lambda a: a.replace("SignedHeaders=", "Signed="), IncompleteSignature, "requires 'SignedHeaders'"),
        (
            lambda a: a.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
            IncompleteSignature,
            "Unsupported AWS 'algorithm'",
        ),
        (
            lambda a: a.replace(f"{KEY}/", f"{KEY}/x/"),
            IncompleteSignature,
            "exactly 5 slash-delimited elements",
        ),
        (lambda a: a.replace("/us-east-1/", "//"), InvalidSignature, "scoped to a valid region, not ''"),
        (
            lambda a: a.replace("aws4_request", "aws5_request"),
            InvalidSignature,
            "valid terminator: 'aws4_request', not 'aws5_request'",
        ),
        (
            lambda a: a.replace("/20261202/", "/20261201/"),
            InvalidSignature,
            "Date in Credential scope does not match YYYYMMDD",
        ),
        (
            lambda a: a.replace("host;", ""),
            InvalidSignature,
            "'Host' or ':authority' must be a 'SignedHeader'",
        ),
    ],
)
def test_a_malformed_authorization_header_is_refused_before_the_key_is_looked_up(mangle, error, message):
    request = signed()
    looked_up: list[str] = []
    with pytest.raises(error, match=message):
        verify(
            with_header(request, "Authorization", mangle(authorization(request))), looked_up.append, now=T0
        )
    assert looked_up == []


def test_the_signing_time_must_be_there_and_readable():
    with pytest.raises(
        IncompleteSignature, match="requires existence of either a 'X-Amz-Date' or a 'Date' header"
    ):
        check(without_header(signed(), "X-Amz-Date"))
    with pytest.raises(IncompleteSignature) as e:
        check(with_header(signed(), "X-Amz-Date", "2026-12-02T08:00:00Z"))
    assert e.value.message == (
        "Date must be in ISO-8601 'basic format'. Got '2026-12-02T08:00:00Z'. See http://en.wikipedia.org/wiki/ISO_8601"
    )
    with pytest.raises(IncompleteSignature, match="basic format"):
        check(with_header(signed(), "X-Amz-Date", "20261302T080000Z"))  # month 13


def test_an_unknown_key_is_an_unrecognized_client():
    with pytest.raises(UnrecognizedClient) as e:
        check(signed(key="AKIDNOBODY"))
    assert e.value.message == "The security token included in the request is invalid."
    assert e.value.code == "UnrecognizedClientException"


def test_a_wrong_secret_or_a_tampered_request_does_not_match():
    tampered = [
        signed(secret="not-the-secret"),
        replace(signed(), body=b'{"MaxResults": 6}'),
        with_header(signed(), "X-Amz-Target", "SageMaker.DeleteEndpoint"),
        with_header(signed(), "Host", "127.0.0.1:8444"),
        replace(signed(), method="PUT"),
        replace(signed(), path="/other"),
        without_header(signed(), "Content-Type"),  # a signed header missing
        with_header(signed(), "Authorization", authorization(signed()).replace("Signature=", "Signature=0")),
        with_header(signed(), "Authorization", authorization(signed()) + "é"),  # non-ASCII signature
    ]
    for request in tampered:
        with pytest.raises(InvalidSignature) as e:
            check(request)
        assert e.value.message == MISMATCH
        assert e.value.message == (
            "The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details."
        )
        assert e.value.code == "InvalidSignatureException"


def test_unsigned_headers_may_change_and_a_repeated_signed_header_may_not():
    request = signed()
    extra = [("User-Agent", "curl/8"), ("X-Forwarded-For", "10.0.0.1"), ("Content-Length", str(len(BODY)))]
    assert check(replace(request, headers=[*request.headers, *extra])) == KEY
    with pytest.raises(InvalidSignature, match="does not match"):  # canonically "a,b": not what was signed
        check(replace(request, headers=[*request.headers, ("X-Amz-Target", "SageMaker.DeleteEndpoint")]))


def test_the_signing_time_may_be_up_to_five_minutes_off_either_way():
    request = signed()
    for skew in (-300, -240, 0, 240, 300):
        assert check(request, now=T0 + skew) == KEY
    with pytest.raises(InvalidSignature) as e:
        check(request, now=T0 + 360)  # signed 6 minutes ago
    assert e.value.message == (
        "Signature expired: 20261202T080000Z is now earlier than 20261202T080100Z (20261202T080600Z - 5 min.)"
    )
    with pytest.raises(InvalidSignature) as e:
        check(request, now=T0 + 600)
    assert e.value.message == (
        "Signature expired: 20261202T080000Z is now earlier than 20261202T080500Z (20261202T081000Z - 5 min.)"
    )
    with pytest.raises(InvalidSignature) as e:
        check(request, now=T0 - 360)  # signed 6 minutes ahead of the server's clock
    assert e.value.message == (
        "Signature not yet current: 20261202T080000Z is still later than 20261202T075900Z "
        "(20261202T075400Z + 5 min.)"
    )


def test_the_clock_is_checked_after_the_key_and_the_signature_after_the_clock():
    with pytest.raises(UnrecognizedClient):
        check(signed(key="AKIDNOBODY"), now=T0 + 3600)
    with pytest.raises(InvalidSignature, match="Signature expired"):
        check(signed(secret="wrong"), now=T0 + 3600)


def test_the_service_must_be_one_the_server_accepts():
    with pytest.raises(InvalidSignature) as e:
        check(signed(service="s3"))
    assert e.value.message == "Credential should be scoped to correct service: 'sagemaker'."
    assert check(signed(service="s3"), services={"s3", "sagemaker"}) == KEY
    assert check(signed(service="sagemaker"), services="sagemaker") == KEY
    with pytest.raises(InvalidSignature, match="correct service"):
        check(signed(service="sage"), services="sagemaker")  # a str is one service, not a set of letters


def test_a_signature_is_accepted_once():
    cache = ReplayCache()
    request = signed()
    assert check(request, replay=cache) == KEY
    with pytest.raises(InvalidSignature) as e:
        check(request, replay=cache, now=T0 + 1)
    assert (
        e.value.message == "Signature already used: a signed request is accepted once; sign each request anew"
    )
    assert check(signed(b'{"MaxResults": 6}'), replay=cache) == KEY  # another request, another signature


def test_a_refused_request_does_not_enter_the_replay_cache():
    cache = ReplayCache()
    request = signed()
    forged = with_header(request, "X-Amz-Target", "SageMaker.DeleteEndpoint")  # the genuine Signature value
    with pytest.raises(InvalidSignature, match="does not match"):
        check(forged, replay=cache)
    with pytest.raises(InvalidSignature, match="expired"):
        check(request, replay=cache, now=T0 + 3600)
    with pytest.raises(UnrecognizedClient):
        check(signed(key="AKIDNOBODY"), replay=cache)
    assert len(cache) == 0
    assert check(request, replay=cache) == KEY  # the genuine request was not blocked by its forgery
    assert len(cache) == 1


def test_the_replay_cache_forgets_after_its_window_and_is_thread_safe():
    cache = ReplayCache(window_s=10)
    assert cache.check_and_add("a", 100.0)
    assert not cache.check_and_add("a", 105.0)
    assert cache.check_and_add("b", 105.0)
    assert cache.check_and_add("a", 110.5)  # 10.5 s later: forgotten
    assert cache.check_and_add("c", 200.0) and len(cache) == 1  # older entries dropped
    with pytest.raises(ValueError):
        ReplayCache(window_s=0)

    cache, wins = ReplayCache(), []

    def race():
        wins.extend(s for s in map(str, range(500)) if cache.check_and_add(s, 1.0))

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins, key=int) == [str(i) for i in range(500)]  # each signature won exactly once


def test_access_key_of_names_the_key_of_any_authorization_header():
    assert access_key_of(signed()) == KEY
    assert access_key_of(signed(key="AKIDNOBODY")) == "AKIDNOBODY"
    assert (
        access_key_of(with_header(signed(), "Authorization", "AWS4-HMAC-SHA256 Credential=AKIDX/2026"))
        == "AKIDX"
    )
    assert access_key_of(with_header(signed(), "Authorization", "garbage")) is None
    assert access_key_of(without_header(signed(), "Authorization")) is None


def test_the_signing_key_derived_once_a_day_signs_as_botocore_does() -> None:
    """The verifier keeps each day's signing key; its signatures stay botocore's own, across days."""
    from botocore.auth import SigV4Auth
    from botocore.credentials import Credentials

    from raymaker.protocol.sigv4 import _signer

    class Signed:
        def __init__(self, timestamp: str):
            self.context = {"timestamp": timestamp}

    ours = _signer("AKIDDAYS", "day-secret", "us-east-1", "sagemaker")
    theirs = SigV4Auth(Credentials("AKIDDAYS", "day-secret"), "sagemaker", "us-east-1")
    for stamp in ("20261202T101010Z", "20261202T235959Z", "20261203T000001Z", "20261202T000000Z"):
        for text in ("AWS4-HMAC-SHA256\n20261202T101010Z\nscope\nabc", "other"):
            assert ours.signature(text, Signed(stamp)) == theirs.signature(text, Signed(stamp))
    assert ours.signature("x", Signed("20261202T1Z")) != ours.signature("x", Signed("20261203T1Z"))


@pytest.mark.parametrize(
    "headers",
    [
        {"host": ["127.0.0.1:8443"], "x-amz-date": ["20261202T080000Z"], "content-type": ["text/csv"]},
        {"x-custom": ["  a   b  ", "c\t d"], "host": ["h"], "empty": [""], "absent": []},
        {"amz-sdk-invocation-id": ["1e2f"], "amz-sdk-request": ["attempt=1; max=1"], "content-length": ["5"]},
    ],
)
def test_the_canonical_headers_are_botocores(headers):
    """The verifier makes each header's canonical line once per value (a client repeats most of them);
    joined in botocore's order, they are what botocore's own canonical_headers makes of the same headers."""
    from raymaker.protocol.sigv4 import _canonical_line, _SignedHeaders

    ordered = sorted(set(headers))
    ours = "\n".join(_canonical_line(name, tuple(headers[name])) for name in ordered)
    assert ours == SigV4Auth(Credentials(KEY, SECRET), "sagemaker", "us-east-1").canonical_headers(
        _SignedHeaders(headers)
    )
    assert ours == "\n".join(_canonical_line(name, tuple(headers[name])) for name in ordered)  # remembered alike


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8443/",
        "http://127.0.0.1:8080/endpoints/ep-1/invocations",
        "http://h/endpoints/a%2Fb/invocations",
        "http://h/a b/./c/../d//e~f",
        "http://h/?b=2&a=1&a=0&c",
        "http://h/p?x=%20y&empty=",
    ],
)
def test_the_canonical_request_is_botocores(url):
    """The verifier's canonical request (its method, path and query lines remembered per URL, its header
    lines per value) and string to sign (its scope remembered per day) are botocore's own of the same
    request, byte for byte."""
    from raymaker.protocol.sigv4 import _canonical_line, _Received, _signer

    request = AWSRequest(method="POST", url=url, data=BODY, headers={"Content-Type": "text/csv", "X-Custom": " a  b "})
    request.context["timestamp"] = "20261202T080000Z"
    theirs = SigV4Auth(Credentials(KEY, SECRET), "sagemaker", "us-east-1")
    to_sign = theirs.headers_to_sign(request)
    lines = "\n".join(_canonical_line(name, tuple(to_sign.get_all(name))) for name in sorted(set(to_sign)))
    received = _Received("POST", url, theirs.payload(request), "20261202T080000Z", lines,
                         theirs.signed_headers(to_sign))
    ours = _signer(KEY, SECRET, "us-east-1", "sagemaker")
    for _ in range(2):  # made, then remembered
        canonical = ours.canonical_request(received)
        assert canonical == theirs.canonical_request(request)
        assert ours.string_to_sign(received, canonical) == theirs.string_to_sign(request, canonical)


# --- verify_asgi: the common case in one function, the same outcome as verify for every request ----------


def _scope(request: IncomingRequest, *, lower: bool = True, raw_path: bool = True) -> dict:
    """``request`` as an ASGI server hands it over (uvicorn lower-cases header names)."""
    scope = {
        "method": request.method, "path": request.path, "query_string": request.query.encode("latin-1"),
        "headers": [((k.lower() if lower else k).encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
    }  # fmt: skip
    if raw_path:
        scope["raw_path"] = request.path.encode("latin-1")
    return scope


def _plus(scope: dict, name: bytes, value: bytes) -> dict:
    """``scope`` with one more header, its name as given."""
    return {**scope, "headers": [*scope["headers"], (name, value)]}


def _outcome(call) -> tuple:
    try:
        return ("accepted", call())
    except (MissingAuthenticationToken, IncompleteSignature, InvalidSignature, UnrecognizedClient) as e:
        return (type(e).__name__, e.message)


def _runtime_request() -> IncomingRequest:
    return _capture(
        "sagemaker-runtime",
        lambda c: c.invoke_endpoint(EndpointName="ep-1", Body=b"1,2,3", ContentType="text/csv"),
    )


def _variants() -> dict[str, tuple[dict, bytes]]:
    """Requests as an ASGI server hands them over: what every SDK sends, and each way of differing."""
    runtime, listing = _runtime_request(), signed()
    value = authorization(runtime)
    algorithm, rest = value.split(" ", 1)
    credential, names, signature = (part.strip() for part in rest.split(","))
    odd = signed(b"", url="http://127.0.0.1:8443/a/b%20c/?z=1&a=2&a=1&empty=")
    sha = signed(b"p", headers={"Content-Type": "text/csv", "X-Amz-Content-SHA256": hashlib.sha256(b"p").hexdigest()})
    other_day = with_header(runtime, "X-Amz-Date", "20261203T080000Z")
    out: dict[str, tuple[dict, bytes]] = {
        "runtime invocation": (_scope(runtime), runtime.body),
        "control plane call": (_scope(listing), listing.body),
        "header names as sent": (_scope(runtime, lower=False), runtime.body),
        "no raw_path": (_scope(runtime, raw_path=False), runtime.body),
        "query and odd path": (_scope(odd), b""),
        "query in the path": (_scope(replace(odd, path=odd.path + "?" + odd.query, query="")), b""),
        "query changed": (_scope(replace(odd, query="z=1")), b""),
        "path changed": (_scope(replace(runtime, path="/endpoints/other/invocations")), runtime.body),
        "body changed": (_scope(runtime), runtime.body + b"\n"),
        "signed header changed": (_scope(with_header(runtime, "Content-Type", "text/plain")), runtime.body),
        "unsigned header changed": (_scope(with_header(runtime, "User-Agent", "other")), runtime.body),
        "signed header repeated": (_scope(replace(runtime, headers=[*runtime.headers, ("content-type", "x")])), runtime.body),
        "a signed header sent twice alike": (_plus(_scope(runtime), b"content-type", b"text/csv"), runtime.body),
        "a signed header in two cases": (_plus(_scope(runtime), b"Content-Type", b"text/csv"), runtime.body),
        "a non-ascii header name": (_plus(_scope(runtime), b"x-\xc0", b"1"), runtime.body),
        "signed header absent": (_scope(without_header(runtime, "Content-Type")), runtime.body),
        "content sha sent": (_scope(sha), b"p"),
        "content sha not the body's": (_scope(sha), b"q"),
        "parts reordered": (_scope(with_header(runtime, "Authorization", f"{algorithm} {signature}, {credential}, {names}")), runtime.body),
        "signature changed": (_scope(with_header(runtime, "Authorization", value[:-4] + "0000")), runtime.body),
        "signature not hex": (_scope(with_header(runtime, "Authorization", value + " x")), runtime.body),
        "no authorization": (_scope(without_header(runtime, "Authorization")), runtime.body),
        "garbage authorization": (_scope(with_header(runtime, "Authorization", "garbage")), runtime.body),
        "another algorithm": (_scope(with_header(runtime, "Authorization", value.replace(ALGO, "AWS4-HMAC-SHA512"))), runtime.body),
        "host not signed": (_scope(with_header(runtime, "Authorization", value.replace("host;", ""))), runtime.body),
        "another service": (_scope(with_header(runtime, "Authorization", value.replace("/sagemaker/", "/s3/"))), runtime.body),
        "date not the scope's day": (_scope(other_day), runtime.body),
        # the Credential is not part of what is signed: its day changed, the signature still matches
        "scope's day not the date's": (_scope(with_header(runtime, "Authorization", value.replace("/20261202/", "/20261201/"))), runtime.body),
        "date unreadable": (_scope(with_header(runtime, "X-Amz-Date", "20261202T080000")), runtime.body),
        "date padded": (_scope(with_header(runtime, "X-Amz-Date", " 20261202T080000Z")), runtime.body),
        "no date": (_scope(without_header(runtime, "X-Amz-Date")), runtime.body),
        "a value padded": (_scope(with_header(runtime, "Content-Type", "  text/csv ")), runtime.body),
    }  # fmt: skip
    return out


ALGO = "AWS4-HMAC-SHA256"


@pytest.mark.parametrize("now", [T0, T0 + 299, T0 - 300, T0 + 301, T0 - 301])
@pytest.mark.parametrize("secrets", [SECRETS, {KEY: OTHER_SECRET}, {}], ids=["known", "other secret", "unknown"])
def test_verify_asgi_answers_every_request_as_verify_does(secrets, now):
    """Whatever the request, the key, the secret and the clock: the same key accepted, or the same
    error with the same message."""
    for name, (scope, body) in _variants().items():
        general = _outcome(lambda s=scope, b=body: verify(IncomingRequest.from_asgi(s, b), secrets.get, now=now))
        assert _outcome(lambda s=scope, b=body: verify_asgi(s, b, secrets.get, now=now)) == general, name


def test_verify_asgi_checks_an_sdk_s_request_without_verify(monkeypatch):
    """The common case (what boto3 sends, as uvicorn hands it over) is checked in verify_asgi itself,
    and what it does not accept goes to verify."""
    from raymaker.protocol import sigv4

    variants = _variants()
    sent: list[str] = []
    monkeypatch.setattr(sigv4, "verify", lambda request, *a, **k: sent.append(request) or "verify's")
    for name in ("runtime invocation", "control plane call", "no raw_path", "query and odd path", "query in the path",
                 "unsigned header changed"):  # fmt: skip
        assert verify_asgi(*variants[name], SECRETS.get, now=T0) == KEY, name
    assert not sent
    for name in ("header names as sent", "parts reordered", "body changed", "signature changed", "content sha sent",
                 "no date"):  # fmt: skip
        assert verify_asgi(*variants[name], SECRETS.get, now=T0) == "verify's", name
    assert len(sent) == 6
    # the same request signed in each second, and on the next day: each checked anew
    for at in (SIGNED_AT, SIGNED_AT + datetime.timedelta(seconds=1), SIGNED_AT + datetime.timedelta(days=1)):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, at=at, **k: at)
        request = _runtime_request()
        now = at.replace(tzinfo=datetime.UTC).timestamp()
        assert verify_asgi(_scope(request), request.body, SECRETS.get, now=now) == KEY
        assert verify_asgi(_scope(request), request.body, {KEY: OTHER_SECRET}.get, now=now) == "verify's"
    assert len(sent) == 9
