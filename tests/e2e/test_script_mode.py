"""Script mode end to end: scripts written the way SageMaker's own examples write them, run through the
SDK's framework estimators on real Ray, with the moto S3 server and real HTTP. Each test is what a user
of SageMaker's PyTorch / scikit-learn estimators relies on."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import textwrap
import time
import zipfile

import boto3
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from raymaker import Session, TrainingInput
from raymaker.pytorch import PyTorch
from raymaker.sdk import UnexpectedStatusException
from raymaker.sdk.deserializers import JSONDeserializer
from raymaker.sdk.serializers import CSVSerializer
from raymaker.sdk.tuner import HyperparameterTuner, IntegerParameter
from raymaker.sklearn import SKLearn

pytestmark = pytest.mark.e2e

SKLEARN_TRAIN = '''
import argparse
import os

import joblib
import numpy as np
from sklearn.ensemble import RandomForestClassifier


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-estimators", type=int, default=10)
    parser.add_argument("--max-depth", type=int, default=3)
    parser.add_argument("--model-dir", type=str, default=os.environ["SM_MODEL_DIR"])
    parser.add_argument("--train", type=str, default=os.environ["SM_CHANNEL_TRAIN"])
    args = parser.parse_args()
    data = np.loadtxt(os.path.join(args.train, "train.csv"), delimiter=",")
    y, x = data[:, 0], data[:, 1:]
    clf = RandomForestClassifier(n_estimators=args.n_estimators, max_depth=args.max_depth, random_state=0)
    clf.fit(x, y)
    print(f"trees={args.n_estimators}")
    print(f"train_accuracy={clf.score(x, y):.4f}")
    joblib.dump(clf, os.path.join(args.model_dir, "model.joblib"))
'''


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return x.astype(np.float32), y.astype(np.float32)


@pytest.fixture(scope="module")
def bucket(s3_server, cancer):
    x, y = cancer
    name = s3_server.new_bucket()
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.6g")
    s3_server.client.put_object(Bucket=name, Key="train/train.csv", Body=buf.getvalue().encode())
    features = io.StringIO()
    np.savetxt(features, x[:20], delimiter=",", fmt="%.6g")
    s3_server.client.put_object(Bucket=name, Key="batch/part-0.csv", Body=features.getvalue().encode())
    return name


@pytest.fixture
def session(ray_session):
    return Session()


def source(tmp_path, name: str, files: dict[str, str]) -> str:
    folder = tmp_path / name
    folder.mkdir()
    for path, text in files.items():
        (folder / path).write_text(textwrap.dedent(text))
    return str(folder)


def logs(session, job: str) -> list[str]:
    return [e["line"] for e in session.backend.store.logs(job)]


def wait_for(predicate, timeout: float = 90.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def test_sklearn_fit_deploy_invoke_and_transform(session, s3_server, bucket, cancer, tmp_path):
    x, y = cancer
    est = SKLearn(
        entry_point="train.py",
        source_dir=source(tmp_path, "sk", {"train.py": SKLEARN_TRAIN}),
        framework_version="1.2-1",
        instance_type="local",
        hyperparameters={"n-estimators": 20, "max-depth": 4},
        metric_definitions=[{"Name": "train:accuracy", "Regex": r"train_accuracy=([0-9.]+)"}],
        output_path=f"s3://{bucket}/output",
        session=session,
    )
    est.fit({"train": f"s3://{bucket}/train/"}, logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    lines = logs(session, desc["TrainingJobName"])
    assert "trees=20" in lines  # --n-estimators 20 reached argparse as the toolkit renders it
    final = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert final["train:accuracy"] > 0.9
    assert desc["ModelArtifacts"]["S3ModelArtifacts"].endswith(f"/{desc['TrainingJobName']}/output/model.tar.gz")

    predictor = est.deploy(1, "local", endpoint_name="sk-script", serializer=CSVSerializer(),
                           deserializer=JSONDeserializer())
    try:
        expected = [float(v) for v in y[:5]]
        assert predictor.predict(x[:5]) == expected  # the sklearn container's defaults: CSV in, JSON out
        runtime = boto3.client("sagemaker-runtime", endpoint_url=session.runtime_url, region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")
        body = "\n".join(",".join(f"{v:.6g}" for v in row) for row in x[:3])
        r = runtime.invoke_endpoint(EndpointName="sk-script", ContentType="text/csv", Body=body)
        assert json.loads(r["Body"].read()) == expected[:3]
        bad = runtime.invoke_endpoint  # a request the model cannot score: the script's error, not a hang
        with pytest.raises(runtime.exceptions.ModelError) as info:
            bad(EndpointName="sk-script", ContentType="text/csv", Body="1,2,3")
        assert "features" in str(info.value)
    finally:
        predictor.delete_endpoint()

    transformer = est.transformer(1, "local", output_path=f"s3://{bucket}/batch-out", accept="application/json")
    transformer.transform(f"s3://{bucket}/batch/", content_type="text/csv", split_type="Line", wait=True)
    out = s3_server.client.get_object(Bucket=bucket, Key="batch-out/part-0.csv.out")["Body"].read().decode()
    assert len(json.loads(out)) == 20 or len(out.split()) == 20


TORCH_DDP = '''
import json
import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print(f"rank={rank} world={world} host={os.environ['SM_CURRENT_HOST']} sum={t.item():.0f}")
with open(os.path.join(os.environ["SM_MODEL_DIR"], f"rank-{rank}.json"), "w") as f:
    json.dump({"sum": t.item(), "hosts": json.loads(os.environ["SM_HOSTS"])}, f)
dist.destroy_process_group()
'''


def test_pytorch_two_instances_with_torch_distributed(session, s3_server, bucket, tmp_path):
    est = PyTorch(
        entry_point="ddp.py",
        source_dir=source(tmp_path, "ddp", {"ddp.py": TORCH_DDP}),
        framework_version="2.3.0",
        py_version="py311",
        instance_type="local",
        instance_count=2,
        distribution={"torch_distributed": {"enabled": True}},
        output_path=f"s3://{bucket}/output",
        session=session,
    )
    est.fit({"train": f"s3://{bucket}/train/"}, logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    lines = logs(session, desc["TrainingJobName"])
    assert any("rank=0 world=2 host=algo-1 sum=3" in ln for ln in lines), lines
    assert any("rank=1 world=2 host=algo-2 sum=3" in ln for ln in lines), lines
    # Both hosts' model/ are merged into the one model.tar.gz, as SageMaker does.
    import tarfile

    key = desc["ModelArtifacts"]["S3ModelArtifacts"].split(f"s3://{bucket}/", 1)[1]
    body = s3_server.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert sorted(tar.getnames()) == ["rank-0.json", "rank-1.json"]


PIPE_READER = '''
import json
import os

config = json.load(open(os.path.join(os.environ["SM_INPUT_CONFIG_DIR"], "inputdataconfig.json")))
assert config["train"]["TrainingInputMode"] == "Pipe", config
fifo = os.path.join(os.environ["SM_INPUT_DIR"], "data", "train_0")
with open(fifo, "rb") as f:
    data = f.read()
rows = data.count(b"\\n")
print(f"pipe_bytes={len(data)} rows={rows}")
'''


def test_a_script_reads_a_pipe_fifo(session, s3_server, bucket, tmp_path):
    size = s3_server.client.head_object(Bucket=bucket, Key="train/train.csv")["ContentLength"]
    est = PyTorch(
        entry_point="pipe.py",
        source_dir=source(tmp_path, "pipe", {"pipe.py": PIPE_READER}),
        framework_version="2.3.0",
        py_version="py311",
        instance_type="local",
        input_mode="Pipe",
        output_path=f"s3://{bucket}/output",
        session=session,
    )
    est.fit({"train": TrainingInput(f"s3://{bucket}/train/")}, logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert f"pipe_bytes={size} rows=569" in logs(session, desc["TrainingJobName"])


def _wheel(folder, name: str, version: str, module_text: str) -> str:
    """A minimal pure-Python wheel, so requirements.txt installs without reaching an index."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": module_text,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: raymaker-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    path = os.path.join(folder, f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
        z.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return path


def test_requirements_are_installed_once(session, bucket, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(str(wheels), "raymaker_tiny_dep", "0.1", "ANSWER = 42\n")
    files = {
        "requirements.txt": f"--no-index\n--find-links {wheels}\nraymaker_tiny_dep==0.1\n",
        "train.py": "import raymaker_tiny_dep\nprint(f'answer={raymaker_tiny_dep.ANSWER}')\n",
    }
    src = source(tmp_path, "req", files)
    durations = []
    for _ in range(2):
        est = SKLearn(entry_point="train.py", source_dir=src, framework_version="1.2-1", instance_type="local",
                      output_path=f"s3://{bucket}/output", session=session)
        est.fit(logs=False)
        desc = est.latest_training_job.describe()
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        lines = logs(session, desc["TrainingJobName"])
        assert "answer=42" in lines
        durations.append(lines)
    # The second job found the packages installed for the same requirements.txt.
    assert not any("Installing collected packages" in ln for ln in durations[1]), durations[1]


def test_metric_definitions_feed_a_tuning_job(session, bucket, tmp_path):
    est = SKLearn(
        entry_point="train.py",
        source_dir=source(tmp_path, "tune", {"train.py": SKLEARN_TRAIN}),
        framework_version="1.2-1",
        instance_type="local",
        metric_definitions=[{"Name": "train:accuracy", "Regex": r"train_accuracy=([0-9.]+)"}],
        output_path=f"s3://{bucket}/output",
        session=session,
    )
    tuner = HyperparameterTuner(
        est,
        "train:accuracy",
        {"max-depth": IntegerParameter(1, 6)},
        metric_definitions=[{"Name": "train:accuracy", "Regex": r"train_accuracy=([0-9.]+)"}],
        strategy="Random",
        max_jobs=2,
        max_parallel_jobs=1,
        random_seed=3,
    )
    tuner.fit({"train": f"s3://{bucket}/train/"}, wait=True)
    desc = tuner.describe()
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    assert desc["TrainingJobStatusCounters"]["Completed"] == 2
    best = desc["BestTrainingJob"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["MetricName"] == "train:accuracy"
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] > 0.85


FAILING = '''
import os
with open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w") as f:
    f.write("column 3 holds text; expected numbers only")
raise SystemExit(2)
'''


def test_a_failure_file_becomes_the_failure_reason(session, bucket, tmp_path):
    est = SKLearn(entry_point="fail.py", source_dir=source(tmp_path, "fail", {"fail.py": FAILING}),
                  framework_version="1.2-1", instance_type="local", output_path=f"s3://{bucket}/output",
                  session=session)
    with pytest.raises(UnexpectedStatusException):
        est.fit(logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Failed"
    assert desc["FailureReason"] == "column 3 holds text; expected numbers only"


CHECKPOINTED = '''
import json
import os
import time

config = json.load(open(os.path.join(os.environ["SM_INPUT_CONFIG_DIR"], "checkpointconfig.json")))
folder = config["LocalPath"]
path = os.path.join(folder, "state.json")
start = json.load(open(path))["epoch"] + 1 if os.path.exists(path) else 0
print(f"starting at epoch {start}", flush=True)
for epoch in range(start, 12):
    time.sleep(0.4)
    with open(path + ".tmp", "w") as f:
        json.dump({"epoch": epoch}, f)
    os.replace(path + ".tmp", path)
    print(f"epoch={epoch}", flush=True)
'''


def test_checkpoints_sync_and_a_killed_instance_resumes(session, s3_server, bucket, tmp_path):
    est = PyTorch(entry_point="ckpt.py", source_dir=source(tmp_path, "ckpt", {"ckpt.py": CHECKPOINTED}),
                  framework_version="2.3.0", py_version="py311", instance_type="local",
                  checkpoint_s3_uri=f"s3://{bucket}/checkpoints/script", output_path=f"s3://{bucket}/output",
                  session=session)
    est.fit(wait=False)
    job = est.latest_training_job

    def pid_once_synced():
        lines = logs(session, job.name)
        pids = [int(ln.split("(pid ")[1].rstrip(")")) for ln in lines if "raymaker: running ckpt.py" in ln]
        listed = s3_server.client.list_objects_v2(Bucket=bucket, Prefix="checkpoints/script/").get("Contents")
        return pids[-1] if pids and listed and any("epoch=3" in ln for ln in lines) else None

    os.kill(wait_for(pid_once_synced), signal.SIGKILL)
    job.wait(logs=False)
    desc = job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    lines = logs(session, job.name)
    starts = [ln for ln in lines if ln.startswith("starting at epoch")]
    assert starts[0] == "starting at epoch 0" and len(starts) == 2, starts
    assert int(starts[1].split()[-1]) >= 2  # resumed from the synced checkpoint, not from scratch
    assert "epoch=11" in lines


SIGTERM_AWARE = '''
import signal
import sys
import time


def on_term(signum, frame):
    print("got SIGTERM, saving and leaving", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, on_term)
print("training forever", flush=True)
while True:
    time.sleep(0.1)
'''


def test_stop_sends_sigterm_to_the_script(session, bucket, tmp_path):
    est = SKLearn(entry_point="forever.py", source_dir=source(tmp_path, "stop", {"forever.py": SIGTERM_AWARE}),
                  framework_version="1.2-1", instance_type="local", output_path=f"s3://{bucket}/output",
                  session=session)
    est.fit(wait=False)
    job = est.latest_training_job
    wait_for(lambda: "training forever" in logs(session, job.name))
    t0 = time.monotonic()
    job.stop()
    assert job.wait(logs=False)["TrainingJobStatus"] == "Stopped"
    assert time.monotonic() - t0 < 30  # the script left on SIGTERM; no 120 s SIGKILL wait
    assert "got SIGTERM, saving and leaving" in logs(session, job.name)


def test_a_missing_source_archive_is_refused_at_create(session, bucket):
    """A boto3-shaped request (no SDK checks) naming code that is not there: refused before any work,
    and no record is kept."""
    from raymaker.protocol.errors import ResourceNotFound, ValidationError
    from raymaker.protocol.frameworks import FRAMEWORKS

    request = {
        "TrainingJobName": "script-without-source",
        "RoleArn": "arn:aws:iam::000000000000:role/raymaker",
        "AlgorithmSpecification": {"TrainingImage": FRAMEWORKS["sklearn"].image_uri("1.2-1"),
                                   "TrainingInputMode": "File"},
        "HyperParameters": {"sagemaker_program": '"train.py"',
                            "sagemaker_submit_directory": f'"s3://{bucket}/nothing/sourcedir.tar.gz"'},
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }
    with pytest.raises(ValidationError, match="sourcedir.tar.gz"):
        session.call("CreateTrainingJob", request)
    with pytest.raises(ResourceNotFound):
        session.call("DescribeTrainingJob", {"TrainingJobName": "script-without-source"})


def test_max_runtime_sends_sigterm_to_the_script(session, bucket, tmp_path):
    est = SKLearn(entry_point="forever.py", source_dir=source(tmp_path, "maxrun", {"forever.py": SIGTERM_AWARE}),
                  framework_version="1.2-1", instance_type="local", max_run=4, output_path=f"s3://{bucket}/output",
                  session=session)
    est.fit(wait=False)
    job = est.latest_training_job
    assert job.wait(logs=False)["SecondaryStatus"] == "MaxRuntimeExceeded"
    desc = job.describe()
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert "got SIGTERM, saving and leaving" in logs(session, job.name)
