"""A bounded load test of raymaker as a shared service, on 127.0.0.1: concurrent signed clients calling
the control plane (DescribeTrainingJob / ListTrainingJobs, boto3's ``sagemaker`` client against ``raymaker
server``) and an endpoint (InvokeEndpoint, boto3's ``sagemaker-runtime`` client through Serve), then the
audit trail checked: every call and every invocation recorded, none lost.

Setup, in a fresh ``RAYMAKER_HOME``: a completed training job's record, one xgboost endpoint
(``benchmarks/endpoint_latency.build_model``), an administrator's access key (signature checks on),
``raymaker server`` as its own process. The clients are ``--clients`` threads spread over
``--processes`` processes (one Python process cannot drive 50 clients on its own), each with its own
boto3 clients, sharing the calls evenly.

Printed: calls, errors, throughput, p50 / p99 per kind, and the audit counts against the calls made.
Exit status 1 if any call failed or any went unrecorded. Issue 13's run: 50 clients, 20,000 control-plane
calls, 20,000 invocations.

    python benchmarks/load_test.py [--clients 50] [--processes 5] [--calls 20000] [--invocations 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from endpoint_latency import build_model  # noqa: E402

ENDPOINT, JOB = "load-ep", "load-job"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def client_process(spec: dict, out: multiprocessing.Queue) -> None:
    """``spec["threads"]`` clients in this process; puts (kind, latencies, errors) per kind."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=4)
    creds = {"aws_access_key_id": spec["key"], "aws_secret_access_key": spec["secret"], "region_name": "us-east-1"}
    results = {"control": ([], []), "invoke": ([], [])}
    lock = threading.Lock()

    def run(calls: int, invocations: int, seed: int) -> None:
        sm = boto3.client("sagemaker", endpoint_url=spec["api"], config=config, **creds)
        rt = boto3.client("sagemaker-runtime", endpoint_url=spec["runtime"], config=config, **creds)
        lat = {"control": [], "invoke": []}
        errors = {"control": [], "invoke": []}
        for i in range(max(calls, invocations)):
            if i < calls:
                t = time.perf_counter()
                try:
                    if (i + seed) % 2:
                        sm.describe_training_job(TrainingJobName=JOB)
                    else:
                        sm.list_training_jobs(MaxResults=10)
                    lat["control"].append((time.perf_counter() - t) * 1000)
                except Exception as e:  # noqa: BLE001 - counted, reported
                    errors["control"].append(repr(e)[:300])
            if i < invocations:
                t = time.perf_counter()
                try:
                    r = rt.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Body=spec["body"])
                    r["Body"].read()
                    lat["invoke"].append((time.perf_counter() - t) * 1000)
                except Exception as e:  # noqa: BLE001
                    errors["invoke"].append(repr(e)[:300])
        with lock:
            for kind in results:
                results[kind][0].extend(lat[kind])
                results[kind][1].extend(errors[kind])

    threads = [threading.Thread(target=run, args=(c, v, n)) for n, (c, v) in enumerate(spec["shares"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(results)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000, help="control-plane calls in all")
    parser.add_argument("--invocations", type=int, default=20000, help="endpoint invocations in all")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="raymaker-load-")
    os.environ["RAYMAKER_HOME"] = home

    from raymaker.cli import main as cli
    from raymaker.cluster.local import free_port
    from raymaker.sdk import Model, Session
    from raymaker.server.run import spawn

    work = tempfile.mkdtemp(prefix="raymaker-load-model-")
    archive, bodies = build_model(work, rounds=20, depth=4)
    session = Session()
    session.backend.store.create_training_job({
        "TrainingJobName": JOB, "AlgorithmSpecification": {"TrainingImage": "xgboost", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/R", "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600}})
    Model(f"file://{archive}", algorithm="xgboost", session=session).deploy(1, "local", endpoint_name=ENDPOINT)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cli(["users", "create", "load-admin", "--admin"], session=session)
    keys = dict(line.split("=", 1) for line in printed.getvalue().splitlines() if line.startswith("AWS_"))
    port = free_port()
    server = spawn(port, home)
    try:
        time.sleep(2.5)  # the replicas see the service's first user (checks on) within 2 s
        started = time.time()
        per_process = split(args.clients, args.processes)
        calls, invocations = split(args.calls, args.clients), split(args.invocations, args.clients)
        spawn = multiprocessing.get_context("spawn")  # no fork of a process running Ray's threads
        queue = spawn.Queue()
        procs, at = [], 0
        for threads in per_process:
            spec = {"api": f"http://127.0.0.1:{port}", "runtime": session.runtime_url, "key": keys["AWS_ACCESS_KEY_ID"],
                    "secret": keys["AWS_SECRET_ACCESS_KEY"], "body": bodies[0],
                    "shares": list(zip(calls[at:at + threads], invocations[at:at + threads], strict=True))}
            at += threads
            p = spawn.Process(target=client_process, args=(spec, queue))
            p.start()
            procs.append(p)
        merged = {"control": ([], []), "invoke": ([], [])}
        for _ in procs:
            got = queue.get(timeout=3600)
            for kind in merged:
                merged[kind][0].extend(got[kind][0])
                merged[kind][1].extend(got[kind][1])
        for p in procs:
            p.join()
        elapsed = time.time() - started
        time.sleep(3.0)  # replicas send their audit counts every 2 s
        recorded = {"control": 0, "invoke": 0}
        store = session.backend.store
        for event in store.audit_events(user="load-admin", since=started - 1, limit=10_000_000):
            if event["eventName"] in ("DescribeTrainingJob", "ListTrainingJobs") and not event.get("errorCode"):
                recorded["control"] += 1
            elif event["eventName"] == "InvokeEndpoint" and not event.get("errorCode"):
                recorded["invoke"] += event["requestParameters"]["invocationCount"]
    finally:
        server.terminate()
        server.wait(30)
        session.call("DeleteEndpoint", {"EndpointName": ENDPOINT})
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"{args.clients} signed clients in {args.processes} processes, {elapsed:.1f} s in all")
    failed = False
    for kind, want, label in (("control", args.calls, "DescribeTrainingJob / ListTrainingJobs"),
                              ("invoke", args.invocations, "InvokeEndpoint")):
        lat, errors = merged[kind]
        print(f"  {label}: {len(lat)} ok, {len(errors)} errors, {len(lat) / elapsed:.0f}/s, "
              f"p50 {percentile(lat, 50):.2f} ms, p99 {percentile(lat, 99):.2f} ms; "
              f"audit trail: {recorded[kind]} of {want} recorded")
        for e in errors[:3]:
            print(f"    error: {e}")
        failed |= bool(errors) or len(lat) != want or recorded[kind] != want
    print("result:", "FAILED" if failed else "zero errors, nothing lost from the audit trail")
    print(json.dumps({"ok": not failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
