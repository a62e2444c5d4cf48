"""Models, endpoint configs and endpoints: request checks, records, Describe shapes, and the deployment
of an endpoint onto Ray Serve (run by the job service, so it outlives the caller).

An endpoint's record keeps, in ``state``: the deployment ``generation`` and, per variant, the Serve
application serving it now. CreateEndpoint and UpdateEndpoint only write the record and hand the work
to the job service; DescribeEndpoint reads the record (plus live replica counts).
"""

from __future__ import annotations

import traceback
from typing import Any

from raymaker.algorithms import algorithm_names
from raymaker.protocol.errors import ValidationError
from raymaker.engine.instance_types import get_instance_type, load_instance_types
from raymaker.engine.resource_states import EndpointStatus as E
from raymaker.engine.resources import ResourceStore
from raymaker.engine.validation import JOB_NAME_RE, algorithm_from_image, validate_request
from raymaker.io.storage import S3Settings, parse_uri
from raymaker.serve.hosting import DEFAULT_TARGET_INFLIGHT, VariantPlan
from raymaker.serve.model import ModelSpec
from raymaker.protocol.service_model import TARGET_INFLIGHT_TAG

LOCAL_SERVING_CPUS = 0.1  # a replica of the "local" type: mostly idle, must not crowd out training
DEFAULT_STARTUP_TIMEOUT_S = 600  # SageMaker's ContainerStartupHealthCheckTimeoutInSeconds default range top


def _check_name(value: str, what: str) -> None:
    if not JOB_NAME_RE.match(value):
        raise ValidationError(
            f"{what} {value!r} must be 1-63 letters, digits and hyphens, starting with a letter or digit"
        )


# --- models ---------------------------------------------------------------------------------------


def model_algorithm(request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The built-in algorithm and container definition a CreateModel request names."""
    containers = request.get("Containers") or []
    container = request.get("PrimaryContainer")
    if container and containers:
        raise ValidationError("CreateModel takes PrimaryContainer or Containers, not both")
    if not container:
        if len(containers) != 1:
            raise ValidationError(
                "CreateModel needs PrimaryContainer (or exactly one entry in Containers): raymaker serves "
                "one built-in algorithm per model; inference pipelines are not supported yet"
            )
        container = containers[0]
    image = (container.get("Image") or "").strip()
    if not image:
        raise ValidationError(
            f"PrimaryContainer.Image is required: a built-in algorithm name ({', '.join(algorithm_names())}) "
            "or its SageMaker image URI"
        )
    algorithm = image if image in algorithm_names() else None
    if algorithm is None:
        try:
            algorithm = algorithm_from_image(image)
        except ValidationError:
            raise ValidationError(
                f"PrimaryContainer.Image {image!r} is not a built-in algorithm raymaker serves; use one of "
                f"{', '.join(algorithm_names())} or its SageMaker image URI (custom serving containers are "
                "not supported yet)"
            ) from None
    url = container.get("ModelDataUrl")
    if not url:
        raise ValidationError(
            "PrimaryContainer.ModelDataUrl is required for a built-in algorithm: the training job's "
            "model.tar.gz (DescribeTrainingJob's ModelArtifacts.S3ModelArtifacts)"
        )
    if not url.endswith(".tar.gz"):
        raise ValidationError(f"PrimaryContainer.ModelDataUrl {url!r} must name a .tar.gz archive")
    try:
        parse_uri(url)
    except ValueError as e:
        raise ValidationError(f"PrimaryContainer.ModelDataUrl: {e}") from None
    if container.get("Mode", "SingleModel") != "SingleModel":
        raise ValidationError("PrimaryContainer.Mode MultiModel is not supported yet: use SingleModel")
    return algorithm, container


def create_model(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    validate_request("CreateModel", params)
    _check_name(params["ModelName"], "ModelName")
    model_algorithm(params)
    record = res.create("model", params["ModelName"], params)
    return {"ModelArn": record["arn"]}


def describe_model(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    validate_request("DescribeModel", params)
    record = res.get("model", params["ModelName"])
    out = {k: v for k, v in record["request"].items() if k not in ("Tags",)}
    out.update(ModelName=record["name"], ModelArn=record["arn"], CreationTime=_dt(record["creation_time"]))
    return out


def model_spec(res: ResourceStore, name: str) -> ModelSpec:
    record = res.get("model", name)
    algorithm, container = model_algorithm(record["request"])
    env = tuple(sorted((container.get("Environment") or {}).items()))
    return ModelSpec(record["name"], algorithm, container["ModelDataUrl"], env)


# --- endpoint configs -----------------------------------------------------------------------------


def create_endpoint_config(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    validate_request("CreateEndpointConfig", params)
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
        res.get("model", v["ModelName"])  # must exist
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
    record = res.create("endpoint-config", params["EndpointConfigName"], params)
    return {"EndpointConfigArn": record["arn"]}


def describe_endpoint_config(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    validate_request("DescribeEndpointConfig", params)
    record = res.get("endpoint-config", params["EndpointConfigName"])
    out = {k: v for k, v in record["request"].items() if k != "Tags"}
    out.update(
        EndpointConfigName=record["name"],
        EndpointConfigArn=record["arn"],
        CreationTime=_dt(record["creation_time"]),
    )
    return out


def _tag(request: dict[str, Any], key: str) -> str | None:
    for tag in request.get("Tags") or []:
        if tag.get("Key") == key:
            return tag.get("Value")
    return None


def variant_plans(res: ResourceStore, endpoint: str, config_name: str) -> list[VariantPlan]:
    config = res.get("endpoint-config", config_name)["request"]
    types = load_instance_types()
    target = float(_tag(config, TARGET_INFLIGHT_TAG) or DEFAULT_TARGET_INFLIGHT)
    plans = []
    for v in config["ProductionVariants"]:
        itype = get_instance_type(v["InstanceType"], types)
        cpus = LOCAL_SERVING_CPUS if itype.cpus is None else float(itype.cpus)
        scaling = v.get("ManagedInstanceScaling") or {}
        enabled = scaling.get("Status") == "ENABLED"
        plans.append(
            VariantPlan(
                endpoint=endpoint,
                variant=v["VariantName"],
                model=model_spec(res, v["ModelName"]),
                instance_count=int(v["InitialInstanceCount"]),
                num_cpus=cpus,
                num_gpus=float(itype.gpus),
                weight=float(v.get("InitialVariantWeight", 1.0)),
                min_replicas=int(scaling.get("MinInstanceCount", 1)) if enabled else None,
                max_replicas=int(scaling["MaxInstanceCount"]) if enabled else None,
                target_inflight=target,
            )
        )
    return plans


# --- endpoints ------------------------------------------------------------------------------------


def create_endpoint(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    validate_request("CreateEndpoint", params)
    _check_name(params["EndpointName"], "EndpointName")
    variant_plans(res, params["EndpointName"], params["EndpointConfigName"])  # config and models exist
    record = res.create("endpoint", params["EndpointName"], params, status=E.CREATING)
    res.update(
        "endpoint", record["name"], state={"generation": 0, "pending_config": params["EndpointConfigName"]}
    )
    return {"EndpointArn": record["arn"]}


def update_endpoint(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    validate_request("UpdateEndpoint", params)
    name = params["EndpointName"]
    variant_plans(res, name, params["EndpointConfigName"])
    record = res.get("endpoint", name)
    if record["status"] not in (E.IN_SERVICE, E.FAILED):
        raise ValidationError(
            f"Cannot update endpoint {name!r} while it is {record['status']}: wait until it is InService"
        )
    state = dict(record["state"], pending_config=params["EndpointConfigName"])
    record = res.update("endpoint", name, status=E.UPDATING, state=state, failure_reason=None)
    return {"EndpointArn": record["arn"]}


def delete_endpoint(res: ResourceStore, params: dict[str, Any]) -> None:
    validate_request("DeleteEndpoint", params)
    res.update("endpoint", params["EndpointName"], status=E.DELETING)


def describe_endpoint(res: ResourceStore, params: dict[str, Any], live: bool = True) -> dict[str, Any]:
    validate_request("DescribeEndpoint", params)
    record = res.get("endpoint", params["EndpointName"])
    state = record["state"]
    config_name = state.get("config") or record["request"]["EndpointConfigName"]
    out: dict[str, Any] = {
        "EndpointName": record["name"],
        "EndpointArn": record["arn"],
        "EndpointConfigName": config_name,
        "EndpointStatus": record["status"],
        "CreationTime": _dt(record["creation_time"]),
        "LastModifiedTime": _dt(record["last_modified_time"]),
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
        "CreationTime": _dt(record["creation_time"]),
        "LastModifiedTime": _dt(record["last_modified_time"]),
        "EndpointStatus": record["status"],
    }


def _dt(t: float | None) -> Any:
    from datetime import UTC, datetime

    return None if t is None else datetime.fromtimestamp(t, UTC)


# --- deployment (runs in the job service) --------------------------------------------------------


def routing_table(res: ResourceStore) -> dict[str, list[dict[str, Any]]]:
    """Every endpoint that serves traffic now: its variants' applications and weights."""
    table = {}
    for record in res.list("endpoint", max_results=100_000):
        # Single-variant endpoints have their own route, but stay in the table: a client connection
        # still held by an HAProxy process from before the route existed reaches the runtime ingress.
        if record["status"] in (E.CREATING, E.IN_SERVICE, E.UPDATING) and record["state"].get("variants"):
            table[record["name"]] = [
                {"name": v["name"], "app": v["app"], "weight": v["weight"]}
                for v in record["state"]["variants"]
            ]
    return table


def apply_endpoint(res: ResourceStore, name: str, settings: S3Settings | None) -> str:
    """Bring endpoint ``name`` to what its record asks for: deploy (Creating / Updating) or delete
    (Deleting). Returns the resulting status.

    A single-variant endpoint is one Serve application at its own route; an update reconfigures it in
    place (after the new model has loaded once in a probe). Variants of a multi-variant endpoint are new
    applications per update: they start and load their models before the runtime ingress's routing
    table switches to them, and the previous ones are deleted only after the switch."""
    from raymaker.serve import hosting

    record = res.find("endpoint", name)
    if record is None:
        return "Deleted"
    status, state = record["status"], dict(record["state"])
    hosting.start_serve()
    old_apps = [v["app"] for v in state.get("variants") or []]
    if status == E.DELETING:
        hosting.set_routes({k: v for k, v in routing_table(res).items() if k.lower() != name.lower()})
        for app in old_apps:
            hosting.delete_app(app)
        res.delete("endpoint", name)
        return "Deleted"
    if status not in (E.CREATING, E.UPDATING):
        return status
    config = state.get("pending_config") or record["request"]["EndpointConfigName"]
    generation = int(state.get("generation", 0)) + 1
    started: list[str] = []
    try:
        plans = variant_plans(res, name, config)
        direct = len(plans) == 1
        if direct and state.get("direct"):
            hosting.probe_model(plans[0].model, settings)  # the running replicas get it in place
        for plan in plans:
            started.append(
                hosting.deploy_variant(
                    plan, generation, settings, timeout_s=DEFAULT_STARTUP_TIMEOUT_S, direct=direct
                )
            )
    except Exception as e:  # noqa: BLE001 - the reason goes to the record
        for app in started:
            if app not in old_apps:
                hosting.delete_app(app)
        reason = _reason(e)
        if status == E.CREATING:
            res.update("endpoint", name, status=E.FAILED, failure_reason=reason)
            return E.FAILED
        # A failed update leaves the endpoint serving its previous config, as SageMaker rolls back.
        back = E.IN_SERVICE if old_apps else E.FAILED
        state.pop("pending_config", None)
        res.update("endpoint", name, status=back, failure_reason=f"Update failed: {reason}", state=state)
        return back
    state.update(
        generation=generation,
        config=config,
        direct=direct,
        variants=[
            {
                "name": p.variant,
                "app": p.app_name(generation, direct),
                "weight": p.weight,
                "instance_count": p.instance_count,
                **(
                    {
                        "scaling": {
                            "Status": "ENABLED",
                            "MinInstanceCount": p.min_replicas,
                            "MaxInstanceCount": p.max_replicas,
                        }
                    }
                    if p.min_replicas is not None
                    else {}
                ),
            }
            for p in plans
        ],
    )
    state.pop("pending_config", None)
    res.update("endpoint", name, state=state)  # the table below reads the new apps from the record
    hosting.set_routes(routing_table(res))
    hosting.wait_reachable(name)
    for app in old_apps:
        if app not in started:
            hosting.delete_app(app)
    res.update("endpoint", name, status=E.IN_SERVICE, failure_reason=None)
    return E.IN_SERVICE


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if not str(e):
        text += ": " + traceback.format_exc(limit=2)
    return f"Model failed to load or start: {text}"[:1024]
