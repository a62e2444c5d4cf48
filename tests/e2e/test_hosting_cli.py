"""Endpoints and batch transform from the command line: ``raymaker deploy``, ``endpoints
list|describe|delete``, ``raymaker invoke``, ``raymaker transform`` and ``transform-jobs
list|describe|stop``, run in-process against the session's Ray and the S3 server, with a model trained
in-process (no training job) so the tests stay quick."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import tempfile

import numpy as np
import pytest

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import LocalContext, TrainingData
from raymaker.cli import main
from raymaker.io.batch import Batch

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def session(backend_session):
    """Every test here runs on both backends: in-process, and over HTTP through ``raymaker server``."""
    return backend_session


def backend_tag(session) -> str:
    return "-http" if type(session.backend).__name__ == "HTTPBackend" else ""


@pytest.fixture(scope="module")
def model(s3_server):
    """A small xgboost model trained here, as model.tar.gz on the S3 server; rows and local scores."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x @ np.array([1, -1, 0.5, 0], dtype=np.float32) > 0).astype(np.float32)
    algo_cls = get_algorithm("xgboost")
    hp = algo_cls.validate_hyperparameters({"num_round": "5", "objective": "binary:logistic"})
    algo = algo_cls()
    with tempfile.TemporaryDirectory() as model_dir:
        algo.train(hp, TrainingData.from_batches(train=Batch(x, y)), LocalContext(), model_dir)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name in os.listdir(model_dir):
                tar.add(os.path.join(model_dir, name), arcname=name)
        expected = algo.predict(algo.load(model_dir), Batch(x[:12]))["score"]
    bucket = s3_server.new_bucket()
    s3_server.client.put_object(Bucket=bucket, Key="model/model.tar.gz", Body=buf.getvalue())
    return {
        "uri": f"s3://{bucket}/model/model.tar.gz",
        "bucket": bucket,
        "rows": x[:3],
        "expected": expected[:3],
        "batch_rows": x[3:12],  # for the transform test
        "batch_expected": expected[3:12],
    }


def test_deploy_list_describe_invoke_delete(session, model, capsys, monkeypatch, tmp_path):
    name = "cli-hosting-e2e"
    deploy = ["deploy", "--model-data", model["uri"], "--algorithm", "xgboost", "--endpoint-name", name]
    assert main(deploy) == 0
    out = capsys.readouterr().out
    assert f"endpoint: {name} (InService)" in out
    assert f"url: {session.runtime_url}/endpoints/{name}/invocations" in out

    # the name is taken: refused before any record is made
    with pytest.raises(SystemExit, match="already exists .*raymaker endpoints delete"):
        main(deploy)
    with pytest.raises(SystemExit, match="--model-data needs --algorithm"):
        main(["deploy", "--model-data", model["uri"]])
    assert main(["deploy", "--training-job", "no-such-job"]) == 2
    assert "no-such-job" in capsys.readouterr().err
    models = len(session.call("ListModels", {})["Models"])
    assert main([*deploy[:-1], "cli-bad-type", "--instance-type", "ml.nope.xlarge"]) == 2
    assert "ml.nope.xlarge" in capsys.readouterr().err
    assert len(session.call("ListModels", {})["Models"]) == models  # a refused deploy leaves no model

    assert main(["endpoints", "list", "--name-contains", "cli-hosting"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["NAME", "STATUS", "CREATED"]
    assert rows[1].split()[:2] == [name, "InService"]
    assert main(["endpoints", "describe", name]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["EndpointStatus"] == "InService"
    assert desc["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    assert "T" in desc["CreationTime"]  # ISO 8601

    body = "\n".join(",".join(f"{v:.9g}" for v in row) for row in model["rows"])
    assert main(["invoke", name, "--body", body]) == 0
    captured = capsys.readouterr()
    scores = [float(v) for v in captured.out.split()]
    np.testing.assert_allclose(scores, model["expected"], rtol=1e-6)
    assert "variant: AllTraffic" in captured.err
    # the body from a file (its content type from the extension), then on stdin, JSON back
    (tmp_path / "rows.csv").write_text(body)
    assert main(["invoke", name, "--file", str(tmp_path / "rows.csv")]) == 0
    np.testing.assert_allclose(
        [float(v) for v in capsys.readouterr().out.split()], model["expected"], rtol=1e-6
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body.encode())))
    assert main(["invoke", name, "--accept", "application/json"]) == 0
    preds = json.loads(capsys.readouterr().out)["predictions"]
    np.testing.assert_allclose([p["score"] for p in preds], model["expected"], rtol=1e-6)

    assert main(["invoke", "no-such-endpoint", "--body", body]) == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "no-such-endpoint" in err and "raymaker endpoints list" in err
    assert main(["invoke", name, "--body", "1,2,oops"]) == 2
    assert "HTTP 400" in capsys.readouterr().err

    assert main(["endpoints", "delete", name]) == 0
    assert f"deleted {name}" in capsys.readouterr().out
    assert session.call("ListEndpoints", {"NameContains": "cli-hosting"})["Endpoints"] == []
    configs = session.call("ListEndpointConfigs", {"NameContains": name})["EndpointConfigs"]
    assert configs == []
    assert main(["endpoints", "describe", name]) == 2
    err = capsys.readouterr().err
    assert name in err and "raymaker endpoints list" in err


def _csv(rows) -> bytes:
    return "".join(",".join(f"{v:.9g}" for v in row) + "\n" for row in rows).encode()


def test_transform_and_transform_jobs(session, model, s3_server, capsys):
    bucket, x, expected = model["bucket"], model["batch_rows"], model["batch_expected"]
    s3 = s3_server.client
    s3.put_object(Bucket=bucket, Key="in/a.csv", Body=_csv(x[:4]))
    s3.put_object(Bucket=bucket, Key="in/b.csv", Body=_csv(x[4:]))
    tag = backend_tag(session)  # names and outputs of their own on each backend (one job database)
    name = f"cli-transform-e2e{tag}"
    transform = [
        "transform", "--model-data", model["uri"], "--algorithm", "xgboost",
        "--input", f"s3://{bucket}/in/", "--output", f"s3://{bucket}/out{tag}/",
        "--content-type", "text/csv", "--split-type", "Line", "--assemble-with", "Line",
    ]  # fmt: skip
    assert main([*transform, "--job-name", name]) == 0
    out = capsys.readouterr().out
    assert f"transform job: {name}\n" in out
    assert "status: Completed" in out
    assert "objects written: 2" in out
    assert f"records transformed: {len(x)}" in out
    assert f"output: s3://{bucket}/out{tag}/" in out
    model_name = next(line for line in out.splitlines() if line.startswith("model: ")).split()[1]
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"out{tag}/")
    assert sorted(o["Key"] for o in listing["Contents"]) == [f"out{tag}/a.csv.out", f"out{tag}/b.csv.out"]
    for key, want in ((f"out{tag}/a.csv.out", expected[:4]), (f"out{tag}/b.csv.out", expected[4:])):
        lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
        np.testing.assert_allclose([float(v) for v in lines], want, rtol=1e-6)

    # the name is taken: refused before a model is made
    models = len(session.call("ListModels", {})["Models"])
    with pytest.raises(SystemExit, match=f"transform job {name} already exists"):
        main([*transform, "--job-name", name])
    with pytest.raises(SystemExit, match="--model-data needs --algorithm"):
        main(transform[:3] + transform[5:])
    assert main([*transform, "--job-name", f"cli-transform-refused{tag}", "--instance-type", "ml.nope.xlarge"]) == 2
    assert "ml.nope.xlarge" in capsys.readouterr().err
    assert len(session.call("ListModels", {})["Models"]) == models  # a refused job leaves no model

    assert main(["transform-jobs", "list", "--name-contains", name]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["NAME", "STATUS", "CREATED", "SECONDS"]
    assert [r.split()[:2] for r in rows[1:]] == [[name, "Completed"]]
    assert main(["transform-jobs", "describe", name]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["TransformJobStatus"] == "Completed" and desc["ModelName"] == model_name
    progress = session.call("GetTransformJobProgress", {"TransformJobName": name})
    assert progress["ObjectsWritten"] == 2 and progress["RecordsTransformed"] == len(x)
    assert main(["transform-jobs", "stop", name]) == 2  # it has ended
    assert "Completed" in capsys.readouterr().err
    assert main(["transform-jobs", "describe", "no-such-job"]) == 2
    err = capsys.readouterr().err
    assert "no-such-job" in err and "raymaker transform-jobs list" in err

    # a malformed line fails the job, naming the object and the line; no .out for it
    lines = _csv(x[:5]).decode().splitlines()
    lines[2] = "1,2,oops"
    s3.put_object(Bucket=bucket, Key="bad/rows.csv", Body=("\n".join(lines) + "\n").encode())
    bad = [
        "transform", "--model", model_name, "--input", f"s3://{bucket}/bad/",
        "--output", f"s3://{bucket}/out-bad{tag}/", "--content-type", "text/csv", "--split-type", "Line",
    ]  # fmt: skip
    assert main(bad) == 2
    captured = capsys.readouterr()
    assert "transform job: " in captured.out
    assert "Failed" in captured.err
    assert f"s3://{bucket}/bad/rows.csv" in captured.err and "line 3" in captured.err, captured.err
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=f"out-bad{tag}/")
