"""An endpoint replica's metrics through Ray's real metrics pipeline: ``replicas.VariantReplica`` with a
real XGBoost model, served over real HTTP by uvicorn in this process (as Serve runs it), recording with
``ray.util.metrics`` into the test session's Ray, read back from the node's Prometheus endpoint.

The e2e test (tests/e2e/test_metrics.py) covers Serve and HAProxy with 2xx and 4xx; 5xx answers need a
server fault, which a built-in model never produces from a request (its codecs answer 4xx for any bad
input), so here the model fails on one body: the replica answers 500 ModelError, as it would for a
model bug."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from raymaker.metrics import catalog
from raymaker.serve.replicas import VariantReplica
from tests.serve.models import xgboost_archive

GOOD_ROW = b"0.1,-0.2,0.3"
FAULT = b"fault"


@pytest.fixture(scope="module")
def model_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return xgboost_archive(tmp_path_factory.mktemp("model"), rows=100, features=3, rounds=2)


def _replica(model_url: str, endpoint: str, environment: list[list[str]]) -> VariantReplica:
    r = VariantReplica(None)
    model = {"name": endpoint, "algorithm": "xgboost", "model_data_url": model_url, "environment": environment}
    asyncio.run(r.reconfigure({"endpoint": endpoint, "variant": "AllTraffic", "model": model}))
    real = r.model.ainvoke

    async def faulty(body: bytes, *args: Any) -> Any:  # a model bug on one body
        if body == FAULT:
            raise RuntimeError("the model broke")
        return await real(body, *args)

    r.model.ainvoke = faulty
    return r


@pytest.fixture
def serve_replica() -> Iterator[Any]:
    servers = []

    def start(replica: VariantReplica) -> tuple[str, int]:
        async def app(scope: dict, receive: Any, send: Any) -> None:
            response = await replica(Request(scope, receive))
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
        servers.append((srv, thread, sock, replica))
        return sock.getsockname()

    yield start
    for srv, thread, sock, replica in servers:
        srv.should_exit = True
        thread.join(10)
        sock.close()
        replica.__del__()


def _post(addr: tuple[str, int], endpoint: str, body: bytes) -> int:
    conn = http.client.HTTPConnection(*addr, timeout=30)
    try:
        conn.request("POST", f"/endpoints/{endpoint}/invocations", body=body, headers={"Content-Type": "text/csv"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _scrape(endpoint: str) -> dict[str, float]:
    """Sample name -> value summed over series, for ``endpoint``'s series on every node."""
    import ray

    out: dict[str, float] = {}
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            for family in text_string_to_metric_families(r.read().decode()):
                for s in family.samples:
                    if s.labels.get("EndpointName") == endpoint and s.labels.get("le") in (None, "+Inf"):
                        out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def test_counts_by_status_and_latency_histograms(ray_session, model_url, serve_replica):
    endpoint = f"m-{uuid.uuid4().hex[:8]}"
    quiet = f"q-{uuid.uuid4().hex[:8]}"
    addr = serve_replica(_replica(model_url, endpoint, []))
    quiet_addr = serve_replica(_replica(model_url, quiet, [[catalog.ENV, "off"]]))
    statuses = [_post(addr, endpoint, GOOD_ROW) for _ in range(4)]
    statuses += [_post(addr, endpoint, FAULT) for _ in range(2)]
    statuses.append(_post(addr, endpoint, b"1,2"))  # 2 of 3 features: 400 from the model
    assert statuses == [200] * 4 + [500] * 2 + [400]
    assert [_post(quiet_addr, quiet, GOOD_ROW) for _ in range(3)] == [200] * 3

    want = {
        "ray_sagemaker_invocations_total": 7,
        "ray_sagemaker_invocation5xxerrors_total": 2,
        "ray_sagemaker_invocation4xxerrors_total": 1,
        "ray_sagemaker_invocationsperinstance_total": 7,  # the model ran for each (and failed twice)
        "ray_sagemaker_modellatency_count": 7,
        "ray_sagemaker_modellatency_bucket": 7,  # le="+Inf"
        "ray_sagemaker_overheadlatency_count": 7,
    }
    deadline = time.monotonic() + 60  # Ray exports every 10 s
    while True:
        got = _scrape(endpoint)
        if all(got.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {k: got.get(k) for k in want} == want
    assert 0 < got["ray_sagemaker_modellatency_sum"] < 7 * 1_000_000  # microseconds
    assert 0 < got["ray_sagemaker_overheadlatency_sum"] < 7 * 1_000_000
    # Metrics off in the model's Environment: the other replica's requests exported nothing (by now
    # the first replica's have been exported, so its would have been too).
    assert _scrape(quiet) == {}
