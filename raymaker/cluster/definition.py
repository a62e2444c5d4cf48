"""The cluster definition: one Ray cluster-launcher YAML (``cluster/*.yaml``) that says which instance
types exist, what each is made of, and what an instance-hour costs.

An instance type is either
- a **node type**: an entry of ``available_node_types`` whose ``resources`` carry a resource named after
  the node type itself (``ml.g5.xlarge: {resources: {CPU: 4, GPU: 1, "ml.g5.xlarge": 1}}``). Each
  instance is one whole node of that type; a job asks Ray for that resource, so only such nodes take
  it and an autoscaler starts exactly those nodes (``cluster/aws.yaml``, ``cluster/kuberay.yaml``);
- a **shape** on a fixed cluster, declared under ``metadata.raymaker.instance_types`` (``cpus``,
  ``gpus``, ``memory_gb``): an instance is a worker of that size wherever it fits (``cluster/local.yaml``).

``metadata.raymaker.instance_types.<name>.price_per_hour`` prices either kind. ``metadata`` is the part
of Ray's schema that Ray keeps and ignores, so Ray's own tools accept every file as it is.

``load_cluster()`` reads an explicit path, else ``$RAYMAKER_CLUSTER_CONFIG``, else the local definition
shipped inside the package (``raymaker/cluster/local.yaml``, a link to ``cluster/local.yaml``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raymaker.protocol.errors import ValidationError

CLUSTER_CONFIG_ENV = "RAYMAKER_CLUSTER_CONFIG"
DEFAULT_CLUSTER_CONFIG = Path(__file__).with_name("local.yaml")
RAY_CLUSTER_ANNOTATION = "raymaker.io/instance-types"
_SHAPE_KEYS = {"cpus", "gpus", "memory_gb", "price_per_hour"}
_GIB = 1024**3


@dataclass(frozen=True)
class InstanceType:
    """One instance type. ``cpus``/``memory_gb`` None means "auto": this machine's, resolved at use.
    ``max_nodes`` is set for node types: how many nodes of the type the definition lets the cluster
    have (its ``max_workers``)."""

    name: str
    cpus: float | None
    gpus: int = 0
    memory_gb: float | None = None
    price_per_hour: float = 0.0
    node_type: bool = False
    max_nodes: int = 0

    def cpus_per_worker(self, instance_count: int, total_cpus: float) -> float:
        """CPUs the shape asks for: its own, or for "auto" an equal share of ``total_cpus``."""
        if self.cpus is not None:
            return self.cpus
        return total_cpus / max(instance_count, 1)


@dataclass(frozen=True)
class ClusterDefinition:
    path: Path
    name: str
    instance_types: dict[str, InstanceType] = field(default_factory=dict)

    @property
    def node_types(self) -> dict[str, InstanceType]:
        return {n: t for n, t in self.instance_types.items() if t.node_type}


def cluster_config_path(path: str | os.PathLike | None = None) -> Path:
    """The cluster YAML in effect: ``path``, else $RAYMAKER_CLUSTER_CONFIG, else the packaged default."""
    chosen = path or os.environ.get(CLUSTER_CONFIG_ENV) or DEFAULT_CLUSTER_CONFIG
    return Path(os.path.expanduser(os.fspath(chosen)))


def load_cluster(path: str | os.PathLike | None = None) -> ClusterDefinition:
    """The cluster definition; ValueError naming the file and the field to fix."""
    config = cluster_config_path(path)
    try:
        doc = yaml.safe_load(config.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"cluster config {config} does not exist: fix {CLUSTER_CONFIG_ENV} or the path given"
        ) from None
    except yaml.YAMLError as e:
        raise ValueError(f"cluster config {config} is not valid YAML: {e}") from None
    if not isinstance(doc, Mapping):
        raise ValueError(f"cluster config {config} must be a mapping in Ray's cluster launcher format")
    if "raymaker" in doc:
        raise ValueError(
            f"cluster config {config}: move the top-level raymaker: section under metadata: "
            "(metadata: {raymaker: {instance_types: ...}}); Ray's schema allows no other top-level key"
        )
    if doc.get("kind") == "RayCluster":
        doc, priced = _from_ray_cluster(doc, config)
    else:
        extra = _section(doc.get("metadata"), "raymaker", config, "metadata")
        priced = _section(extra, "instance_types", config, "metadata.raymaker")
    types: dict[str, InstanceType] = {}
    node_types = doc.get("available_node_types") or {}
    if not isinstance(node_types, Mapping):
        raise ValueError(f"cluster config {config}: available_node_types must be a mapping")
    for name, node in node_types.items():
        resources = (node or {}).get("resources") or {} if isinstance(node, Mapping) else {}
        if str(name) in resources:
            types[str(name)] = _node_type(str(name), node, priced.get(name), config)
    for name, spec in priced.items():
        if str(name) not in types:
            types[str(name)] = _shape(str(name), spec, config)
    if not types:
        raise ValueError(
            f"cluster config {config} declares no instance type: name node types after instance types "
            "and give each a resource of its own name (ml.m5.xlarge: {resources: {CPU: 4, "
            '"ml.m5.xlarge": 1}}), or list shapes under metadata.raymaker.instance_types'
        )
    return ClusterDefinition(path=config, name=str(doc.get("cluster_name", config.stem)), instance_types=types)


def load_instance_types(path: str | os.PathLike | None = None) -> dict[str, InstanceType]:
    """Instance types by name from the cluster definition."""
    return load_cluster(path).instance_types


def _from_ray_cluster(doc: Mapping[str, Any], config: Path) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """A KubeRay RayCluster: its node types as Ray's own autoscaler derives them from the worker groups,
    and prices from the ``raymaker.io/instance-types`` annotation (YAML, shaped as
    ``metadata.raymaker.instance_types``)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = dict(doc)
    cr["metadata"] = {"namespace": "default", **(doc.get("metadata") or {})}
    try:
        derived = _derive_autoscaling_config_from_ray_cr(cr)
    except Exception as e:  # noqa: BLE001 - Ray's own check of the RayCluster
        raise ValueError(f"cluster config {config}: Ray cannot read this RayCluster: {e!r}") from None
    note = (cr["metadata"].get("annotations") or {}).get(RAY_CLUSTER_ANNOTATION)
    try:
        priced = yaml.safe_load(note) if note else {}
    except yaml.YAMLError as e:
        raise ValueError(f"cluster config {config}: annotation {RAY_CLUSTER_ANNOTATION} is not YAML: {e}") from None
    if not isinstance(priced, Mapping):
        raise ValueError(f"cluster config {config}: annotation {RAY_CLUSTER_ANNOTATION} must be a mapping")
    return derived, priced


def _section(parent: Any, key: str, config: Path, where: str) -> Mapping[str, Any]:
    value = (parent or {}).get(key) if isinstance(parent, Mapping) or parent is None else None
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"cluster config {config}: {where}.{key} must be a mapping")
    return value


def _node_type(name: str, node: Mapping[str, Any], extra: Any, config: Path) -> InstanceType:
    where = f"cluster config {config}: node type {name!r}"
    if extra is not None and not isinstance(extra, Mapping):
        raise ValueError(f"{where}: metadata.raymaker.instance_types.{name} must be a mapping")
    shape = sorted(set(extra or {}) - {"price_per_hour"})
    if shape:
        raise ValueError(
            f"{where} is a node type, so its shape is its resources: remove {shape} from "
            f"metadata.raymaker.instance_types.{name} (keep price_per_hour only)"
        )
    resources = node["resources"]
    cpus = resources.get("CPU")
    if not isinstance(cpus, int) or cpus < 1:
        raise ValueError(f"{where}: resources.CPU is {cpus!r}; give the node's CPUs, a whole number >= 1")
    memory = resources.get("memory")
    max_workers = node.get("max_workers", 0)
    return InstanceType(
        name=name,
        cpus=float(cpus),
        gpus=int(resources.get("GPU", 0)),
        memory_gb=round(memory / _GIB, 1) if isinstance(memory, int) and memory > 0 else None,
        price_per_hour=_number(extra or {}, "price_per_hour", 0.0, where, auto=False, positive=False) or 0.0,
        node_type=True,
        max_nodes=int(max_workers) if isinstance(max_workers, int) else 0,
    )


def _shape(name: str, spec: Any, config: Path) -> InstanceType:
    where = f"cluster config {config}: instance type {name!r}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping with cpus, gpus, memory_gb and price_per_hour")
    unknown = sorted(set(spec) - _SHAPE_KEYS)
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; use cpus, gpus, memory_gb, price_per_hour")
    cpus = _number(spec, "cpus", None if "cpus" in spec else "auto", where, auto=True, positive=True)
    gpus = spec.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ValueError(f"{where}: gpus is {gpus!r}; give a whole number >= 0")
    memory = _number(spec, "memory_gb", "auto", where, auto=True, positive=True)
    price = _number(spec, "price_per_hour", 0.0, where, auto=False, positive=False)
    return InstanceType(name=name, cpus=cpus, gpus=gpus, memory_gb=memory, price_per_hour=price or 0.0)


def _number(spec: Mapping[str, Any], key: str, default: Any, where: str, *, auto: bool, positive: bool) -> float | None:
    value = spec.get(key, default)
    if auto and value == "auto":
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        need = "a positive number" if positive else "a number >= 0"
        raise ValueError(f"{where}: {key} is {value!r}; give {need}" + (' or "auto"' if auto else ""))
    return float(value)


def get_instance_type(name: str, instance_types: Mapping[str, InstanceType] | None = None) -> InstanceType:
    """The instance type called ``name``; ValidationError listing the known ones."""
    types = load_instance_types() if instance_types is None else instance_types
    found = types.get(name)
    if found is None:
        raise ValidationError(
            f"ResourceConfig.InstanceType {name!r} is not an instance type of this cluster; use one of "
            f"{', '.join(sorted(types))}, or add it to the cluster definition (${CLUSTER_CONFIG_ENV})"
        )
    return found
