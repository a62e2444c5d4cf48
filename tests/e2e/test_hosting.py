"""Endpoints end to end: a real training job, Ray Serve with its HAProxy ingress, real HTTP from boto3's
own sagemaker-runtime client, and the records in SQLite."""

from __future__ import annotations

import http.client
import io
import json
import os
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from raymaker import Estimator, Session, TrainingInput
from raymaker.algorithms import get_algorithm
from raymaker.io import recordio
from raymaker.io.batch import Batch
from raymaker.protocol.errors import ValidationError
from raymaker.sdk import UnexpectedStatusException
from raymaker.sdk.deserializers import JSONDeserializer, RecordDeserializer
from raymaker.sdk.model import Model
from raymaker.sdk.predictor import Predictor
from raymaker.sdk.serializers import CSVSerializer, JSONLinesSerializer, RecordSerializer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return train_test_split(x.astype(np.float32), y.astype(np.float32), test_size=0.25, random_state=0)


@pytest.fixture(scope="module")
def session(ray_session):
    return Session()


@pytest.fixture(scope="module")
def trained(s3_server, cancer, session):
    """One xgboost training job on the S3 server; its model, loaded locally for expected answers."""
    x_train, x_test, y_train, _ = cancer
    bucket = s3_server.new_bucket()
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y_train, x_train]), delimiter=",", fmt="%.7g")
    s3_server.client.put_object(Bucket=bucket, Key="train/part-0.csv", Body=buf.getvalue().encode())
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 20, "max_depth": 3},
        output_path=f"s3://{bucket}/output",
        session=session,
    )
    est.fit(TrainingInput(f"s3://{bucket}/train/", content_type="text/csv"), logs=False)
    uri = est.model_data
    body = s3_server.client.get_object(Bucket=bucket, Key=uri.split("/", 3)[3])["Body"].read()
    algo = get_algorithm("xgboost")()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar, _tmpdir() as d:
        tar.extractall(d, filter="data")
        model = algo.load(d)
    expected = algo.predict(model, Batch(x_test))
    return {"estimator": est, "bucket": bucket, "model_data": uri, "expected": expected}


class _tmpdir:
    def __enter__(self):
        import tempfile

        self._d = tempfile.TemporaryDirectory()
        return self._d.name

    def __exit__(self, *exc):
        self._d.cleanup()


@pytest.fixture(scope="module")
def predictor(trained, session):
    p = trained["estimator"].deploy(1, "local", endpoint_name="xgb-e2e", serializer=CSVSerializer())
    yield p
    p.delete_endpoint()


@pytest.fixture(scope="module")
def runtime(session):
    """boto3's own sagemaker-runtime client, signed with throwaway credentials, at the runtime URL."""
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=session.runtime_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def test_endpoint_is_in_service_and_listed(predictor, session):
    desc = session.call("DescribeEndpoint", {"EndpointName": "xgb-e2e"})
    assert desc["EndpointStatus"] == "InService"
    assert desc["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    names = [e["EndpointName"] for e in session.call("ListEndpoints", {})["Endpoints"]]
    assert "xgb-e2e" in names


def test_boto3_runtime_client_csv(predictor, runtime, cancer, trained):
    x_test = cancer[1]
    body = "\n".join(",".join(f"{v:.9g}" for v in row) for row in x_test[:20])
    r = runtime.invoke_endpoint(EndpointName="xgb-e2e", ContentType="text/csv", Body=body)
    assert r["ContentType"] == "text/csv"
    assert r["InvokedProductionVariant"] == "AllTraffic"
    scores = np.array([float(v) for v in r["Body"].read().decode().split()])
    np.testing.assert_allclose(scores, trained["expected"]["score"][:20], rtol=1e-6)


def test_every_content_type(predictor, runtime, cancer, trained):
    x = cancer[1][:5]
    want = trained["expected"]["score"][:5]
    # JSON in, JSON out
    r = runtime.invoke_endpoint(
        EndpointName="xgb-e2e",
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps({"instances": [{"features": row.tolist()} for row in x]}),
    )
    preds = json.loads(r["Body"].read())["predictions"]
    np.testing.assert_allclose([p["score"] for p in preds], want, rtol=1e-6)
    assert [p["predicted_label"] for p in preds] == [int(s > 0.5) for s in want]
    # JSON lines in and out
    r = runtime.invoke_endpoint(
        EndpointName="xgb-e2e",
        ContentType="application/jsonlines",
        Accept="application/jsonlines",
        Body=JSONLinesSerializer().serialize([{"features": row.tolist()} for row in x]),
    )
    lines = r["Body"].read().decode().splitlines()
    np.testing.assert_allclose([json.loads(ln)["score"] for ln in lines], want, rtol=1e-6)
    # RecordIO-protobuf in and out (results in the label map), through the SDK's serializers
    rec = Predictor("xgb-e2e", serializer=RecordSerializer(), deserializer=RecordDeserializer())
    records = rec.predict(x, initial_args={"Accept": "application/x-recordio-protobuf"})
    np.testing.assert_allclose([r.label["score"].float32_tensor.values[0] for r in records], want, rtol=1e-6)
    # libsvm in
    # libsvm indices are column numbers as xgboost counts them (from 0), as in a libsvm training file
    body = "\n".join("0 " + " ".join(f"{j}:{v:.9g}" for j, v in enumerate(row)) for row in x)
    r = runtime.invoke_endpoint(EndpointName="xgb-e2e", ContentType="text/libsvm", Body=body)
    np.testing.assert_allclose([float(v) for v in r["Body"].read().split()], want, rtol=1e-6)
    # the SDK predictor: CSV in, JSON out
    out = Predictor("xgb-e2e", serializer=CSVSerializer(), deserializer=JSONDeserializer()).predict(x)
    np.testing.assert_allclose([p["score"] for p in out["predictions"]], want, rtol=1e-6)


def test_custom_attributes_travel_back(predictor, runtime, cancer):
    row = ",".join(map(str, cancer[1][0]))
    r = runtime.invoke_endpoint(
        EndpointName="xgb-e2e", ContentType="text/csv", Body=row, CustomAttributes="trace=42"
    )
    assert r["CustomAttributes"] == "trace=42"


def _error(call) -> ClientError:
    with pytest.raises(ClientError) as info:
        call()
    return info.value


def test_error_statuses(predictor, runtime, cancer):
    row = ",".join(map(str, cancer[1][0]))
    e = _error(lambda: runtime.invoke_endpoint(EndpointName="nope", ContentType="text/csv", Body=row))
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "nope" in e.response["Error"]["Message"]
    e = _error(
        lambda: runtime.invoke_endpoint(EndpointName="xgb-e2e", ContentType="image/gif", Body=b"GIF89a")
    )
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 415
    assert "image/gif" in e.response["Error"]["Message"]
    bad = f"{row}\n{row}\n1,2,oops\n"
    e = _error(lambda: runtime.invoke_endpoint(EndpointName="xgb-e2e", ContentType="text/csv", Body=bad))
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "line 3" in e.response["Error"]["Message"]
    big = (row + "\n") * (7 * 1024 * 1024 // len(row))
    url = urlsplit(Predictor("xgb-e2e").session.runtime_url)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    conn.request("POST", "/endpoints/xgb-e2e/invocations", body=big, headers={"Content-Type": "text/csv"})
    resp = conn.getresponse()
    assert resp.status == 413
    assert "6 MB" in json.loads(resp.read())["message"]
    e = _error(
        lambda: runtime.invoke_endpoint(
            EndpointName="xgb-e2e", ContentType="text/csv", Body=row, TargetVariant="B"
        )
    )
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # bad requests never take the replica down
    r = runtime.invoke_endpoint(EndpointName="xgb-e2e", ContentType="text/csv", Body=row)
    assert 0.0 <= float(r["Body"].read()) <= 1.0
    ping = http.client.HTTPConnection(url.hostname, url.port)
    ping.request("GET", "/endpoints/xgb-e2e/ping")
    assert ping.getresponse().status == 200


def test_model_that_fails_to_load_fails_the_endpoint(s3_server, trained, session):
    s3_server.client.put_object(Bucket=trained["bucket"], Key="broken/model.tar.gz", Body=b"not a tarball")
    model = Model(f"s3://{trained['bucket']}/broken/model.tar.gz", algorithm="xgboost", session=session)
    with pytest.raises(UnexpectedStatusException) as info:
        model.deploy(1, "local", endpoint_name="broken-e2e")
    assert "tar.gz" in str(info.value)
    desc = session.call("DescribeEndpoint", {"EndpointName": "broken-e2e"})
    assert desc["EndpointStatus"] == "Failed"
    assert "not a readable .tar.gz" in desc["FailureReason"]
    session.call("DeleteEndpoint", {"EndpointName": "broken-e2e"})


def test_two_variants_split_by_weight_and_target_variant(trained, session, runtime, cancer):
    model = Model(trained["model_data"], algorithm="xgboost", name="xgb-variants", session=session)
    model.create()
    session.call(
        "CreateEndpointConfig",
        {
            "EndpointConfigName": "ab-config",
            "ProductionVariants": [
                {
                    "VariantName": v,
                    "ModelName": "xgb-variants",
                    "InitialInstanceCount": 1,
                    "InstanceType": "local",
                    "InitialVariantWeight": w,
                }
                for v, w in (("A", 3.0), ("B", 1.0))
            ],
        },
    )
    session.call("CreateEndpoint", {"EndpointName": "ab-e2e", "EndpointConfigName": "ab-config"})
    from raymaker.sdk.predictor import wait_for_endpoint

    wait_for_endpoint(session, "ab-e2e")
    row = ",".join(map(str, cancer[1][0]))

    def variant(target: str | None) -> str:
        extra = {"TargetVariant": target} if target else {}
        r = runtime.invoke_endpoint(EndpointName="ab-e2e", ContentType="text/csv", Body=row, **extra)
        return r["InvokedProductionVariant"]

    # Four clients at once (boto3's clients are thread-safe): each request mostly waits on the network.
    with ThreadPoolExecutor(4) as clients:
        picked = list(clients.map(variant, [None] * 400))
        targeted = list(clients.map(variant, ["B"] * 20))
    seen = {"A": picked.count("A"), "B": picked.count("B")}
    assert seen["A"] + seen["B"] == 400, picked
    # 3:1 -> 300 of 400 expected; 4 standard deviations is +-35
    assert abs(seen["A"] - 300) < 35, seen
    assert targeted == ["B"] * 20
    Predictor("ab-e2e", session=session).delete_endpoint()
    with pytest.raises(ValidationError):
        session.call("DescribeEndpoint", {"EndpointName": "ab-e2e"})
    e = _error(lambda: runtime.invoke_endpoint(EndpointName="ab-e2e", ContentType="text/csv", Body=row))
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def _train_here(s3_server, bucket: str, key: str, hyperparameters: dict[str, str], x, y) -> str:
    """The built-in xgboost trained in this process, its model.tar.gz put at s3://bucket/key."""
    from raymaker.algorithms.base import LocalContext, TrainingData

    algo = get_algorithm("xgboost")
    with _tmpdir() as d:
        algo().train(
            algo.validate_hyperparameters(hyperparameters),
            TrainingData.from_batches(train=Batch(x, y)),
            LocalContext(),
            d,
        )
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name in os.listdir(d):
                tar.add(os.path.join(d, name), arcname=name)
    s3_server.client.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
    return f"s3://{bucket}/{key}"


def test_update_under_load_fails_no_request(trained, s3_server, session, cancer):
    model = Model(trained["model_data"], algorithm="xgboost", name="xgb-update", session=session)
    predictor = model.deploy(1, "local", endpoint_name="update-e2e")
    # A second model that answers differently: one shallow round instead of twenty (trained here, in
    # this process: what the test needs is its artifact on S3, not another training job).
    other_data = _train_here(
        s3_server,
        trained["bucket"],
        "other/model.tar.gz",
        {"objective": "binary:logistic", "num_round": "1", "max_depth": "1"},
        cancer[0],
        cancer[2],
    )
    url = urlsplit(session.runtime_url)
    row = ",".join(map(str, cancer[1][0])).encode()
    stop, ok, failures, variants = threading.Event(), [0], [], set()
    answers: list[bytes] = []  # every 200's body, in the order the clients got them

    def load():
        conn = http.client.HTTPConnection(url.hostname, url.port)  # keep-alive, as a client pool does
        while not stop.is_set():
            try:
                conn.request(
                    "POST",
                    "/endpoints/update-e2e/invocations",
                    body=row,
                    headers={"Content-Type": "text/csv"},
                )
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    failures.append((resp.status, body[:200]))
                else:
                    ok[0] += 1
                    answers.append(body)
                    variants.add(resp.getheader("x-Amzn-Invoked-Production-Variant"))
            except Exception as e:  # noqa: BLE001 - a dropped connection is a failed request too
                failures.append(repr(e))
                conn = http.client.HTTPConnection(url.hostname, url.port)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.6)
        before = ok[0]
        old_answer = answers[-1]
        predictor.update_endpoint(initial_instance_count=2)  # more replicas (Serve adds them)
        time.sleep(0.6)
        # a different model on the same replicas: loaded in a probe, then swapped in place
        Model(other_data, algorithm="xgboost", name="xgb-update-2", session=session).create()
        predictor.update_endpoint(model_name="xgb-update-2")
        time.sleep(0.6)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert ok[0] > before > 0
    new_answer = answers[-1]
    assert new_answer != old_answer, "the update must change what the endpoint answers"
    assert set(answers) == {old_answer, new_answer}  # the old model's answer, then the new one's
    assert set(answers[-20:]) == {new_answer}  # once the update is InService, only the new model answers
    desc = session.call("DescribeEndpoint", {"EndpointName": "update-e2e"})
    assert desc["EndpointStatus"] == "InService"
    assert desc["EndpointConfigName"] != "update-e2e"
    assert desc["ProductionVariants"][0]["DesiredInstanceCount"] == 2
    predictor.delete_endpoint()


# --- batch transform ------------------------------------------------------------------------------


def _csv_rows(x) -> bytes:
    return ("\n".join(",".join(f"{v:.9g}" for v in row) for row in x) + "\n").encode()


def _get(s3_server, bucket: str, key: str) -> bytes:
    return s3_server.client.get_object(Bucket=bucket, Key=key)["Body"].read()


def _keys(s3_server, bucket: str, prefix: str) -> list[str]:
    listing = s3_server.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_transform_csv_objects_match_the_endpoint(trained, s3_server, session, predictor, runtime, cancer):
    bucket, x = trained["bucket"], cancer[1]
    parts = {"in/a.csv": x[:50], "in/dataset01/b.csv": x[50:120], "in/c.csv": x[120:]}
    for key, rows in parts.items():
        s3_server.client.put_object(Bucket=bucket, Key=key, Body=_csv_rows(rows))
    transformer = trained["estimator"].transformer(
        1,
        "local",
        model_name="xgb-transform",
        strategy="MultiRecord",
        assemble_with="Line",
        accept="text/csv",
        max_payload=1,
        output_path=f"s3://{bucket}/out/csv",
        env={"RAYMAKER_TRANSFORM_UNIT_BYTES": "2000"},  # several byte-range units per object
    )
    transformer.transform(f"s3://{bucket}/in/", content_type="text/csv", split_type="Line")
    desc = transformer.describe()
    assert desc["TransformJobStatus"] == "Completed"
    progress = session.call("GetTransformJobProgress", {"TransformJobName": desc["TransformJobName"]})
    assert progress["ObjectsWritten"] == 3
    assert _keys(s3_server, bucket, "out/csv/") == [
        "out/csv/a.csv.out",
        "out/csv/c.csv.out",
        "out/csv/dataset01/b.csv.out",
    ]
    for key, rows in parts.items():
        out = _get(s3_server, bucket, "out/csv/" + key[len("in/") :] + ".out")
        endpoint = runtime.invoke_endpoint(
            EndpointName="xgb-e2e", ContentType="text/csv", Body=_csv_rows(rows)
        )
        assert out == endpoint["Body"].read()  # same bytes, same order
        assert len(out.splitlines()) == len(rows)


def test_transform_recordio_to_jsonlines(trained, s3_server, session, predictor, runtime, cancer):
    bucket, x = trained["bucket"], cancer[1]
    for i, rows in enumerate((x[:40], x[40:])):
        buf = io.BytesIO()
        recordio.write_numpy_to_dense_tensor(buf, rows)
        s3_server.client.put_object(Bucket=bucket, Key=f"rec/part-{i}.rec", Body=buf.getvalue())
    model = Model(trained["model_data"], algorithm="xgboost", name="xgb-transform-rec", session=session)
    transformer = model.transformer(
        1, "local", accept="application/jsonlines", assemble_with="Line", output_path=f"s3://{bucket}/out/rec"
    )
    transformer.transform(
        f"s3://{bucket}/rec/", content_type="application/x-recordio-protobuf", split_type="RecordIO"
    )
    lines = _get(s3_server, bucket, "out/rec/part-0.rec.out").decode().splitlines()
    lines += _get(s3_server, bucket, "out/rec/part-1.rec.out").decode().splitlines()
    scores = [json.loads(line)["score"] for line in lines]
    np.testing.assert_allclose(scores, trained["expected"]["score"], rtol=1e-6)


def test_transform_join_and_filters(trained, s3_server, session, cancer):
    bucket, x = trained["bucket"], cancer[1][:30]
    rows = "".join(f"id-{i}," + ",".join(f"{v:.9g}" for v in row) + "\n" for i, row in enumerate(x))
    s3_server.client.put_object(Bucket=bucket, Key="ids/rows.csv", Body=rows.encode())
    model = Model(trained["model_data"], algorithm="xgboost", name="xgb-transform-join", session=session)
    transformer = model.transformer(
        1, "local", accept="text/csv", assemble_with="Line", output_path=f"s3://{bucket}/out/join"
    )
    transformer.transform(
        f"s3://{bucket}/ids/",
        content_type="text/csv",
        split_type="Line",
        input_filter="$[1:]",
        join_source="Input",
        output_filter="$[0,-1]",
    )
    out = _get(s3_server, bucket, "out/join/rows.csv.out").decode().splitlines()
    assert [line.split(",")[0] for line in out] == [f"id-{i}" for i in range(30)]
    np.testing.assert_allclose(
        [float(line.split(",")[1]) for line in out], trained["expected"]["score"][:30], rtol=1e-6
    )


def test_transform_malformed_record_fails_naming_object_and_line(trained, s3_server, session, cancer):
    bucket, x = trained["bucket"], cancer[1][:10]
    lines = _csv_rows(x).decode().splitlines()
    lines[4] = "1,2,not-a-number"
    s3_server.client.put_object(Bucket=bucket, Key="bad/rows.csv", Body=("\n".join(lines) + "\n").encode())
    model = Model(trained["model_data"], algorithm="xgboost", name="xgb-transform-bad", session=session)
    transformer = model.transformer(1, "local", assemble_with="Line", output_path=f"s3://{bucket}/out/bad")
    with pytest.raises(UnexpectedStatusException) as info:
        transformer.transform(f"s3://{bucket}/bad/", content_type="text/csv", split_type="Line")
    reason = transformer.describe()["FailureReason"]
    assert f"s3://{bucket}/bad/rows.csv" in reason and "line 5" in reason, reason
    assert "line 5" in str(info.value)
    assert _keys(s3_server, bucket, "out/bad/") == []


# --- autoscaling, drivers, TLS ----------------------------------------------------------------------


def test_variant_autoscales_under_load(trained, session, cancer):
    model = Model(trained["model_data"], algorithm="xgboost", name="xgb-autoscale", session=session)
    predictor = model.deploy(
        1,
        "local",
        endpoint_name="autoscale-e2e",
        min_instance_count=1,
        max_instance_count=2,
        target_inflight_requests=1,
    )
    desc = session.call("DescribeEndpoint", {"EndpointName": "autoscale-e2e"})
    assert desc["ProductionVariants"][0]["ManagedInstanceScaling"]["MaxInstanceCount"] == 2
    url = urlsplit(session.runtime_url)
    row = ",".join(map(str, cancer[1][0])).encode()
    stop = threading.Event()

    def load():
        conn = http.client.HTTPConnection(url.hostname, url.port)
        while not stop.is_set():
            conn.request(
                "POST", "/endpoints/autoscale-e2e/invocations", body=row, headers={"Content-Type": "text/csv"}
            )
            conn.getresponse().read()

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        deadline, count = time.monotonic() + 60, 1
        while time.monotonic() < deadline and count < 2:
            time.sleep(0.5)
            desc = session.call("DescribeEndpoint", {"EndpointName": "autoscale-e2e"})
            count = desc["ProductionVariants"][0]["CurrentInstanceCount"]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert count == 2, desc
    predictor.delete_endpoint()


def test_endpoint_outlives_the_driver_that_created_it(trained, session, runtime, cancer, tmp_path):
    import os
    import subprocess
    import sys

    import ray

    script = tmp_path / "deploy.py"
    script.write_text(
        "from raymaker import Model\n"
        f"Model({trained['model_data']!r}, algorithm='xgboost', name='xgb-driver').deploy(1, 'local', "
        "endpoint_name='driver-e2e')\n"
        "print('DEPLOYED')\n"
    )
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DEPLOYED" in proc.stdout
    # The driver has exited; its endpoint still answers and is listed from the records.
    assert "driver-e2e" in [e["EndpointName"] for e in session.call("ListEndpoints", {})["Endpoints"]]
    row = ",".join(map(str, cancer[1][0]))
    r = runtime.invoke_endpoint(EndpointName="driver-e2e", ContentType="text/csv", Body=row)
    assert float(r["Body"].read()) == pytest.approx(float(trained["expected"]["score"][0]), rel=1e-6)
    Predictor("driver-e2e", session=session).delete_endpoint()


_TLS_DRIVER = """
import json, os, sys, tarfile, tempfile
import numpy as np
from sklearn.datasets import load_breast_cancer
from raymaker import Model, Session
from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import LocalContext, TrainingData
from raymaker.io.batch import Batch
from raymaker.sdk.serializers import CSVSerializer

x, y = load_breast_cancer(return_X_y=True)
x, y = x.astype(np.float32), y.astype(np.float32)
algo = get_algorithm("xgboost")
hp = algo.validate_hyperparameters({"objective": "binary:logistic", "num_round": "5"})
work = tempfile.mkdtemp()
model_dir = os.path.join(work, "model")
os.makedirs(model_dir)
algo().train(hp, TrainingData.from_batches(train=Batch(x, y)), LocalContext(), model_dir)
with tarfile.open(os.path.join(work, "model.tar.gz"), "w:gz") as tar:
    for name in os.listdir(model_dir):
        tar.add(os.path.join(model_dir, name), arcname=name)
session = Session(runtime_verify=os.environ["TLS_CA"])
predictor = Model("file://" + os.path.join(work, "model.tar.gz"), algorithm="xgboost", session=session).deploy(
    1, "local", endpoint_name="tls-e2e", serializer=CSVSerializer()
)
body = predictor.predict(x[:3]).decode()
print("RESULT", json.dumps({"url": session.runtime_url, "scores": body.split()}))
"""


def _self_signed(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


def test_https_endpoint_with_a_self_signed_certificate(tmp_path):
    """A separate local-mode driver (its own Ray, as a laptop user runs it) with an https runtime URL."""
    import os
    import subprocess
    import sys

    from tests.conftest import free_port

    cert, key = _self_signed(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYMAKER_"))}
    env |= {
        "RAYMAKER_HOME": str(tmp_path / "home"),
        "RAYMAKER_RUNTIME_URL": f"https://127.0.0.1:{port}",
        "RAYMAKER_RUNTIME_TLS_CERTFILE": cert,
        "RAYMAKER_RUNTIME_TLS_KEYFILE": key,
        "TLS_CA": cert,
    }
    script = tmp_path / "tls_driver.py"
    script.write_text(_TLS_DRIVER)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["url"] == f"https://127.0.0.1:{port}"
    assert len(result["scores"]) == 3 and all(0.0 <= float(s) <= 1.0 for s in result["scores"])


def test_transform_whole_objects_and_single_records(trained, s3_server, session, predictor, runtime, cancer):
    """SplitType None (each object one request: JSON documents) and SingleRecord (one request a line)."""
    bucket, x = trained["bucket"], cancer[1]
    docs = {"docs/a.json": x[:7], "docs/b.json": x[7:12]}
    for key, rows in docs.items():
        body = json.dumps({"instances": [{"features": r.tolist()} for r in rows]}).encode()
        s3_server.client.put_object(Bucket=bucket, Key=key, Body=body)
    model = Model(trained["model_data"], algorithm="xgboost", name="xgb-transform-docs", session=session)
    model.transformer(1, "local", accept="application/json", output_path=f"s3://{bucket}/out/docs").transform(
        f"s3://{bucket}/docs/", content_type="application/json"
    )
    for key in docs:
        body = s3_server.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        endpoint = runtime.invoke_endpoint(
            EndpointName="xgb-e2e", ContentType="application/json", Accept="application/json", Body=body
        )
        assert _get(s3_server, bucket, "out/docs/" + key[len("docs/") :] + ".out") == endpoint["Body"].read()
    s3_server.client.put_object(Bucket=bucket, Key="single/rows.csv", Body=_csv_rows(x[:25]))
    model.transformer(
        1, "local", strategy="SingleRecord", assemble_with="Line", output_path=f"s3://{bucket}/out/single"
    ).transform(f"s3://{bucket}/single/", content_type="text/csv", split_type="Line")
    out = _get(s3_server, bucket, "out/single/rows.csv.out").decode().splitlines()
    np.testing.assert_allclose([float(v) for v in out], trained["expected"]["score"][:25], rtol=1e-6)


def test_the_readme_sequence_never_waits_on_a_warm_instance(trained, s3_server, session, cancer):
    """The README's sequence as a new user runs it: fit with a warm pool, deploy, then a transform. The
    idle warm instance gives its CPU to the work that needs it at once (it once held the transform
    InProgress for the whole 300 s keep-alive, and billed for it)."""
    bucket = trained["bucket"]
    s3_server.client.put_object(Bucket=bucket, Key="readme/in/rows.csv", Body=_csv_rows(cancer[1][:50]))
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 5},
        output_path=f"s3://{bucket}/output",
        keep_alive_period_in_seconds=300,
        session=session,
    )
    est.fit(TrainingInput(f"s3://{bucket}/train/", content_type="text/csv"), logs=False)
    job = est.latest_training_job.name
    assert session.call("DescribeTrainingJob", {"TrainingJobName": job})["WarmPoolStatus"]["Status"] == "Available"
    predictor = est.deploy(1, "local", endpoint_name="readme-sequence", serializer=CSVSerializer())
    try:
        started = time.monotonic()
        transformer = est.transformer(1, "local", assemble_with="Line", output_path=f"s3://{bucket}/readme/out")
        transformer.transform(f"s3://{bucket}/readme/in/", content_type="text/csv", split_type="Line")
        assert transformer.describe()["TransformJobStatus"] == "Completed"
        assert time.monotonic() - started < 60  # never the keep-alive period
        assert len(_get(s3_server, bucket, "readme/out/rows.csv.out").splitlines()) == 50
    finally:
        predictor.delete_endpoint()
