"""raymaker on a real multi-node Ray cluster (head plus two ml.m5.xlarge worker nodes, on this machine):
nothing local assumed. The scenario runs in its own process with its own Ray (multinode_scenario.py);
this test checks what it saw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCENARIO = Path(__file__).with_name("multinode_scenario.py")


@pytest.fixture(scope="module")
def seen(s3_server, tmp_path_factory) -> dict:
    env = {
        **os.environ,
        "BUCKET": s3_server.new_bucket(),
        "RAYMAKER_HOME": str(tmp_path_factory.mktemp("multinode-home")),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    # Nothing of the test session's own Ray (its address, its Serve ports) may leak into this one.
    for key in (
        "RAY_ADDRESS",
        "RAYMAKER_CLUSTER_CONFIG",
        "RAYMAKER_DEFAULT_BUCKET",
        "RAYMAKER_RUNTIME_URL",
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_HAPROXY_METRICS_PORT",
    ):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, str(SCENARIO)], env=env, capture_output=True, text=True, timeout=420
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the scenario printed nothing (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    out = json.loads(lines[-1])
    out["stderr"] = proc.stderr[-4000:]
    return out


def test_the_scenario_ran_to_its_end(seen):
    assert seen.get("error") is None, seen["stderr"]


def test_a_local_output_folder_is_refused_on_several_nodes(seen):
    message = seen["file_output_error"]
    assert message is not None, seen["stderr"]
    assert "OutputDataConfig.S3OutputPath is file://" in message and "a folder on one machine" in message
    assert "RAYMAKER_DEFAULT_BUCKET" in message


def test_two_instance_job_runs_one_instance_on_each_node(seen):
    assert seen.get("two_instance_status") == "Completed", (seen.get("two_instance_reason"), seen["stderr"])
    assert seen["two_instance_nodes"] == seen["workers"]  # both ml.m5.xlarge nodes, never the head


def test_endpoint_replicas_load_the_model_on_other_nodes(seen):
    assert len(seen["trained_on"]) == 1 and seen["trained_on"][0] in seen["workers"]
    # One replica per ml.m5.xlarge node: one of them is a node the model was not trained on.
    assert seen["replica_nodes"] == seen["workers"], seen["stderr"]
    assert set(seen["replica_nodes"]) - set(seen["trained_on"])
    assert seen.get("predictions") == 3, seen["stderr"]


def test_tuning_trials_spread_over_nodes(seen):
    assert seen["tuning_status"] == "Completed" and seen["tuning_completed"] == 2, seen["stderr"]
    assert seen["trial_nodes"] == seen["workers"]
