"""Ray's own autoscaler on its fake multi-node provider, driven through raymaker as a user would
(ray-2.60-notes section 9 has the recipe: ``ray.cluster_utils.AutoscalingCluster`` is broken in the
wheel and runs ``ray stop --force``). A head with no ml.m5.xlarge node; the autoscaler may start two.

Run by tests/e2e/test_autoscaling.py in its own process; prints one JSON line of what it saw.
Environment: the S3 test server's AWS_* settings, RAYMAKER_HOME, BUCKET.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from raymaker.cluster.local import free_port

NODE_TYPE = "ml.m5.xlarge"
IDLE_TIMEOUT_MIN = 0.1


def config(gcs_port: int) -> dict:
    """The cluster definition: Ray's autoscaling config and raymaker's, one file."""
    return {
        "cluster_name": "raymaker-autoscaling-test",
        "max_workers": 2,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs_port}",
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            NODE_TYPE: {
                "resources": {"CPU": 1, NODE_TYPE: 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
        "docker": {},
        "auth": {"ssh_user": "ubuntu"},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "metadata": {"raymaker": {"instance_types": {NODE_TYPE: {"price_per_hour": 0.23}}}},
    }


def typed_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(NODE_TYPE))


def wait_nodes(want, timeout: float) -> tuple[int, float]:
    start = time.monotonic()
    count = typed_nodes()
    while time.monotonic() - start < timeout and not want(count):
        time.sleep(0.5)
        count = typed_nodes()
    return count, round(time.monotonic() - start, 1)


def main() -> None:
    from raymaker.cluster.runtime import ray_env_for_serving

    work = tempfile.mkdtemp(prefix="rm-autoscale-")
    port = free_port()
    definition = os.path.join(work, "cluster.json")  # JSON is YAML: raymaker reads the same file
    with open(definition, "w") as f:
        json.dump(config(port), f)
    env = dict(os.environ)
    env.update(
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1",
        RAYMAKER_RUNTIME_URL=f"http://127.0.0.1:{free_port()}",
        RAYMAKER_CLUSTER_CONFIG=definition,
        # All nodes share this machine's address: one ingress, on the head (a real cluster's nodes each
        # have their own, and Serve's default runs one on every node).
        RAYMAKER_SERVE_PROXY_LOCATION="HeadOnly",
    )
    ray_env_for_serving(env)
    head = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
            f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--include-dashboard=false",
            f"--autoscaling-config={definition}", f"--temp-dir={work}/ray",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: ended by that group, never by `ray stop`
    )
    os.environ.update({k: env[k] for k in ("RAYMAKER_RUNTIME_URL", "RAYMAKER_CLUSTER_CONFIG")})
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's token authentication stays on
    seen: dict = {}
    try:
        import ray

        deadline = time.monotonic() + 60
        while True:  # the head takes a few seconds to accept drivers
            try:
                ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        run(seen)
    except BaseException as e:  # noqa: BLE001 - reported to the test
        seen["error"] = repr(e)
        raise
    finally:
        print(json.dumps(seen), flush=True)
        try:
            import ray

            ray.shutdown()
        finally:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
            # The fake provider's node processes are the head's children's; sweep its group.
            subprocess.run(["pkill", "-f", work], check=False)


def run(seen: dict) -> None:
    import boto3
    from sklearn.datasets import load_breast_cancer

    from raymaker import Estimator, Session, TrainingInput

    bucket = os.environ["BUCKET"]
    x, y = load_breast_cancer(return_X_y=True)
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.7g")
    boto3.client("s3").put_object(Bucket=bucket, Key="train/part-0.csv", Body=buf.getvalue().encode())
    session = Session()
    seen["nodes_at_start"] = typed_nodes()

    # A training job of a type no running node has: the autoscaler starts one, the job completes.
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 10},
        instance_type=NODE_TYPE,
        output_path=f"s3://{bucket}/output",
        session=session,
    )
    t0 = time.monotonic()
    est.fit(TrainingInput(f"s3://{bucket}/train/", content_type="text/csv"), wait=False)
    messages: list[str] = []
    while True:
        desc = est.latest_training_job.describe()
        for t in desc.get("SecondaryStatusTransitions") or []:
            if t.get("StatusMessage") and t["StatusMessage"] not in messages:
                messages.append(t["StatusMessage"])
        if desc["TrainingJobStatus"] not in ("InProgress", "Stopping"):
            break
        seen["nodes_during_job"] = max(seen.get("nodes_during_job", 0), typed_nodes())
        time.sleep(0.5)
    seen["job_status"] = desc["TrainingJobStatus"]
    seen["job_reason"] = desc.get("FailureReason")
    seen["job_s"] = round(time.monotonic() - t0, 1)
    seen["job_messages"] = messages

    # Idle nodes go away after the idle timeout.
    seen["nodes_after_idle"], seen["scale_down_s"] = wait_nodes(lambda n: n == 0, 90)

    # An endpoint autoscaling beyond one node's capacity: each replica is a whole ml.m5.xlarge node.
    predictor = est.deploy(
        1,
        NODE_TYPE,
        endpoint_name="autoscale-nodes",
        min_instance_count=1,
        max_instance_count=2,
        target_inflight_requests=1,
    )
    seen["nodes_with_one_replica"] = typed_nodes()
    url = urlsplit(session.runtime_url)
    row = ",".join(map(str, x[0])).encode()
    stop = threading.Event()

    def load() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        while not stop.is_set():
            conn.request("POST", "/endpoints/autoscale-nodes/invocations", body=row,
                          headers={"Content-Type": "text/csv"})
            conn.getresponse().read()

    threads = [threading.Thread(target=load, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        deadline, count = time.monotonic() + 120, 1
        while time.monotonic() < deadline and count < 2:
            time.sleep(1)
            desc = session.call("DescribeEndpoint", {"EndpointName": "autoscale-nodes"})
            count = desc["ProductionVariants"][0]["CurrentInstanceCount"]
        seen["replicas_under_load"] = count
        seen["nodes_under_load"] = typed_nodes()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=70)
        predictor.delete_endpoint()


if __name__ == "__main__":
    sys.exit(main())
