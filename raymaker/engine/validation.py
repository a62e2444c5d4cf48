"""Request validation: first the request's shape against botocore's own SageMaker service model (the
schema the real service publishes; nothing hand-written here), then raymaker's rules, which turn a
CreateTrainingJob request into a ``TrainingJobSpec`` the runner can execute. Every failure is a
``ValidationError`` whose message says what to change."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from raymaker.algorithms import Algorithm, algorithm_names, get_algorithm
from raymaker.cluster.definition import InstanceType, get_instance_type, load_instance_types
from raymaker.io.channels import Channel, parse_channels
from raymaker.io.formats import parse_content_type
from raymaker.io.storage import parse_uri
from raymaker.protocol.errors import ValidationError
from raymaker.protocol.frameworks import ECR_IMAGE_RE, framework_of_image
from raymaker.protocol.service_model import operation_model

DEFAULT_MAX_RUNTIME_SECONDS = 86400  # SageMaker's default StoppingCondition: one day
DEFAULT_CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints/"
# botocore's TrainingJobName pattern (botocore does not enforce patterns, so raymaker does).
JOB_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# Repository names of SageMaker's built-in algorithm images that differ from raymaker's names.
_IMAGE_REPOSITORIES = {"sagemaker-xgboost": "xgboost"}


def validate_request(operation: str, request: Mapping[str, Any]) -> None:
    """Check ``request`` against the input shape of operation ``operation`` (SageMaker's, e.g.
    "CreateTrainingJob", or one of raymaker's own from its service-model extension): required members, types, unknown keys, minimum lengths and values (what
    botocore checks), plus the maximum lengths, sizes and values the model declares."""
    from botocore.model import OperationNotFoundError
    from botocore.validate import ParamValidator

    try:
        shape = operation_model(operation).input_shape
    except OperationNotFoundError:
        raise ValidationError(f"unknown SageMaker operation {operation!r}") from None
    if shape is None:
        if request:
            raise ValidationError(f"{operation} takes no parameters")
        return
    report = ParamValidator().validate(dict(request), shape)
    problems = [report.generate_report()] if report.has_errors() else []
    if not problems:  # maxima only make sense once the types are right
        _check_maxima(request, shape, "", problems)
    if problems:
        raise ValidationError(f"{operation} request is invalid: " + "\n".join(problems))


def _check_maxima(value: Any, shape: Any, path: str, problems: list[str]) -> None:
    """botocore validates ``min`` but not ``max``; SageMaker enforces both."""
    meta = shape.metadata
    where = path or "request"
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            if name in value:
                _check_maxima(value[name], member, f"{path}.{name}" if path else name, problems)
        return
    if shape.type_name == "list":
        for i, item in enumerate(value):
            _check_maxima(item, shape.member, f"{where}[{i}]", problems)
    elif shape.type_name == "map":
        for k, v in value.items():
            _check_maxima(k, shape.key, f"{where} key {k!r}", problems)
            _check_maxima(v, shape.value, f"{where}[{k!r}]", problems)
    maximum = meta.get("max")
    if maximum is None:
        return
    if shape.type_name in ("string", "list", "map") and len(value) > maximum:
        unit = "characters" if shape.type_name == "string" else "entries"
        problems.append(f"{where} has {len(value)} {unit}; at most {maximum} are allowed")
    elif shape.type_name in ("integer", "long", "float", "double") and value > maximum:
        problems.append(f"{where} is {value}; the largest allowed value is {maximum}")


SCRIPT = "script"  # TrainingJobSpec.algorithm of a script-mode job
CONTAINER = "container"  # TrainingJobSpec.algorithm of a custom container's job
# The toolkit's switch for a framework container's script mode (and how the SDK names the code).
PROGRAM, SUBMIT_DIRECTORY = "sagemaker_program", "sagemaker_submit_directory"
# The SageMaker SDK's hyperparameters for a script's distribution (torchrun's environment).
DISTRIBUTIONS = {
    "sagemaker_torch_distributed_enabled": "torch_distributed",
    "sagemaker_pytorch_ddp_enabled": "pytorchddp",
    "sagemaker_distributed_dataparallel_enabled": "pytorchddp",  # SDK v2 >= 2.221.1 for pytorchddp
}


@dataclass(frozen=True)
class ScriptSpec:
    """A script-mode job (SageMaker's framework containers): the user's entry point and code, run
    under the training toolkit's contract."""

    framework: str  # protocol.frameworks name: pytorch, sklearn, xgboost
    entry_point: str  # sagemaker_program, decoded
    submit_directory: str  # sagemaker_submit_directory: the sourcedir.tar.gz URI
    metric_definitions: tuple[tuple[str, str], ...] = ()
    distribution: str | None = None  # "torch_distributed" / "pytorchddp": torchrun's environment


@dataclass(frozen=True)
class ContainerSpec:
    """A custom container's job: any image that is neither a SageMaker built-in nor a framework image,
    run as ``<image> train`` under SageMaker's container contract."""

    image: str
    entrypoint: tuple[str, ...] = ()  # AlgorithmSpecification.ContainerEntrypoint
    arguments: tuple[str, ...] = ()  # AlgorithmSpecification.ContainerArguments
    metric_definitions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TrainingJobSpec:
    """A validated CreateTrainingJob request, parsed into what the runner needs."""

    name: str
    algorithm: str  # raymaker built-in name, for get_algorithm()
    hyperparameters: dict[str, Any]  # typed, defaults filled in
    channels: tuple[Channel, ...]  # ContentType filled in with the algorithm's default
    input_mode: str  # AlgorithmSpecification.TrainingInputMode (channels may override)
    output_path: str  # OutputDataConfig.S3OutputPath
    instance_type: InstanceType
    instance_count: int
    max_runtime_seconds: int
    checkpoint_uri: str | None = None
    checkpoint_local_path: str | None = None
    keep_alive_seconds: int = 0
    max_retry_attempts: int | None = None  # RetryStrategy.MaximumRetryAttempts
    environment: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict, repr=False)
    assumed_content_types: frozenset[str] = frozenset()  # channels given no ContentType
    script: ScriptSpec | None = None
    container: ContainerSpec | None = None

    @property
    def runs_process(self) -> bool:
        """Whether the job is the user's process (a script or a container), stopped by SIGTERM."""
        return self.script is not None or self.container is not None

    @property
    def algorithm_class(self) -> type[Algorithm]:
        return get_algorithm(self.algorithm)

    @property
    def trainer(self) -> str:
        """How the job trains: a built-in's ``Algorithm.trainer`` kind, "script" or "container"."""
        if self.container:
            return CONTAINER
        return SCRIPT if self.script else self.algorithm_class.trainer

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)


def is_custom_image(image: str) -> bool:
    """Whether an image is the user's own container: neither a SageMaker built-in algorithm's image
    (raymaker runs the algorithm) nor a framework image (raymaker runs the script)."""
    if framework_of_image(image) is not None or image.strip() in algorithm_names():
        return False
    return _builtin_of_image(image) is None


def _builtin_of_image(image: str) -> str | None:
    """The built-in algorithm a SageMaker ECR image names, or None."""
    m = ECR_IMAGE_RE.match(image.strip())
    repo = m.group("repo").rsplit("/", 1)[-1] if m else None
    name = _IMAGE_REPOSITORIES.get(repo, repo) if repo else None
    return name if name in algorithm_names() else None


def container_spec(spec: Mapping[str, Any]) -> ContainerSpec:
    """A custom image's AlgorithmSpecification, checked: ContainerEntrypoint / ContainerArguments
    must be non-empty strings without NUL bytes (nothing could exec them otherwise)."""
    image = spec["TrainingImage"].strip()
    if not image or any(c.isspace() for c in image):
        raise ValidationError(f"AlgorithmSpecification.TrainingImage {image!r} is not an image name: "
                              "give <registry>/<repository>:<tag>")
    lists = {}
    for key in ("ContainerEntrypoint", "ContainerArguments"):
        values = spec.get(key) or []
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value or "\0" in value:
                raise ValidationError(
                    f"AlgorithmSpecification.{key}[{i}] is {value!r}: each element must be a non-empty string "
                    "without NUL bytes (exec form, e.g. [\"python3\", \"/opt/program/train.py\"])"
                )
        lists[key] = tuple(values)
    entry = lists["ContainerEntrypoint"]
    if entry and entry[0].strip() != entry[0]:
        raise ValidationError(
            f"AlgorithmSpecification.ContainerEntrypoint[0] {entry[0]!r} has surrounding spaces: give the "
            "program alone as the first element and its arguments as the next ones"
        )
    return ContainerSpec(
        image=image,
        entrypoint=entry,
        arguments=lists["ContainerArguments"],
        metric_definitions=metric_definitions(spec),
    )


def algorithm_from_image(image: str) -> str:
    """The raymaker built-in a SageMaker built-in image stands for, e.g.
    ``683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1`` -> ``xgboost``."""
    name = _builtin_of_image(image)
    if name is None:
        raise ValidationError(
            f"AlgorithmSpecification.TrainingImage {image!r} is not a SageMaker built-in algorithm image "
            f"raymaker runs: set AlgorithmSpecification.AlgorithmName to one of {', '.join(algorithm_names())}, "
            "or give your own image (one that follows SageMaker's container contract)"
        )
    return name


def _decode(value: str) -> Any:
    """A hyperparameter value as the training toolkit reads it: JSON, else the raw string."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def script_framework(spec: Mapping[str, Any], hyperparameters: Mapping[str, str]) -> str | None:
    """The framework whose container runs this request's script, or None for a built-in algorithm.
    A framework image (pytorch-training, sagemaker-scikit-learn) always runs a script;
    ``sagemaker-xgboost`` does when the hyperparameters name one (``sagemaker_program``), as
    SageMaker's XGBoost container decides."""
    image = spec.get("TrainingImage")
    if image and is_custom_image(image):  # the user's container runs whatever it holds
        return None
    framework = framework_of_image(image) if image else None
    has_program = PROGRAM in hyperparameters
    if has_program and framework is None:
        if not image:
            raise ValidationError(
                f"HyperParameters has {PROGRAM} (a script), but AlgorithmSpecification names the built-in "
                f"algorithm {spec.get('AlgorithmName')!r}: give a framework image as TrainingImage instead "
                "(raymaker.pytorch.PyTorch, raymaker.sklearn.SKLearn or raymaker.xgboost.XGBoost do)"
            )
        raise ValidationError(
            f"AlgorithmSpecification.TrainingImage {image!r} is not a SageMaker framework image raymaker "
            "runs scripts in: use a pytorch-training, sagemaker-scikit-learn or sagemaker-xgboost image "
            "(raymaker.pytorch.PyTorch, raymaker.sklearn.SKLearn or raymaker.xgboost.XGBoost name one)"
        )
    if framework is None or (not has_program and framework.name == "xgboost"):
        return None
    if not has_program:
        raise ValidationError(
            f"AlgorithmSpecification.TrainingImage {image!r} is the {framework.name} framework container, "
            f"which runs your script: give its file as HyperParameters[{PROGRAM!r}] and its code as "
            f"HyperParameters[{SUBMIT_DIRECTORY!r}] (the SDK's entry_point and source_dir)"
        )
    return framework.name


def _script_spec(framework: str, spec: Mapping[str, Any], hyperparameters: Mapping[str, str]) -> ScriptSpec:
    entry_point = _decode(hyperparameters[PROGRAM])
    if not isinstance(entry_point, str) or not entry_point.strip():
        raise ValidationError(f"HyperParameters[{PROGRAM!r}] must name the entry point file, e.g. 'train.py'")
    submit = _decode(hyperparameters.get(SUBMIT_DIRECTORY, ""))
    if not isinstance(submit, str) or not submit:
        raise ValidationError(
            f"HyperParameters[{SUBMIT_DIRECTORY!r}] is required with {PROGRAM}: the URI of the "
            "sourcedir.tar.gz holding the script (the SDK uploads source_dir there)"
        )
    _uri(submit, f"HyperParameters[{SUBMIT_DIRECTORY!r}]")
    if not submit.endswith(".tar.gz"):
        raise ValidationError(
            f"HyperParameters[{SUBMIT_DIRECTORY!r}] is {submit!r}: it must name a .tar.gz archive of the "
            "source directory (sourcedir.tar.gz)"
        )
    definitions = metric_definitions(spec)
    enabled = sorted({kind for key, kind in DISTRIBUTIONS.items() if _decode(hyperparameters.get(key, "false")) is True})
    if len(enabled) > 1:
        raise ValidationError(
            f"distribution enables both {' and '.join(enabled)}: enable one (torch_distributed is torchrun's)"
        )
    if enabled and framework != "pytorch":
        raise ValidationError(
            f"distribution {enabled[0]} is for PyTorch scripts; the {framework} container runs one process "
            "per instance: remove it"
        )
    return ScriptSpec(framework, entry_point.strip(), submit, definitions, enabled[0] if enabled else None)


def metric_definitions(spec: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """AlgorithmSpecification.MetricDefinitions as (name, regex), each regex checked to compile."""
    definitions = []
    for d in spec.get("MetricDefinitions") or []:
        try:
            re.compile(d["Regex"])
        except re.error as e:
            raise ValidationError(
                f"AlgorithmSpecification.MetricDefinitions: the Regex of metric {d['Name']!r} is not a valid "
                f"regular expression ({e}): fix it"
            ) from None
        definitions.append((d["Name"], d["Regex"]))
    return tuple(definitions)


def _resolve_algorithm(spec: Mapping[str, Any]) -> str:
    name, image = spec.get("AlgorithmName"), spec.get("TrainingImage")
    if name and image:
        raise ValidationError(
            "AlgorithmSpecification has both AlgorithmName and TrainingImage: give only one"
        )
    if image:
        return algorithm_from_image(image)
    if not name:
        raise ValidationError(
            "AlgorithmSpecification needs AlgorithmName (one of "
            f"{', '.join(algorithm_names())}) or a built-in algorithm's TrainingImage"
        )
    if name not in algorithm_names():
        raise ValidationError(
            f"AlgorithmSpecification.AlgorithmName {name!r} is not a raymaker built-in algorithm; "
            f"use one of {', '.join(algorithm_names())}"
        )
    return name


def _check_channels(algo: type[Algorithm], channels: list[Channel]) -> tuple[Channel, ...]:
    allowed = {c.name for c in algo.channels}
    names = {c.name for c in channels}
    for c in channels:
        if c.name not in allowed:
            raise ValidationError(
                f"{algo.name} takes no channel {c.name!r}: rename or remove it from InputDataConfig; "
                f"its channels are {', '.join(sorted(allowed))}"
            )
    missing = [c.name for c in algo.channels if c.required and c.name not in names]
    if missing:
        raise ValidationError(
            f"{algo.name} needs the channel(s) {', '.join(map(repr, missing))}: add them to InputDataConfig"
        )
    readable = {ct.lower() for ct in algo.content_types}
    out = []
    for c in channels:
        content_type = c.content_type or algo.default_content_type
        try:
            mime = parse_content_type(content_type).mime
        except ValueError as e:
            raise ValidationError(f"channel {c.name!r}: ContentType is invalid: {e}") from None
        if mime not in readable:
            raise ValidationError(
                f"channel {c.name!r}: {algo.name} cannot read ContentType {content_type!r}; "
                f"use one of {', '.join(algo.content_types)}"
            )
        out.append(replace(c, content_type=content_type))
    return tuple(out)


def _uri(value: str, field_name: str) -> str:
    try:
        parse_uri(value)
    except ValueError as e:
        raise ValidationError(f"{field_name} is invalid: {e}") from None
    return value


def _check_algorithm_resources(
    algo: type[Algorithm], hyperparameters: Mapping[str, Any], instance_type: InstanceType, count: int
) -> None:
    try:  # e.g. XGBoost's tree_method gpu_hist on an instance type without GPUs
        algo.check_gpus(hyperparameters, instance_type.gpus)
    except ValueError as e:
        raise ValidationError(f"HyperParameters: {e}") from None
    if count > 1 and not algo.distributed:
        raise ValidationError(
            f"{algo.name} trains on one instance only: set ResourceConfig.InstanceCount to 1 (it is {count})"
        )


def validate_training_job(
    request: Mapping[str, Any], *, instance_types: Mapping[str, InstanceType] | None = None
) -> TrainingJobSpec:
    """Validate a CreateTrainingJob request (botocore's shape, then raymaker's rules) and parse it.
    ``instance_types`` defaults to the cluster YAML's (``load_instance_types()``)."""
    validate_request("CreateTrainingJob", request)
    request = dict(request)
    name = request["TrainingJobName"]
    if not JOB_NAME_RE.match(name):
        raise ValidationError(
            f"TrainingJobName {name!r} is invalid: use 1-63 letters, digits and hyphens, starting and "
            "ending with a letter or digit (pattern ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$)"
        )

    algo_spec = request.get("AlgorithmSpecification")
    if not algo_spec:
        raise ValidationError(
            "AlgorithmSpecification is required: give AlgorithmName (e.g. 'xgboost') and TrainingInputMode"
        )
    raw_hyperparameters = dict(request.get("HyperParameters") or {})
    image = algo_spec.get("TrainingImage")
    if image and algo_spec.get("AlgorithmName"):
        raise ValidationError("AlgorithmSpecification has both AlgorithmName and TrainingImage: give only one")
    container = container_spec(algo_spec) if image and is_custom_image(image) else None
    if container is None and (algo_spec.get("ContainerEntrypoint") or algo_spec.get("ContainerArguments")):
        raise ValidationError(
            "AlgorithmSpecification.ContainerEntrypoint / ContainerArguments apply to your own container "
            "image; raymaker runs built-in algorithms and framework scripts itself: leave them out"
        )
    framework = None if container else script_framework(algo_spec, raw_hyperparameters)
    script = _script_spec(framework, algo_spec, raw_hyperparameters) if framework else None
    algo: type[Algorithm] | None = None
    if container is not None:  # the container reads hyperparameters.json itself, verbatim
        algorithm_name, hyperparameters = CONTAINER, raw_hyperparameters
    elif script is not None:  # the script reads its own hyperparameters (strings, JSON-encoded by the SDK)
        algorithm_name, hyperparameters = SCRIPT, raw_hyperparameters
    else:
        algorithm_name = _resolve_algorithm(algo_spec)
        algo = get_algorithm(algorithm_name)
        try:
            hyperparameters = algo.validate_hyperparameters(raw_hyperparameters)
        except ValueError as e:  # HyperparameterError, or a cross-parameter rule
            raise ValidationError(f"HyperParameters: {e}") from None

    input_mode = algo_spec["TrainingInputMode"]
    try:
        channels = parse_channels(request.get("InputDataConfig") or [], default_input_mode=input_mode)
    except ValueError as e:
        raise ValidationError(f"InputDataConfig: {e}") from None
    assumed = frozenset(c.name for c in channels if not c.content_type) if algo else frozenset()
    channels = _check_channels(algo, channels) if algo else tuple(channels)

    output_path = _uri(request["OutputDataConfig"]["S3OutputPath"], "OutputDataConfig.S3OutputPath")

    resources = request.get("ResourceConfig")
    if not resources or "InstanceType" not in resources:
        raise ValidationError(
            "ResourceConfig.InstanceType is required: give an instance type of this cluster "
            "(e.g. 'local') and InstanceCount"
        )
    if resources.get("InstanceGroups"):
        raise ValidationError(
            "ResourceConfig.InstanceGroups (heterogeneous clusters) is not supported: use InstanceType "
            "and InstanceCount"
        )
    types = load_instance_types() if instance_types is None else instance_types
    instance_type = get_instance_type(resources["InstanceType"], types)
    count = resources.get("InstanceCount", 1)
    if count < 1:
        raise ValidationError(f"ResourceConfig.InstanceCount is {count}; give 1 or more")
    if algo is not None:
        _check_algorithm_resources(algo, hyperparameters, instance_type, count)

    stopping = request.get("StoppingCondition") or {}
    max_runtime = stopping.get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME_SECONDS)

    checkpoint = request.get("CheckpointConfig")
    checkpoint_uri = checkpoint_local = None
    if checkpoint:
        checkpoint_uri = _uri(checkpoint["S3Uri"], "CheckpointConfig.S3Uri")
        checkpoint_local = checkpoint.get("LocalPath") or DEFAULT_CHECKPOINT_LOCAL_PATH

    return TrainingJobSpec(
        name=name,
        algorithm=algorithm_name,
        hyperparameters=hyperparameters,
        channels=channels,
        input_mode=input_mode,
        output_path=output_path,
        instance_type=instance_type,
        instance_count=count,
        max_runtime_seconds=max_runtime,
        checkpoint_uri=checkpoint_uri,
        checkpoint_local_path=checkpoint_local,
        keep_alive_seconds=resources.get("KeepAlivePeriodInSeconds", 0),
        max_retry_attempts=(request.get("RetryStrategy") or {}).get("MaximumRetryAttempts"),
        environment=dict(request.get("Environment") or {}),
        request=request,
        assumed_content_types=assumed,
        script=script,
        container=container,
    )
