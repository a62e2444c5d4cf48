"""The runtime listener under hostile requests, over real HTTP on 127.0.0.1 and without Ray: the code
a Serve replica runs (``replicas.VariantReplica``) served by plain uvicorn, as Serve serves it, with
a small XGBoost model. Every bad request (fuzzed bodies and headers, chunked bodies past 6 MB, absurd
header values) gets a 4xx in SageMaker runtime's error shape, never a 5xx, and the server answers a
good request afterwards. Also: a ``ValueError`` from ``predict`` is a 400 carrying its message, any
other model failure a 500 that leaves the replica serving."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from raymaker.io.batch import Batch
from raymaker.serve.codecs import MAX_PAYLOAD_BYTES, BadRequest
from raymaker.serve.model import LoadedModel, predict_error_message
from raymaker.serve.replicas import VariantReplica, read_body
from tests.serve.models import xgboost_archive
from tests.serve.strategies import structured, with_bad_utf8

PATH = "/endpoints/fuzz/invocations"
GOOD_ROW = b"0.1,-0.2,0.3,-0.4,0.5,-0.6"  # the model has 6 features
Address = tuple[str, int]


# --- the server ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model.tar.gz of XGBoost trained on 200 rows of 6 features (about a second)."""
    return xgboost_archive(tmp_path_factory.mktemp("model"), rows=200, features=6, rounds=3)


@pytest.fixture(scope="module")
def replica(model_url: str) -> VariantReplica:
    r = VariantReplica(None)
    model = {"name": "fuzz", "algorithm": "xgboost", "model_data_url": model_url, "environment": []}
    asyncio.run(r.reconfigure({"endpoint": "fuzz", "variant": "AllTraffic", "model": model}))
    return r


@pytest.fixture(scope="module")
def server(replica: VariantReplica) -> Iterator[Address]:
    """The replica behind uvicorn with Serve's settings (no lifespan, no access log), in a thread."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        response = await replica(Request(scope, receive))  # what Serve hands a replica's __call__
        await response(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield sock.getsockname()
    srv.should_exit = True
    thread.join(10)
    sock.close()


def call(
    addr: Address, body: bytes | None, headers: dict[str, str], *, method: str = "POST", path: str = PATH
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*addr, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def assert_error(status: int, headers: dict[str, str], body: bytes, expected: int | None = None) -> str:
    """A 4xx in SageMaker runtime's shape (x-amzn-ErrorType + JSON message); returns the message."""
    assert 400 <= status < 500, (status, body[:300])
    if expected is not None:
        assert status == expected, (status, body[:300])
    assert headers.get("x-amzn-errortype"), headers
    message = json.loads(body)["message"]
    assert isinstance(message, str) and message
    return message


def assert_serving(addr: Address) -> None:
    status, headers, body = call(addr, GOOD_ROW, {"Content-Type": "text/csv", "Accept": "text/csv"})
    assert status == 200, body
    assert 0.0 <= float(body) <= 1.0
    status, _, _ = call(addr, None, {}, method="GET", path="/endpoints/fuzz/ping")
    assert status == 200


def raw_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(fields["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-response"
        rest += chunk
    return int(lines[0].split()[1]), rest[:length]


# --- good requests and the plain errors ---------------------------------------------------------------


def test_a_good_request_is_answered_with_the_variant_and_custom_attributes(server: Address) -> None:
    status, headers, body = call(
        server,
        GOOD_ROW,
        {
            "Content-Type": "text/csv",
            "Accept": "application/json",
            "X-Amzn-SageMaker-Custom-Attributes": "t=1",
        },
    )
    assert status == 200, body
    assert json.loads(body)["predictions"][0]["score"] >= 0
    assert headers["x-amzn-invoked-production-variant"] == "AllTraffic"
    assert headers["x-amzn-sagemaker-custom-attributes"] == "t=1"


@pytest.mark.parametrize(
    ("body", "headers", "expected", "needle"),
    [
        (b"", {"Content-Type": "text/csv"}, 400, "empty request body"),
        (GOOD_ROW, {"Content-Type": "image/gif"}, 415, "image/gif"),
        (GOOD_ROW, {"Content-Type": "text/csv", "Accept": "image/gif"}, 406, "image/gif"),
        (GOOD_ROW + b"\n1,2,oops,4,5,6\n", {"Content-Type": "text/csv"}, 400, "line 2"),
        (b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"}, 400, "nested too deeply"),
        (b'{"features": [1, "\xff"]}', {"Content-Type": "application/json"}, 400, "not UTF-8"),
        (b"1 0:1\n1 2:\xfe\n", {"Content-Type": "text/libsvm"}, 400, "line 2"),
        (
            GOOD_ROW,
            {"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Variant": "B"},
            400,
            "no production variant",
        ),
        (GOOD_ROW, {"Content-Type": "x" * 2000}, 400, "Content-Type is 2000 characters"),
        (GOOD_ROW, {"Content-Type": "text/csv", "Accept": "a/b," * 500}, 400, "Accept is 2000"),
        (GOOD_ROW, {"Content-Type": "text/csv; x=\xe9"}, 400, "non-ASCII"),
        (
            GOOD_ROW,
            {"Content-Type": "text/csv", "X-Amzn-SageMaker-Custom-Attributes": "a" * 1025},
            400,
            "1024",
        ),
        (
            GOOD_ROW,
            {"Content-Type": "text/csv", "X-Amzn-SageMaker-Custom-Attributes": "\xff\xfe"},
            400,
            "ASCII",
        ),
        (
            GOOD_ROW,
            {"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Variant": "v" * 64},
            400,
            "variant name",
        ),
        (
            GOOD_ROW,
            {"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Variant": "../x"},
            400,
            "variant name",
        ),
    ],
)
def test_bad_requests_are_4xx_in_sagemakers_error_shape(
    server: Address, body: bytes, headers: dict[str, str], expected: int, needle: str
) -> None:
    message = assert_error(*call(server, body, headers), expected=expected)
    assert needle in message
    assert len(message) < 1500


def test_wrong_method_and_path_are_4xx(server: Address) -> None:
    assert_error(*call(server, None, {}, method="GET"), expected=405)
    assert_error(*call(server, GOOD_ROW, {}, path="/endpoints/fuzz/nope"), expected=404)
    assert_error(*call(server, GOOD_ROW, {}, path="/" + "x" * 5000), expected=404)


def test_a_header_of_100_kb_is_a_4xx(server: Address) -> None:
    status, headers, body = call(server, GOOD_ROW, {"Content-Type": "text/csv", "Accept": "a" * 100_000})
    assert 400 <= status < 500, status
    assert_serving(server)


# --- the body limit -----------------------------------------------------------------------------------


def test_a_declared_content_length_over_6_mb_is_refused_unread(server: Address) -> None:
    with socket.create_connection(server, timeout=30) as s:
        s.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\n"
            f"Content-Length: {10**12}\r\n\r\n".encode()
            + GOOD_ROW
        )
        status, body = raw_response(s)  # answered though the body has barely begun
    assert status == 413
    assert "6 MB" in json.loads(body)["message"]
    assert_serving(server)


def test_a_chunked_body_past_6_mb_is_refused_at_the_limit(server: Address) -> None:
    chunk = (GOOD_ROW + b"\n") * 4096  # ~110 KB
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    with socket.create_connection(server, timeout=30) as s:
        s.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sent = 0
        while sent <= MAX_PAYLOAD_BYTES:
            s.sendall(frame)
            sent += len(chunk)
        # No last chunk: the body never ends, so an answer now means reading stopped at the limit.
        status, body = raw_response(s)
    assert status == 413
    assert "6 MB" in json.loads(body)["message"]
    assert_serving(server)


def test_a_chunked_body_under_the_limit_is_served(server: Address) -> None:
    rows = (GOOD_ROW + b"\n") * 1000
    status, _, body = call(server, iter([rows[:5000], rows[5000:]]), {"Content-Type": "text/csv"})
    assert status == 200
    assert len(body.splitlines()) == 1000


def test_read_body_stops_consuming_an_endless_stream_at_the_limit() -> None:
    consumed = 0

    async def receive() -> dict:
        nonlocal consumed
        consumed += 1 << 20
        return {"type": "http.request", "body": b"\0" * (1 << 20), "more_body": True}

    scope = {"type": "http", "method": "POST", "headers": [], "path": PATH, "query_string": b""}
    response = asyncio.run(read_body(Request(scope, receive)))
    assert response.status_code == 413
    assert consumed == MAX_PAYLOAD_BYTES + (1 << 20)  # the limit and one chunk: the rest stays unread


# --- the model's errors -------------------------------------------------------------------------------


def test_wrong_feature_count_is_a_400_with_the_models_message(server: Address) -> None:
    message = assert_error(*call(server, GOOD_ROW + b",0.7", {"Content-Type": "text/csv"}), expected=400)
    assert "7" in message and not message.startswith("[")  # the native "[hh:mm:ss] file.cc:123: " is gone
    assert "Stack trace" not in message
    assert_serving(server)


def test_a_value_error_from_predict_is_a_400_with_its_message(
    server: Address, replica: VariantReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    def predict(model: Any, batch: Batch) -> dict:
        raise ValueError("the model was trained on 30 features; the request has 29")

    monkeypatch.setattr(replica.model.algorithm, "predict", predict)
    message = assert_error(*call(server, GOOD_ROW, {"Content-Type": "text/csv"}), expected=400)
    assert message == "the model was trained on 30 features; the request has 29"


def test_any_other_model_failure_is_a_500_and_the_replica_keeps_serving(
    server: Address, replica: VariantReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = replica.model.algorithm.predict

    def predict(model: Any, batch: Batch) -> dict:
        if batch.features.shape[1] == 5:
            raise RuntimeError("boom\nTraceback lines the client has no use for")
        return real(model, batch)

    monkeypatch.setattr(replica.model.algorithm, "predict", predict)
    status, headers, body = call(server, b"1,2,3,4,5", {"Content-Type": "text/csv"})
    assert status == 500
    assert headers["x-amzn-errortype"] == "ModelError"
    assert json.loads(body)["message"] == "the model failed on this request: RuntimeError: boom"
    assert_serving(server)


def test_predict_error_message_keeps_the_first_line_without_native_prefixes() -> None:
    native = ValueError(
        "[19:38:09] /__w/xgboost/xgboost/src/learner.cc:1289: Check failed: 6 vs. 7 : columns differ\n"
        "Stack trace:\n  [bt] (0) libxgboost.so"
    )
    assert predict_error_message(native) == "Check failed: 6 vs. 7 : columns differ"
    assert predict_error_message(ValueError()) == "the model cannot score this request (ValueError)"
    assert len(predict_error_message(ValueError("x" * 10_000))) < 1100


def test_loaded_model_turns_a_predict_value_error_into_bad_request(replica: VariantReplica) -> None:
    model: LoadedModel = replica.model

    class Strict(type(model.algorithm)):
        def predict(self, model: Any, batch: Batch) -> dict:
            raise ValueError(
                f"the model was trained on 6 features; the request has {batch.features.shape[1]}"
            )

    strict = object.__new__(LoadedModel)
    strict.__dict__.update(model.__dict__, algorithm=Strict())
    with pytest.raises(BadRequest) as info:
        strict.invoke(b"1,2,3", "text/csv", None)
    assert info.value.status == 400
    assert info.value.message == "the model was trained on 6 features; the request has 3"


def test_a_replica_without_a_model_answers_503() -> None:
    status, _, ct, error_type = asyncio.run(VariantReplica(None).invoke(GOOD_ROW, "text/csv", None))
    assert (status, error_type) == (503, "ServiceUnavailable")


# --- fuzzing over HTTP --------------------------------------------------------------------------------

# Header values any HTTP/1.1 parser takes (visible ASCII, space, obs-text): what reaches the replica.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_categories=("Cc",)), max_size=60
)
content_types = (
    st.sampled_from(
        [
            "text/csv",
            "text/csv;label_size=1",
            "application/json",
            "application/jsonlines",
            "text/libsvm",
            "application/x-recordio-protobuf",
            "application/x-parquet",
            "image/png",
            "*/*",
            "",
        ]
    )
    | header_text
    | st.just("text/csv;" + "a" * 1100)
)
accepts = (
    st.none()
    | st.sampled_from(
        [
            "text/csv",
            "application/json",
            "application/jsonlines",
            "application/x-recordio-protobuf",
            "*/*",
            "image/gif",
            "text/*;q=0.5, application/json",
            "q=0",
        ]
    )
    | header_text
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([GOOD_ROW, GOOD_ROW + b"\n" + GOOD_ROW, b'{"instances": [[1, 2, 3, 4, 5, 6]]}']),
    *structured.values(),
    with_bad_utf8(structured["text/csv"]),
    with_bad_utf8(structured["application/json"]),
)


@settings(
    max_examples=120,
    deadline=5000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    body=bodies,
    content_type=st.none() | content_types,
    accept=accepts,
    attributes=st.none() | header_text | st.just("z" * 1100),
    target=st.none() | st.sampled_from(["AllTraffic", "alltraffic", "B", "-x", "a" * 64]) | header_text,
)
def test_fuzzed_requests_are_answered_200_or_4xx(
    server: Address,
    body: bytes,
    content_type: str | None,
    accept: str | None,
    attributes: str | None,
    target: str | None,
) -> None:
    headers = {
        name: value
        for name, value in [
            ("Content-Type", content_type),
            ("Accept", accept),
            ("X-Amzn-SageMaker-Custom-Attributes", attributes),
            ("X-Amzn-SageMaker-Target-Variant", target),
        ]
        if value is not None
    }
    status, response_headers, response = call(server, body, headers)
    if status == 200:
        assert response_headers["x-amzn-invoked-production-variant"] == "AllTraffic"
        assert response_headers["content-type"]
    else:
        assert_error(status, response_headers, response)


def test_still_serving_after_the_fuzzing(server: Address) -> None:
    assert_serving(server)


# --- the multi-variant ingress (its handles faked: no Ray) --------------------------------------------


class _FakeMethod:
    def __init__(self, result: Any):
        self.result = result

    async def remote(self, *args: Any) -> Any:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class _FakeHandle:
    """A variant's handle: the ingress calls ``invoke_timed`` (the answer and the model's time)."""

    def __init__(self, result: Any):
        self.invoke_timed = _FakeMethod(result if isinstance(result, Exception) else (result, 1_000))


def _ingress(result: Any) -> Any:
    from raymaker.serve.replicas import Route, RuntimeIngress

    ingress = RuntimeIngress.func_or_class()
    ingress.routes = {"multi": Route("multi", [{"name": "A", "app": "app-a", "weight": 1.0}])}
    ingress.handles = {"app-a": _FakeHandle(result)}
    return ingress


def _ingress_call(ingress: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "headers": headers, "path": path, "query_string": b""}
    return asyncio.run(ingress(Request(scope, receive)))


def test_the_ingress_checks_headers_and_answers_variant_failures_as_values() -> None:
    ok = _ingress((200, b"0.5\n", "text/csv", ""))
    good = [(b"content-type", b"text/csv")]
    response = _ingress_call(ok, "/endpoints/multi/invocations", good, GOOD_ROW)
    assert response.status_code == 200 and response.headers["x-amzn-invoked-production-variant"] == "A"
    response = _ingress_call(ok, "/endpoints/" + "n" * 5000 + "/invocations", good, GOOD_ROW)
    assert response.status_code == 404 and len(response.body) < 400
    response = _ingress_call(ok, "/endpoints/multi/invocations", [(b"accept", b"a" * 2000)], GOOD_ROW)
    assert response.status_code == 400 and response.headers["x-amzn-errortype"] == "ValidationError"
    response = _ingress_call(
        ok, "/endpoints/multi/invocations", [(b"x-amzn-sagemaker-target-variant", b"B")], GOOD_ROW
    )
    assert response.status_code == 400 and b"no production variant" in response.body
    failing = _ingress(RuntimeError("replica gone"))
    response = _ingress_call(failing, "/endpoints/multi/invocations", good, GOOD_ROW)
    assert response.status_code == 500 and response.headers["x-amzn-errortype"] == "InternalFailure"
