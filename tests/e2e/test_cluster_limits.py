"""What this cluster can never run is refused when it is asked for, as SageMaker refuses it
(ResourceLimitExceeded), on the local cluster of the test session (2 CPUs, no GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from raymaker import Estimator, Session, TrainingInput
from raymaker.protocol.errors import ResourceLimitExceeded, ValidationError
from raymaker.sdk.model import Model

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def session(ray_session):
    return Session()


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    np.savetxt(d / "part.csv", np.column_stack([(x[:, 0] > 0), x]), delimiter=",", fmt="%.5g")
    return TrainingInput(f"file://{d}/", content_type="text/csv")


def _jobs(session) -> set[str]:
    return {j["TrainingJobName"] for j in session.call("ListTrainingJobs", {})["TrainingJobSummaries"]}


def test_gpu_instance_type_without_a_gpu_fails_at_fit(session, train):
    before = _jobs(session)
    est = Estimator("xgboost", hyperparameters={"num_round": 2}, instance_type="ml.g5.xlarge", session=session)
    with pytest.raises(ResourceLimitExceeded) as info:
        est.fit(train, logs=False)
    message = str(info.value)
    assert "'ml.g5.xlarge for training job usage' is 0 Instances" in message
    assert "needs 1 GPU per instance" in message and "Use a CPU instance type" in message
    assert _jobs(session) == before  # nothing was recorded, nothing left InProgress


def test_more_instances_than_the_cluster_has_cpus_for(session, train):
    est = Estimator(
        "xgboost", hyperparameters={"num_round": 2}, instance_type="ml.m5.xlarge", instance_count=300, session=session
    )
    with pytest.raises(ResourceLimitExceeded, match="too many ml.m5.xlarge instances"):
        est.fit(train, logs=False)


def test_gpu_hist_on_a_cpu_instance_type_is_refused_at_fit(session, train):
    est = Estimator(
        "xgboost", hyperparameters={"num_round": 2, "tree_method": "gpu_hist"}, instance_type="local", session=session
    )
    with pytest.raises(ValidationError, match="tree_method 'gpu_hist' trains on a GPU"):
        est.fit(train, logs=False)


def test_gpu_endpoint_without_a_gpu_fails_at_deploy(session, tmp_path):
    model = Model(f"file://{tmp_path}/model.tar.gz", algorithm="xgboost", name="gpu-model", session=session)
    with pytest.raises(ResourceLimitExceeded, match="'ml.g5.xlarge for endpoint usage' is 0 Instances"):
        model.deploy(1, "ml.g5.xlarge", endpoint_name="gpu-endpoint")
    endpoints = session.call("ListEndpoints", {})["Endpoints"]
    assert "gpu-endpoint" not in {e["EndpointName"] for e in endpoints}
