"""Joining or starting the Ray cluster the engine runs on."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from raymaker.cluster import local

HEAD_RESOURCE = "node:__internal_head__"  # the resource Ray gives the head node only


def ensure_ray() -> None:
    """Join the Ray cluster this process should use, else start a private one (local mode):

    1. ``RAY_ADDRESS``, when set (a Ray job's driver has it: the cluster the job runs on);
    2. the cluster ``raymaker up`` started for this RAYMAKER_HOME, when it is running (found from its
       record in milliseconds, no failing connect), so jobs, endpoints and tuning jobs outlive the
       script;
    3. else a cluster found the way ``ray.init()`` finds one (a ``ray start`` by hand), or a head
       started in this process, which ends with it.
    """
    import ray

    if ray.is_initialized():
        return
    cluster = local.running()
    address = join_address(os.environ, cluster)
    if cluster is not None and address == cluster.gcs_address and cluster.auth_mode == "token":
        _token_mode()
    if address is not None:
        ray.init(address=address, log_to_driver=False)
        return
    # Set before Ray starts, so every Ray process (Serve's controller, Train's workers) inherits it.
    local.ray_env(os.environ)
    ray.init(include_dashboard=False, log_to_driver=False)


def head_node_id() -> str:
    """The Ray node id of the cluster's head (the node holding the job database); needs Ray joined."""
    import ray

    for node in ray.nodes():
        if node.get("Alive") and HEAD_RESOURCE in (node.get("Resources") or {}):
            return node["NodeID"]
    return ray.get_runtime_context().get_node_id()  # pragma: no cover - every Ray cluster has a head


def on_head_node() -> bool:
    """Whether this process runs on the head node (needs Ray joined)."""
    import ray

    return ray.get_runtime_context().get_node_id() == head_node_id()


def join_address(environ: Mapping[str, str], cluster: local.LocalCluster | None) -> str | None:
    """The address ``ensure_ray`` joins: RAY_ADDRESS, else the running ``raymaker up`` cluster's (its
    recorded address also when RAY_ADDRESS names it as 127.0.0.1 or localhost), else None."""
    address = environ.get("RAY_ADDRESS") or None
    if cluster is not None and (address is None or local.same_address(address, cluster.gcs_address)):
        return cluster.gcs_address
    return address


def _token_mode() -> None:
    """Send the cluster's token: Ray does so only in token mode, read from RAY_AUTH_MODE when its
    config loads, and turns it on by itself only for a cluster it found, never for an address it was
    given. Unless the user chose a mode, set it and reload Ray's config, as Ray's own
    ``maybe_enable_token_auth_if_token_available`` does."""
    if os.environ.get(local.AUTH_MODE):
        return
    os.environ[local.AUTH_MODE] = "token"
    try:
        from ray._raylet import Config
    except ImportError:  # pragma: no cover - a Ray without token authentication
        return
    Config.initialize("")


def ray_env_for_serving(environ: MutableMapping[str, str]) -> None:
    """Serve's settings for a Ray about to start (HAProxy ingress unless the runtime URL is https,
    free ports for HAProxy's stats and metrics listeners), set unless the user set them."""
    local.serving_env(environ)
