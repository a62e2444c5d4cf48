"""Custom container overhead: what running a user's image through raymaker costs, against the same
image run by hand, in the same run.

* Training: ``podman run --rm <image> true`` (the container's start and removal alone), the image's
  ``train`` run by hand with ``/opt/ml`` bind-mounted (the job's own work), and a training job
  (``Estimator(image_uri=...).fit()``, local mode, File channel on local disk) of the same ``train``.
  Printed: each one's mean, and the container start's share of the job's wall time.
* Endpoint: one ``Model(image_uri=...).deploy()``; sequential single-line CSV requests through the
  endpoint (HAProxy -> the variant replica -> the container) against the same container's port called
  directly (``SAGEMAKER_BIND_TO_PORT``; a new connection per request, as the container closes each,
  the request in one write with TCP_NODELAY), and the endpoint's ping (HAProxy -> the replica, which
  answers it without the container: Serve's own part), in alternating blocks of 50, the same count
  each. Printed: p50 and p99 of each and the p50 added. Target (issue 12): at most 1 ms added at p50.

The test image is busybox with shell scripts (``raymaker.testing.images``): its server forks a shell
per connection, so both paths carry that cost; the difference is the proxy's.

    python benchmarks/container_overhead.py [--jobs 3] [--requests 400]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from urllib.parse import urlsplit

TARGET_ADDED_P50_MS = 1.0
IMAGE = "localhost/raymaker-bench-busybox:1"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3, help="training runs of each kind (default 3)")
    parser.add_argument("--requests", type=int, default=400, help="requests per endpoint path (default 400)")
    args = parser.parse_args()
    # A job database of its own: the user's jobs and endpoints are neither seen nor touched.
    os.environ["RAYMAKER_HOME"] = tempfile.mkdtemp(prefix="raymaker-bench-home-")

    from raymaker import Session, TrainingInput
    from raymaker.containers.runtime import find_runtime
    from raymaker.sdk import Estimator, Model
    from raymaker.testing.images import build_busybox_image

    runtime = find_runtime()
    image = build_busybox_image(IMAGE, runtime)
    version = subprocess.run([runtime.path, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; {version}")
    work = tempfile.mkdtemp(prefix="raymaker-bench-")
    data = os.path.join(work, "data")
    os.makedirs(data)
    with open(os.path.join(data, "train.csv"), "w") as f:
        f.write("".join(f"{i},{i * 2}\n" for i in range(1000)))

    # --- training ---------------------------------------------------------------------------------
    base = runtime.base_command()
    start = timed(lambda: subprocess.run([*base, "run", "--rm", "--network", "host", image, "true"],
                                         check=True, capture_output=True), args.jobs)

    def by_hand() -> None:
        tree = tempfile.mkdtemp(dir=work)
        for d in ("input/config", "input/data/train", "model", "output/data"):
            os.makedirs(os.path.join(tree, d))
        for name, doc in (("hyperparameters", {}), ("resourceconfig", {"current_host": "algo-1", "hosts": ["algo-1"]})):
            with open(os.path.join(tree, "input/config", f"{name}.json"), "w") as f:
                json.dump(doc, f)
        subprocess.run(["cp", os.path.join(data, "train.csv"), os.path.join(tree, "input/data/train")], check=True)
        subprocess.run([*base, "run", "--rm", "--network", "host", "--hostname", "algo-1", "-v", f"{tree}:/opt/ml",
                        image, "train"], check=True, capture_output=True)

    hand = timed(by_hand, args.jobs)
    session = Session()
    est = Estimator(image_uri=image, instance_type="local", output_path=f"file://{work}/output", session=session)
    channel = {"train": TrainingInput(f"file://{data}/", content_type="text/csv")}
    est.fit(channel, logs=False)  # Ray and the job service start here, not in the figures
    jobs = timed(lambda: est.fit(channel, logs=False), args.jobs)
    print(f"\ntraining, {args.jobs} runs each (mean):")
    print(f"  container start + removal ({runtime.name} run --rm true):  {statistics.mean(start):6.3f} s")
    print(f"  the image's train run by hand ({runtime.name} run):        {statistics.mean(hand):6.3f} s")
    print(f"  a raymaker training job of it (fit(), end to end):  {statistics.mean(jobs):6.3f} s")
    print(f"  container start's share of the job's wall time:     {statistics.mean(start) / statistics.mean(jobs):6.1%}")

    # --- endpoint ---------------------------------------------------------------------------------
    model_dir = os.path.join(work, "model")
    os.makedirs(model_dir)
    archive = os.path.join(work, "model.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("summary.txt")
        text = b"rows=1000\n"
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    Model(f"file://{archive}", image_uri=image, session=session, name="bench-container").deploy(
        1, "local", endpoint_name="bench-container")
    try:
        (cid,) = runtime.owned("bench-container")
        env = json.loads(subprocess.run([*base, "inspect", "--format", "{{json .Config.Env}}", cid],
                                        capture_output=True, text=True, check=True).stdout)
        port = int(next(e.split("=", 1)[1] for e in env if e.startswith("SAGEMAKER_BIND_TO_PORT=")))
        url = urlsplit(session.runtime_url)
        proxy = http.client.HTTPConnection(url.hostname, url.port, timeout=60)  # keep-alive to HAProxy

        def via_proxy() -> None:
            proxy.request("POST", "/endpoints/bench-container/invocations", body=b"1,2",
                          headers={"Content-Type": "text/csv"})
            r = proxy.getresponse()
            assert r.status == 200 and r.read() == b"3\n"

        def ingress() -> None:  # Serve's part alone: the replica answers the endpoint's ping itself
            proxy.request("GET", "/endpoints/bench-container/ping")
            r = proxy.getresponse()
            assert r.status == 200 and r.read() == b""

        def direct() -> None:  # the container closes each connection: a new one per request
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write, no Nagle delay
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
                         b"Content-Length: 3\r\n\r\n1,2")
            r = http.client.HTTPResponse(sock)
            r.begin()
            assert r.status == 200 and r.read() == b"3\n"
            sock.close()

        paths = {"direct": direct, "proxy": via_proxy, "ingress": ingress}
        for fn in paths.values():  # warm-up
            timed(fn, 50)
        lat: dict[str, list[float]] = {name: [] for name in paths}
        for block in range(args.requests // 50):
            names = list(paths) if block % 2 == 0 else list(reversed(paths))
            for name in names:
                lat[name] += timed(paths[name], 50)
    finally:
        session.call("DeleteEndpoint", {"EndpointName": "bench-container"})
    print(f"\nendpoint, {len(lat['direct'])} sequential requests per path (ms):")
    labels = {"direct": "direct to the container", "proxy": "through the endpoint",
              "ingress": "the endpoint's ping (Serve alone)"}
    for name in ("direct", "proxy", "ingress"):
        ms = [v * 1000 for v in lat[name]]
        print(f"  {labels[name]:35s} p50 {percentile(ms, 50):6.2f}   p99 {percentile(ms, 99):6.2f}")
    added = (percentile(lat["proxy"], 50) - percentile(lat["direct"], 50)) * 1000
    verdict = "met" if added <= TARGET_ADDED_P50_MS else "NOT met"
    print(f"  added at p50 by the proxy: {added:.2f} ms (target <= {TARGET_ADDED_P50_MS} ms: {verdict})")
    # A keep-alive request the replica answers itself, against the direct path's connection alone,
    # is a floor no proxying in the replica can go under: Serve's own part of the added time.
    print(f"  of it, Serve's ingress (HAProxy -> replica -> back) at p50: {percentile(lat['ingress'], 50) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
