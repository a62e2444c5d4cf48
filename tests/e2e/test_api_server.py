"""raymaker as a shared service: the API server on 127.0.0.1 (real HTTP, uvicorn), unchanged boto3
``sagemaker`` and ``sagemaker-runtime`` clients with waiters and paginators, raymaker's SDK and CLI on
the HTTP backend, SigV4 on every request, users, keys and IAM policies, and the audit trail of every
refusal."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import socket
import threading
import time
from pathlib import Path

import boto3
import botocore
import botocore.auth
import numpy as np
import pytest
import ray
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from raymaker import Estimator, Session, TrainingInput
from raymaker.cli import main as cli
from raymaker.cluster.definition import load_instance_types
from raymaker.cluster.local import free_port
from raymaker.engine.api import SageMakerAPI
from raymaker.engine.store import JobStore
from raymaker.protocol.errors import AccessDenied, ResourceNotFound
from raymaker.sdk.http_backend import HTTPBackend
from raymaker.server.run import make_server, start_in_thread

pytestmark = pytest.mark.e2e

XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})


@pytest.fixture(scope="module")
def server(ray_session, postgres_server):
    """The API server with signatures checked, and an administrator made on the head as `raymaker users
    create admin --admin` does (the in-process API needs no signature: it is the database's own node).
    A job database (and job service) of its own, on PostgreSQL as a shared service keeps it: its users
    turn signature checks on for its endpoints, which must not reach the other tests' endpoints."""
    api = SageMakerAPI(JobStore(postgres_server.new_database()))
    local = Session(backend=api)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["users", "create", "admin-user", "--admin"], session=local) == 0
    keys = dict(line.split("=", 1) for line in out.getvalue().splitlines() if line.startswith("AWS_"))
    port = free_port()
    srv = make_server("127.0.0.1", port, api=api, key_cache_s=0.2)
    thread = start_in_thread(srv)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "api": api, "local": local, "printed": out.getvalue(),
               "key": keys["AWS_ACCESS_KEY_ID"], "secret": keys["AWS_SECRET_ACCESS_KEY"]}
    finally:
        srv.should_exit = srv.force_exit = True  # kept-alive clients hold no shutdown
        thread.join(10)


def client(server, service="sagemaker", key=None, secret=None):
    return boto3.client(service, endpoint_url=server["url"], region_name="us-east-1", config=NO_RETRIES,
                        aws_access_key_id=key or server["key"], aws_secret_access_key=secret or server["secret"])


def make_user(server, name: str, policy: dict | None) -> tuple[str, str]:
    session = as_user(server, server["key"], server["secret"])  # boto3 knows no CreateUser: the SDK sends it
    session.call("CreateUser", {"UserName": name})
    if policy is not None:
        session.call("PutUserPolicy", {"UserName": name, "PolicyName": "p", "PolicyDocument": json.dumps(policy)})
    key = session.call("CreateAccessKey", {"UserName": name})["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="module")
def data(s3_server):
    bucket = s3_server.new_bucket()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    rows = "\n".join(",".join(f"{v:.5g}" for v in [label, *feats]) for label, feats in zip(y, x, strict=True))
    s3_server.client.put_object(Bucket=bucket, Key="train/part-0.csv", Body=rows.encode())
    body = "\n".join(",".join(f"{v:.5g}" for v in feats) for feats in x[:5])
    s3_server.client.put_object(Bucket=bucket, Key="batch/part-0.csv", Body=body.encode())
    return bucket


def _training_request(bucket: str, name: str) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": XGBOOST_IMAGE, "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
        "HyperParameters": {"objective": "binary:logistic", "num_round": "5"},
        "InputDataConfig": [{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/train/", "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def test_an_unchanged_boto3_script_trains_tunes_deploys_invokes_and_transforms(server, data, s3_server):
    sm = client(server)
    sm.create_training_job(**_training_request(data, "api-train"))
    sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName="api-train",
                                                             WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    job = sm.describe_training_job(TrainingJobName="api-train")
    assert job["TrainingJobStatus"] == "Completed"
    assert isinstance(job["CreationTime"], datetime.datetime) and job["CreationTime"].tzinfo is not None
    assert job["TrainingEndTime"] >= job["TrainingStartTime"] >= job["CreationTime"].replace(microsecond=0)
    assert job["ResponseMetadata"]["RequestId"]  # x-amzn-RequestId, as AWS answers
    names = [s["TrainingJobName"] for page in sm.get_paginator("list_training_jobs").paginate(
        PaginationConfig={"PageSize": 1}) for s in page["TrainingJobSummaries"]]
    assert "api-train" in names

    tuning = {
        "HyperParameterTuningJobName": "api-tune",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random", "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:logloss"},
            "ParameterRanges": {"IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "3"}]},
        },
        "TrainingJobDefinition": {k: v for k, v in _training_request(data, "x").items() if k not in ("TrainingJobName",
                                                                                                    "AlgorithmSpecification", "HyperParameters")}
        | {"AlgorithmSpecification": {"TrainingImage": XGBOOST_IMAGE, "TrainingInputMode": "File"},
           "StaticHyperParameters": {"objective": "binary:logistic", "num_round": "3"}},
    }
    tuning["TrainingJobDefinition"]["InputDataConfig"] = tuning["TrainingJobDefinition"]["InputDataConfig"] + [
        dict(tuning["TrainingJobDefinition"]["InputDataConfig"][0], ChannelName="validation")]
    sm.create_hyper_parameter_tuning_job(**tuning)

    model_data = job["ModelArtifacts"]["S3ModelArtifacts"]
    sm.create_model(ModelName="api-model", PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": model_data},
                    ExecutionRoleArn="arn:aws:iam::000000000000:role/SageMakerRole")
    sm.create_endpoint_config(EndpointConfigName="api-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "api-model", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="api-ep", EndpointConfigName="api-config")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="api-ep", WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    try:
        check_invocations(server)
    finally:
        sm.delete_endpoint(EndpointName="api-ep")

    sm.create_transform_job(
        TransformJobName="api-transform", ModelName="api-model",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{data}/batch/"}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": f"s3://{data}/batch-out"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName="api-transform",
                                                             WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    assert sm.describe_transform_job(TransformJobName="api-transform")["TransformJobStatus"] == "Completed"
    out = s3_server.client.get_object(Bucket=data, Key="batch-out/part-0.csv.out")["Body"].read().decode()
    assert len(out.split()) == 5

    deadline = time.time() + 180  # boto3 has no tuning-job waiter: poll as its users do
    while (tuned := sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-tune"))[
            "HyperParameterTuningJobStatus"] in ("InProgress", "Stopping"):
        assert time.time() < deadline
        time.sleep(1)
    assert tuned["HyperParameterTuningJobStatus"] == "Completed"
    assert tuned["TrainingJobStatusCounters"]["Completed"] == 2
    assert tuned["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["MetricName"] == "validation:logloss"

    # Billing: the endpoint per instance-second while it was InService, next to the jobs, per user.
    admin = as_user(server, server["key"], server["secret"])
    endpoint_arn = "arn:aws:sagemaker:us-east-1:000000000000:endpoint/api-ep"
    cost = admin.call("GetResourceCost", {"ResourceArn": endpoint_arn})
    price = load_instance_types()["ml.m5.large"].price_per_hour
    assert cost["BillableInstanceSeconds"] >= 1 and cost["PricePerInstanceHour"] == price
    assert cost["Cost"] == pytest.approx(cost["BillableInstanceSeconds"] * price / 3600)
    time.sleep(1.1)
    assert admin.call("GetResourceCost", {"ResourceArn": endpoint_arn}) == cost  # deleted: billing stopped
    summary = admin.call("GetCostSummary", {"GroupBy": "Resource"})
    kinds = {e["Key"]: e["ResourceType"] for e in summary["Entries"]}
    assert kinds[endpoint_arn] == "endpoint" and kinds[job["TrainingJobArn"]] == "training-job"
    assert "transform-job" in kinds.values()
    by_user = {e["Key"]: e["Cost"] for e in admin.call("GetCostSummary", {"GroupBy": "User"})["Entries"]}
    assert by_user["admin-user"] == pytest.approx(summary["TotalCost"], abs=1e-5)  # the admin made all of it


def check_invocations(server) -> None:
    """The service has users, so its endpoint takes only signed invocations by users allowed to make them,
    and every invocation, refused or not, is counted in the audit trail."""
    def runtime(key=None, secret=None, **config):
        return boto3.client("sagemaker-runtime", endpoint_url=Session().runtime_url, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
                            aws_access_key_id=key or server["key"], aws_secret_access_key=secret or server["secret"])

    def invoke(client):
        return client.invoke_endpoint(EndpointName="api-ep", ContentType="text/csv", Body=b"3,3,0,0")

    for _ in range(5):
        assert float(invoke(runtime())["Body"].read().decode().split(",")[0]) > 0.5
    key, secret = make_user(server, "invoker", {"Statement": {
        "Effect": "Allow", "Action": "sagemaker:InvokeEndpoint", "Resource": "arn:aws:sagemaker:*:*:endpoint/api-ep"}})
    for _ in range(3):
        invoke(runtime(key, secret))
    viewer, viewer_secret = make_user(server, "viewer", {"Statement": {
        "Effect": "Allow", "Action": "sagemaker:Describe*", "Resource": "*"}})
    assert _code(lambda: invoke(runtime(viewer, viewer_secret))) == "AccessDeniedException"
    assert _code(lambda: invoke(runtime(signature_version=botocore.UNSIGNED))) == "MissingAuthenticationTokenException"
    assert _code(lambda: invoke(runtime(secret="wrong" * 8))) == "InvalidSignatureException"

    def counted() -> dict:
        out: dict = {}
        for e in server["local"].call("ListAuditEvents", {"EventName": "InvokeEndpoint", "MaxResults": 1000})["Events"]:
            r = json.loads(e["CloudTrailEvent"])
            who = r["userIdentity"].get("userName") or r["userIdentity"]["type"]
            k = (who, r.get("errorCode"))
            out[k] = out.get(k, 0) + r["requestParameters"]["invocationCount"]
        return out

    # Nothing answers other machines unchecked: HAProxy's stats and metrics listeners are on loopback
    # (raymaker.cluster.haproxy), the replicas' own ports run the same checks as the front door.
    node_ip = ray.util.get_node_ip_address()
    for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
        port = int(os.environ[name])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        if node_ip != "127.0.0.1":
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((node_ip, port), timeout=5)

    want = {("admin-user", None): 5, ("invoker", None): 3, ("viewer", "AccessDeniedException"): 1,
            ("Unknown", "MissingAuthenticationTokenException"): 1, ("Unknown", "InvalidSignatureException"): 1}
    deadline = time.time() + 15  # replicas send their counts every 2 s
    while (got := counted()) != want:
        assert time.time() < deadline, got
        time.sleep(0.5)


def test_the_sdk_and_cli_work_through_the_http_backend(server, data, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server["secret"])
    monkeypatch.setenv("RAYMAKER_ENDPOINT_URL", server["url"])
    session = Session()  # the environment picks the HTTP backend
    assert type(session.backend).__name__ == "HTTPBackend"
    est = Estimator("xgboost", hyperparameters={"objective": "binary:logistic", "num_round": 3},
                    output_path=f"s3://{data}/sdk-output", session=session)
    est.fit(TrainingInput(f"s3://{data}/train/", content_type="text/csv"), logs=True)  # logs: raymaker's own ops
    assert est.model_data.startswith(f"s3://{data}/sdk-output/")
    assert "[0]" in capsys.readouterr().out  # the job's log lines came over HTTP
    with pytest.raises(ResourceNotFound):  # the same error class as in-process
        session.call("DescribeTrainingJob", {"TrainingJobName": "no-such-job"})
    assert cli(["jobs", "list"]) == 0  # the CLI on the same backend
    assert est.latest_training_job.name in capsys.readouterr().out


def as_user(server, key: str, secret: str) -> HTTPBackend:
    return HTTPBackend(server["url"], credentials=Credentials(key, secret))


def _raw(server, target: str, body: bytes, headers: dict[str, str] | None = None):
    http = urllib3.PoolManager()
    return http.request("POST", server["url"] + "/", body=body, retries=False,
                        headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1", **(headers or {})})


def _signed(server, target: str, body: bytes, key: str, secret: str) -> dict[str, str]:
    request = AWSRequest(method="POST", url=server["url"] + "/", data=body,
                         headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(key, secret), "sagemaker", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def _code(call) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


def test_every_refusal_is_refused_with_aws_s_code_and_audited(server, data, monkeypatch, capsys):
    before = {e["EventId"] for e in server["local"].call("ListAuditEvents", {"MaxResults": 1000})["Events"]}
    target, body = "SageMaker.ListTrainingJobs", b"{}"

    unsigned = _raw(server, target, body)
    assert unsigned.status == 403
    assert json.loads(unsigned.data)["__type"] == "MissingAuthenticationTokenException"
    assert _code(lambda: client(server, secret="wrong" * 8).list_training_jobs()) == "InvalidSignatureException"
    assert _code(lambda: client(server, key="AKIANOSUCHKEY0000000").list_training_jobs()) == "UnrecognizedClientException"

    signed = _signed(server, target, body, server["key"], server["secret"])
    assert _raw(server, target, body, signed).status == 200
    assert _raw(server, target, body, signed).status == 200  # a read may repeat (boto3 sends equal ones)
    stop, stop_body = "SageMaker.StopTrainingJob", b'{"TrainingJobName": "no-such-job"}'
    signed = _signed(server, stop, stop_body, server["key"], server["secret"])
    first = _raw(server, stop, stop_body, signed)
    assert first.status == 400 and json.loads(first.data)["__type"] == "ResourceNotFound"
    replay = _raw(server, stop, stop_body, signed)  # a change, replayed: refused
    assert replay.status == 403 and "already used" in json.loads(replay.data)["message"]

    stale = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=6)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: stale.replace(tzinfo=None))
    skewed = _raw(server, target, body, _signed(server, target, body, server["key"], server["secret"]))
    monkeypatch.undo()
    assert skewed.status == 403 and "Signature expired" in json.loads(skewed.data)["message"]

    # A reader: Describe and List on everything, and an explicit Deny on one job, which wins.
    key, secret = make_user(server, "reader", {"Statement": [
        {"Effect": "Allow", "Action": ["sagemaker:Describe*", "sagemaker:List*"], "Resource": "*"},
        {"Effect": "Deny", "Action": "sagemaker:*", "Resource": "arn:aws:sagemaker:*:*:training-job/api-secret-*"}]})
    reader = client(server, key=key, secret=secret)
    assert reader.list_training_jobs()["TrainingJobSummaries"] is not None
    with pytest.raises(ClientError) as info:
        reader.create_training_job(**_training_request(data, "api-denied"),
                                   Environment={"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-not-for-the-trail"})
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "User: arn:aws:iam::000000000000:user/reader is not authorized to perform: sagemaker:CreateTrainingJob" in str(info.value)
    assert _code(lambda: reader.describe_training_job(TrainingJobName="api-secret-job")) == "AccessDeniedException"
    assert _code(lambda: reader.stop_training_job(TrainingJobName="api-train")) == "AccessDeniedException"
    with pytest.raises(AccessDenied):  # the SDK raises the same class
        as_user(server, key, secret).call("DeleteEndpoint", {"EndpointName": "x"})
    with pytest.raises(ResourceNotFound):  # allowed, and answered: the job does not exist
        as_user(server, key, secret).call("DescribeTrainingJob", {"TrainingJobName": "no-such-job"})
    assert "api-denied" not in [s["TrainingJobName"] for s in reader.list_training_jobs()["TrainingJobSummaries"]]

    events = [e for e in server["local"].call("ListAuditEvents", {"MaxResults": 1000})["Events"]
              if e["EventId"] not in before]
    records = [json.loads(e["CloudTrailEvent"]) for e in events]
    codes = [r.get("errorCode") for r in records]
    for code in ("MissingAuthenticationTokenException", "InvalidSignatureException", "UnrecognizedClientException",
                 "AccessDeniedException"):
        assert code in codes, codes
    assert codes.count("InvalidSignatureException") >= 3  # wrong secret, replay, skew
    denied = next(r for r in records if r.get("errorCode") == "AccessDeniedException"
                  and r["eventName"] == "CreateTrainingJob")
    assert denied["userIdentity"]["userName"] == "reader" and denied["userIdentity"]["accessKeyId"] == key
    assert denied["sourceIPAddress"] == "127.0.0.1" and "Boto3" in denied["userAgent"]
    assert denied["requestParameters"]["TrainingJobName"] == "api-denied"
    assert denied["requestParameters"]["Environment"] == {"AWS_SECRET_ACCESS_KEY": "HIDDEN_DUE_TO_SECURITY_REASONS"}
    unknown = next(r for r in records if r.get("errorCode") == "UnrecognizedClientException")
    assert unknown["userIdentity"] == {"type": "Unknown", "accessKeyId": "AKIANOSUCHKEY0000000"}

    # `raymaker audit` finds them by user and by resource.
    capsys.readouterr()
    assert cli(["audit", "--user", "reader", "--json", "--max", "100"], session=server["local"]) == 0
    by_user = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert by_user and {r["userIdentity"]["userName"] for r in by_user} == {"reader"}
    assert {"CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob"} <= {r["eventName"] for r in by_user}
    assert cli(["audit", "--resource", "api-denied", "--json"], session=server["local"]) == 0
    by_resource = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["eventName"] for r in by_resource] == ["CreateTrainingJob"]
    assert by_resource[0]["resources"] == [{"ARN": "arn:aws:sagemaker:us-east-1:000000000000:training-job/api-denied"}]


def test_keys_rotate_and_deleted_users_are_refused_and_secrets_are_never_written(server, tmp_path, capsys):
    key, secret = make_user(server, "rotating", {"Statement": {"Effect": "Allow", "Action": "sagemaker:List*",
                                                               "Resource": "*"}})
    admin = as_user(server, server["key"], server["secret"])
    assert cli(["users", "rotate-key", "rotating"], session=Session(backend=admin)) == 0
    printed = capsys.readouterr().out
    new = dict(line.split("=", 1) for line in printed.splitlines() if line.startswith("AWS_"))
    assert new["AWS_ACCESS_KEY_ID"] != key
    old = client(server, key=key, secret=secret)
    time.sleep(0.3)  # the server's key cache (0.2 s here, 2 s by default)
    assert _code(lambda: old.list_training_jobs()) == "UnrecognizedClientException"
    rotated = client(server, key=new["AWS_ACCESS_KEY_ID"], secret=new["AWS_SECRET_ACCESS_KEY"])
    rotated.list_training_jobs()
    assert cli(["users", "list"], session=Session(backend=admin)) == 0
    listing = capsys.readouterr().out
    assert "rotating" in listing and new["AWS_ACCESS_KEY_ID"] in listing
    assert new["AWS_SECRET_ACCESS_KEY"] not in listing and server["secret"] not in listing
    assert cli(["users", "delete", "rotating"], session=Session(backend=admin)) == 0
    time.sleep(0.3)
    assert _code(lambda: rotated.list_training_jobs()) == "UnrecognizedClientException"

    # Every secret issued in this module, searched for in every file raymaker and Ray wrote.
    secrets = [server["secret"], secret, new["AWS_SECRET_ACCESS_KEY"]]

    roots = [Path(os.environ["RAYMAKER_HOME"]), Path(ray._private.worker._global_node.get_session_dir_path())]
    for root in roots:
        for path in root.rglob("*"):
            # The job database keeps secrets by design (checking a signature needs them), as AWS does.
            if not path.is_file() or path.name.startswith("raymaker.db"):
                continue
            data = path.read_bytes()
            assert not any(s.encode() in data for s in secrets), f"a secret was written to {path}"
    trail = json.dumps(server["local"].call("ListAuditEvents", {"MaxResults": 1000}), default=str)
    assert not any(s in trail for s in secrets)


def test_the_api_listener_takes_tls_and_refuses_unsigned_access_beyond_loopback(server, tmp_path):
    from tests.e2e.test_hosting import _self_signed

    cert, key = _self_signed(tmp_path)
    port = free_port()
    srv = make_server("127.0.0.1", port, api=server["api"], certfile=cert, keyfile=key)
    thread = start_in_thread(srv)
    try:
        url = f"https://127.0.0.1:{port}"
        sm = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1", verify=cert, config=NO_RETRIES,
                          aws_access_key_id=server["key"], aws_secret_access_key=server["secret"])
        assert "TrainingJobSummaries" in sm.list_training_jobs()
        tls = HTTPBackend(url, credentials=Credentials(server["key"], server["secret"]), verify=cert)
        with pytest.raises(ResourceNotFound):
            tls.call("DescribeTrainingJob", {"TrainingJobName": "no-such-job"})
        with pytest.raises(urllib3.exceptions.ProtocolError):  # plain HTTP to the TLS port gets nowhere
            urllib3.PoolManager().request("POST", f"http://127.0.0.1:{port}/", body=b"{}", retries=False)
    finally:
        srv.should_exit = srv.force_exit = True  # kept-alive clients hold no shutdown
        thread.join(10)
    with pytest.raises(ValueError, match="must check signatures"):
        make_server("0.0.0.0", free_port(), auth=False, api=server["api"])
    with pytest.raises(ValueError, match="both a certificate"):
        make_server("127.0.0.1", free_port(), certfile=cert, api=server["api"])


def test_concurrent_signed_clients_lose_nothing_from_the_trail(server):
    """A small version of benchmarks/load_test.py's control-plane half: 20 clients at once, every call
    answered and every call in the audit trail (the full run: 50 clients, 20,000 calls each kind)."""
    key, secret = make_user(server, "loader", {"Statement": {"Effect": "Allow", "Action": "sagemaker:*",
                                                             "Resource": "*"}})
    errors: list[str] = []

    def run(n: int) -> None:
        sm = client(server, key=key, secret=secret)
        for i in range(n):
            try:
                if i % 2:
                    sm.list_training_jobs(MaxResults=5)
                else:
                    sm.describe_training_job(TrainingJobName="api-train")
            except Exception as e:  # noqa: BLE001 - counted
                errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(25,)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    recorded = server["api"].store.audit_events(user="loader", limit=100_000)
    assert len([e for e in recorded if e["eventName"] in ("ListTrainingJobs", "DescribeTrainingJob")
                and not e.get("errorCode")]) == 500


def test_users_neither_see_nor_touch_each_other_s_resources(server, data, capsys):
    """`raymaker users create` without --admin gives OwnResources: everything on what the user made
    (aws:ResourceTag/raymaker:owner = ${aws:username}), creating and listing; the rest stays unseen."""
    admin = Session(backend=as_user(server, server["key"], server["secret"]))
    keys = {}
    for name in ("alice", "bob"):
        assert cli(["users", "create", name], session=admin) == 0
        printed = capsys.readouterr().out
        assert "attached OwnResources" in printed
        keys[name] = dict(line.split("=", 1) for line in printed.splitlines() if line.startswith("AWS_"))
    alice, bob = (client(server, key=keys[n]["AWS_ACCESS_KEY_ID"], secret=keys[n]["AWS_SECRET_ACCESS_KEY"])
                  for n in ("alice", "bob"))
    alice.create_model(ModelName="alice-model", ExecutionRoleArn="arn:aws:iam::000000000000:role/R",
                       PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": f"s3://{data}/output/model.tar.gz"})
    assert alice.describe_model(ModelName="alice-model")["ModelName"] == "alice-model"
    assert "alice-model" in [m["ModelName"] for m in alice.list_models()["Models"]]
    assert "alice-model" not in [m["ModelName"] for m in bob.list_models()["Models"]]  # unseen
    assert _code(lambda: bob.describe_model(ModelName="alice-model")) == "AccessDeniedException"
    assert _code(lambda: bob.delete_model(ModelName="alice-model")) == "AccessDeniedException"
    assert _code(lambda: bob.describe_training_job(TrainingJobName="api-train")) == "AccessDeniedException"  # admin's
    assert "alice-model" in [m["ModelName"] for m in client(server).list_models()["Models"]]  # the admin sees all
    # Each sees only their own calls in the trail; the admin (who may list users) sees everyone's.
    bob_sdk = as_user(server, keys["bob"]["AWS_ACCESS_KEY_ID"], keys["bob"]["AWS_SECRET_ACCESS_KEY"])
    seen = {e["Username"] for e in bob_sdk.call("ListAuditEvents", {"MaxResults": 200})["Events"]}
    assert seen == {"bob"}
    everyone = {e["Username"] for e in as_user(server, server["key"], server["secret"]).call(
        "ListAuditEvents", {"MaxResults": 1000})["Events"]}
    assert {"alice", "bob", "admin-user"} <= everyone
    alice.delete_model(ModelName="alice-model")
