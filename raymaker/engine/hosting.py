"""Model, endpoint config and endpoint operations: request checks, records, the Describe / List
shapes, and the plans (``variant_plans``) that ``deployment`` carries out in the job service.

An endpoint's record keeps, in ``state``: the deployment ``generation`` and, per variant, the Serve
application serving it now. CreateEndpoint, UpdateEndpoint and DeleteEndpoint only write the record and
hand the work to the job service; DescribeEndpoint reads the record (plus live replica counts).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from raymaker.algorithms import algorithm_names
from raymaker.cluster.capacity import cpu_budget
from raymaker.cluster.definition import get_instance_type, load_instance_types
from raymaker.engine.container_job import require_image
from raymaker.engine.context import Engine
from raymaker.engine.kinds import Kind
from raymaker.engine.resource_states import EndpointStatus as E
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import as_datetime, service_name
from raymaker.engine.validation import JOB_NAME_RE, algorithm_from_image, is_custom_image
from raymaker.io.storage import parse_uri
from raymaker.protocol.errors import ValidationError
from raymaker.protocol.frameworks import FRAMEWORKS, Framework, framework_of_image
from raymaker.protocol.service_model import TARGET_INFLIGHT_TAG
from raymaker.serve.hosting import DEFAULT_TARGET_INFLIGHT, VariantPlan
from raymaker.serve.model import ModelSpec
from raymaker.serve.script_contract import FRAMEWORKS as SCRIPT_FRAMEWORKS
from raymaker.serve.script_contract import PROGRAM_ENV, SUBMIT_DIRECTORY_ENV, script_program, submit_directory

LOCAL_SERVING_CPUS = 0.1  # a replica of the "local" type: mostly idle, must not crowd out training
DEFAULT_STARTUP_TIMEOUT_S = 600  # SageMaker's ContainerStartupHealthCheckTimeoutInSeconds default range top


def _check_name(value: str, what: str) -> None:
    if not JOB_NAME_RE.match(value):
        raise ValidationError(
            f"{what} {value!r} must be 1-63 letters, digits and hyphens, starting with a letter or digit"
        )


# --- models ---------------------------------------------------------------------------------------


def _container(request: dict[str, Any]) -> dict[str, Any]:
    containers = request.get("Containers") or []
    container = request.get("PrimaryContainer")
    if container and containers:
        raise ValidationError("CreateModel takes PrimaryContainer or Containers, not both")
    if not container:
        if len(containers) != 1:
            raise ValidationError(
                "CreateModel needs PrimaryContainer (or exactly one entry in Containers): raymaker serves "
                "one container per model; inference pipelines are not supported yet"
            )
        container = containers[0]
    return container


def _script_framework(image: str, env: dict[str, str]) -> Framework | None:
    """The framework whose serving contract a model's image asks for, or None for a built-in
    algorithm. A sagemaker-xgboost image is the built-in XGBoost algorithm unless Environment names a
    script (SAGEMAKER_PROGRAM), as SageMaker's XGBoost container decides."""
    framework = framework_of_image(image) or (
        FRAMEWORKS.get(image) if image not in algorithm_names() else None
    )
    if framework is None or framework.name not in SCRIPT_FRAMEWORKS:
        return None
    if framework.name == "xgboost" and not (env.get(PROGRAM_ENV) or "").strip():
        return None
    return framework


def _check_model_data_url(url: str) -> None:
    if not url.endswith(".tar.gz"):
        raise ValidationError(f"PrimaryContainer.ModelDataUrl {url!r} must name a .tar.gz archive")
    try:
        parse_uri(url)
    except ValueError as e:
        raise ValidationError(f"PrimaryContainer.ModelDataUrl: {e}") from None


def spec_from_request(name: str, request: dict[str, Any]) -> ModelSpec:
    """The ModelSpec a CreateModel request describes, checked before any work: a built-in algorithm
    (by name or SageMaker image) with its model.tar.gz, or a script model (a PyTorch, scikit-learn or
    XGBoost framework image) whose code is in model.tar.gz's code/ or in a sourcedir.tar.gz. Whether
    the archives hold an entry point is found when a replica loads the model."""
    container = _container(request)
    image = (container.get("Image") or "").strip()
    if image and is_custom_image(image):
        url = container.get("ModelDataUrl")
        if url:
            _check_model_data_url(url)
        return ModelSpec.container(name, image, url, dict(container.get("Environment") or {}))
    if not image:
        raise ValidationError(
            f"PrimaryContainer.Image is required: a built-in algorithm name ({', '.join(algorithm_names())}) "
            "or its SageMaker image URI, or a PyTorch / scikit-learn / XGBoost framework image for a script"
        )
    if container.get("Mode", "SingleModel") != "SingleModel":
        raise ValidationError("PrimaryContainer.Mode MultiModel is not supported yet: use SingleModel")
    env = dict(container.get("Environment") or {})
    url = container.get("ModelDataUrl")
    framework = _script_framework(image, env)
    if framework is not None:
        try:
            script_program(env)
            archive, _ = submit_directory(env)
        except ValueError as e:
            raise ValidationError(str(e)) from None
        if url:
            _check_model_data_url(url)
        elif not archive:
            raise ValidationError(
                f"a {framework.name} script model needs its code: give PrimaryContainer.ModelDataUrl (a "
                "model.tar.gz holding the model files and code/inference.py), or set Environment "
                f"{SUBMIT_DIRECTORY_ENV} to the s3:// URI of a sourcedir.tar.gz and {PROGRAM_ENV} to the "
                "script's name"
            )
        return ModelSpec.script(name, framework.name, url, env)
    algorithm = image if image in algorithm_names() else None
    if algorithm is None:
        try:
            algorithm = algorithm_from_image(image)
        except ValidationError:
            raise ValidationError(
                f"PrimaryContainer.Image {image!r} is not a built-in algorithm or framework image raymaker "
                f"serves; use one of {', '.join(algorithm_names())} or its SageMaker image URI, or a "
                "PyTorch (pytorch-inference), scikit-learn (sagemaker-scikit-learn) or XGBoost "
                "(sagemaker-xgboost, with Environment SAGEMAKER_PROGRAM) image for a script (custom serving "
                "containers are not supported yet)"
            ) from None
    if not url:
        raise ValidationError(
            "PrimaryContainer.ModelDataUrl is required for a built-in algorithm: the training job's "
            "model.tar.gz (DescribeTrainingJob's ModelArtifacts.S3ModelArtifacts)"
        )
    _check_model_data_url(url)
    return ModelSpec(name, algorithm, url, tuple(sorted(env.items())))


def model_storage(spec: ModelSpec, model_name: str) -> dict[str, str | None]:
    """The URIs a model's replicas and transform instances read (request field -> URI), for
    ``ClusterView.require_shared_storage``."""
    uris: dict[str, str | None] = {f"model {model_name}'s ModelDataUrl": spec.model_data_url or None}
    if spec.is_script:
        archive, _ = submit_directory(dict(spec.environment))
        uris[f"model {model_name}'s Environment {SUBMIT_DIRECTORY_ENV}"] = archive
    return uris


def create_model(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    _check_name(params["ModelName"], "ModelName")
    spec = spec_from_request(params["ModelName"], params)
    if spec.is_container:  # as SageMaker checks the image at CreateModel: here, or pullable
        require_image(spec.image, field="PrimaryContainer.Image")
    record = res.create(Kind.MODEL, params["ModelName"], params)
    return {"ModelArn": record["arn"]}


def describe_model(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    record = res.get(Kind.MODEL, params["ModelName"])
    out = {k: v for k, v in record["request"].items() if k not in ("Tags",)}
    out.update(
        ModelName=record["name"], ModelArn=record["arn"], CreationTime=as_datetime(record["creation_time"])
    )
    return out


def model_spec(res: ResourceStore, name: str) -> ModelSpec:
    record = res.get(Kind.MODEL, name)
    return spec_from_request(record["name"], record["request"])


# --- endpoint configs -----------------------------------------------------------------------------


def create_endpoint_config(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    _check_name(params["EndpointConfigName"], "EndpointConfigName")
    variants = params["ProductionVariants"]
    names = [v["VariantName"].lower() for v in variants]
    if len(set(names)) != len(names):
        raise ValidationError("ProductionVariants: every VariantName must be unique")
    types = load_instance_types()
    for v in variants:
        where = f"ProductionVariants[{v['VariantName']}]"
        _check_name(v["VariantName"], f"{where}.VariantName")
        if v.get("ServerlessConfig"):
            raise ValidationError(
                f"{where}: ServerlessConfig is not supported; give InstanceType and InitialInstanceCount"
            )
        if not v.get("ModelName"):
            raise ValidationError(f"{where}.ModelName is required")
        res.get(Kind.MODEL, v["ModelName"])  # must exist
        if "InstanceType" not in v or "InitialInstanceCount" not in v:
            raise ValidationError(f"{where}: InstanceType and InitialInstanceCount are required")
        get_instance_type(v["InstanceType"], types)
        scaling = v.get("ManagedInstanceScaling") or {}
        if scaling.get("Status") == "ENABLED":
            lo, hi = scaling.get("MinInstanceCount", 1), scaling.get("MaxInstanceCount")
            if hi is None or lo > hi:
                raise ValidationError(
                    f"{where}.ManagedInstanceScaling: give MaxInstanceCount >= MinInstanceCount ({lo})"
                )
    target = _tag(params, TARGET_INFLIGHT_TAG)
    if target is not None:
        try:
            if float(target) <= 0:
                raise ValueError
        except ValueError:
            raise ValidationError(
                f"tag {TARGET_INFLIGHT_TAG} must be a positive number, not {target!r}"
            ) from None
    record = res.create(Kind.ENDPOINT_CONFIG, params["EndpointConfigName"], params)
    return {"EndpointConfigArn": record["arn"]}


def describe_endpoint_config(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    record = res.get(Kind.ENDPOINT_CONFIG, params["EndpointConfigName"])
    out = {k: v for k, v in record["request"].items() if k != "Tags"}
    out.update(
        EndpointConfigName=record["name"],
        EndpointConfigArn=record["arn"],
        CreationTime=as_datetime(record["creation_time"]),
    )
    return out


def _tag(request: dict[str, Any], key: str) -> str | None:
    for tag in request.get("Tags") or []:
        if tag.get("Key") == key:
            return tag.get("Value")
    return None


def variant_plans(res: ResourceStore, endpoint: str, config_name: str) -> list[VariantPlan]:
    config = res.get(Kind.ENDPOINT_CONFIG, config_name)["request"]
    types = load_instance_types()
    target = float(_tag(config, TARGET_INFLIGHT_TAG) or DEFAULT_TARGET_INFLIGHT)
    plans = []
    for v in config["ProductionVariants"]:
        itype = get_instance_type(v["InstanceType"], types)
        if itype.node_type:  # a whole node per instance, leaving a CPU for Ray's own work on it
            cpus = cpu_budget(itype.cpus or 1)
        else:
            cpus = LOCAL_SERVING_CPUS if itype.cpus is None else float(itype.cpus)
        scaling = v.get("ManagedInstanceScaling") or {}
        enabled = scaling.get("Status") == "ENABLED"
        plans.append(
            VariantPlan(
                endpoint=endpoint,
                variant=v["VariantName"],
                model=_with_limits(model_spec(res, v["ModelName"]), itype),
                instance_count=int(v["InitialInstanceCount"]),
                num_cpus=cpus,
                num_gpus=float(itype.gpus),
                custom_resources=((itype.name, 1.0),) if itype.node_type else (),
                weight=float(v.get("InitialVariantWeight", 1.0)),
                min_replicas=int(scaling.get("MinInstanceCount", 1)) if enabled else None,
                max_replicas=int(scaling["MaxInstanceCount"]) if enabled else None,
                target_inflight=target,
                guard=service_name(res.store),
                instance_type=itype.name,
            )
        )
    return plans


def _with_limits(spec: ModelSpec, itype: Any) -> ModelSpec:
    """A custom container runs within its instance type's CPUs and memory, as on SageMaker."""
    if not spec.is_container:
        return spec
    return replace(spec, cpus=float(itype.cpus or 0), memory_gb=float(itype.memory_gb or 0))


# --- endpoints ------------------------------------------------------------------------------------


def create_endpoint(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    _check_name(params["EndpointName"], "EndpointName")
    variant_plans(res, params["EndpointName"], params["EndpointConfigName"])  # config and models exist
    record = res.create(Kind.ENDPOINT, params["EndpointName"], params, status=E.CREATING)
    res.update(
        Kind.ENDPOINT, record["name"], state={"generation": 0, "pending_config": params["EndpointConfigName"]}
    )
    return {"EndpointArn": record["arn"]}


def update_endpoint(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    name = params["EndpointName"]
    variant_plans(res, name, params["EndpointConfigName"])
    record = res.get(Kind.ENDPOINT, name)
    if record["status"] not in (E.IN_SERVICE, E.FAILED):
        raise ValidationError(
            f"Cannot update endpoint {name!r} while it is {record['status']}: wait until it is InService"
        )
    state = dict(record["state"], pending_config=params["EndpointConfigName"])
    record = res.update(Kind.ENDPOINT, name, status=E.UPDATING, state=state, failure_reason=None)
    return {"EndpointArn": record["arn"]}


def delete_endpoint(res: ResourceStore, params: dict[str, Any]) -> None:
    res.update(Kind.ENDPOINT, params["EndpointName"], status=E.DELETING)


def describe_endpoint(res: ResourceStore, params: dict[str, Any], live: bool = True) -> dict[str, Any]:
    record = res.get(Kind.ENDPOINT, params["EndpointName"])
    state = record["state"]
    config_name = state.get("config") or record["request"]["EndpointConfigName"]
    out: dict[str, Any] = {
        "EndpointName": record["name"],
        "EndpointArn": record["arn"],
        "EndpointConfigName": config_name,
        "EndpointStatus": record["status"],
        "CreationTime": as_datetime(record["creation_time"]),
        "LastModifiedTime": as_datetime(record["last_modified_time"]),
    }
    if record.get("failure_reason"):
        out["FailureReason"] = record["failure_reason"]
    variants = state.get("variants") or []
    if variants:
        counts = {}
        if live:
            from raymaker.serve.hosting import replica_counts

            counts = replica_counts({v["name"]: v["app"] for v in variants})
        out["ProductionVariants"] = [
            {
                "VariantName": v["name"],
                "CurrentWeight": v["weight"],
                "DesiredWeight": v["weight"],
                "CurrentInstanceCount": counts.get(v["name"], v["instance_count"]),
                "DesiredInstanceCount": v["instance_count"],
                **({"ManagedInstanceScaling": v["scaling"]} if v.get("scaling") else {}),
            }
            for v in variants
        ]
    return out


def endpoint_summary(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "EndpointName": record["name"],
        "EndpointArn": record["arn"],
        "CreationTime": as_datetime(record["creation_time"]),
        "LastModifiedTime": as_datetime(record["last_modified_time"]),
        "EndpointStatus": record["status"],
    }


def list_resources(engine: Engine, kind: Kind, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Records filtered and sorted as SageMaker's List* operations do."""
    return engine.resources.list(
        kind,
        name_contains=params.get("NameContains"),
        status=params.get("StatusEquals"),
        sort_by=params.get("SortBy", "CreationTime"),
        sort_order=params.get("SortOrder", "Descending"),
        max_results=int(params.get("MaxResults", 100)),
    )


def _summary(prefix: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{prefix}Name": record["name"],
        f"{prefix}Arn": record["arn"],
        "CreationTime": as_datetime(record["creation_time"]),
    }


# --- the operations ----------------------------------------------------------------------------------


def _hand_to_service(engine: Engine, endpoint: str) -> None:
    """The job service deploys (or deletes) the endpoint, so it outlives the caller; this returns at once."""
    engine.service().apply_endpoint.remote(endpoint, engine.settings)


def _require_capacity(engine: Engine, config_name: str) -> None:
    """Every variant's instances can run on this cluster, and load their model on any node."""
    config = engine.resources.get(Kind.ENDPOINT_CONFIG, config_name)["request"]
    cluster = engine.cluster()
    uris: dict[str, str | None] = {}
    for v in config["ProductionVariants"]:
        uris.update(model_storage(model_spec(engine.resources, v["ModelName"]), v["ModelName"]))
    cluster.require_shared_storage(uris)
    for v in config["ProductionVariants"]:
        scaling = v.get("ManagedInstanceScaling") or {}
        count = int(scaling.get("MinInstanceCount", 1)) if scaling.get("Status") == "ENABLED" else 0
        cluster.require_capacity(v["InstanceType"], max(int(v["InitialInstanceCount"]), count), "endpoint")


def _create_endpoint(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    service = engine.service()
    _require_capacity(engine, params["EndpointConfigName"])
    out = create_endpoint(engine.resources, params)
    service.apply_endpoint.remote(params["EndpointName"], engine.settings)
    return out


def _update_endpoint(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    _require_capacity(engine, params["EndpointConfigName"])
    out = update_endpoint(engine.resources, params)
    _hand_to_service(engine, params["EndpointName"])
    return out


def _delete_endpoint(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    delete_endpoint(engine.resources, params)
    _hand_to_service(engine, params["EndpointName"])
    return {}


def _delete(kind: Kind, key: str) -> Any:
    def handler(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
        engine.resources.delete(kind, params[key])
        return {}

    return handler


def _list(kind: Kind, out_key: str, summary: Any) -> Any:
    def handler(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
        return {out_key: [summary(r) for r in list_resources(engine, kind, params)]}

    return handler


OPERATIONS = {
    "CreateModel": lambda engine, p: create_model(engine.resources, p),
    "DescribeModel": lambda engine, p: describe_model(engine.resources, p),
    "DeleteModel": _delete(Kind.MODEL, "ModelName"),
    "ListModels": _list(Kind.MODEL, "Models", lambda r: _summary("Model", r)),
    "CreateEndpointConfig": lambda engine, p: create_endpoint_config(engine.resources, p),
    "DescribeEndpointConfig": lambda engine, p: describe_endpoint_config(engine.resources, p),
    "DeleteEndpointConfig": _delete(Kind.ENDPOINT_CONFIG, "EndpointConfigName"),
    "ListEndpointConfigs": _list(
        Kind.ENDPOINT_CONFIG, "EndpointConfigs", lambda r: _summary("EndpointConfig", r)
    ),
    "CreateEndpoint": _create_endpoint,
    "UpdateEndpoint": _update_endpoint,
    "DeleteEndpoint": _delete_endpoint,
    "DescribeEndpoint": lambda engine, p: describe_endpoint(engine.resources, p),
    "ListEndpoints": _list(Kind.ENDPOINT, "Endpoints", endpoint_summary),
}
