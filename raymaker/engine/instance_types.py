"""Instance types: named resource shapes from the cluster YAML's ``raymaker.instance_types`` section.

``load_instance_types()`` reads, in order: an explicit path, ``$RAYMAKER_CLUSTER_CONFIG``, or the
default shipped inside the package (``raymaker/engine/cluster_local.yaml``, the same file as
``cluster/local.yaml``), so a pip-installed raymaker finds it without a source checkout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raymaker.protocol.errors import ValidationError

CLUSTER_CONFIG_ENV = "RAYMAKER_CLUSTER_CONFIG"
DEFAULT_CLUSTER_CONFIG = Path(__file__).with_name("cluster_local.yaml")


@dataclass(frozen=True)
class InstanceType:
    """One resource shape. ``cpus``/``memory_gb`` None means "auto": this machine's, resolved at use."""

    name: str
    cpus: float | None
    gpus: int = 0
    memory_gb: float | None = None
    price_per_hour: float = 0.0

    def cpus_per_worker(self, instance_count: int, total_cpus: float) -> float:
        """CPUs the shape asks for: its own, or for "auto" an equal share of ``total_cpus``."""
        if self.cpus is not None:
            return self.cpus
        return total_cpus / max(instance_count, 1)


def cluster_config_path(path: str | os.PathLike | None = None) -> Path:
    """The cluster YAML in effect: ``path``, else $RAYMAKER_CLUSTER_CONFIG, else the packaged default."""
    chosen = path or os.environ.get(CLUSTER_CONFIG_ENV) or DEFAULT_CLUSTER_CONFIG
    return Path(os.path.expanduser(os.fspath(chosen)))


def load_instance_types(path: str | os.PathLike | None = None) -> dict[str, InstanceType]:
    """Instance types by name from a cluster YAML; ValueError naming the file and field to fix."""
    config = cluster_config_path(path)
    try:
        doc = yaml.safe_load(config.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"cluster config {config} does not exist: fix {CLUSTER_CONFIG_ENV} or the path given"
        ) from None
    except yaml.YAMLError as e:
        raise ValueError(f"cluster config {config} is not valid YAML: {e}") from None
    section = (doc or {}).get("raymaker") if isinstance(doc, Mapping) else None
    types = section.get("instance_types") if isinstance(section, Mapping) else None
    if not isinstance(types, Mapping) or not types:
        raise ValueError(
            f"cluster config {config} has no raymaker.instance_types section: add one, e.g. "
            "raymaker: {instance_types: {local: {cpus: auto, price_per_hour: 0}}}"
        )
    return {str(name): _parse_type(str(name), spec, config) for name, spec in types.items()}


def _parse_type(name: str, spec: Any, config: Path) -> InstanceType:
    where = f"cluster config {config}: instance type {name!r}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping with cpus, gpus, memory_gb and price_per_hour")
    unknown = sorted(set(spec) - {"cpus", "gpus", "memory_gb", "price_per_hour"})
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; use cpus, gpus, memory_gb, price_per_hour")

    def number(key: str, default: Any, *, auto: bool, positive: bool) -> float | None:
        value = spec.get(key, default)
        if auto and value == "auto":
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (positive and value == 0):
            need = "a positive number" if positive else "a number >= 0"
            raise ValueError(f"{where}: {key} is {value!r}; give {need}" + (' or "auto"' if auto else ""))
        return float(value)

    cpus = number("cpus", None if "cpus" in spec else "auto", auto=True, positive=True)
    gpus = spec.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ValueError(f"{where}: gpus is {gpus!r}; give a whole number >= 0")
    memory = number("memory_gb", "auto", auto=True, positive=True)
    price = number("price_per_hour", 0.0, auto=False, positive=False)
    return InstanceType(name=name, cpus=cpus, gpus=gpus, memory_gb=memory, price_per_hour=price or 0.0)


def get_instance_type(name: str, instance_types: Mapping[str, InstanceType] | None = None) -> InstanceType:
    """The instance type called ``name``; ValidationError listing the known ones."""
    types = load_instance_types() if instance_types is None else instance_types
    found = types.get(name)
    if found is None:
        raise ValidationError(
            f"ResourceConfig.InstanceType {name!r} is not an instance type of this cluster; use one of "
            f"{', '.join(sorted(types))}, or add it to the cluster YAML's raymaker.instance_types "
            f"(${CLUSTER_CONFIG_ENV})"
        )
    return found


def worker_resources(instance_type: InstanceType, instance_count: int, total_cpus: float) -> dict[str, float]:
    """Ray resources for each of ``instance_count`` Train workers of ``instance_type`` on a cluster
    with ``total_cpus`` logical CPUs, e.g. ``{"CPU": 0.5}``.

    Why the cap: Train workers hold their CPUs for the whole run and Ray Data only gets what is left;
    with nothing left its read tasks never schedule and the job hangs (ray-2.60-notes, "Root cause 2").
    So the workers together take at most ``total_cpus - 1`` (half the CPUs on a machine with fewer
    than 2), and a shape bigger than that share shrinks to fit. Logical CPUs are not cgroups: a worker
    still uses every core it can."""
    if instance_count < 1:
        raise ValidationError(f"ResourceConfig.InstanceCount is {instance_count}; give 1 or more")
    budget = total_cpus - 1 if total_cpus >= 2 else total_cpus / 2
    share = min(instance_type.cpus_per_worker(instance_count, budget), budget / instance_count)
    cpu = math.floor(share * 100) / 100  # Ray's fractional resources; floor keeps the sum in budget
    if cpu <= 0:
        raise ValidationError(
            f"ResourceConfig.InstanceCount {instance_count} is too many workers for this cluster's "
            f"{total_cpus:g} CPUs: use at most {max(int(budget / 0.01), 1)} or a bigger cluster"
        )
    resources: dict[str, float] = {"CPU": cpu}
    if instance_type.gpus:
        resources["GPU"] = float(instance_type.gpus)
    return resources
