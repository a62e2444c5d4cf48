"""What a script sees before it runs: the config files under ``input/config`` and the ``SM_*``
environment, built exactly as the sagemaker-training-toolkit builds them (``environment.py`` and
``mapping.py`` of aws/sagemaker-training-toolkit; sagemaker-contract.md sections 2.2-2.8), so a script
that reads ``SM_CHANNEL_TRAIN`` or parses ``--epochs`` works unchanged.

The one difference is where the tree is: every path names ``MLTree``'s root, not ``/opt/ml``, because
many jobs and hosts share a machine. ``SAGEMAKER_BASE_DIR`` (the toolkit's own variable for another
root) says where it is.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from raymaker.io.channels import Channel, inputdataconfig
from raymaker.toolkit.paths import MLTree

# The reserved hyperparameters the toolkit consumes (params.SAGEMAKER_HYPERPARAMETERS); every other
# ``sagemaker_`` key is an "additional framework parameter" (SM_FRAMEWORK_PARAMS). None of them reach
# the script as arguments.
PROGRAM = "sagemaker_program"
SUBMIT_DIRECTORY = "sagemaker_submit_directory"
LOG_LEVEL = "sagemaker_container_log_level"
JOB_NAME = "sagemaker_job_name"
REGION = "sagemaker_region"
RESERVED_HYPERPARAMETERS: tuple[str, ...] = (
    PROGRAM,
    SUBMIT_DIRECTORY,
    "sagemaker_enable_cloudwatch_metrics",
    REGION,
    LOG_LEVEL,
    JOB_NAME,
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
)
SAGEMAKER_PREFIX = "sagemaker_"

NETWORK_INTERFACE = "eth0"  # the toolkit's default, and what SageMaker's local mode writes
GROUP_NAME = "homogeneousCluster"  # SageMaker's name for the one group of a homogeneous cluster

# Framework-parameter flags that put the current group among the distribution groups (the toolkit's
# get_distribution_instance_groups_from_resource_config).
_DISTRIBUTION_FLAGS = (
    "sagemaker_mpi_enabled",
    "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled",
    "sagemaker_pytorch_ddp_enabled",
    "sagemaker_pytorch_xla_multi_worker_enabled",
    "sagemaker_multi_worker_mirrored_strategy_enabled",
    "sagemaker_torch_distributed_enabled",
)


# ------------------------------------------------------------------------------------ hyperparameters


def decode_value(value: Any) -> Any:
    """One hyperparameter as the toolkit reads it: JSON if it parses (the v2 SDK JSON-encodes every
    value, so ``"\\"train.py\\""`` is ``train.py`` and ``"0.1"`` is ``0.1``), else the string itself
    (the v3 ModelTrainer sends strings raw)."""
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        return value


def decode_hyperparameters(raw: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(user hyperparameters, SageMaker's)``: every value decoded (``decode_value``), then split as
    the toolkit splits them. The second holds the reserved keys (``sagemaker_program``,
    ``_tuning_objective_metric``, ...) and every other ``sagemaker_`` key; the first is what the script
    gets as ``--key value`` arguments and ``SM_HP_*``. ``framework_params`` picks SM_FRAMEWORK_PARAMS
    out of the second."""
    decoded = {k: decode_value(v) for k, v in raw.items()}
    sagemaker = {k: v for k, v in decoded.items() if k in RESERVED_HYPERPARAMETERS or k.startswith(SAGEMAKER_PREFIX)}
    user = {k: v for k, v in decoded.items() if k not in sagemaker}
    return user, sagemaker


def framework_params(sagemaker_hps: Mapping[str, Any]) -> dict[str, Any]:
    """The toolkit's ``additional_framework_parameters``: the ``sagemaker_`` keys it does not consume
    itself (``sagemaker_torch_distributed_enabled``, ``sagemaker_distribution_instance_groups``, ...)."""
    return {k: v for k, v in sagemaker_hps.items() if k not in RESERVED_HYPERPARAMETERS}


def _decode(obj: Any) -> str:
    # mapping._decode: None is empty, bytes are latin-1, anything else is Python's str().
    if obj is None:
        return ""
    if isinstance(obj, bytes):
        return obj.decode("latin1")
    return str(obj)


def to_cmd_args(hps: Mapping[str, Any]) -> list[str]:
    """The toolkit's ``mapping.to_cmd_args``: keys sorted, ``--key`` (``-k`` for a one-character key),
    the value as Python's ``str`` (``True``, ``0.1``, ``[1, 2]``), a dict as ``k1=v1,k2=v2`` sorted by
    key. Scripts parse these with argparse, so the exact spelling matters."""

    def name(key: Any) -> str:
        s = _decode(key)
        if not s:
            return ""
        return f"--{s}" if len(s) > 1 else f"-{s}"

    def value(v: Any) -> str:
        if hasattr(v, "items"):
            return ",".join(f"{k}={item}" for k, item in sorted(v.items()))
        return _decode(v)

    keys = sorted(hps)
    return list(itertools.chain.from_iterable((name(k), value(hps[k])) for k in keys))


def to_env_vars(mapping: Mapping[str, Any]) -> dict[str, str]:
    """The toolkit's ``mapping.to_env_vars``: ``SM_`` + the key upper-cased (hyphens kept:
    ``SM_HP_LEARNING-RATE``); strings as they are, None empty, bytes latin-1, anything else compact
    JSON with sorted keys."""

    def key(k: Any) -> str:
        return f"SM_{str(k).upper()}" if k else ""

    def value(v: Any) -> str:
        if isinstance(v, bytes):
            return v.decode("latin1")
        if v is None:
            return ""
        if isinstance(v, str):
            return v
        return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    return {key(k): value(v) for k, v in mapping.items()}


# ------------------------------------------------------------------------------------ config files


def input_data_config(channels: Sequence[Channel]) -> dict[str, dict[str, str]]:
    """inputdataconfig.json: one entry per channel (ContentType only when the channel sets one;
    ``S3DistributionType``, not the API's ``S3DataDistributionType``)."""
    return inputdataconfig(channels)


def resource_config(current_host: str, hosts: Sequence[str], instance_type: str) -> dict[str, Any]:
    """resourceconfig.json for one host of a homogeneous cluster, with every key the toolkit and the
    v3 ModelTrainer drivers read (the drivers fail without ``current_instance_type`` and
    ``network_interface_name``). ``hosts`` keep the order given: ``algo-1`` first, as SageMaker lists
    them, and the first host is the toolkit's master."""
    hosts = list(hosts)
    if current_host not in hosts:
        raise ValueError(f"current host {current_host!r} is not one of the job's hosts {hosts}")
    return {
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_group_name": GROUP_NAME,
        "hosts": hosts,
        "instance_groups": [{"instance_group_name": GROUP_NAME, "instance_type": instance_type, "hosts": hosts}],
        "network_interface_name": NETWORK_INTERFACE,
    }


def checkpoint_config_doc(tree: MLTree, checkpoint: Mapping[str, Any]) -> dict[str, str]:
    """checkpointconfig.json from the request's CheckpointConfig: ``S3Uri`` as given, ``LocalPath``
    where the checkpoints really are in this tree (default ``/opt/ml/checkpoints``)."""
    local = checkpoint.get("LocalPath") or "/opt/ml/checkpoints"
    return {"S3Uri": str(checkpoint.get("S3Uri", "")), "LocalPath": tree.local_path(local)}


def write_config(
    tree: MLTree,
    *,
    hyperparameters: Mapping[str, str],
    input_data_config: Mapping[str, Any],
    resource_config: Mapping[str, Any],
    checkpoint_config: Mapping[str, Any] | None = None,
) -> None:
    """The files of ``input/config``: hyperparameters.json (the request's map verbatim: strings, not
    decoded), inputdataconfig.json, resourceconfig.json, and checkpointconfig.json when the job has a
    CheckpointConfig (``checkpoint_config``: the request's CheckpointConfig)."""
    os.makedirs(tree.config_dir, exist_ok=True)
    docs: dict[str, Any] = {
        "hyperparameters": dict(hyperparameters),
        "inputdataconfig": dict(input_data_config),
        "resourceconfig": dict(resource_config),
    }
    if checkpoint_config is not None:
        docs["checkpointconfig"] = checkpoint_config_doc(tree, checkpoint_config)
    for name, doc in docs.items():
        with open(tree.config_file(name), "w") as f:
            json.dump(doc, f)


# ------------------------------------------------------------------------------------ environment


def training_env(
    tree: MLTree,
    *,
    job_name: str,
    job_arn: str,
    hyperparameters: Mapping[str, str],
    channels: Sequence[Channel],
    current_host: str,
    hosts: Sequence[str],
    instance_type: str,
    num_cpus: int,
    num_gpus: int,
    environment: Mapping[str, str] | None = None,
    entry_point: str | None = None,
    framework_module: str | None = None,
) -> dict[str, str]:
    """Every variable a SageMaker training container's script finds set, layered as in a container:

    1. what the framework images set (``SM_INPUT_TRAINING_CONFIG_FILE``, ``SM_INPUT_DATA_CONFIG_FILE``,
       ``SM_CHECKPOINT_CONFIG_FILE``, ``SAGEMAKER_TRAINING_MODULE`` when ``framework_module`` is given);
    2. what SageMaker sets (``TRAINING_JOB_NAME``, ``TRAINING_JOB_ARN``), then the request's
       ``Environment``, which may override the first two layers;
    3. what the toolkit writes over all of them before it starts the script: every ``SM_*`` variable of
       ``Environment.to_env_vars`` (``SM_TRAINING_ENV`` included), ``SAGEMAKER_BASE_DIR``,
       ``CURRENT_HOST``, ``SAGEMAKER_JOB_NAME`` and ``SAGEMAKER_REGION``.

    ``num_cpus`` / ``num_gpus`` are the instance's share of the machine (the toolkit counts the
    container's). ``entry_point`` overrides ``sagemaker_program``, as the SAGEMAKER_PROGRAM variable
    does in the toolkit. PYTHONPATH is the runner's: it depends on what gets installed."""
    environment = dict(environment or {})
    user_hps, sagemaker_hps = decode_hyperparameters(hyperparameters)
    fw_params = framework_params(sagemaker_hps)
    rc = resource_config(current_host, hosts, instance_type)
    idc = input_data_config(channels)

    program = entry_point or environment.get("SAGEMAKER_PROGRAM") or sagemaker_hps.get(PROGRAM)
    program = None if program is None else str(program)
    module_name = program[:-3] if program and program.endswith(".py") else program
    module_dir = str(sagemaker_hps.get(SUBMIT_DIRECTORY, tree.code_dir))
    log_level = sagemaker_hps.get(LOG_LEVEL, logging.INFO)
    framework_module = framework_module or environment.get("SAGEMAKER_TRAINING_MODULE")

    group_names = [g["instance_group_name"] for g in rc["instance_groups"]]
    groups = {g["instance_group_name"]: g for g in rc["instance_groups"]}
    current_group = rc["current_group_name"]
    current_group_hosts = groups[current_group]["hosts"]
    distribution_groups = fw_params.get("sagemaker_distribution_instance_groups")
    if distribution_groups is None:
        distribution_groups = [current_group] if any(fw_params.get(f) for f in _DISTRIBUTION_FLAGS) else []
    distribution_hosts = [h for g in rc["instance_groups"] if g["instance_group_name"] in distribution_groups
                          for h in g["hosts"]]
    master = distribution_hosts[0] if distribution_hosts else rc["hosts"][0]
    # Exactly the toolkit's expression: null unless the container has SM_HP_MP_PARAMETERS set.
    mp = environment.get("SM_HP_MP_PARAMETERS")
    mp_enabled = mp and mp != "{}"

    channel_dirs = {c.name: tree.channel_dir(c.name) for c in channels}
    # The toolkit's Environment properties (SM_TRAINING_ENV is all of them).
    props: dict[str, Any] = {
        "additional_framework_parameters": fw_params,
        "channel_input_dirs": channel_dirs,
        "current_host": current_host,
        "current_instance_group": current_group,
        "current_instance_group_hosts": current_group_hosts,
        "current_instance_type": instance_type,
        "distribution_hosts": distribution_hosts,
        "distribution_instance_groups": distribution_groups,
        "framework_module": framework_module,
        "hosts": rc["hosts"],
        "hyperparameters": user_hps,
        "input_config_dir": tree.config_dir,
        "input_data_config": idc,
        "input_dir": tree.input_dir,
        "instance_groups": group_names,
        "instance_groups_dict": groups,
        "is_hetero": len(group_names) > 1,
        "is_master": current_host == master,
        "is_modelparallel_enabled": mp_enabled,
        "is_smddpmprun_installed": shutil.which("smddpmprun") is not None,
        "is_smddprun_installed": shutil.which("smddprun") is not None,
        "job_name": job_name,
        "log_level": log_level,
        "master_hostname": master,
        "model_dir": tree.model_dir,
        "module_dir": module_dir,
        "module_name": module_name,
        "network_interface_name": rc["network_interface_name"],
        "num_cpus": int(num_cpus),
        "num_gpus": int(num_gpus),
        "num_neurons": 0,
        "output_data_dir": tree.output_data_dir,
        "output_dir": tree.output_dir,
        "output_intermediate_dir": tree.intermediate_dir,
        "resource_config": rc,
        "topology": [],
        "user_entry_point": program,
    }
    # Environment.to_env_vars, key for key.
    sm: dict[str, Any] = {
        "hosts": props["hosts"],
        "network_interface_name": props["network_interface_name"],
        "hps": user_hps,
        "user_entry_point": program,
        "framework_params": fw_params,
        "resource_config": rc,
        "input_data_config": idc,
        "output_data_dir": tree.output_data_dir,
        "channels": sorted(channel_dirs),
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_instance_group": current_group,
        "current_instance_group_hosts": current_group_hosts,
        "instance_groups": group_names,
        "instance_groups_dict": groups,
        "distribution_instance_groups": distribution_groups,
        "is_hetero": props["is_hetero"],
        "module_name": module_name,
        "log_level": log_level,
        "framework_module": framework_module,
        "input_dir": tree.input_dir,
        "input_config_dir": tree.config_dir,
        "output_dir": tree.output_dir,
        "num_cpus": props["num_cpus"],
        "num_gpus": props["num_gpus"],
        "num_neurons": 0,
        "model_dir": tree.model_dir,
        "module_dir": module_dir,
        "training_env": props,
        "user_args": to_cmd_args(user_hps),
        "output_intermediate_dir": tree.intermediate_dir,
    }
    for name, path in channel_dirs.items():
        sm[f"channel_{name}"] = path
    for key, value in user_hps.items():
        sm[f"hp_{key}"] = value

    env: dict[str, str] = {
        "SM_INPUT_TRAINING_CONFIG_FILE": tree.config_file("hyperparameters"),
        "SM_INPUT_DATA_CONFIG_FILE": tree.config_file("inputdataconfig"),
        "SM_CHECKPOINT_CONFIG_FILE": tree.config_file("checkpointconfig"),
    }
    if framework_module:
        env["SAGEMAKER_TRAINING_MODULE"] = framework_module
    env["TRAINING_JOB_NAME"] = job_name
    env["TRAINING_JOB_ARN"] = job_arn
    env.update({str(k): str(v) for k, v in environment.items()})
    env.update(to_env_vars(sm))
    region = sagemaker_hps.get(REGION) or environment.get("AWS_REGION") or environment.get("AWS_DEFAULT_REGION")
    env.update(
        SAGEMAKER_BASE_DIR=tree.root,
        CURRENT_HOST=current_host,
        SAGEMAKER_JOB_NAME=_decode(sagemaker_hps.get(JOB_NAME, "")),
        SAGEMAKER_REGION=_decode(region or ""),
    )
    return env
