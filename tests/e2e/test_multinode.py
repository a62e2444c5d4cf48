"""raymaker on a real multi-node Ray cluster (head plus two ml.m5.xlarge worker nodes, on this machine):
nothing local assumed. The scenario runs in its own process with its own Ray (multinode_scenario.py,
started as the session begins); this test checks what it saw."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def seen(background_scenarios) -> dict:
    out = background_scenarios["test_multinode.py"].result()
    print({k: v for k, v in out.items() if k != "stderr"})  # the figures, with -s
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
    assert seen["replica_nodes"] == seen["workers"], seen
    assert set(seen["replica_nodes"]) - set(seen["trained_on"])
    assert seen.get("predictions") == 3, seen["stderr"]


def test_an_endpoint_deploys_while_serves_proxy_is_slow_to_start(seen):
    # The first endpoint starts Serve: its proxy's HAProxy waited proxy_start_delay_s before starting,
    # longer than Serve's default patience; the endpoint still came up and answered.
    assert seen["deploy_s"] >= seen["proxy_start_delay_s"], seen
    assert seen.get("predictions") == 3, seen["stderr"]


def test_tuning_trials_spread_over_nodes(seen):
    assert seen["tuning_status"] == "Completed" and seen["tuning_completed"] == 2, seen["stderr"]
    assert seen["trial_nodes"] == seen["workers"]


def test_a_driver_on_a_worker_node_reaches_the_database_only_through_the_job_service(seen):
    remote = seen["worker_driver"]
    assert remote["node"] in seen["workers"]
    assert remote["remote"] is True and seen["head_driver_remote"] is False
    assert remote["status"] == "Completed", seen["stderr"]
    assert seen["worker_driver_job_here"] == "Completed"  # the same records, seen from the head
    assert remote["opened_store"] is False and remote["open_db_files"] == []
    assert remote["missing_error"].startswith("ResourceNotFound: ") and "no-such-job-anywhere" in remote[
        "missing_error"
    ], remote
