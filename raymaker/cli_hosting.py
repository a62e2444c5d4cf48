"""``raymaker deploy``, ``raymaker endpoints list|describe|delete`` and ``raymaker invoke``: endpoints
from the shell; ``raymaker transform`` and ``raymaker transform-jobs list|describe|stop``: batch
transform."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any


def _session():
    from raymaker import Session

    return Session()


def _invocation_url(session, name: str) -> str:
    return f"{session.runtime_url.rstrip('/')}/endpoints/{name}/invocations"


def _describe(session, name: str) -> dict[str, Any]:
    """DescribeEndpoint; an unknown name says where to find the ones there are."""
    from raymaker.protocol.errors import ValidationError

    try:
        return session.call("DescribeEndpoint", {"EndpointName": name})
    except ValidationError as e:
        if "Could not find endpoint" not in str(e):
            raise
        raise ValidationError(f"{e} `raymaker endpoints list` shows the endpoints there are.") from None


def _exists(session, operation: str, key: str, name: str) -> dict[str, Any] | None:
    from raymaker.protocol.errors import ValidationError

    try:
        return session.call(operation, {key: name})
    except ValidationError:
        return None


def _check_ray_outlives_command(command: str = "deploy", what: str = "the endpoint") -> None:
    """The endpoint (or a transform job not waited for) runs on the Ray cluster: one that this command
    would start itself stops when the command exits, taking it along. A caller that already holds Ray
    (a script, a test) is left alone."""
    import ray

    if ray.is_initialized():
        return
    from raymaker.engine.api import ensure_ray

    ensure_ray()
    node = getattr(ray._private.worker, "_global_node", None)
    if getattr(node, "head", False):
        ray.shutdown()
        raise SystemExit(
            f"{command} needs a running Ray cluster: one started by this command would stop when it "
            f"exits, taking {what} with it: start one with `ray start --head` (or set RAY_ADDRESS to a "
            f"running cluster) and {command} again"
        )


def _from_training_job(session, name: str, use: str = "deploy") -> tuple[str, str | None, str | None]:
    """The model data, algorithm and image of a Completed training job."""
    desc = session.call("DescribeTrainingJob", {"TrainingJobName": name})
    status = desc["TrainingJobStatus"]
    if status != "Completed":
        hint = f" (follow it with `raymaker jobs logs -f {name}`)" if status == "InProgress" else ""
        raise SystemExit(f"training job {name} is {status}: only a Completed job has a model to {use}{hint}")
    spec = desc.get("AlgorithmSpecification") or {}
    algorithm = spec.get("AlgorithmName")
    return (
        desc["ModelArtifacts"]["S3ModelArtifacts"],
        algorithm,
        None if algorithm else spec.get("TrainingImage"),
    )


def cmd_deploy(args: argparse.Namespace) -> int:
    from raymaker.algorithms import algorithm_names
    from raymaker.protocol.errors import SageMakerError
    from raymaker.sdk import UnexpectedStatusException
    from raymaker.sdk.model import Model

    session = _session()
    image = None
    if args.training_job:
        model_data, algorithm, image = _from_training_job(session, args.training_job)
        algorithm = args.algorithm or algorithm
        image = None if args.algorithm else image
        endpoint_name = args.endpoint_name or args.training_job
    else:
        if not args.algorithm:
            raise SystemExit(
                f"--model-data needs --algorithm, the built-in algorithm that serves the "
                f"model ({', '.join(algorithm_names())})"
            )
        model_data, algorithm, endpoint_name = args.model_data, args.algorithm, args.endpoint_name
        if "://" not in model_data:  # the endpoint loads it from elsewhere: never a relative path
            model_data = "file://" + os.path.abspath(os.path.expanduser(model_data))
    if endpoint_name:
        # Checked before anything is created, so a taken name leaves no stray model behind.
        existing = _exists(session, "DescribeEndpoint", "EndpointName", endpoint_name)
        if existing:
            raise SystemExit(
                f"endpoint {endpoint_name} already exists ({existing['EndpointStatus']}): "
                f"choose another --endpoint-name, or delete it first with "
                f"`raymaker endpoints delete {endpoint_name}`"
            )
        if _exists(session, "DescribeEndpointConfig", "EndpointConfigName", endpoint_name):
            raise SystemExit(
                f"endpoint config {endpoint_name} already exists (kept by "
                f"`raymaker endpoints delete --keep-config`?): choose another --endpoint-name"
            )
    _check_ray_outlives_command()
    model = Model(model_data, image_uri=image, algorithm=algorithm, session=session)
    try:
        model.deploy(
            args.instance_count,
            args.instance_type,
            endpoint_name=endpoint_name,
            wait=False,
            min_instance_count=args.min_instances,
            max_instance_count=args.max_instances,
            target_inflight_requests=args.target_inflight,
        )
    except SageMakerError:
        _undo(session, model)
        raise
    name = model.endpoint_name
    if args.no_wait:
        status = session.call("DescribeEndpoint", {"EndpointName": name})["EndpointStatus"]
    else:
        from raymaker.sdk.predictor import wait_for_endpoint

        try:
            status = wait_for_endpoint(session, name)["EndpointStatus"]
        except UnexpectedStatusException as e:
            raise ValueError(f"{e} (remove it with `raymaker endpoints delete {name}`)") from None
    print(f"endpoint: {name} ({status})")
    print(f"model: {model.name} ({model_data})")
    print(f"url: {_invocation_url(session, name)}")
    return 0


def _undo(session, model) -> None:
    """A deploy refused part way (a bad instance type, say) removes the records it made; an endpoint that
    was created is kept, for ``endpoints describe`` to explain."""
    from raymaker.protocol.errors import SageMakerError

    if model.endpoint_name is None or _exists(
        session, "DescribeEndpoint", "EndpointName", model.endpoint_name
    ):
        return
    for operation, key, name in (
        ("DeleteEndpointConfig", "EndpointConfigName", model.endpoint_name),
        ("DeleteModel", "ModelName", model.name),
    ):
        try:
            session.call(operation, {key: name})
        except SageMakerError:
            pass  # never made


def cmd_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"MaxResults": args.max_results}
    if args.status:
        params["StatusEquals"] = args.status
    if args.name_contains:
        params["NameContains"] = args.name_contains
    endpoints = _session().call("ListEndpoints", params)["Endpoints"]
    print(f"{'NAME':<48} {'STATUS':<11} CREATED")
    for e in endpoints:
        created = e["CreationTime"].strftime("%Y-%m-%d %H:%M:%S")
        print(f"{e['EndpointName']:<48} {e['EndpointStatus']:<11} {created}")
    return 0


def _json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def cmd_describe(args: argparse.Namespace) -> int:
    desc = _describe(_session(), args.name)
    print(json.dumps(desc, indent=2, default=_json_default))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from raymaker.sdk.predictor import wait_for_deleted

    session = _session()
    desc = _describe(session, args.name)
    session.call("DeleteEndpoint", {"EndpointName": args.name})
    if not args.no_wait:
        wait_for_deleted(session, args.name)
    if not args.keep_config:
        session.call("DeleteEndpointConfig", {"EndpointConfigName": desc["EndpointConfigName"]})
    kept = f" (kept endpoint config {desc['EndpointConfigName']})" if args.keep_config else ""
    print(f"{'deleting' if args.no_wait else 'deleted'} {args.name}{kept}")
    return 0


def _content_type_of(path: str) -> str | None:
    from raymaker.cli import _EXTENSIONS

    return _EXTENSIONS.get(os.path.splitext(path)[1].lower())


def cmd_invoke(args: argparse.Namespace) -> int:
    from botocore.exceptions import ClientError, EndpointConnectionError

    if args.body is not None:
        body = args.body.encode()
    elif args.file is not None:
        with open(args.file, "rb") as f:
            body = f.read()
    elif sys.stdin is None or sys.stdin.isatty():
        raise SystemExit("give the request body with --body or --file, or pipe it on stdin")
    else:
        body = sys.stdin.buffer.read()
    content_type = args.content_type or (args.file and _content_type_of(args.file)) or "text/csv"
    request: dict[str, Any] = {"EndpointName": args.name, "ContentType": content_type, "Body": body}
    if args.accept:
        request["Accept"] = args.accept
    if args.target_variant:
        request["TargetVariant"] = args.target_variant
    session = _session()
    try:
        response = session.runtime_client().invoke_endpoint(**request)
    except ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        error = e.response.get("Error", {})
        message = error.get("Message") or str(e)
        if status == 404:
            message += " `raymaker endpoints list` shows the endpoints there are."
        print(f"raymaker: error: {error.get('Code', 'Error')} (HTTP {status}): {message}", file=sys.stderr)
        return 2
    except EndpointConnectionError:
        print(
            f"raymaker: error: nothing answers at {session.runtime_url}: is the Ray cluster that serves the "
            "endpoints running? Set RAYMAKER_RUNTIME_URL if it listens elsewhere",
            file=sys.stderr,
        )
        return 2
    out = response["Body"].read()
    sys.stdout.flush()
    sys.stdout.buffer.write(out)
    if sys.stdout.isatty() and not out.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()
    print(
        f"variant: {response.get('InvokedProductionVariant')} ({response.get('ContentType')})",
        file=sys.stderr,
    )
    return 0


# --- batch transform ------------------------------------------------------------------------------


def _local_uri(path: str) -> str:
    """A URI as given; a path as an absolute file:// URI (the job runs elsewhere: never a relative path),
    keeping a trailing slash (a prefix)."""
    if "://" in path:
        return path
    slash = "/" if path.endswith(("/", os.sep)) else ""
    return "file://" + os.path.abspath(os.path.expanduser(path)) + slash


def _describe_transform_job(session, name: str) -> dict[str, Any]:
    """DescribeTransformJob; an unknown name says where to find the ones there are."""
    from raymaker.protocol.errors import ValidationError

    try:
        return session.call("DescribeTransformJob", {"TransformJobName": name})
    except ValidationError as e:
        if "Could not find transform job" not in str(e):
            raise
        raise ValidationError(
            f"{e} `raymaker transform-jobs list` shows the transform jobs there are."
        ) from None


def cmd_transform(args: argparse.Namespace) -> int:
    from raymaker.algorithms import algorithm_names
    from raymaker.protocol.errors import SageMakerError
    from raymaker.sdk import UnexpectedStatusException
    from raymaker.sdk.model import Model
    from raymaker.sdk.transformer import Transformer

    session = _session()
    model = None
    if args.model:
        if args.algorithm:
            raise SystemExit(
                f"--algorithm goes with --model-data or --training-job: model {args.model} already names "
                "what serves it"
            )
        model_name, model_data = args.model, None
    else:
        image = None
        if args.training_job:
            model_data, algorithm, image = _from_training_job(session, args.training_job, "transform")
            algorithm = args.algorithm or algorithm
            image = None if args.algorithm else image
        else:
            if not args.algorithm:
                raise SystemExit(
                    f"--model-data needs --algorithm, the built-in algorithm that serves the "
                    f"model ({', '.join(algorithm_names())})"
                )
            model_data, algorithm = _local_uri(args.model_data), args.algorithm
        model = Model(model_data, image_uri=image, algorithm=algorithm, session=session)
    if args.job_name:
        # Checked before anything is created, so a taken name leaves no stray model behind.
        existing = _exists(session, "DescribeTransformJob", "TransformJobName", args.job_name)
        if existing:
            raise SystemExit(
                f"transform job {args.job_name} already exists ({existing['TransformJobStatus']}): "
                "choose another --job-name"
            )
    if args.no_wait:
        _check_ray_outlives_command("transform --no-wait", "the transform job")
    output = _local_uri(args.output)
    try:
        if model is not None:
            model_name = model.create()
        transformer = Transformer(
            model_name,
            args.instance_count,
            args.instance_type,
            strategy=args.strategy,
            assemble_with=args.assemble_with,
            output_path=output,
            accept=args.accept,
            max_payload=args.max_payload,
            session=session,
        )
        transformer.transform(
            _local_uri(args.input),
            data_type=args.data_type,
            content_type=args.content_type,
            compression_type=args.compression,
            split_type=args.split_type,
            job_name=args.job_name,
            input_filter=args.input_filter,
            output_filter=args.output_filter,
            join_source=args.join_source,
            wait=False,
        )
    except SageMakerError:
        if model is not None and model.name:  # a refused job leaves no model behind
            try:
                session.call("DeleteModel", {"ModelName": model.name})
            except SageMakerError:
                pass  # never made
        raise
    name = transformer.latest_transform_job
    print(f"transform job: {name}", flush=True)
    if model is not None:
        print(f"model: {model_name} ({model_data})", flush=True)
    if args.no_wait:
        desc = transformer.describe()
    else:
        try:
            desc = transformer.wait()
        except UnexpectedStatusException:
            desc = transformer.describe()
            reason = desc.get("FailureReason")
            raise ValueError(
                f"transform job {name} {desc['TransformJobStatus']}"
                + (f": {reason}" if reason else "")
                + f" ({desc.get('raymaker:ObjectsWritten', 0)} object(s) written)"
            ) from None
    print(f"status: {desc['TransformJobStatus']}")
    if not args.no_wait:
        print(f"objects written: {desc.get('raymaker:ObjectsWritten', 0)}")
        print(f"records transformed: {desc.get('raymaker:RecordsTransformed', 0)}")
    print(f"output: {output}")
    return 0


def cmd_transform_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"MaxResults": args.max_results}
    if args.status:
        params["StatusEquals"] = args.status
    if args.name_contains:
        params["NameContains"] = args.name_contains
    jobs = _session().call("ListTransformJobs", params)["TransformJobSummaries"]
    print(f"{'NAME':<48} {'STATUS':<11} {'CREATED':<20} SECONDS")
    for j in jobs:
        created = j["CreationTime"].strftime("%Y-%m-%d %H:%M:%S")
        secs = ""
        if j.get("TransformEndTime"):
            secs = f"{(j['TransformEndTime'] - j['CreationTime']).total_seconds():.0f}"
        print(f"{j['TransformJobName']:<48} {j['TransformJobStatus']:<11} {created:<20} {secs}")
    return 0


def cmd_transform_describe(args: argparse.Namespace) -> int:
    desc = _describe_transform_job(_session(), args.name)
    print(json.dumps(desc, indent=2, default=_json_default))
    return 0


def cmd_transform_stop(args: argparse.Namespace) -> int:
    session = _session()
    _describe_transform_job(session, args.name)
    session.call("StopTransformJob", {"TransformJobName": args.name})
    print(f"stopping {args.name}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="serve a trained model on an endpoint")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-data", help="the model.tar.gz (s3://, file:// or a path); needs --algorithm")
    source.add_argument("--training-job", help="a Completed training job: its model and algorithm")
    p.add_argument("--algorithm", help="xgboost, linear-learner, kmeans or pca")
    p.add_argument(
        "--endpoint-name", help="(default: the training job's name, or the algorithm and a timestamp)"
    )
    p.add_argument("--instance-type", default="local")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--min-instances", type=int, help="autoscaling: the fewest replicas")
    p.add_argument("--max-instances", type=int, help="autoscaling: the most replicas")
    p.add_argument("--target-inflight", type=float, help="autoscaling: requests in flight per replica")
    p.add_argument("--no-wait", action="store_true", help="return once the endpoint is Creating")
    p.set_defaults(func=cmd_deploy)

    endpoints = sub.add_parser("endpoints", help="endpoints: list, describe, delete").add_subparsers(
        dest="endpoints_command", required=True
    )
    p = endpoints.add_parser("list")
    p.add_argument("--status", choices=["Creating", "InService", "Updating", "Deleting", "Failed"])
    p.add_argument("--name-contains")
    p.add_argument("--max-results", type=int, default=50)
    p.set_defaults(func=cmd_list)
    p = endpoints.add_parser("describe", help="DescribeEndpoint as JSON")
    p.add_argument("name")
    p.set_defaults(func=cmd_describe)
    p = endpoints.add_parser("delete", help="DeleteEndpoint, and its endpoint config")
    p.add_argument("name")
    p.add_argument("--keep-config", action="store_true", help="keep the endpoint config")
    p.add_argument("--no-wait", action="store_true", help="return once the endpoint is Deleting")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("invoke", help="send one request to an endpoint; the response goes to stdout")
    p.add_argument("name")
    p.add_argument("--content-type", help="(default: from the --file extension, else text/csv)")
    p.add_argument("--accept", help="the response content type, e.g. application/json")
    p.add_argument("--target-variant", help="the production variant to answer")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", help="the request body (default: stdin)")
    body.add_argument("--file", help="a file holding the request body")
    p.set_defaults(func=cmd_invoke)

    p = sub.add_parser("transform", help="run a batch transform job over an S3 prefix or a manifest")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a model made earlier (CreateModel, or `raymaker deploy`)")
    source.add_argument("--model-data", help="the model.tar.gz (s3://, file:// or a path); needs --algorithm")
    source.add_argument("--training-job", help="a Completed training job: its model and algorithm")
    p.add_argument("--algorithm", help="xgboost, linear-learner, kmeans or pca")
    p.add_argument("--input", required=True, help="the input prefix or manifest (s3://, file:// or a path)")
    p.add_argument("--output", required=True, help="where the .out objects go (s3://, file:// or a path)")
    p.add_argument("--content-type", help="the input's content type, e.g. text/csv")
    p.add_argument("--split-type", choices=["None", "Line", "RecordIO"])
    p.add_argument("--strategy", choices=["SingleRecord", "MultiRecord"], help="BatchStrategy")
    p.add_argument("--accept", help="the output content type, e.g. application/jsonlines")
    p.add_argument("--assemble-with", choices=["None", "Line"])
    p.add_argument("--max-payload", type=int, metavar="MB", help="MaxPayloadInMB (default 6)")
    p.add_argument("--input-filter", metavar="EXPR", help="a JSONPath, e.g. '$[1:]'")
    p.add_argument("--output-filter", metavar="EXPR", help="a JSONPath, e.g. '$[0,-1]'")
    p.add_argument("--join-source", choices=["Input", "None"])
    p.add_argument("--compression", choices=["None", "Gzip"], help="the input's CompressionType")
    p.add_argument("--data-type", default="S3Prefix", choices=["S3Prefix", "ManifestFile"])
    p.add_argument("--instance-type", default="local")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--job-name", help="(default: the model's name and a timestamp)")
    p.add_argument("--no-wait", action="store_true", help="return once the job is InProgress")
    p.set_defaults(func=cmd_transform)

    jobs = sub.add_parser("transform-jobs", help="batch transform jobs: list, describe, stop").add_subparsers(
        dest="transform_jobs_command", required=True
    )
    p = jobs.add_parser("list")
    p.add_argument("--status", choices=["InProgress", "Completed", "Failed", "Stopping", "Stopped"])
    p.add_argument("--name-contains")
    p.add_argument("--max-results", type=int, default=50)
    p.set_defaults(func=cmd_transform_list)
    for name, func, helptext in (
        ("describe", cmd_transform_describe, "DescribeTransformJob as JSON"),
        ("stop", cmd_transform_stop, "StopTransformJob"),
    ):
        p = jobs.add_parser(name, help=helptext)
        p.add_argument("name")
        p.set_defaults(func=func)
