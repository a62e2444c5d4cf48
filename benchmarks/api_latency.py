"""The control plane over signed HTTP against the in-process call, in the same run.

A completed training job's record in a fresh job database (its own ``RAYMAKER_HOME``); ``raymaker
server`` started as its own process on 127.0.0.1 with signatures checked; an administrator's access key
made in-process. Then ``DescribeTrainingJob`` of that job, sequentially, three ways:

* in-process:  ``SageMakerAPI().call`` in this process (validation, the record read, the audit write);
* boto3:       an unchanged ``boto3.client("sagemaker", endpoint_url=...)`` (its serializer, SigV4
               signing, HTTP keep-alive, its parser), against the server;
* raymaker:    the SDK's ``HTTPBackend`` (the same wire format and signer, without boto3's client).

Alternating blocks of 100 calls, the same count for each. Printed: p50 and p99 of each, and the HTTP
paths' p50 over the in-process one. Target (issue 13): DescribeTrainingJob over signed HTTP p50 < 3 ms.
``--database postgresql``: the job database on a PostgreSQL server started for the run (127.0.0.1), as a
shared service keeps it, instead of the SQLite file.

    python benchmarks/api_latency.py [--calls 2000] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import tempfile
import time

TARGET_P50_MS = 3.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per path (default 2000)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="raymaker-bench-api-")
    os.environ["RAYMAKER_HOME"] = home
    with contextlib.ExitStack() as stack:
        if args.database == "postgresql":
            from raymaker.testing.postgres import start_postgres_server

            postgres = start_postgres_server()
            stack.callback(postgres.stop)
            os.environ["RAYMAKER_DATABASE_URL"] = postgres.new_database()  # the server process inherits it
        return run(args, home)


def run(args: argparse.Namespace, home: str) -> int:

    import boto3
    from botocore.config import Config
    from botocore.credentials import Credentials

    from raymaker.cli import main as cli
    from raymaker.cluster.local import free_port
    from raymaker.engine.api import SageMakerAPI
    from raymaker.sdk import Session
    from raymaker.sdk.http_backend import HTTPBackend
    from raymaker.server.run import spawn

    api = SageMakerAPI()
    request = {
        "TrainingJobName": "bench-job",
        "AlgorithmSpecification": {"TrainingImage": "xgboost", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
        "HyperParameters": {"num_round": "10"},
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    api.store.create_training_job(request)
    now = time.time()
    api.store.update_training_job("bench-job", status="Completed", secondary_status="Completed",
                                  training_start_time=now, training_end_time=now + 5,
                                  model_artifacts="s3://bucket/output/bench-job/output/model.tar.gz")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cli(["users", "create", "bench-admin", "--admin"], session=Session(backend=api))
    keys = dict(line.split("=", 1) for line in printed.getvalue().splitlines() if line.startswith("AWS_"))
    port = free_port()
    server = spawn(port, home)
    try:
        url = f"http://127.0.0.1:{port}"
        client = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
                              config=Config(retries={"max_attempts": 1, "mode": "standard"}))
        backend = HTTPBackend(url, credentials=Credentials(keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"]))
        params = {"TrainingJobName": "bench-job"}
        paths = {
            "in-process": lambda: api.call("DescribeTrainingJob", params),
            "boto3 over signed HTTP": lambda: client.describe_training_job(**params),
            "raymaker HTTPBackend": lambda: backend.call("DescribeTrainingJob", params),
        }
        for fn in paths.values():  # warm-up: imports, connections, caches
            for _ in range(50):
                assert fn()["TrainingJobStatus"] == "Completed"
        lat: dict[str, list[float]] = {name: [] for name in paths}
        for block in range(max(1, args.calls // 100)):
            names = list(paths) if block % 2 == 0 else list(reversed(paths))
            for name in names:
                fn = paths[name]
                for _ in range(100):
                    t = time.perf_counter()
                    fn()
                    lat[name].append((time.perf_counter() - t) * 1000)
    finally:
        server.terminate()
        server.wait(30)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"job database: {args.database} ({api.store.location})")
    print(f"DescribeTrainingJob, {len(lat['in-process'])} sequential calls per path (ms):")
    base = percentile(lat["in-process"], 50)
    for name, values in lat.items():
        p50 = percentile(values, 50)
        extra = "" if name == "in-process" else f"   (+{p50 - base:.2f} over in-process)"
        print(f"  {name:24s} p50 {p50:6.2f}   p99 {percentile(values, 99):6.2f}{extra}")
    p50 = percentile(lat["boto3 over signed HTTP"], 50)
    print(f"  target: boto3 over signed HTTP p50 < {TARGET_P50_MS} ms: {'met' if p50 < TARGET_P50_MS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
