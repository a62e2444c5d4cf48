"""Endpoint latency and throughput: a raymaker endpoint vs the same model behind a minimal FastAPI app.

One xgboost binary model (breast cancer, 30 features), trained in-process and packed as a local
``model.tar.gz`` (``file://``, no S3), served two ways in the same run:

* raymaker:  ``Model(...).deploy(1, "local")`` on a fresh local Ray with Serve's HAProxy ingress;
             ``POST /endpoints/bench/invocations`` (HAProxy -> the variant replica, which runs the model).
* FastAPI:   one uvicorn worker (``--no-access-log``) whose ``POST /invocations`` calls the same
             ``LoadedModel.invoke``, loaded once; no Ray in the request path. It runs with
             ``OMP_NUM_THREADS=1``, as Ray sets it for the replica (which asks for 0.1 CPU).

Requests: single-row CSV (``text/csv`` in, ``text/csv`` out), rows cycled from the held-out set; every
response must be a 200 holding one float. The load generator is a separate process, the same for both:

* concurrency 1:   one ``http.client.HTTPConnection`` (keep-alive), requests back to back.
* concurrency N:   N keep-alive connections on one asyncio event loop (uvloop when installed), each a
                   closed loop (send, wait, send), for a fixed duration. ``--threads`` uses N threads with
                   one ``http.client`` connection each instead (on 2 cores their GIL contention inflates
                   the client's share of the CPU, hence not the default).

"client cpu" is the load generator's CPU time (its start and warm-up included) over the measured
seconds: its share of the cores it takes from the servers. Each measurement starts with its own
warm-up. Paths alternate within each repeat (A B, then B A), and percentiles pool the repeats. Targets (issue #4): raymaker p50 < 5 ms and p99 < 20 ms at concurrency 1;
raymaker throughput >= 0.5 x FastAPI's.

The client, the servers and Ray share the machine's cores: figures include that contention. Serve's
own knobs pass through the environment (e.g. ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``); the run prints them.

    python benchmarks/endpoint_latency.py [--requests 2000] [--duration 10] [--concurrency 16] [--repeat 2]
"""

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request

ENDPOINT = "bench"
TARGET_P50_MS = 5.0
TARGET_P99_MS = 20.0
TARGET_THROUGHPUT_RATIO = 0.5


# --- the model -------------------------------------------------------------------------------------


def build_model(work: str, rounds: int, depth: int) -> tuple[str, list[bytes]]:
    """Train xgboost on breast cancer in-process; return the model.tar.gz path and CSV request bodies."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from raymaker.algorithms import get_algorithm
    from raymaker.algorithms.base import LocalContext, TrainingData
    from raymaker.io.batch import Batch

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, _ = train_test_split(
        x.astype(np.float32), y.astype(np.float32), test_size=0.25, random_state=0
    )
    algo = get_algorithm("xgboost")
    hp = algo.validate_hyperparameters(
        {"objective": "binary:logistic", "num_round": str(rounds), "max_depth": str(depth), "nthread": "1"}
    )
    model_dir = os.path.join(work, "model")
    os.makedirs(model_dir)
    with contextlib.redirect_stdout(io.StringIO()):  # the per-round log lines
        algo().train(hp, TrainingData.from_batches(train=Batch(x_train, y_train)), LocalContext(), model_dir)
    archive = os.path.join(work, "model.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for name in os.listdir(model_dir):
            tar.add(os.path.join(model_dir, name), arcname=name)
    bodies = [",".join(f"{v:.9g}" for v in row).encode() for row in x_test]
    return archive, bodies


# --- the FastAPI baseline (run by uvicorn in a subprocess) -------------------------------------------


def baseline_app():
    """uvicorn factory: the minimal app a user would write around the same model. (No ``from __future__
    import annotations`` in this file: FastAPI must see ``Request`` itself, not the string.)"""
    from fastapi import FastAPI, Request, Response

    from raymaker.serve.codecs import InvocationError
    from raymaker.serve.model import LoadedModel, ModelSpec

    model = LoadedModel(ModelSpec(ENDPOINT, "xgboost", os.environ["BENCH_MODEL_URL"]))
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> Response:
        return Response(b"", status_code=200)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        body = await request.body()
        try:
            out, ct = model.invoke(body, request.headers.get("content-type"), request.headers.get("accept"))
        except InvocationError as e:
            return Response(e.message.encode(), status_code=e.status)
        return Response(out, status_code=200, headers={"content-type": ct})

    return app


def start_baseline(model_url: str, log) -> tuple[subprocess.Popen, str]:
    from raymaker.testing import free_port

    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "--app-dir", os.path.dirname(os.path.abspath(__file__)),
        "--factory", "endpoint_latency:baseline_app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    env = dict(os.environ, BENCH_MODEL_URL=model_url)
    # Ray gives a replica OMP_NUM_THREADS = its whole CPUs, at least 1: the same here, so that both
    # sides run the model alike (with 2 OpenMP threads on a busy 2-core machine, a one-row predict
    # stalls for tens of ms now and then).
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_ok(base + "/ping", 60, proc)
    return proc, base


def wait_ok(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout_s:.0f} s")
        time.sleep(0.1)


# --- the load generator (runs as its own process) -----------------------------------------------------

HEADERS = {"Content-Type": "text/csv", "Accept": "text/csv"}


def _check(status: int, body: bytes) -> None:
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
    float(body)  # one row in, one score out


def client_sequential(host: str, port: int, path: str, bodies: list[bytes], warmup: int, n: int) -> dict:
    conn = http.client.HTTPConnection(host, port)
    lat = []
    t0 = time.perf_counter()
    for i in range(warmup + n):
        if i == warmup:
            t0 = time.perf_counter()
        body = bodies[i % len(bodies)]
        t = time.perf_counter()
        conn.request("POST", path, body, HEADERS)
        r = conn.getresponse()
        data = r.read()
        dt = time.perf_counter() - t
        _check(r.status, data)
        if r.will_close:
            raise RuntimeError("the server closed the keep-alive connection")
        if i >= warmup:
            lat.append(dt)
    elapsed = time.perf_counter() - t0
    conn.close()
    return {"latencies": lat, "seconds": elapsed, "connections": 1}


def client_threads(
    host: str, port: int, path: str, bodies: list[bytes], warmup: int, conc: int, duration: float
) -> dict:
    lats: list[list[float]] = [[] for _ in range(conc)]
    errors: list[BaseException] = []
    start = threading.Barrier(conc + 1)
    window = {}

    def worker(k: int) -> None:
        try:
            conn = http.client.HTTPConnection(host, port)
            for i in range(max(1, warmup // conc)):
                conn.request("POST", path, bodies[(k + i) % len(bodies)], HEADERS)
                r = conn.getresponse()
                _check(r.status, r.read())
            start.wait()
            i = k
            while time.perf_counter() < window["end"]:
                t = time.perf_counter()
                conn.request("POST", path, bodies[i % len(bodies)], HEADERS)
                r = conn.getresponse()
                data = r.read()
                lats[k].append(time.perf_counter() - t)
                _check(r.status, data)
                i += conc
            conn.close()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            start.abort()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
    for t in threads:
        t.start()
    window["end"] = float("inf")
    start.wait()
    t0 = time.perf_counter()
    window["end"] = t0 + duration
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return {"latencies": [x for lat in lats for x in lat], "seconds": elapsed, "connections": conc}


def client_async(
    host: str, port: int, path: str, bodies: list[bytes], warmup: int, conc: int, duration: float
) -> dict:
    import asyncio

    try:
        import uvloop

        loop_name = f"uvloop {uvloop.__version__}"
        new_loop = uvloop.new_event_loop
    except ImportError:
        loop_name = "asyncio"
        new_loop = asyncio.new_event_loop

    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: text/csv\r\nAccept: text/csv\r\n"
            f"Content-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]

    class Conn(asyncio.Protocol):
        """One keep-alive HTTP/1.1 connection, one request at a time; Content-Length responses only."""

        def __init__(self) -> None:
            self.buf = bytearray()
            self.waiter: asyncio.Future | None = None
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0 or self.waiter is None:
                return
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self.waiter.set_exception(RuntimeError(f"no Content-Length in {head[:300]!r}"))
                return
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop > 0 else len(head)])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            status = int(head[9:12])
            body = bytes(self.buf[end + 4 : total])
            del self.buf[:total]
            waiter, self.waiter = self.waiter, None
            waiter.set_result((status, body, b"\r\nconnection: close" in head))

        def connection_lost(self, exc) -> None:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

        async def send(self, request: bytes) -> tuple[int, bytes, bool]:
            self.waiter = asyncio.get_running_loop().create_future()
            self.transport.write(request)
            return await self.waiter

    async def run() -> dict:
        loop = asyncio.get_running_loop()
        conns = [(await loop.create_connection(Conn, host, port))[1] for _ in range(conc)]
        lats: list[list[float]] = [[] for _ in range(conc)]

        async def warm(k: int) -> None:
            for i in range(max(1, warmup // conc)):
                _check(*(await conns[k].send(requests[(k + i) % len(requests)]))[:2])

        async def worker(k: int, end: float) -> None:
            i = k
            conn = conns[k]
            out = lats[k]
            while time.perf_counter() < end:
                t = time.perf_counter()
                status, body, closing = await conn.send(requests[i % len(requests)])
                out.append(time.perf_counter() - t)
                _check(status, body)
                if closing:
                    raise RuntimeError("the server closed a keep-alive connection")
                i += conc

        await asyncio.gather(*(warm(k) for k in range(conc)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k, t0 + duration) for k in range(conc)))
        elapsed = time.perf_counter() - t0
        for c in conns:
            c.transport.close()
        return {"latencies": [x for lat in lats for x in lat], "seconds": elapsed, "connections": conc}

    loop = new_loop()
    try:
        out = loop.run_until_complete(run())
    finally:
        loop.close()
    out["loop"] = loop_name
    return out


def client_main(spec: dict) -> None:
    bodies = [b.encode() for b in spec["bodies"]]
    host, port, path = spec["host"], spec["port"], spec["path"]
    if spec["concurrency"] == 1:
        out = client_sequential(host, port, path, bodies, spec["warmup"], spec["requests"])
        out["client"] = "http.client, 1 connection"
    elif spec["threads"]:
        out = client_threads(host, port, path, bodies, spec["warmup"], spec["concurrency"], spec["duration"])
        out["client"] = f"{spec['concurrency']} threads x http.client"
    else:
        out = client_async(host, port, path, bodies, spec["warmup"], spec["concurrency"], spec["duration"])
        out["client"] = f"{out.pop('loop')}, {spec['concurrency']} connections"
    out["cpu_s"] = time.process_time()
    json.dump(out, sys.stdout)


def measure(base: str, path: str, bodies: list[bytes], args, concurrency: int) -> dict:
    """Run the load generator in a fresh process against ``base + path``."""
    from urllib.parse import urlsplit

    u = urlsplit(base)
    spec = {
        "host": u.hostname,
        "port": u.port,
        "path": path,
        "bodies": [b.decode() for b in bodies],
        "concurrency": concurrency,
        "warmup": args.warmup,
        "requests": args.requests,
        "duration": args.duration,
        "threads": args.threads,
    }
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--client"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed against {base}{path}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


# --- the run --------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="measured requests at concurrency 1")
    ap.add_argument("--warmup", type=int, default=200, help="requests before each measurement")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds at the higher concurrency")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2, help="rounds; paths alternate order each round")
    ap.add_argument("--rounds", type=int, default=100, help="xgboost boosting rounds")
    ap.add_argument("--max-depth", type=int, default=6)
    ap.add_argument("--threads", action="store_true", help="N client threads instead of asyncio")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(json.load(sys.stdin))
        return

    import numpy as np

    work = tempfile.mkdtemp(prefix="raymaker-bench-endpoint-")
    log = open(os.path.join(work, "uvicorn.log"), "wb")  # noqa: SIM115 (closed below)
    baseline = predictor = None
    ray_started = False
    try:
        from raymaker.testing import free_port

        # Before anything starts: a throwaway home, a free runtime port, the HAProxy ingress.
        os.environ["RAYMAKER_HOME"] = os.path.join(work, "home")
        os.environ["RAYMAKER_RUNTIME_URL"] = f"http://127.0.0.1:{free_port()}"
        from raymaker.cluster.runtime import ray_env_for_serving

        ray_env_for_serving(os.environ)
        # HAProxy's stats and metrics listeners default to fixed ports (8404, 9101), and replicas' direct
        # ingress ports to 30000+/40000+: move ours, so that another Serve with HAProxy on this machine
        # (a test run) and this benchmark do not fail each other's start.
        os.environ.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))
        os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "23000")
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", "23500")
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT", "23500")
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT", "24000")

        archive, bodies = build_model(work, args.rounds, args.max_depth)
        model_url = f"file://{archive}"
        baseline, baseline_url = start_baseline(model_url, log)

        import ray

        t = time.perf_counter()
        # address="local": a fresh cluster of our own, never one someone else started on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_started = True
        from raymaker.sdk.model import Model
        from raymaker.sdk.session import Session

        session = Session()
        predictor = Model(model_url, algorithm="xgboost", session=session).deploy(
            1, "local", endpoint_name=ENDPOINT
        )
        runtime_url = session.runtime_url
        wait_ok(f"{runtime_url}/endpoints/{ENDPOINT}/ping", 60)
        setup_s = time.perf_counter() - t
        time.sleep(3)  # let Serve's start-up work settle

        paths = {
            "raymaker": (runtime_url, f"/endpoints/{ENDPOINT}/invocations"),
            "fastapi": (baseline_url, "/invocations"),
        }
        results: dict[tuple[str, int], list[dict]] = {}
        loads = []
        for rep in range(args.repeat):
            order = list(paths) if rep % 2 == 0 else list(reversed(paths))
            for conc in (1, args.concurrency):
                for name in order:
                    loads.append(os.getloadavg()[0])
                    results.setdefault((name, conc), []).append(measure(*paths[name], bodies, args, conc))

        ray_ver = ray.__version__
        print(
            f"machine: {cpu_model()}, {os.cpu_count()} cores ({platform.machine()}), Python "
            f"{platform.python_version()}, ray {ray_ver}; 1-min load average before the runs "
            f"{min(loads):.2f}-{max(loads):.2f} (other processes share these cores)"
        )
        print(
            f"model: xgboost binary:logistic, {args.rounds} rounds, max_depth {args.max_depth}, 30 features; "
            f"requests: one CSV row, text/csv in and out; raymaker up in {setup_s:.1f} s (Ray + deploy)"
        )
        serve_env = " ".join(
            f"{k}={v}"
            for k, v in sorted(os.environ.items())
            if k.startswith("RAY_SERVE_") and "_PORT" not in k
        )
        print(f"Serve environment: {serve_env}")
        clients = sorted({r["client"] for rs in results.values() for r in rs})
        print(
            f"client: separate process; {'; '.join(clients)}; warm-up {args.warmup} requests each; "
            f"concurrency 1: {args.requests} requests, concurrency {args.concurrency}: {args.duration:g} s; "
            f"{args.repeat} repeat(s), paths alternating"
        )
        print(
            f"{'path':<10} {'conc':>4} {'requests':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
            f"{'max ms':>8} {'req/s':>8} {'client cpu':>11}"
        )
        summary: dict[tuple[str, int], dict[str, float]] = {}
        for conc in (1, args.concurrency):
            for name in paths:
                rs = results[(name, conc)]
                lat = np.array([x for r in rs for x in r["latencies"]]) * 1000
                secs = sum(r["seconds"] for r in rs)
                cpu = sum(r["cpu_s"] for r in rs)
                p50, p90, p99 = np.percentile(lat, [50, 90, 99])
                rps = len(lat) / secs
                summary[(name, conc)] = {"p50": p50, "p99": p99, "rps": rps}
                print(
                    f"{name:<10} {conc:>4} {len(lat):>9} {p50:>8.2f} {p90:>8.2f} {p99:>8.2f} "
                    f"{lat.max():>8.2f} {rps:>8.0f} {cpu / secs:>10.0%}"
                )

        def verdict(ok: bool) -> str:
            return "PASS" if ok else "FAIL"

        r1 = summary[("raymaker", 1)]
        print(
            f"target p50 < {TARGET_P50_MS:g} ms at concurrency 1:  {r1['p50']:.2f} ms  {verdict(r1['p50'] < TARGET_P50_MS)}"
        )
        print(
            f"target p99 < {TARGET_P99_MS:g} ms at concurrency 1: {r1['p99']:.2f} ms  {verdict(r1['p99'] < TARGET_P99_MS)}"
        )
        for conc in (1, args.concurrency):
            ratio = summary[("raymaker", conc)]["rps"] / summary[("fastapi", conc)]["rps"]
            print(
                f"throughput raymaker / fastapi at concurrency {conc}: {ratio:.2f} "
                f"(target >= {TARGET_THROUGHPUT_RATIO:g})  {verdict(ratio >= TARGET_THROUGHPUT_RATIO)}"
            )
    finally:
        if predictor is not None:
            try:
                predictor.delete_endpoint()
            except Exception as e:  # noqa: BLE001
                print(f"(deleting the endpoint failed: {e})", file=sys.stderr)
        if ray_started:
            import ray

            ray.shutdown()
        if baseline is not None:
            from raymaker.testing import stop

            stop(baseline)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
