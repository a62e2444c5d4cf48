"""What checking signatures costs an invocation: the same model behind two endpoints, one checked and
one not, in the same run.

One xgboost model (breast cancer, ``benchmarks/endpoint_latency.build_model``) in a fresh
``RAYMAKER_HOME`` whose service has a user, so its endpoints take only signed invocations (SigV4 and
the user's policy, ``serve/guard.py``). The checked endpoint is created as any endpoint is
(CreateEndpoint); its twin runs the same plan (the same replica code, Serve, HAProxy) deployed by
``serve.hosting``, as the same endpoint runs in a service without users: its guard is told checks are
off and still records every invocation, its audit batches passed on to the job service (a small actor
in front of it answers "off" and forwards them; ``--baseline no-guard``: no guard at all, so neither
checks nor audit, an upper bound on what the guard adds). Every request is signed as boto3's
``sagemaker-runtime`` client signs it (botocore's SigV4Auth, a fresh signature each) and sent on one
keep-alive connection (boto3's own client would add ~2-3 ms a call here, and its variance would hide
the difference measured).

The two endpoints take turns in blocks of ``BLOCK`` (2) requests, A B B A, a few milliseconds apart:
this machine slows down in bursts of a second or more, by up to a millisecond a request, and only
turns that short share them. In one hour, with the check taking ~0.05 ms in-process: blocks of 50
(0.1 s) saw the pair's per-round difference range over -0.12 to +0.41 ms; one endpoint whose checks
were switched between blocks of 200 (seconds apart, in one replica) -0.04 to +0.34; blocks of 2 +0.02
to +0.14 and -0.00 to +0.28 (A/A -0.13 to +0.10). The pair is deployed anew in each of ``--rounds`` rounds (default 8), each endpoint first in
half of them, as two replicas of one model may differ a little from one deployment to the next.
``--aa``: both endpoints checked, a control for what the two differ by anyway.

Printed: p50 and p99 of each, each round's p50 difference, each checked block's p50 less its
neighbour's (median and range), the invocations the audit trail counts for each endpoint, and the p50
added over all requests. Target (issue 13): at most 0.2 ms added at p50.

    python benchmarks/invoke_auth.py [--requests 8000] [--rounds 8] [--baseline checks-off|no-guard] [--aa]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import io
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(__file__))
from block_pairs import alternate, block_pairs  # noqa: E402
from endpoint_latency import build_model  # noqa: E402

TARGET_ADDED_MS = 0.2
BLOCK = 2  # requests per block: the machine's bursts of slowness last far longer
ROLE = "arn:aws:iam::000000000000:role/bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class SignedClient:
    """What a boto3 client sends, without boto3's own ~2-3 ms a call here (its variance would hide a
    0.1 ms difference): each request signed anew by botocore's SigV4Auth (sagemaker-runtime signs as
    ``sagemaker``), sent on one keep-alive connection."""

    def __init__(self, host: str, port: int, key: str, secret: str):
        from botocore.auth import SigV4Auth
        from botocore.credentials import Credentials

        self.base = f"http://{host}:{port}"
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.signer = SigV4Auth(Credentials(key, secret), "sagemaker", "us-east-1")

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="POST", url=self.base + path, data=body, headers={"Content-Type": "text/csv"})
        self.signer.add_auth(request)
        self.conn.request("POST", path, body=body, headers=dict(request.headers.items()))
        response = self.conn.getresponse()
        return response.status, response.read()


def check_cost_us(n: int = 5000, cold: int = 300) -> tuple[float, float]:
    """``InvocationGuard.admit`` on a request boto3 signed, with the key already in the guard's cache
    (the steady state), timed in this process: SigV4 and the policy, no network. Two figures (us): the
    mean over ``n`` calls in a loop, its code and data in the CPU's caches; and the median over ``cold``
    calls each made after writing every cache line of 48 MB, as a replica's request may find the caches
    after the client, HAProxy and Serve ran in between (in a replica the check took 4-8x its loop time)."""
    import asyncio

    import boto3
    from botocore.config import Config

    from raymaker.engine.iam import ADMINISTRATOR_POLICY, parse_policy
    from raymaker.serve.guard import InvocationGuard

    client = boto3.client("sagemaker-runtime", endpoint_url="http://127.0.0.1:8080", region_name="us-east-1",
                          aws_access_key_id="AKIABENCHMARK0000000", aws_secret_access_key="s" * 40,
                          config=Config(retries={"max_attempts": 1, "mode": "standard"}))
    captured = {}

    class Sent(Exception):
        pass

    def capture(request, **_):
        captured.update(method=request.method, url=request.url, headers=dict(request.headers), body=request.body)
        raise Sent

    client.meta.events.register("before-send.sagemaker-runtime.*", capture)
    with contextlib.suppress(Sent):
        client.invoke_endpoint(EndpointName="bench-auth", ContentType="text/csv", Body=b"1,2,3")
    path = captured["url"].split("8080", 1)[1]
    headers = [(k.lower().encode(), (v if isinstance(v, bytes) else v.encode())) for k, v in captured["headers"].items()]
    scope = {"method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers + [(b"host", b"127.0.0.1:8080")], "client": ("127.0.0.1", 1)}
    guard = InvocationGuard("unused")
    now = time.monotonic() + 3600  # cached "for an hour": no service call in the loop
    guard._required["arn:aws:sagemaker:us-east-1:000000000000:endpoint/bench-auth"] = (now, True, None)
    identity = {"type": "IAMUser", "userName": "bench", "arn": "arn:aws:iam::000000000000:user/bench"}
    guard._keys["AKIABENCHMARK0000000"] = (now, ("s" * 40, identity, (parse_policy(ADMINISTRATOR_POLICY),)))
    guard.mode = "off"

    flushed = bytearray(48 << 20)
    lines = bytes(len(range(0, len(flushed), 64)))

    async def run() -> tuple[float, float]:
        for _ in range(200):
            await guard.admit(scope, captured["body"], "bench-auth")
        t = time.perf_counter()
        for _ in range(n):
            await guard.admit(scope, captured["body"], "bench-auth")
        warm = (time.perf_counter() - t) / n * 1e6
        took = []
        for _ in range(cold):
            flushed[::64] = lines  # a byte in every 64-byte line written: the caches fill with 48 MB of it
            t = time.perf_counter()
            await guard.admit(scope, captured["body"], "bench-auth")
            took.append((time.perf_counter() - t) * 1e6)
        return warm, percentile(took, 50)

    return asyncio.run(run())


def invocations_recorded(session: object, endpoint: str) -> int:
    """How many invocations of ``endpoint`` the audit trail counts (its aggregated events' counts)."""
    import json

    total, token = 0, None
    while True:
        page = session.call("ListAuditEvents", {"EventName": "InvokeEndpoint", "ResourceName": endpoint,
                                                "MaxResults": 100, **({"NextToken": token} if token else {})})
        for event in page["Events"]:
            params = json.loads(event["CloudTrailEvent"]).get("requestParameters") or {}
            total += int(params.get("invocationCount", 1))
        token = page.get("NextToken")
        if not token:
            return total


@functools.cache  # one per run, its handle kept here so that it lives as long as the run
def checks_off(service: str) -> tuple[str, object]:
    """The name (and handle) of an actor the unchecked twin's guard asks instead of the job service
    ``service``: it answers that checks are off, as a service without users does, and passes each
    audit batch on to ``service``, which writes it to the trail as it writes the checked endpoint's."""
    import ray

    @ray.remote(num_cpus=0)
    class ChecksOff:
        def __init__(self, service: str):
            self.service = ray.get_actor(service, namespace="raymaker")

        def runtime_auth(self, endpoint_arn: str) -> tuple[bool, None]:
            return False, None

        def record_invocations(self, calls: list) -> None:
            self.service.record_invocations.remote(calls)

    name = f"{service}-bench-checks-off"
    actor = ChecksOff.options(name=name, namespace="raymaker").remote(service)
    ray.get(actor.runtime_auth.remote(""))  # up, and found by name, before a guard asks for it
    return name, actor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8000, help="requests per endpoint (default 8000)")
    parser.add_argument("--rounds", type=int, default=8, help="deployments of the pair, even (default 8)")
    parser.add_argument("--baseline", choices=("checks-off", "no-guard"), default="checks-off",
                        help="the unchecked twin: guarded with checks off and audited (default), or no guard")
    parser.add_argument("--aa", action="store_true", help="a control: both endpoints guarded and checked")
    args = parser.parse_args()
    os.environ["RAYMAKER_HOME"] = tempfile.mkdtemp(prefix="raymaker-bench-auth-")
    os.environ.pop("RAYMAKER_RUNTIME_AUTH", None)

    from raymaker.cli import main as cli
    from raymaker.engine.hosting import variant_plans
    from raymaker.engine.resources import ResourceStore
    from raymaker.engine.store import JobStore
    from raymaker.sdk import Session
    from raymaker.sdk.predictor import wait_for_deleted, wait_for_endpoint
    from raymaker.serve import hosting

    session = Session()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the service's only user: from now on its endpoints check
        cli(["users", "create", "bench-invoker", "--admin"], session=session)
    keys = dict(line.split("=", 1) for line in printed.getvalue().splitlines() if line.startswith("AWS_"))
    url = urlsplit(session.runtime_url)
    client = SignedClient(url.hostname, url.port, keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"])
    archive, bodies = build_model(tempfile.mkdtemp(prefix="raymaker-bench-"), rounds=20, depth=4)
    session.call("CreateModel", {"ModelName": "bench-auth", "ExecutionRoleArn": ROLE,
                                 "PrimaryContainer": {"Image": "xgboost", "ModelDataUrl": f"file://{archive}"}})
    session.call("CreateEndpointConfig", {"EndpointConfigName": "bench-auth", "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": "bench-auth", "InitialInstanceCount": 1, "InstanceType": "local"}]})
    resources = ResourceStore(JobStore())

    def deploy(setting: str, endpoint: str) -> Callable[[], None]:
        """Deploys ``endpoint``; returns what deletes it. Checked: as any endpoint is (CreateEndpoint). Not
        checked: the same model's plan, deployed by hosting with its guard told checks are off (or none)."""
        if setting == "on" or args.aa:
            session.call("CreateEndpoint", {"EndpointName": endpoint, "EndpointConfigName": "bench-auth"})
            wait_for_endpoint(session, endpoint, logs=False)

            def delete() -> None:
                session.call("DeleteEndpoint", {"EndpointName": endpoint})
                wait_for_deleted(session, endpoint)

            return delete
        plan = variant_plans(resources, endpoint, "bench-auth")[0]
        plan = replace(plan, guard="" if args.baseline == "no-guard" else checks_off(plan.guard)[0])
        hosting.deploy_variant(plan, 1, None, timeout_s=300, direct=True)
        hosting.wait_reachable(endpoint)
        return lambda: hosting.delete_app(plan.app_name(1, direct=True), wait=True)

    taken: dict[str, int] = {}  # endpoint -> requests sent: each endpoint sends the bodies in the same order

    def block(endpoint: str, n: int) -> list[float]:
        out = []
        for _ in range(n):
            i = taken[endpoint] = taken.get(endpoint, -1) + 1
            t = time.perf_counter()
            status, body = client.post(f"/endpoints/{endpoint}/invocations", bodies[i % len(bodies)])
            took = (time.perf_counter() - t) * 1000
            assert status == 200, body
            out.append(took)
        return out

    def reachable(endpoint: str, timeout_s: float = 120.0) -> None:
        """hosting.wait_reachable's ping can still pass before HAProxy's reload: an invocation must."""
        deadline = time.monotonic() + timeout_s
        while True:
            status, body = client.post(f"/endpoints/{endpoint}/invocations", bodies[0])
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{endpoint} answers {status}: {body[:200]!r}")
            time.sleep(0.5)

    lat: dict[str, list[float]] = {"on": [], "off": []}
    p50s: dict[str, list[float]] = {"on": [], "off": []}
    by_round: dict[str, float] = {}
    recorded_names: dict[str, str] = {}
    rounds = max(2, args.rounds // 2 * 2)
    blocks = max(2, args.requests // BLOCK // (2 * rounds) * 2)  # per endpoint and round, even: A B B A balances
    # Each round deploys the pair anew, each endpoint first in half the rounds: two replicas of one model
    # differ by a tenth of a millisecond or more either way from one deployment to the next.
    for number in range(rounds):
        first = ("on", "off")[number % 2]
        order = (first, "off" if first == "on" else "on")
        endpoint = {name: f"bench-auth-{name}-r{number}" for name in order}
        for name in order:
            recorded_names[f"{name} (round {number + 1})"] = endpoint[name]
        removers: list[Callable[[], None]] = []
        try:
            for name in order:
                removers.append(deploy(name, endpoint[name]))
            for name in order:
                # After the last deployment HAProxy reloads, and until its checks see a direct route's
                # replica up it sends that route's requests to the runtime ingress, which knows only the
                # service's endpoints: wait until both answer directly.
                reachable(endpoint[name])
            time.sleep(3)  # Serve's start-up work settles
            for name in order:
                block(endpoint[name], 100)  # warm-up: the key's first lookup, the first predictions
            mine = alternate(order, blocks, lambda name, endpoint=endpoint: block(endpoint[name], BLOCK))
            pooled = {name: [v for values in mine[name] for v in values] for name in order}
            by_round[f"{number + 1} ({first} deployed first)"] = percentile(pooled["on"], 50) - percentile(pooled["off"], 50)
            for name in lat:
                lat[name] += pooled[name]
                p50s[name] += [percentile(values, 50) for values in mine[name]]
        finally:
            for remove in removers:
                with contextlib.suppress(Exception):
                    remove()
    label = "A/A control, both checked" if args.aa else (
        "checks on / checks off, both audited" if args.baseline == "checks-off" else "checks on / no guard")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"InvokeEndpoint, SigV4-signed (botocore's signer, keep-alive), {label}: {len(lat['on'])} sequential "
          f"requests per setting, blocks of {BLOCK} alternating A B B A over two endpoints, {rounds} rounds (ms):")
    for name, values in lat.items():
        print(f"  checks {name:4s} p50 {percentile(values, 50):6.3f}   p99 {percentile(values, 99):6.3f}")
    warm, cold = check_cost_us()
    print(f"  the check itself, in-process (a cached key, as on every request but the first per 2 s): "
          f"{warm:.1f} us in a loop, {cold:.1f} us with the caches flushed before each")
    print("  p50 on - off by round: " + ", ".join(f"{n} {d:+.3f}" for n, d in by_round.items()))
    # Each on block against its neighbouring off block: the machine's drift over the run cancels out.
    print(f"  per block pair of {BLOCK}, on - off: {block_pairs(p50s['on'], p50s['off'])}")
    time.sleep(3)  # the replicas' last audit batches (sent every 2 s) reach the trail
    recorded = {name: invocations_recorded(session, endpoint) for name, endpoint in recorded_names.items()}
    print("  invocations in the audit trail: " + ", ".join(f"{name} {n}" for name, n in recorded.items()))
    added = percentile(lat["on"], 50) - percentile(lat["off"], 50)
    verdict = "met" if added <= TARGET_ADDED_MS else "NOT met"
    print(f"  added at p50 by the checks: {added:+.3f} ms (target <= {TARGET_ADDED_MS} ms: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
