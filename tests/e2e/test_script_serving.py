"""A script model end to end, as a SageMaker user's ``SKLearnModel(model_data=..., entry_point=
"inference.py").deploy()`` sends it: CreateModel with the scikit-learn framework image and the repack
layout (a joblib model and ``code/inference.py`` in model.tar.gz on the S3 server), an endpoint on Ray
Serve answered through boto3's own sagemaker-runtime client over real HTTP, then a batch transform on
the same model whose output matches the endpoint's answers."""

from __future__ import annotations

import io
import json
import tarfile
import textwrap

import boto3
import joblib
import numpy as np
import pytest
from botocore.exceptions import ClientError
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from raymaker import Session
from raymaker.sdk.predictor import wait_for_endpoint
from raymaker.sdk.waiter import TRANSFORM_JOB, wait_for

pytestmark = pytest.mark.e2e

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
INFERENCE_PY = textwrap.dedent(
    """
    import json
    import os

    import joblib
    import numpy as np


    def model_fn(model_dir):
        return joblib.load(os.path.join(model_dir, "model.joblib"))


    def input_fn(request_body, request_content_type):
        if request_content_type == "text/csv":
            rows = [[float(v) for v in line.split(",")] for line in request_body.strip().splitlines()]
            return np.array(rows, dtype=np.float32)
        raise ValueError(f"unsupported content type {request_content_type}")


    def output_fn(prediction, accept):
        if accept == "text/csv":
            return "".join(f"{int(p)}\\n" for p in prediction), "text/csv"
        return json.dumps({"predictions": prediction.tolist()}), "application/json"
    """
)


@pytest.fixture(scope="module")
def session(ray_session):
    return Session()


@pytest.fixture(scope="module")
def iris():
    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), LogisticRegression(max_iter=500).fit(x, y)


@pytest.fixture(scope="module")
def model(s3_server, session, iris):
    """CreateModel as the SageMaker SDK sends it for a repacked scikit-learn model."""
    bucket = s3_server.new_bucket()
    weights = io.BytesIO()
    joblib.dump(iris[1], weights)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (
            ("model.joblib", weights.getvalue()),
            ("code/inference.py", INFERENCE_PY.encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s3_server.client.put_object(Bucket=bucket, Key="iris/model.tar.gz", Body=buf.getvalue())
    session.call(
        "CreateModel",
        {
            "ModelName": "iris-script",
            "ExecutionRoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
            "PrimaryContainer": {
                "Image": SKLEARN_IMAGE,
                "ModelDataUrl": f"s3://{bucket}/iris/model.tar.gz",
                "Environment": {
                    "SAGEMAKER_PROGRAM": "inference.py",
                    "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                    "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                    "SAGEMAKER_REGION": "us-east-1",
                },
            },
        },
    )
    yield bucket
    session.call("DeleteModel", {"ModelName": "iris-script"})


@pytest.fixture(scope="module")
def endpoint(model, session):
    session.call(
        "CreateEndpointConfig",
        {
            "EndpointConfigName": "iris-script",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "iris-script",
                    "InitialInstanceCount": 1,
                    "InstanceType": "local",
                }
            ],
        },
    )
    session.call("CreateEndpoint", {"EndpointName": "iris-script", "EndpointConfigName": "iris-script"})
    wait_for_endpoint(session, "iris-script", timeout_s=300)
    yield "iris-script"
    session.call("DeleteEndpoint", {"EndpointName": "iris-script"})
    session.call("DeleteEndpointConfig", {"EndpointConfigName": "iris-script"})


@pytest.fixture(scope="module")
def runtime(session):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=session.runtime_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _csv(x) -> str:
    return "".join(",".join(f"{v:.9g}" for v in row) + "\n" for row in x)


def test_endpoint_serves_the_script_and_reports_its_errors(endpoint, runtime, iris):
    x, clf = iris
    r = runtime.invoke_endpoint(
        EndpointName=endpoint, ContentType="text/csv", Accept="text/csv", Body=_csv(x[:10])
    )
    assert r["ContentType"] == "text/csv"
    assert [int(v) for v in r["Body"].read().split()] == clf.predict(x[:10]).tolist()
    r = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body=_csv(x[:3]))
    assert r["ContentType"] == "application/json"  # no Accept: SageMaker's default, application/json
    assert json.loads(r["Body"].read()) == {"predictions": clf.predict(x[:3]).tolist()}
    with pytest.raises(ClientError) as info:
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType="application/json", Body="[[1, 2, 3, 4]]")
    error = info.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert (
        "input_fn raised ValueError: unsupported content type application/json" in error["Error"]["Message"]
    )
    # the replica keeps serving
    r = runtime.invoke_endpoint(
        EndpointName=endpoint, ContentType="text/csv", Accept="text/csv", Body=_csv(x[:1])
    )
    assert int(r["Body"].read()) == clf.predict(x[:1])[0]


def test_batch_transform_on_the_script_model(endpoint, model, s3_server, session, runtime, iris):
    x, clf = iris
    bucket = model
    s3_server.client.put_object(Bucket=bucket, Key="batch/in/part-0.csv", Body=_csv(x[:80]).encode())
    s3_server.client.put_object(Bucket=bucket, Key="batch/in/part-1.csv", Body=_csv(x[80:]).encode())
    session.call(
        "CreateTransformJob",
        {
            "TransformJobName": "iris-script-batch",
            "ModelName": "iris-script",
            "BatchStrategy": "MultiRecord",
            "MaxPayloadInMB": 1,
            "TransformInput": {
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/batch/in/"}
                },
                "ContentType": "text/csv",
                "SplitType": "Line",
            },
            "TransformOutput": {
                "S3OutputPath": f"s3://{bucket}/batch/out/",
                "Accept": "text/csv",
                "AssembleWith": "Line",
            },
            "TransformResources": {"InstanceType": "local", "InstanceCount": 1},
        },
    )
    desc = wait_for(session, TRANSFORM_JOB, "iris-script-batch", poll=0.1, timeout=300)
    assert desc["TransformJobStatus"] == "Completed"
    out = b"".join(
        s3_server.client.get_object(Bucket=bucket, Key=f"batch/out/part-{i}.csv.out")["Body"].read()
        for i in (0, 1)
    )
    assert [int(v) for v in out.split()] == clf.predict(x).tolist()
    endpoint_answer = runtime.invoke_endpoint(
        EndpointName=endpoint, ContentType="text/csv", Accept="text/csv", Body=_csv(x[:80])
    )["Body"].read()
    first = s3_server.client.get_object(Bucket=bucket, Key="batch/out/part-0.csv.out")["Body"].read()
    assert first == endpoint_answer  # the same bytes as the endpoint's
