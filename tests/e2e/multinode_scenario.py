"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and two worker
nodes of type ml.m5.xlarge), driven through raymaker's SDK as a user would. Run by
tests/e2e/test_multinode.py in its own process (the test session's own Ray stays untouched); prints one
JSON line of what it saw, which the test checks.

Environment: the S3 test server's AWS_* settings, RAYMAKER_HOME, and BUCKET (an existing bucket).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time

import numpy as np

from raymaker.cluster.local import free_port

NODE_TYPE = "ml.m5.xlarge"
PROXY_START_DELAY_S = 18
DEFINITION = f"""
cluster_name: multinode-test
provider: {{type: local, head_ip: 127.0.0.1, worker_ips: []}}
available_node_types:
  {NODE_TYPE}: {{resources: {{CPU: 1, "{NODE_TYPE}": 1}}, node_config: {{}}, min_workers: 0, max_workers: 2}}
metadata: {{raymaker: {{instance_types: {{{NODE_TYPE}: {{price_per_hour: 0.23}}}}}}}}
"""


def instance_nodes(before: set[str], app: str | None = None) -> dict[str, str]:
    """Actor id -> node id of the training instances started since ``before``, or with ``app`` of that
    Serve application's replicas (not the runtime ingress's, which needs no node type)."""
    import ray

    out = {}
    for actor_id, a in ray._private.state.actors().items():
        name = str(a.get("ActorClassName"))
        if actor_id in before:
            continue
        if (name == "InstanceActor") if app is None else name.startswith(f"ServeReplica:{app}:"):
            out[actor_id] = (a.get("Address") or {}).get("NodeID", "")
    return out


def actors_now() -> set[str]:
    import ray

    return set(ray._private.state.actors())


def open_files(path: str) -> list[str]:
    """This process's open file descriptors that point at ``path`` (or its WAL and shared memory)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(path):
            out.append(target)
    return out


def driver_on_worker_node(bucket: str, hp: dict) -> dict:
    """A driver script as a user on a worker node runs it: fit, describe, a bad request. Runs as a Ray
    task pinned to that node; reports whether it ever opened the job database."""
    import ray

    from raymaker import Estimator, Session, TrainingInput
    from raymaker.engine.store import default_db_path
    from raymaker.protocol.errors import ResourceNotFound

    out: dict = {"node": ray.get_runtime_context().get_node_id()}
    session = Session()
    est = Estimator("xgboost", hyperparameters=hp, instance_type=NODE_TYPE, output_path=f"s3://{bucket}/remote",
                    session=session)
    est.fit(TrainingInput(f"s3://{bucket}/train/", content_type="text/csv"), logs=False)
    out["job"] = est.latest_training_job.name
    out["status"] = est.latest_training_job.describe()["TrainingJobStatus"]
    try:
        session.call("DescribeTrainingJob", {"TrainingJobName": "no-such-job-anywhere"})
    except ResourceNotFound as e:  # the service's error, as the caller would get it in-process
        out["missing_error"] = f"{type(e).__name__}: {e}"
    out["remote"] = session.backend.is_remote()
    out["opened_store"] = session.backend._store is not None
    out["open_db_files"] = open_files(str(default_db_path()))
    return out


def slow_first_start(binary: str, scratch: str, delay_s: int) -> str:
    """A program that runs ``binary`` with its arguments, after ``delay_s`` seconds the first time."""
    path = os.path.join(scratch, "slow-haproxy")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nif mkdir "{scratch}/started" 2>/dev/null; then sleep {delay_s}; fi\n'
                f'exec "{binary}" "$@"\n')
    os.chmod(path, 0o755)
    return path


def main() -> None:
    from ray.cluster_utils import Cluster

    from raymaker.cluster.haproxy import BINARY_ENV
    from raymaker.cluster.runtime import ray_env_for_serving

    # Every Ray process of this cluster must start with raymaker's settings.
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.1"
    os.environ["RAYMAKER_RUNTIME_URL"] = f"http://127.0.0.1:{free_port()}"
    # All nodes share this machine's address: one ingress, on the head (a real cluster's nodes each
    # have their own, and Serve's default runs one on every node).
    os.environ["RAYMAKER_SERVE_PROXY_LOCATION"] = "HeadOnly"
    ray_env_for_serving(os.environ)
    scratch = tempfile.mkdtemp(prefix="rm-multinode-")
    # Serve's proxy slow to start, as on a busy machine: HAProxy's first start waits longer than the
    # 15 s (three readiness checks of 5 s) after which Serve's default kills the proxy, as it did
    # in a CI run where this scenario's endpoint then Failed.
    os.environ[BINARY_ENV] = slow_first_start(os.environ[BINARY_ENV], scratch, PROXY_START_DELAY_S)
    definition = os.path.join(scratch, "cluster.yaml")
    with open(definition, "w") as f:
        f.write(DEFINITION)
    os.environ["RAYMAKER_CLUSTER_CONFIG"] = definition

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1, resources={NODE_TYPE: 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    seen: dict = {
        "proxy_start_delay_s": PROXY_START_DELAY_S,
        "head": cluster.head_node.node_id,
        "workers": sorted(w.node_id for w in workers),
    }
    try:
        run(seen)
    except BaseException as e:  # noqa: BLE001 - reported to the test
        seen["error"] = repr(e)
        raise
    finally:
        print(json.dumps(seen), flush=True)
        import ray

        ray.shutdown()
        cluster.shutdown()


def run(seen: dict) -> None:
    import boto3
    from sklearn.datasets import load_breast_cancer

    from raymaker import Estimator, Session, TrainingInput
    from raymaker.protocol.errors import ValidationError
    from raymaker.sdk.serializers import CSVSerializer
    from raymaker.sdk.tuner import HyperparameterTuner, IntegerParameter

    bucket = os.environ["BUCKET"]
    s3 = boto3.client("s3")
    x, y = load_breast_cancer(return_X_y=True)
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.7g")
    for part in (0, 1):  # two objects: ShardedByS3Key gives each instance one
        s3.put_object(Bucket=bucket, Key=f"train/part-{part}.csv", Body=buf.getvalue().encode())
    train = TrainingInput(f"s3://{bucket}/train/", content_type="text/csv")
    session = Session()
    hp = {"objective": "binary:logistic", "num_round": 10, "max_depth": 3}

    # A local folder as output cannot work across nodes: refused at fit(), naming the fix.
    try:
        Estimator("xgboost", hyperparameters=hp, instance_type=NODE_TYPE, session=session).fit(train, logs=False)
        seen["file_output_error"] = None
    except ValidationError as e:
        seen["file_output_error"] = str(e)

    # A 2-instance job: one instance per ml.m5.xlarge node.
    before = actors_now()
    t0 = time.monotonic()
    est = Estimator(
        "xgboost",
        hyperparameters=hp,
        instance_type=NODE_TYPE,
        instance_count=2,
        output_path=f"s3://{bucket}/output",
        session=session,
    )
    est.fit(train, logs=False)
    seen["two_instance_s"] = round(time.monotonic() - t0, 1)
    desc = est.latest_training_job.describe()
    seen["two_instance_status"] = desc["TrainingJobStatus"]
    seen["two_instance_reason"] = desc.get("FailureReason")
    seen["two_instance_nodes"] = sorted(set(instance_nodes(before).values()))

    # One instance trains; the endpoint's two replicas (one per node) load its model from S3.
    before = actors_now()
    one = Estimator("xgboost", hyperparameters=hp, instance_type=NODE_TYPE, output_path=f"s3://{bucket}/output",
                    session=session)
    one.fit(train, logs=False)
    seen["trained_on"] = sorted(set(instance_nodes(before).values()))
    before = actors_now()
    t0 = time.monotonic()
    predictor = one.deploy(2, NODE_TYPE, endpoint_name="multinode-ep", serializer=CSVSerializer())
    seen["deploy_s"] = round(time.monotonic() - t0, 1)
    try:
        seen["replica_nodes"] = sorted(set(instance_nodes(before, app="ep.multinode-ep").values()))
        answer = predictor.predict(x[:3])
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        seen["predictions"] = len(text.split())  # one score per row
    finally:
        predictor.delete_endpoint()

    # Two trials at once: their training jobs run on both nodes; trials reach the database only
    # through the job service.
    before = actors_now()
    tuner = HyperparameterTuner(
        Estimator("xgboost", hyperparameters=hp, instance_type=NODE_TYPE, output_path=f"s3://{bucket}/tuning",
                  session=session),
        "train:logloss",
        {"max_depth": IntegerParameter(2, 5)},
        objective_type="Minimize",
        strategy="Random",
        max_jobs=2,
        max_parallel_jobs=2,
        random_seed=1,
    )
    tuner.fit({"train": train}, wait=True)
    desc = tuner.describe()
    seen["tuning_status"] = desc["HyperParameterTuningJobStatus"]
    seen["tuning_completed"] = desc["TrainingJobStatusCounters"]["Completed"]
    seen["trial_nodes"] = sorted(set(instance_nodes(before).values()))

    # A driver on a worker node: its calls go to the job service on the head, which alone opens the
    # job database; its job is in the records the head's driver reads.
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.get(
        ray.remote(num_cpus=0)(driver_on_worker_node)
        .options(scheduling_strategy=NodeAffinitySchedulingStrategy(seen["workers"][0], soft=False))
        .remote(bucket, hp)
    )
    seen["worker_driver"] = remote
    seen["worker_driver_job_here"] = session.call("DescribeTrainingJob", {"TrainingJobName": remote["job"]})[
        "TrainingJobStatus"
    ]
    seen["head_driver_remote"] = session.backend.is_remote()


if __name__ == "__main__":
    sys.exit(main())
