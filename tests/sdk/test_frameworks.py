"""Script mode in the SDK: ``PyTorch``, ``SKLearn``, ``XGBoost``, the generic ``Estimator`` with an
``entry_point``, and the framework models, against a recording backend. The exact requests (what the
SageMaker SDK v2 sends: JSON-encoded hyperparameters, ``sagemaker_program`` and the other reserved
keys, the framework images, the model's Environment), the uploaded ``sourcedir.tar.gz`` (on the real
S3 test server), every error raised before any work, attach round trips and the tuner's
TrainingJobDefinition."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

import raymaker
from raymaker.engine.validation import validate_request
from raymaker.protocol.errors import ValidationError
from raymaker.pytorch import PyTorch, PyTorchModel, PyTorchPredictor
from raymaker.sdk import Estimator, Session, TrainingInput
from raymaker.sdk.deserializers import CSVDeserializer, NumpyDeserializer
from raymaker.sdk.serializers import LibSVMSerializer, NumpySerializer
from raymaker.sdk.tuner import (
    CategoricalParameter,
    ContinuousParameter,
    HyperparameterTuner,
    IntegerParameter,
)
from raymaker.sklearn import SKLearn, SKLearnModel, SKLearnPredictor
from raymaker.xgboost import XGBoost, XGBoostModel, XGBoostPredictor
from tests.conftest import S3Server
from tests.sdk.helpers import (
    T0,
    RecordingBackend,
    arn,
    created,
    endpoint_description,
    transform_job_description,
)

ROLE = "arn:aws:iam::000000000000:role/raymaker"
PT_TRAIN = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311"
PT_INFER = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.3.0-cpu-py311"
SK_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
METRICS = [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}]
JOB = "pt-job-1"


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RAYMAKER_REGION", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A source dir as SageMaker's examples lay it out, with a package beside the entry point."""
    root = tmp_path / "src"
    (root / "utils").mkdir(parents=True)
    (root / "train.py").write_text("print('training')\n")
    (root / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
    (root / "requirements.txt").write_text("joblib\n")
    (root / "utils" / "helper.py").write_text("X = 1\n")
    return root


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    dep = tmp_path / "deps" / "mylib"
    dep.mkdir(parents=True)
    (dep / "__init__.py").write_text("VALUE = 2\n")
    return dep


def out(tmp_path: Path) -> str:
    return (tmp_path / "out").as_uri()


def recorder() -> RecordingBackend:
    return RecordingBackend(
        CreateTrainingJob=created("TrainingJob", "TrainingJobName"),
        CreateModel=created("Model", "ModelName"),
        DescribeModel=ValidationError("Could not find model"),
    )


def pytorch(backend: RecordingBackend, src: Path, tmp_path: Path, **kwargs: Any) -> PyTorch:
    options: dict[str, Any] = {
        "entry_point": "train.py",
        "source_dir": str(src),
        "framework_version": "2.3.0",
        "py_version": "py311",
        "instance_type": "ml.m5.xlarge",
        "hyperparameters": {
            "epochs": 3,
            "lr": 0.01,
            "optimizer": "adam",
            "layers": [64, 32],
            "verbose": True,
        },
        "output_path": out(tmp_path),
        "session": Session(backend=backend),
    }
    options.update(kwargs)
    return PyTorch(**options)


def archive_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted(tar.getnames())


def local_archive(uri: str) -> list[str]:
    assert uri.startswith("file://")
    return archive_names(Path(uri[len("file://") :]).read_bytes())


def job_description(request: dict[str, Any], status: str = "Completed") -> dict[str, Any]:
    """DescribeTrainingJob as the engine answers: the CreateTrainingJob request echoed, plus state."""
    desc = copy.deepcopy(request)
    name = request["TrainingJobName"]
    desc.update(
        TrainingJobArn=arn("training-job", name),
        TrainingJobStatus=status,
        SecondaryStatus=status,
        ModelArtifacts={
            "S3ModelArtifacts": f"{request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output/model.tar.gz"
        },
        CreationTime=T0,
        LastModifiedTime=T0,
    )
    return desc


# --- the training request ------------------------------------------------------------------------


def test_pytorch_fit_sends_what_the_sagemaker_sdk_sends(src: Path, lib: Path, tmp_path: Path) -> None:
    backend = recorder()
    est = pytorch(
        backend,
        src,
        tmp_path,
        dependencies=[str(lib)],
        instance_count=2,
        distribution={"torch_distributed": {"enabled": True}},
        metric_definitions=METRICS,
        checkpoint_s3_uri="s3://bucket/ckpt",
        keep_alive_period_in_seconds=600,
        max_run=3600,
        environment={"MY_FLAG": "1"},
        input_mode="FastFile",
    )
    est.fit(
        {"train": "s3://bucket/train/", "test": TrainingInput("s3://bucket/test/")}, wait=False, job_name=JOB
    )
    source = f"{out(tmp_path)}/{JOB}/source/sourcedir.tar.gz"
    assert backend.calls == [
        (
            "CreateTrainingJob",
            {
                "TrainingJobName": JOB,
                "RoleArn": ROLE,
                "AlgorithmSpecification": {
                    "TrainingInputMode": "FastFile",
                    "TrainingImage": PT_TRAIN,
                    "MetricDefinitions": METRICS,
                    "EnableSageMakerMetricsTimeSeries": True,
                },
                "HyperParameters": {
                    "epochs": "3",
                    "lr": "0.01",
                    "optimizer": '"adam"',
                    "layers": "[64, 32]",
                    "verbose": "true",
                    "sagemaker_submit_directory": json.dumps(source),
                    "sagemaker_program": '"train.py"',
                    "sagemaker_container_log_level": "20",
                    "sagemaker_job_name": '"pt-job-1"',
                    "sagemaker_region": '"us-east-1"',
                    "sagemaker_torch_distributed_enabled": "true",
                    "sagemaker_instance_type": '"ml.m5.xlarge"',
                },
                "InputDataConfig": [
                    {
                        "ChannelName": "train",
                        "DataSource": {
                            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/train/"}
                        },
                    },
                    {
                        "ChannelName": "test",
                        "DataSource": {
                            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/test/"}
                        },
                    },
                ],
                "OutputDataConfig": {"S3OutputPath": out(tmp_path)},
                "ResourceConfig": {
                    "InstanceType": "ml.m5.xlarge",
                    "InstanceCount": 2,
                    "VolumeSizeInGB": 30,
                    "KeepAlivePeriodInSeconds": 600,
                },
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                "CheckpointConfig": {"S3Uri": "s3://bucket/ckpt"},
                "Environment": {"MY_FLAG": "1"},
            },
        )
    ]
    assert est.uploaded_code is not None and est.uploaded_code.s3_prefix == source
    assert local_archive(source) == [
        "inference.py",
        "mylib",
        "mylib/__init__.py",
        "requirements.txt",
        "train.py",
        "utils",
        "utils/helper.py",
    ]
    # After fit, hyperparameters() holds the code's too, as the SageMaker SDK's does.
    assert est.hyperparameters()["sagemaker_program"] == '"train.py"'


def test_pytorchddp_region_gpu_image_and_default_job_name(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYMAKER_REGION", "eu-west-1")
    backend = recorder()
    est = pytorch(
        backend,
        src,
        tmp_path,
        instance_type="ml.g5.xlarge",
        framework_version="2.3",
        distribution={"pytorchddp": {"enabled": True}},
        hyperparameters=None,
    )
    est.fit(wait=False)
    request = backend.requests("CreateTrainingJob")[0]
    image = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.3.0-gpu-py311"
    assert request["AlgorithmSpecification"]["TrainingImage"] == image
    name = request["TrainingJobName"]
    assert re.fullmatch(r"pytorch-training-\d{4}(-\d{2}){5}-\d{3}", name), name
    assert request["HyperParameters"] == {
        "sagemaker_submit_directory": json.dumps(f"{out(tmp_path)}/{name}/source/sourcedir.tar.gz"),
        "sagemaker_program": '"train.py"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": json.dumps(name),
        "sagemaker_region": '"eu-west-1"',
        "sagemaker_pytorch_ddp_enabled": "true",
        "sagemaker_instance_type": '"ml.g5.xlarge"',
    }
    validate_request("CreateTrainingJob", request)


@pytest.mark.parametrize(
    ("make", "image"),
    [
        (lambda kw: SKLearn("train.py", framework_version="1.2-1", **kw), SK_IMAGE),
        (lambda kw: SKLearn("train.py", "1.2", **kw), SK_IMAGE),
        (lambda kw: XGBoost("train.py", "1.7-1", **kw), XGB_IMAGE),
        (
            lambda kw: XGBoost("train.py", framework_version="1.7", instance_type="ml.p3.2xlarge", **kw),
            XGB_IMAGE,
        ),
    ],
)
def test_sklearn_and_xgboost_framework_mode(make: Any, image: str, src: Path, tmp_path: Path) -> None:
    backend = recorder()
    est = make(
        {
            "source_dir": str(src),
            "hyperparameters": {"n-estimators": 20, "criterion": "gini"},
            "output_path": out(tmp_path),
            "session": Session(backend=backend),
        }
    )
    est.fit("s3://bucket/train/", wait=False, job_name="fw-job")
    request = backend.requests("CreateTrainingJob")[0]
    assert request["AlgorithmSpecification"] == {"TrainingInputMode": "File", "TrainingImage": image}
    hps = request["HyperParameters"]
    assert (hps["n-estimators"], hps["criterion"], hps["sagemaker_program"]) == ("20", '"gini"', '"train.py"')
    assert "sagemaker_torch_distributed_enabled" not in hps and "sagemaker_instance_type" not in hps


def test_an_entry_point_without_source_dir_is_archived_alone(src: Path, lib: Path, tmp_path: Path) -> None:
    backend = recorder()
    est = SKLearn(
        str(src / "train.py"),
        "1.2-1",
        dependencies=[str(lib)],
        output_path=out(tmp_path),
        code_location=(tmp_path / "code").as_uri(),
        session=Session(backend=backend),
    )
    est.fit(wait=False, job_name="sk-job")
    hps = backend.requests("CreateTrainingJob")[0]["HyperParameters"]
    source = f"{(tmp_path / 'code').as_uri()}/sk-job/source/sourcedir.tar.gz"  # code_location wins
    assert (hps["sagemaker_program"], hps["sagemaker_submit_directory"]) == ('"train.py"', json.dumps(source))
    assert local_archive(source) == ["mylib", "mylib/__init__.py", "train.py"]


def test_a_source_archive_in_s3_is_used_as_it_is(tmp_path: Path) -> None:
    backend = recorder()
    est = XGBoost(
        "train.py",
        "1.7-1",
        source_dir="s3://bucket/code/sourcedir.tar.gz",
        output_path=out(tmp_path),
        session=Session(backend=backend),
    )
    est.fit(wait=False, job_name="xgb-script")
    hps = backend.requests("CreateTrainingJob")[0]["HyperParameters"]
    assert hps["sagemaker_submit_directory"] == '"s3://bucket/code/sourcedir.tar.gz"'
    assert not (tmp_path / "out").exists()  # nothing uploaded


def test_the_sourcedir_archive_lands_in_s3(s3_server: S3Server, s3_bucket: str, src: Path, lib: Path) -> None:
    backend = recorder()
    est = PyTorch(
        entry_point="train.py",
        source_dir=str(src),
        dependencies=[str(lib)],
        framework_version="2.3.0",
        py_version="py311",
        output_path=f"s3://{s3_bucket}/output/",
        session=Session(backend=backend),
    )
    est.fit(wait=False, job_name=JOB)
    key = f"output/{JOB}/source/sourcedir.tar.gz"
    hps = backend.requests("CreateTrainingJob")[0]["HyperParameters"]
    assert hps["sagemaker_submit_directory"] == json.dumps(f"s3://{s3_bucket}/{key}")
    body = s3_server.client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert archive_names(body) == [
        "inference.py",
        "mylib",
        "mylib/__init__.py",
        "requirements.txt",
        "train.py",
        "utils",
        "utils/helper.py",
    ]
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.extractfile("utils/helper.py").read() == b"X = 1\n"  # type: ignore[union-attr]

    # code_location puts it elsewhere: <code_location>/<job>/source/sourcedir.tar.gz
    est.code_location = f"s3://{s3_bucket}/code"
    est.fit(wait=False, job_name="pt-job-2")
    assert s3_server.client.head_object(Bucket=s3_bucket, Key="code/pt-job-2/source/sourcedir.tar.gz")


def test_generic_estimator_with_a_framework_image(src: Path, tmp_path: Path) -> None:
    backend = recorder()
    common = {
        "hyperparameters": {"depth": 3, "kind": "a"},
        "output_path": out(tmp_path),
        "session": Session(backend=backend),
    }
    # With a source_dir every value is JSON-encoded (the SDK's Estimator.set_hyperparameters) ...
    Estimator(image_uri=PT_TRAIN, entry_point="train.py", source_dir=str(src), **common).fit(
        wait=False, job_name="generic-1"
    )
    # ... without one, only the reserved keys are.
    Estimator(image_uri=SK_IMAGE, entry_point=str(src / "train.py"), **common).fit(
        wait=False, job_name="generic-2"
    )
    first, second = backend.requests("CreateTrainingJob")
    assert first["AlgorithmSpecification"] == {"TrainingInputMode": "File", "TrainingImage": PT_TRAIN}
    assert (first["HyperParameters"]["depth"], first["HyperParameters"]["kind"]) == ("3", '"a"')
    assert (second["HyperParameters"]["depth"], second["HyperParameters"]["kind"]) == ("3", "a")
    assert second["HyperParameters"]["sagemaker_program"] == '"train.py"'
    assert second["AlgorithmSpecification"]["TrainingImage"] == SK_IMAGE


def test_built_in_estimators_are_unchanged(tmp_path: Path) -> None:
    backend = recorder()
    Estimator(
        image_uri=XGB_IMAGE,
        hyperparameters={"num_round": 5, "verbose": True},
        output_path=out(tmp_path),
        session=Session(backend=backend),
    ).fit(wait=False, job_name="builtin")
    request = backend.requests("CreateTrainingJob")[0]
    assert request["HyperParameters"] == {"num_round": "5", "verbose": "true"}
    assert request["AlgorithmSpecification"] == {"TrainingInputMode": "File", "TrainingImage": XGB_IMAGE}


# --- errors before any work ----------------------------------------------------------------------


def errors(src: Path, lib: Path) -> list[tuple[str, Any, str]]:
    pt = {"framework_version": "2.3.0", "py_version": "py311"}
    s = str(src)
    return [
        (
            "missing entry point file",
            lambda: PyTorch(entry_point="nope.py", **pt),
            "'nope.py' does not exist",
        ),
        (
            "entry point not in source_dir",
            lambda: PyTorch(entry_point="nope.py", source_dir=s, **pt),
            'No file named "nope.py" was found',
        ),
        (
            "no source dir",
            lambda: PyTorch(entry_point="train.py", source_dir=s + "-gone", **pt),
            "does not exist or is not a folder",
        ),
        ("no entry point", lambda: PyTorch(source_dir=s, **pt), "entry_point must be set"),
        ("entry point in S3", lambda: SKLearn("s3://b/train.py", "1.2-1"), "Must be a path to a local file"),
        (
            "archive not tar.gz",
            lambda: SKLearn("train.py", "1.2-1", source_dir="s3://b/code/"),
            "must name a .tar.gz",
        ),
        (
            "missing dependency",
            lambda: PyTorch(entry_point="train.py", source_dir=s, dependencies=[s + "/nolib"], **pt),
            "dependency",
        ),
        (
            "dependency beside an archive",
            lambda: SKLearn("train.py", "1.2-1", source_dir="s3://b/s.tar.gz", dependencies=[str(lib)]),
            "cannot be added to the archive",
        ),
        (
            "unknown framework version",
            lambda: PyTorch(
                entry_point="train.py", source_dir=s, framework_version="0.4", py_version="py311"
            ),
            "is not one SageMaker offers",
        ),
        (
            "unknown py version",
            lambda: PyTorch(
                entry_point="train.py", source_dir=s, framework_version="2.3.0", py_version="py27"
            ),
            "py_version 'py27' is not supported",
        ),
        (
            "no py version",
            lambda: PyTorch(entry_point="train.py", source_dir=s, framework_version="2.3.0"),
            "Either specify both framework_version and py_version",
        ),
        (
            "no framework version",
            lambda: SKLearn("train.py", source_dir=s),
            "framework_version or py_version",
        ),
        (
            "sklearn py2",
            lambda: SKLearn("train.py", "1.2-1", py_version="py2", source_dir=s),
            "py_version 'py2'",
        ),
        (
            "another framework's image",
            lambda: PyTorch(entry_point="train.py", source_dir=s, image_uri=SK_IMAGE),
            "is not a SageMaker pytorch image",
        ),
        (
            "distribution not a dict",
            lambda: PyTorch(entry_point="train.py", source_dir=s, distribution="ddp", **pt),
            "distribution must be a dict",
        ),
        (
            "unknown distribution",
            lambda: PyTorch(
                entry_point="train.py", source_dir=s, distribution={"horovod": {"enabled": True}}, **pt
            ),
            "unknown distribution 'horovod'",
        ),
        (
            "unsupported distribution",
            lambda: PyTorch(
                entry_point="train.py", source_dir=s, distribution={"mpi": {"enabled": True}}, **pt
            ),
            "'mpi' is not supported by raymaker",
        ),
        (
            "enabled not a bool",
            lambda: PyTorch(
                entry_point="train.py",
                source_dir=s,
                distribution={"torch_distributed": {"enabled": "yes"}},
                **pt,
            ),
            "['enabled'] must be True or False",
        ),
        (
            "extra key",
            lambda: PyTorch(
                entry_point="train.py",
                source_dir=s,
                distribution={"torch_distributed": {"enabled": True, "nprocs": 2}},
                **pt,
            ),
            "must be {'enabled': True}",
        ),
        (
            "both strategies",
            lambda: PyTorch(
                entry_point="train.py",
                source_dir=s,
                distribution={"torch_distributed": {"enabled": True}, "pytorchddp": {"enabled": True}},
                **pt,
            ),
            "give one",
        ),
        (
            "distribution for sklearn",
            lambda: SKLearn(
                "train.py", "1.2-1", source_dir=s, distribution={"torch_distributed": {"enabled": True}}
            ),
            "is for PyTorch scripts",
        ),
        (
            "torch_distributed runs python",
            lambda: PyTorch(
                entry_point="requirements.txt",
                source_dir=s,
                distribution={"torch_distributed": {"enabled": True}},
                **pt,
            ),
            "Only python programs",
        ),
        (
            "sklearn on two instances",
            lambda: SKLearn("train.py", "1.2-1", source_dir=s, instance_count=2),
            "does not support distributed training",
        ),
        (
            "sklearn on a GPU",
            lambda: SKLearn("train.py", "1.2-1", source_dir=s, instance_type="ml.g5.xlarge"),
            "no GPU image",
        ),
        (
            "built-in with a script",
            lambda: Estimator("xgboost", entry_point="train.py", source_dir=s),
            "runs no script",
        ),
        (
            "script in a custom image",
            lambda: Estimator(
                image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1",
                entry_point="train.py",
                source_dir=s,
            ),
            "is not a SageMaker framework image",
        ),
        ("framework image without a script", lambda: Estimator(image_uri=PT_TRAIN), "give entry_point"),
        (
            "source_dir without a script",
            lambda: Estimator(image_uri=XGB_IMAGE, source_dir=s),
            "entry_point is required",
        ),
        (
            "distribution without a script",
            lambda: Estimator("xgboost", distribution={"torch_distributed": {"enabled": True}}),
            "distribution is for scripts",
        ),
        (
            "bad metric regex",
            lambda: PyTorch(
                entry_point="train.py",
                source_dir=s,
                metric_definitions=[{"Name": "loss", "Regex": "loss=([0-9"}],
                **pt,
            ),
            "is not a valid regular expression",
        ),
        (
            "model: unknown version",
            lambda: PyTorchModel("s3://b/model.tar.gz", framework_version="9.9", py_version="py311"),
            "is not one SageMaker offers",
        ),
        (
            "model: missing entry point",
            lambda: SKLearnModel(
                "s3://b/model.tar.gz", entry_point="nope.py", source_dir=s, framework_version="1.2-1"
            ),
            'No file named "nope.py"',
        ),
        (
            "model: built-in with a script",
            lambda: raymaker.Model("s3://b/m.tar.gz", algorithm="xgboost", entry_point="inference.py"),
            "serves its own model",
        ),
    ]


@pytest.mark.parametrize("case", range(33))
def test_mistakes_fail_before_any_work(
    case: int, src: Path, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(src)
    cases = errors(src, lib)
    assert len(cases) == 33
    what, make, message = cases[case]
    backend = RecordingBackend()  # answers nothing: any call fails the test
    monkeypatch.setattr(raymaker.sdk.session, "get_backend", lambda name=None: backend)
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value), (what, str(info.value))
    assert backend.calls == []


def test_framework_version_errors_are_validation_errors(src: Path) -> None:
    with pytest.raises(ValidationError, match="use one of 1.8.1, 1.9.1"):
        PyTorch(
            entry_point="train.py",
            source_dir=str(src),
            framework_version="0.4",
            py_version="py311",
            session=Session(backend=RecordingBackend()),
        )


def test_code_gone_by_fit_time_fails_before_the_request(src: Path, tmp_path: Path) -> None:
    backend = recorder()
    est = pytorch(backend, src, tmp_path)
    (src / "train.py").unlink()
    with pytest.raises(ValueError, match='No file named "train.py"'):
        est.fit(wait=False)
    assert backend.calls == []


# --- models --------------------------------------------------------------------------------------


def test_pytorch_model_create_sends_the_framework_environment(src: Path, lib: Path, tmp_path: Path) -> None:
    backend = recorder()
    model = PyTorchModel(
        "s3://b/model.tar.gz",
        entry_point="inference.py",
        source_dir=str(src),
        dependencies=[str(lib)],
        framework_version="2.3.0",
        py_version="py311",
        name="pt-model",
        env={"MY_FLAG": "1"},
        code_location=(tmp_path / "code").as_uri(),
        model_server_workers=2,
        session=Session(backend=backend),
    )
    assert model.create() == "pt-model"
    source = f"{(tmp_path / 'code').as_uri()}/pt-model/sourcedir.tar.gz"
    assert backend.calls == [
        ("DescribeModel", {"ModelName": "pt-model"}),
        (
            "CreateModel",
            {
                "ModelName": "pt-model",
                "PrimaryContainer": {
                    "Image": PT_INFER,
                    "ModelDataUrl": "s3://b/model.tar.gz",
                    "Environment": {
                        "MY_FLAG": "1",
                        "SAGEMAKER_PROGRAM": "inference.py",
                        "SAGEMAKER_SUBMIT_DIRECTORY": source,
                        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                        "SAGEMAKER_REGION": "us-east-1",
                        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
                    },
                },
            },
        ),
    ]
    assert "mylib/__init__.py" in local_archive(source) and "inference.py" in local_archive(source)


def test_framework_models_images_names_and_predictors(tmp_path: Path) -> None:
    backend = recorder().answer(
        CreateEndpointConfig=created("EndpointConfig", "EndpointConfigName"),
        CreateEndpoint=created("Endpoint", "EndpointName"),
        DescribeEndpoint=endpoint_description("ep"),
    )
    session = Session(backend=backend, default_output_path=out(tmp_path))
    # No entry point: the container serves the archive's own code/ (the SDK sends empty values).
    sk = SKLearnModel("s3://b/m.tar.gz", framework_version="1.2-1", session=session)
    predictor = sk.deploy(1, "local", endpoint_name="ep")
    container = backend.requests("CreateModel")[0]["PrimaryContainer"]
    assert container == {
        "Image": SK_IMAGE,
        "ModelDataUrl": "s3://b/m.tar.gz",
        "Environment": {
            "SAGEMAKER_PROGRAM": "",
            "SAGEMAKER_SUBMIT_DIRECTORY": "",
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
            "SAGEMAKER_REGION": "us-east-1",
        },
    }
    assert re.fullmatch(r"sagemaker-scikit-learn-\d{4}(-\d{2}){5}-\d{3}", sk.name or ""), sk.name
    assert isinstance(predictor, SKLearnPredictor)
    assert isinstance(predictor.serializer, NumpySerializer) and isinstance(
        predictor.deserializer, NumpyDeserializer
    )

    # A GPU instance type picks the GPU inference image; an archive in S3 is the submit directory as it is.
    pt = PyTorchModel(
        "s3://b/m.tar.gz",
        entry_point="inference.py",
        source_dir="s3://b/code/sourcedir.tar.gz",
        framework_version="2.3.0",
        py_version="py311",
        session=session,
    )
    assert isinstance(pt.deploy(1, "ml.g5.xlarge", endpoint_name="ep"), PyTorchPredictor)
    container = backend.requests("CreateModel")[1]["PrimaryContainer"]
    assert container["Image"] == PT_INFER.replace("cpu", "gpu")
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "s3://b/code/sourcedir.tar.gz"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"

    xgb = XGBoostModel(
        "s3://b/m.tar.gz",
        entry_point="inference.py",
        source_dir="s3://b/code/sourcedir.tar.gz",
        framework_version="1.7-1",
        session=session,
    )
    predictor = xgb.deploy(1, "local", endpoint_name="ep")
    assert backend.requests("CreateModel")[2]["PrimaryContainer"]["Image"] == XGB_IMAGE
    assert isinstance(predictor, XGBoostPredictor)
    assert isinstance(predictor.serializer, LibSVMSerializer) and isinstance(
        predictor.deserializer, CSVDeserializer
    )


def test_model_code_defaults_under_the_session_output(src: Path, tmp_path: Path) -> None:
    backend = recorder()
    session = Session(backend=backend, default_output_path=out(tmp_path))
    XGBoostModel(
        "s3://b/m.tar.gz",
        entry_point=str(src / "inference.py"),
        framework_version="1.7-1",
        name="xgb-model",
        session=session,
    ).create()
    env = backend.requests("CreateModel")[0]["PrimaryContainer"]["Environment"]
    source = f"{out(tmp_path)}/xgb-model/sourcedir.tar.gz"
    assert (env["SAGEMAKER_PROGRAM"], env["SAGEMAKER_SUBMIT_DIRECTORY"]) == ("inference.py", source)
    assert local_archive(source) == ["inference.py"]


def trained(backend: RecordingBackend, src: Path, tmp_path: Path, **kwargs: Any) -> PyTorch:
    est = pytorch(backend, src, tmp_path, **kwargs)
    est.fit(wait=False, job_name=JOB)
    backend.answer(DescribeTrainingJob=job_description(backend.requests("CreateTrainingJob")[0]))
    backend.calls.clear()
    return est


def test_deploy_serves_the_training_code_unless_told_otherwise(src: Path, tmp_path: Path) -> None:
    backend = recorder().answer(
        CreateEndpointConfig=created("EndpointConfig", "EndpointConfigName"),
        CreateEndpoint=created("Endpoint", "EndpointName"),
        DescribeEndpoint=endpoint_description("ep"),
    )
    est = trained(backend, src, tmp_path, environment={"TRAIN_ONLY": "1"})
    training_code = f"{out(tmp_path)}/{JOB}/source/sourcedir.tar.gz"
    predictor = est.deploy(1, "local", endpoint_name="ep", env={"SERVE": "1"})
    assert isinstance(predictor, PyTorchPredictor)
    assert backend.ops() == [
        "DescribeTrainingJob",
        "DescribeModel",
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
        "DescribeEndpoint",
    ]
    assert backend.requests("CreateModel")[0] == {
        "ModelName": JOB,
        "PrimaryContainer": {
            "Image": PT_INFER,
            "ModelDataUrl": f"{out(tmp_path)}/{JOB}/output/model.tar.gz",
            "Environment": {
                "SERVE": "1",
                "SAGEMAKER_PROGRAM": "train.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": training_code,
                "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                "SAGEMAKER_REGION": "us-east-1",
            },
        },
        "ExecutionRoleArn": ROLE,
    }

    # deploy(entry_point=...) names another script of the same code (the SageMaker SDK's create_model).
    backend.calls.clear()
    est.deploy(1, "local", endpoint_name="ep2", model_name="pt-serve", entry_point="inference.py")
    env = backend.requests("CreateModel")[0]["PrimaryContainer"]["Environment"]
    assert (env["SAGEMAKER_PROGRAM"], env["SAGEMAKER_SUBMIT_DIRECTORY"]) == ("inference.py", training_code)

    # New code for serving: uploaded under the output path, named after the model.
    serve = tmp_path / "serve"
    serve.mkdir()
    (serve / "serve.py").write_text("def model_fn(d):\n    return d\n")
    model = est.create_model(name="pt-new", entry_point="serve.py", source_dir=str(serve))
    assert isinstance(model, PyTorchModel)
    model.create()
    env = backend.requests("CreateModel")[-1]["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"] == f"{out(tmp_path)}/pt-new/sourcedir.tar.gz"
    assert local_archive(env["SAGEMAKER_SUBMIT_DIRECTORY"]) == ["serve.py"]


def test_transformer_uses_the_framework_model(src: Path, tmp_path: Path) -> None:
    backend = recorder().answer(CreateTransformJob=created("TransformJob", "TransformJobName"))
    est = trained(backend, src, tmp_path)
    transformer = est.transformer(
        1, "ml.g5.xlarge", entry_point="inference.py", output_path="s3://b/out", env={"BATCH": "1"}
    )
    backend.answer(
        DescribeTransformJob=lambda p: transform_job_description(
            backend.requests("CreateTransformJob")[0], "Completed"
        )
    )
    transformer.transform("s3://b/in/", content_type="text/csv", job_name="batch-1")
    container = backend.requests("CreateModel")[0]["PrimaryContainer"]
    assert container["Image"] == PT_INFER.replace("cpu", "gpu")
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    job = backend.requests("CreateTransformJob")[0]
    assert (job["ModelName"], job["Environment"]) == (JOB, {"BATCH": "1"})


# --- attach --------------------------------------------------------------------------------------


def test_attach_round_trip(src: Path, tmp_path: Path) -> None:
    backend = recorder()
    est = trained(
        backend,
        src,
        tmp_path,
        instance_count=2,
        distribution={"torch_distributed": {"enabled": True}},
        metric_definitions=METRICS,
        keep_alive_period_in_seconds=300,
    )
    original = backend.answers["DescribeTrainingJob"][0]
    original["HyperParameters"]["_tuning_objective_metric"] = "train:loss"  # a tuning trial's

    attached = PyTorch.attach(JOB, Session(backend=backend))
    assert isinstance(attached, PyTorch)
    source = f"{out(tmp_path)}/{JOB}/source/sourcedir.tar.gz"
    assert (attached.entry_point, attached.source_dir) == ("train.py", source)
    assert (attached.framework_version, attached.py_version, attached.image_uri) == ("2.3.0", "py311", None)
    assert attached.distribution == {"torch_distributed": {"enabled": True}}
    assert attached.metric_definitions == METRICS
    assert (attached.instance_count, attached.instance_type, attached.keep_alive_period_in_seconds) == (
        2,
        "ml.m5.xlarge",
        300,
    )
    assert attached._hyperparameters == {
        "epochs": 3,
        "lr": 0.01,
        "optimizer": "adam",
        "layers": [64, 32],
        "verbose": True,
    }
    assert attached.uploaded_code is not None and attached.uploaded_code.s3_prefix == source
    assert attached.model_data == f"{out(tmp_path)}/{JOB}/output/model.tar.gz"

    # Fitting it again sends the same request (the code already uploaded), but for the new job's name.
    attached.fit(wait=False, job_name="pt-job-again")
    first = original
    again = backend.requests("CreateTrainingJob")[-1]
    expected = {k: v for k, v in first["HyperParameters"].items() if k != "_tuning_objective_metric"}
    expected["sagemaker_job_name"] = '"pt-job-again"'
    assert again["HyperParameters"] == expected
    assert again["AlgorithmSpecification"] == first["AlgorithmSpecification"]
    assert again["ResourceConfig"] == first["ResourceConfig"]

    # The generic Estimator attaches a script too; the wrong framework class refuses.
    generic = Estimator.attach(JOB, Session(backend=backend))
    assert (type(generic), generic.image_uri, generic.entry_point, generic.source_dir) == (
        Estimator,
        PT_TRAIN,
        "train.py",
        source,
    )
    assert generic.hyperparameters()["optimizer"] == '"adam"'
    with pytest.raises(ValueError, match="didn't use image for requested framework"):
        SKLearn.attach(JOB, Session(backend=backend))
    assert est.latest_training_job is not None


def test_attached_estimator_deploys_the_job_code(src: Path, tmp_path: Path) -> None:
    backend = recorder()
    trained(backend, src, tmp_path)
    attached = PyTorch.attach(JOB, Session(backend=backend))
    attached.create_model().create()
    env = backend.requests("CreateModel")[0]["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"] == f"{out(tmp_path)}/{JOB}/source/sourcedir.tar.gz"
    assert env["SAGEMAKER_PROGRAM"] == "train.py"


# --- tuning --------------------------------------------------------------------------------------


def tuning_description(request: dict[str, Any]) -> dict[str, Any]:
    definition = copy.deepcopy(request["TrainingJobDefinition"])
    definition["StaticHyperParameters"]["_tuning_objective_metric"] = "train:loss"
    name = request["HyperParameterTuningJobName"]
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobArn": arn("hyper-parameter-tuning-job", name),
        "HyperParameterTuningJobConfig": copy.deepcopy(request["HyperParameterTuningJobConfig"]),
        "TrainingJobDefinition": definition,
        "HyperParameterTuningJobStatus": "Completed",
        "CreationTime": T0,
        "TrainingJobStatusCounters": {"Completed": 0, "InProgress": 0, "Stopped": 0},
        "ObjectiveStatusCounters": {"Succeeded": 0, "Pending": 0, "Failed": 0},
    }


def test_the_tuner_carries_the_script(src: Path, tmp_path: Path) -> None:
    backend = recorder().answer(
        CreateHyperParameterTuningJob=created("HyperParameterTuningJob", "HyperParameterTuningJobName")
    )
    est = pytorch(
        backend,
        src,
        tmp_path,
        metric_definitions=METRICS,
        distribution={"torch_distributed": {"enabled": True}},
        instance_count=2,
    )
    tuner = HyperparameterTuner(
        est,
        "train:loss",
        {
            "lr": ContinuousParameter(0.001, 0.1),
            "optimizer": CategoricalParameter(["adam", "sgd"]),
            "epochs": IntegerParameter(1, 5),
        },
        objective_type="Minimize",
        max_jobs=4,
        max_parallel_jobs=2,
    )
    tuner.fit({"train": "s3://bucket/train/"}, job_name="pt-tune", wait=False)
    request = backend.requests("CreateHyperParameterTuningJob")[0]
    validate_request("CreateHyperParameterTuningJob", request)
    definition = request["TrainingJobDefinition"]
    source = f"{out(tmp_path)}/pt-tune/source/sourcedir.tar.gz"
    assert definition["AlgorithmSpecification"] == {
        "TrainingImage": PT_TRAIN,
        "TrainingInputMode": "File",
        "MetricDefinitions": METRICS,
    }
    assert definition["StaticHyperParameters"] == {
        "layers": "[64, 32]",
        "verbose": "true",
        "sagemaker_submit_directory": json.dumps(source),
        "sagemaker_program": '"train.py"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"pt-tune"',
        "sagemaker_region": '"us-east-1"',
        "sagemaker_torch_distributed_enabled": "true",
        "sagemaker_instance_type": '"ml.m5.xlarge"',
        "sagemaker_estimator_class_name": '"PyTorch"',
        "sagemaker_estimator_module": '"raymaker.sdk.frameworks"',
    }
    assert local_archive(source)  # the code went up under the tuning job's name
    ranges = request["HyperParameterTuningJobConfig"]["ParameterRanges"]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "optimizer", "Values": ['"adam"', '"sgd"']}]
    assert definition["ResourceConfig"]["InstanceCount"] == 2

    # attach rebuilds the PyTorch estimator and the ranges as they were given.
    backend.answer(DescribeHyperParameterTuningJob=tuning_description(request))
    attached = HyperparameterTuner.attach("pt-tune", Session(backend=backend))
    est2 = attached.estimator
    assert isinstance(est2, PyTorch)
    assert (est2.entry_point, est2.source_dir, est2.framework_version, est2.py_version) == (
        "train.py",
        source,
        "2.3.0",
        "py311",
    )
    assert est2.distribution == {"torch_distributed": {"enabled": True}}
    assert est2._hyperparameters == {"layers": [64, 32], "verbose": True}
    assert attached.hyperparameter_ranges() == tuner.hyperparameter_ranges()
    again = attached.tuning_job_request({"train": "s3://bucket/train/"}, job_name="pt-tune")
    assert again["TrainingJobDefinition"]["StaticHyperParameters"] == definition["StaticHyperParameters"]


def test_a_tuning_job_from_the_sagemaker_sdk_attaches_as_raymakers_class(src: Path, tmp_path: Path) -> None:
    backend = recorder().answer(
        CreateHyperParameterTuningJob=created("HyperParameterTuningJob", "HyperParameterTuningJobName")
    )
    est = SKLearn(
        "train.py", "1.2-1", source_dir=str(src), output_path=out(tmp_path), session=Session(backend=backend)
    )
    request = HyperparameterTuner(est, "acc", {"max-depth": IntegerParameter(1, 4)}).tuning_job_request(
        job_name="sk-tune"
    )
    desc = tuning_description(request)
    desc["TrainingJobDefinition"]["StaticHyperParameters"]["sagemaker_estimator_module"] = (
        '"sagemaker.sklearn.estimator"'
    )
    backend.answer(DescribeHyperParameterTuningJob=desc)
    assert isinstance(HyperparameterTuner.attach("sk-tune", Session(backend=backend)).estimator, SKLearn)
    # A module the record names that is neither raymaker's nor imported is never imported.
    desc["TrainingJobDefinition"]["StaticHyperParameters"]["sagemaker_estimator_module"] = '"evil_module"'
    backend.answer(DescribeHyperParameterTuningJob=desc)
    plain = HyperparameterTuner.attach("sk-tune", Session(backend=backend)).estimator
    assert type(plain) is Estimator and plain.entry_point == "train.py"


def test_public_modules_are_named_as_the_sagemaker_sdk() -> None:
    import raymaker.pytorch
    import raymaker.sklearn
    import raymaker.xgboost

    assert raymaker.PyTorch is raymaker.pytorch.PyTorch and raymaker.PyTorchModel is PyTorchModel
    assert raymaker.SKLearn is raymaker.sklearn.SKLearn and raymaker.SKLearnModel is SKLearnModel
    assert raymaker.XGBoost is raymaker.xgboost.XGBoost and raymaker.XGBoostModel is XGBoostModel
    assert os.path.basename(raymaker.pytorch.__file__) == "pytorch.py"
