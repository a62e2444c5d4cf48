"""Custom containers end to end: a user's own image (built here from busybox and shell scripts that
follow SageMaker's container contract, ``raymaker.testing.images``) trained, deployed and used for
batch transform through the SDK and boto3, on real Ray, a real container runtime (podman), the moto S3
server and real HTTP."""

from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import boto3
import psutil
import pytest

from raymaker import Session, TrainingInput
from raymaker.cluster.local import free_port
from raymaker.containers.runtime import find_runtime
from raymaker.sdk import Estimator, Model, UnexpectedStatusException
from raymaker.testing.images import build_busybox_image
from raymaker.testing.registry import start_registry

pytestmark = pytest.mark.e2e

IMAGE = "localhost/raymaker-test-busybox:1"
LOSS = [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}]


@pytest.fixture(scope="module")
def runtime():
    return find_runtime()


@pytest.fixture(scope="module")
def image(runtime):
    return build_busybox_image(IMAGE, runtime)


@pytest.fixture(scope="module")
def bucket(s3_server):
    name = s3_server.new_bucket()
    s3_server.client.put_object(Bucket=name, Key="train/a.csv", Body=b"1,2\n3,4\n")
    s3_server.client.put_object(Bucket=name, Key="train/b.csv", Body=b"5,6\n")
    s3_server.client.put_object(Bucket=name, Key="batch/part-0.csv", Body=b"1,2\n3,4,5\n10\n")
    s3_server.client.put_object(Bucket=name, Key="batch/part-1.csv", Body=b"7,7\n")
    return name


@pytest.fixture(scope="module")
def model_data(s3_server, bucket) -> str:
    """A model.tar.gz as a training job of the image writes it (uploaded here: the serving tests need
    no training job of their own)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("summary.txt")
        info.size = len(b"rows=3 total=9\n")
        tar.addfile(info, io.BytesIO(b"rows=3 total=9\n"))
    s3_server.client.put_object(Bucket=bucket, Key="models/model.tar.gz", Body=buf.getvalue())
    return f"s3://{bucket}/models/model.tar.gz"


@pytest.fixture
def session(ray_session):
    return Session()


def logs(session, job: str) -> list[str]:
    return [e["line"] for e in session.backend.store.logs(job)]


def model_files(s3_server, uri: str) -> dict[str, bytes]:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    data = s3_server.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def estimator(session, bucket, image, **kwargs) -> Estimator:
    kwargs.setdefault("instance_type", "local")
    return Estimator(image_uri=image, output_path=f"s3://{bucket}/output", session=session, **kwargs)


def test_train_in_file_and_pipe_mode_with_metrics(session, s3_server, bucket, image):
    for mode in ("File", "Pipe"):
        est = estimator(session, bucket, image, hyperparameters={"epochs": 3, "name": "x y"},
                        metric_definitions=LOSS, environment={"USER_COLOUR": "blue"}, input_mode=mode,
                        instance_type="ml.m5.large")  # cluster/local.yaml: 0.5 CPU, 8 GiB
        est.fit({"train": TrainingInput(f"s3://{bucket}/train/", content_type="text/csv")}, logs=False)
        desc = est.latest_training_job.describe()
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        name = desc["TrainingJobName"]
        files = model_files(s3_server, desc["ModelArtifacts"]["S3ModelArtifacts"])
        assert json.loads(files["hyperparameters.json"]) == {"epochs": "3", "name": "x y"}  # verbatim strings
        assert files["summary.txt"] == b"rows=3 total=9\n"  # every row of the channel, in either mode
        env = files["environment-algo-1.txt"].decode().splitlines()
        assert f"TRAINING_JOB_NAME={name}" in env and "USER_COLOUR=blue" in env
        assert any(line.startswith("TRAINING_JOB_ARN=arn:aws:sagemaker:") for line in env)
        assert int(files["memory-limit.txt"]) == 8 << 30  # the instance type's limits, in its cgroup
        quota, period = files["cpu-limit.txt"].split()
        assert int(quota) / int(period) == 0.5
        lines = logs(session, name)
        assert "epoch=3 loss=0.333333" in lines and "train: done" in lines  # the container's own output
        final = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
        assert final["train:loss"] == pytest.approx(0.333333)
        output = desc["ModelArtifacts"]["S3ModelArtifacts"].replace("model.tar.gz", "output.tar.gz")
        assert model_files(s3_server, output)["seen.txt"].decode().count(";") == 3


def test_failure_file_exit_code_and_entrypoint(session, bucket, image):
    est = estimator(session, bucket, image, environment={"MODE": "fail"})
    with pytest.raises(UnexpectedStatusException):
        est.fit({"train": f"s3://{bucket}/train/"}, logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Failed"
    assert desc["FailureReason"].strip() == "ValueError: column 3 holds text, not numbers"  # the file, whole

    est = estimator(session, bucket, image, environment={"MODE": "crash"})
    with pytest.raises(UnexpectedStatusException):
        est.fit({"train": f"s3://{bucket}/train/"}, logs=False)
    reason = est.latest_training_job.describe()["FailureReason"]
    assert reason.startswith("AlgorithmError: ") and "Segmentation fault" in reason and "exit code: 3" in reason

    # ContainerEntrypoint replaces the image's (no "train" argument), ContainerArguments follow it.
    est = estimator(session, bucket, image, container_entry_point=["/bin/sh", "-c"],
                    container_arguments=['echo "entry: $0 $1" && touch /opt/ml/model/ok', "extra"])
    est.fit({"train": f"s3://{bucket}/train/"}, logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert "entry: extra " in logs(session, desc["TrainingJobName"])


def test_stop_sends_sigterm_and_the_container_ends(session, runtime, bucket, image):
    est = estimator(session, bucket, image, environment={"MODE": "sleep"}, metric_definitions=LOSS)
    est.fit({"train": f"s3://{bucket}/train/"}, wait=False)
    job = est.latest_training_job
    deadline = time.time() + 60
    while not any(line.startswith("epoch=") for line in logs(session, job.name)):
        assert time.time() < deadline, logs(session, job.name)
        time.sleep(0.2)
    job.stop()
    deadline = time.time() + 60
    while (desc := job.describe())["TrainingJobStatus"] not in ("Stopped", "Completed", "Failed"):
        assert time.time() < deadline
        time.sleep(0.2)
    assert desc["TrainingJobStatus"] == "Stopped"
    assert "train: got SIGTERM" in logs(session, job.name)  # SIGTERM reached the container's process
    assert not runtime.running(f"raymaker-{job.name}-algo-1")


def test_two_instances_reach_each_other_by_host_name(session, s3_server, bucket, image):
    est = estimator(session, bucket, image, instance_count=2,
                    environment={"MODE": "hosts", "HOSTS_PORT": str(free_port())})
    est.fit({"train": f"s3://{bucket}/train/"}, logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    files = model_files(s3_server, desc["ModelArtifacts"]["S3ModelArtifacts"])
    assert files["received.txt"] == b"hello from algo-2\n"  # algo-2 connected to algo-1 by its name
    for host in ("algo-1", "algo-2"):  # every host's model/ merged; each knows both names
        config = json.loads(files[f"resourceconfig-{host}.json"])
        assert config["current_host"] == host and config["hosts"] == ["algo-1", "algo-2"]
        assert "algo-1" in files[f"hosts-{host}"].decode() and "algo-2" in files[f"hosts-{host}"].decode()


def test_bad_images_and_entrypoints_fail_before_any_work(session, bucket, image):
    sm = session.backend
    before = len(sm.call("ListTrainingJobs", {"MaxResults": 100})["TrainingJobSummaries"])
    with pytest.raises(Exception) as info:
        estimator(session, bucket, "localhost/raymaker-no-such-image:1").fit(
            {"train": f"s3://{bucket}/train/"}, logs=False)
    assert "could not pull it" in str(info.value) and "raymaker images load" in str(info.value)
    with pytest.raises(Exception) as info:
        estimator(session, bucket, image, container_entry_point=[""]).fit(
            {"train": f"s3://{bucket}/train/"}, logs=False)
    assert "ContainerEntrypoint[0]" in str(info.value)
    after = len(sm.call("ListTrainingJobs", {"MaxResults": 100})["TrainingJobSummaries"])
    assert after == before  # nothing was created


def test_deploy_invoke_through_boto3_and_batch_transform(session, s3_server, bucket, image, model_data):
    model = Model(model_data, image_uri=image, session=session, name="busybox-model",
                  env={"USER_GREETING": "hi"})
    model.deploy(1, "local", endpoint_name="busybox-ep")
    runtime = boto3.client("sagemaker-runtime", endpoint_url=session.runtime_url, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
    try:
        r = runtime.invoke_endpoint(EndpointName="busybox-ep", ContentType="text/csv", Body=b"1,2\n3,4\n")
        assert r["Body"].read() == b"3\n7\n" and r["ContentType"] == "text/csv"
        r = runtime.invoke_endpoint(EndpointName="busybox-ep", ContentType="text/csv", Accept="application/json",
                                    CustomAttributes="trace=42", TargetVariant="AllTraffic", Body=b"5,5")
        doc = json.loads(r["Body"].read())  # what the container received
        assert doc["sums"] == [10] and doc["content_type"] == "text/csv" and doc["accept"] == "application/json"
        assert doc["attributes"] == "trace=42" and r["CustomAttributes"] == "trace=42"
        assert doc["variant"] == "AllTraffic" and doc["tag"] == ""  # headers forwarded; the model's env only
        with pytest.raises(runtime.exceptions.ModelError) as info:  # the container's 500 is a 424 ModelError
            runtime.invoke_endpoint(EndpointName="busybox-ep", ContentType="text/csv", Body=b"boom")
        assert "cannot score boom" in str(info.value)
        # A replica keeps taking requests while the container works: 4 requests of a second each, sent
        # at once, end together (one after another they would take 4 s).
        with ThreadPoolExecutor(4) as pool:
            began = time.monotonic()
            answers = list(pool.map(lambda _: runtime.invoke_endpoint(
                EndpointName="busybox-ep", ContentType="text/csv", Body=b"slow")["Body"].read(), range(4)))
            took = time.monotonic() - began
        assert answers == [b"slow"] * 4 and took < 2.5, (answers, took)
        # The container's server listens on every address of its own network; the node publishes it
        # on loopback only, so nothing beyond this node reaches it past the endpoint's signature check.
        (container,) = find_runtime().owned("busybox-model")
        (info,) = json.loads(subprocess.run([*find_runtime().base_command(), "inspect", container],
                                            capture_output=True, text=True, check=True).stdout)
        assert info["HostConfig"]["NetworkMode"] != "host"
        (published,) = info["NetworkSettings"]["Ports"]["8080/tcp"]
        assert published["HostIp"] == "127.0.0.1"
        port = int(published["HostPort"])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # the replica's way in
        outside = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127.")]
        for address in outside:
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=2)
    finally:
        session.backend.call("DeleteEndpoint", {"EndpointName": "busybox-ep"})

    # A container that cannot serve fails the deployment with its own words, and leaves nothing running.
    broken = build_busybox_image("localhost/raymaker-test-broken-serve:1", scripts={
        "/usr/bin/serve": "#!/bin/sh\necho 'serve: cannot load /opt/ml/model/weights.bin' >&2\nexit 1\n"})
    with pytest.raises(UnexpectedStatusException):
        Model(model_data, image_uri=broken, session=session, name="broken-model").deploy(
            1, "local", endpoint_name="broken-ep")
    desc = session.call("DescribeEndpoint", {"EndpointName": "broken-ep"})
    assert desc["EndpointStatus"] == "Failed"
    assert "cannot load /opt/ml/model/weights.bin" in desc["FailureReason"], desc["FailureReason"]
    assert find_runtime().owned("broken-model") == []

    transformer = model.transformer(1, "local", output_path=f"s3://{bucket}/batch-out", accept="application/json",
                                    strategy="MultiRecord", max_payload=1)
    transformer.transform(f"s3://{bucket}/batch/", content_type="text/csv", split_type="Line", wait=True)
    out = s3_server.client.get_object(Bucket=bucket, Key="batch-out/part-0.csv.out")["Body"].read().decode()
    doc = json.loads(out)
    assert doc["sums"] == [3, 12, 10] and doc["batch"] == "true"
    assert doc["strategy"] == "MULTI_RECORD" and doc["payload_mb"] == "1" and doc["concurrent"] == ""

    # Left out of the request, BatchStrategy comes from the container's GET /execution-parameters
    # (SINGLE_RECORD: one request per line), and the variables the request did not set stay unset.
    params = json.dumps({"BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 1, "MaxConcurrentTransforms": 1})
    asking = Model(model_data, image_uri=image, session=session, name="busybox-exec-params",
                   env={"EXECUTION_PARAMETERS": params})
    transformer = asking.transformer(1, "local", output_path=f"s3://{bucket}/batch-out-2", accept="application/json",
                                     assemble_with="Line")
    transformer.transform(f"s3://{bucket}/batch/", content_type="text/csv", split_type="Line", wait=True)
    out = s3_server.client.get_object(Bucket=bucket, Key="batch-out-2/part-0.csv.out")["Body"].read().decode()
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["sums"] for d in docs] == [[3], [12], [10]]  # one record a request
    assert {(d["batch"], d["strategy"], d["payload_mb"], d["concurrent"]) for d in docs} == {("true", "", "", "")}


def _load(url, endpoint: str, stop: threading.Event, ok: list, failures: list, answers: list) -> None:
    while not stop.is_set():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=90)
        try:
            conn.request("POST", f"/endpoints/{endpoint}/invocations", body=b"1,2",
                         headers={"Content-Type": "text/csv", "Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200:
                ok.append(time.monotonic())
                answers.append(json.loads(body)["tag"])
            else:
                failures.append((resp.status, resp.getheader("x-amzn-ErrorType"), body[:200]))
        except Exception as e:  # noqa: BLE001 - a dropped connection is a failed request too
            failures.append(repr(e))
        finally:
            conn.close()


def test_a_killed_container_restarts_under_load_and_an_update_fails_no_request(
    session, runtime, bucket, image, model_data
):
    Model(model_data, image_uri=image, session=session, name="bb-v1", env={"MODEL_TAG": "v1"}).deploy(
        1, "local", endpoint_name="bb-load")
    url = urlsplit(session.runtime_url)
    stop, ok, failures, answers = threading.Event(), [], [], []
    threads = [threading.Thread(target=_load, args=(url, "bb-load", stop, ok, failures, answers)) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        (before,) = runtime.owned("bb-v1")
        runtime.kill(before)  # the container dies under load (SIGKILL)
        deadline = time.time() + 60
        while not (after := runtime.owned("bb-v1")) or after == [before]:
            assert time.time() < deadline, "the container was not started again"
            time.sleep(0.2)
        served = len(ok)
        time.sleep(1.0)
        assert len(ok) > served  # the restarted container answers
        # In flight at the kill: at most one request per client fails, as a ModelError, never a hang.
        assert len(failures) <= len(threads), failures
        assert all(f[:2] == (424, "ModelError") for f in failures), failures
        killed = len(failures)

        Model(model_data, image_uri=image, session=session, name="bb-v2", env={"MODEL_TAG": "v2"}).create()
        session.call("UpdateEndpoint", {"EndpointName": "bb-load", "EndpointConfigName": _config(session, "bb-v2")})
        deadline = time.time() + 120
        while session.call("DescribeEndpoint", {"EndpointName": "bb-load"})["EndpointStatus"] != "InService":
            assert time.time() < deadline
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        session.backend.call("DeleteEndpoint", {"EndpointName": "bb-load"})
    assert len(failures) == killed, failures[killed:]  # the update failed no request
    assert answers[0] == "v1" and set(answers[-10:]) == {"v2"}
    deadline = time.time() + 60
    while runtime.owned("bb-v1") or runtime.owned("bb-v2"):  # scale-in: nothing left running
        assert time.time() < deadline, (runtime.owned("bb-v1"), runtime.owned("bb-v2"))
        time.sleep(0.5)


def _config(session, model: str) -> str:
    name = f"{model}-config"
    session.call("CreateEndpointConfig", {"EndpointConfigName": name, "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1, "InstanceType": "local"}]})
    return name


def test_images_are_pulled_from_a_registry_with_the_runtime_s_own_login(
    session, runtime, bucket, image, tmp_path, monkeypatch
):
    registry = start_registry(str(tmp_path / "registry"))
    try:
        # The runtime's own configuration: this registry speaks HTTP; logins go to a file of the test's.
        monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", registry.registries_conf)
        (tmp_path / "auth.json").write_text('{"auths": {}}')  # no login yet (podman wants the file)
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
        remote = f"{registry.address}/team/busybox-algo:1"
        base = runtime.base_command()
        subprocess.run([*base, "tag", image, remote], check=True, capture_output=True)
        subprocess.run([*base, "push", "-q", "--creds", f"{registry.user}:{registry.password}", remote],
                       check=True, capture_output=True)
        subprocess.run([*base, "rmi", remote], check=True, capture_output=True)
        assert not runtime.image_exists(remote)

        with pytest.raises(Exception) as info:  # not logged in: refused at Create, the registry's words
            estimator(session, bucket, remote).fit({"train": f"s3://{bucket}/train/"}, logs=False)
        assert "could not pull it" in str(info.value) and "authentication required" in str(info.value)

        subprocess.run([*base, "login", "-u", registry.user, "--password-stdin", registry.address],
                       input=registry.password.encode(), check=True, capture_output=True)
        est = estimator(session, bucket, remote)
        est.fit({"train": f"s3://{bucket}/train/"}, logs=False)
        assert est.latest_training_job.describe()["TrainingJobStatus"] == "Completed"
        assert runtime.image_exists(remote)  # pulled with the login the runtime holds
    finally:
        registry.stop()
        subprocess.run([*runtime.base_command(), "rmi", "-f", f"{registry.address}/team/busybox-algo:1"],
                       capture_output=True)
