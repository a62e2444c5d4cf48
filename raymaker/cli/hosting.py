"""``raymaker deploy``, ``raymaker endpoints list|describe|delete`` and ``raymaker invoke``: endpoints
from the shell; ``raymaker transform`` and ``raymaker transform-jobs list|describe|stop``: batch
transform."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raymaker.cli.common import (
    ALGORITHM,
    ALGORITHMS,
    INSTANCE_COUNT,
    INSTANCE_TYPE,
    MODEL_DATA,
    NO_WAIT,
    RESOURCES,
    TRAINING_JOB,
    Subparsers,
    add_options,
    add_resource_commands,
    content_type_of,
    describe,
    exists,
    get_session,
    local_uri,
    print_error,
    require_lasting_cluster,
)
from raymaker.protocol.errors import SageMakerError
from raymaker.sdk import Model, Session, Transformer, UnexpectedStatusException
from raymaker.sdk.predictor import wait_for_deleted, wait_for_endpoint

ENDPOINTS = RESOURCES["endpoints"]
TRANSFORM_JOBS = RESOURCES["transform-jobs"]


def _invocation_url(session: Session, name: str) -> str:
    return f"{session.runtime_url.rstrip('/')}/endpoints/{name}/invocations"


def _model_source(session: Session, args: argparse.Namespace, use: str) -> tuple[str, str, str | None]:
    """``--training-job`` or ``--model-data`` (with ``--algorithm``) as model data, algorithm, image."""
    if args.training_job:
        desc = session.call("DescribeTrainingJob", {"TrainingJobName": args.training_job})
        status = desc["TrainingJobStatus"]
        if status != "Completed":
            name = args.training_job
            hint = f" (follow it with `raymaker jobs logs -f {name}`)" if status == "InProgress" else ""
            raise SystemExit(
                f"training job {name} is {status}: only a Completed job has a model to {use}{hint}"
            )
        spec = desc.get("AlgorithmSpecification") or {}
        algorithm = args.algorithm or spec.get("AlgorithmName")
        image = None if algorithm else spec.get("TrainingImage")
        return desc["ModelArtifacts"]["S3ModelArtifacts"], algorithm, image
    if not args.algorithm:
        raise SystemExit(
            f"--model-data needs --algorithm, the built-in algorithm that serves the model ({ALGORITHMS})"
        )
    # The endpoint or job loads it from elsewhere: never a relative path.
    return local_uri(args.model_data), args.algorithm, None


# --- endpoints --------------------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    session = get_session(args)
    model_data, algorithm, image = _model_source(session, args, "deploy")
    endpoint_name = args.endpoint_name or args.training_job
    if endpoint_name:
        # Checked before anything is created, so a taken name leaves no stray model behind.
        existing = exists(session, "DescribeEndpoint", "EndpointName", endpoint_name)
        if existing:
            raise SystemExit(
                f"endpoint {endpoint_name} already exists ({existing['EndpointStatus']}): "
                f"choose another --endpoint-name, or delete it first with "
                f"`raymaker endpoints delete {endpoint_name}`"
            )
        if exists(session, "DescribeEndpointConfig", "EndpointConfigName", endpoint_name):
            raise SystemExit(
                f"endpoint config {endpoint_name} already exists (kept by "
                f"`raymaker endpoints delete --keep-config`?): choose another --endpoint-name"
            )
    require_lasting_cluster(session, "deploy", "the endpoint")
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
        try:
            status = wait_for_endpoint(session, name)["EndpointStatus"]
        except UnexpectedStatusException as e:
            raise ValueError(f"{e} (remove it with `raymaker endpoints delete {name}`)") from None
    print(f"endpoint: {name} ({status})")
    print(f"model: {model.name} ({model_data})")
    print(f"url: {_invocation_url(session, name)}")
    return 0


def _undo(session: Session, model: Model) -> None:
    """A deploy refused part way (a bad instance type, say) removes the records it made; an endpoint that
    was created is kept, for ``endpoints describe`` to explain."""
    if model.endpoint_name is None or exists(
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


def cmd_delete(args: argparse.Namespace) -> int:
    session = get_session(args)
    desc = describe(session, ENDPOINTS, args.name)
    session.call("DeleteEndpoint", {"EndpointName": args.name})
    if not args.no_wait:
        wait_for_deleted(session, args.name)
    if not args.keep_config:
        session.call("DeleteEndpointConfig", {"EndpointConfigName": desc["EndpointConfigName"]})
    kept = f" (kept endpoint config {desc['EndpointConfigName']})" if args.keep_config else ""
    print(f"{'deleting' if args.no_wait else 'deleted'} {args.name}{kept}")
    return 0


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
    content_type = args.content_type or (args.file and content_type_of(args.file)) or "text/csv"
    request: dict[str, Any] = {"EndpointName": args.name, "ContentType": content_type, "Body": body}
    if args.accept:
        request["Accept"] = args.accept
    if args.target_variant:
        request["TargetVariant"] = args.target_variant
    session = get_session(args)
    try:
        response = session.runtime_client().invoke_endpoint(**request)
    except ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        error = e.response.get("Error", {})
        message = error.get("Message") or str(e)
        if status == 404:
            message += f" `raymaker {ENDPOINTS.command} list` shows the endpoints there are."
        print_error(f"{error.get('Code', 'Error')} (HTTP {status}): {message}")
        return 2
    except EndpointConnectionError:
        print_error(
            f"nothing answers at {session.runtime_url}: is the Ray cluster that serves the "
            "endpoints running? Set RAYMAKER_RUNTIME_URL if it listens elsewhere"
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


def transform_progress(session: Session, name: str) -> dict[str, int]:
    """How far the job got: ``ObjectsWritten`` and ``RecordsTransformed`` (raymaker's own
    ``GetTransformJobProgress``)."""
    return session.call("GetTransformJobProgress", {"TransformJobName": name})


def cmd_transform(args: argparse.Namespace) -> int:
    session = get_session(args)
    model = None
    if args.model:
        if args.algorithm:
            raise SystemExit(
                f"--algorithm goes with --model-data or --training-job: model {args.model} already names "
                "what serves it"
            )
        model_name, model_data = args.model, None
    else:
        model_data, algorithm, image = _model_source(session, args, "transform")
        model = Model(model_data, image_uri=image, algorithm=algorithm, session=session)
    if args.job_name:
        # Checked before anything is created, so a taken name leaves no stray model behind.
        existing = exists(session, "DescribeTransformJob", "TransformJobName", args.job_name)
        if existing:
            raise SystemExit(
                f"transform job {args.job_name} already exists ({existing['TransformJobStatus']}): "
                "choose another --job-name"
            )
    if args.no_wait:
        require_lasting_cluster(session, "transform --no-wait", "the transform job")
    output = local_uri(args.output)
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
            local_uri(args.input),
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
            written = transform_progress(session, name).get("ObjectsWritten", 0)
            raise ValueError(
                f"transform job {name} {desc['TransformJobStatus']}"
                + (f": {reason}" if reason else "")
                + f" ({written} object(s) written)"
            ) from None
    print(f"status: {desc['TransformJobStatus']}")
    if not args.no_wait:
        progress = transform_progress(session, name)
        print(f"objects written: {progress.get('ObjectsWritten', 0)}")
        print(f"records transformed: {progress.get('RecordsTransformed', 0)}")
    print(f"output: {output}")
    return 0


def add_commands(sub: Subparsers) -> None:
    p = sub.add_parser("deploy", help="serve a trained model on an endpoint")
    add_options(p.add_mutually_exclusive_group(required=True), MODEL_DATA, TRAINING_JOB)
    add_options(p, ALGORITHM)
    p.add_argument(
        "--endpoint-name", help="(default: the training job's name, or the algorithm and a timestamp)"
    )
    add_options(p, INSTANCE_TYPE, INSTANCE_COUNT)
    p.add_argument("--min-instances", type=int, help="autoscaling: the fewest replicas")
    p.add_argument("--max-instances", type=int, help="autoscaling: the most replicas")
    p.add_argument("--target-inflight", type=float, help="autoscaling: requests in flight per replica")
    add_options(p, NO_WAIT)
    p.set_defaults(func=cmd_deploy)

    endpoints = add_resource_commands(sub, ENDPOINTS)
    p = endpoints.add_parser("delete", help="DeleteEndpoint, and its endpoint config")
    p.add_argument("name")
    p.add_argument("--keep-config", action="store_true", help="keep the endpoint config")
    add_options(p, NO_WAIT)
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
    add_options(source, MODEL_DATA, TRAINING_JOB)
    add_options(p, ALGORITHM)
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
    add_options(p, INSTANCE_TYPE, INSTANCE_COUNT)
    p.add_argument("--job-name", help="(default: the model's name and a timestamp)")
    add_options(p, NO_WAIT)
    p.set_defaults(func=cmd_transform)

    add_resource_commands(sub, TRANSFORM_JOBS)
