"""Joining or starting the Ray cluster the engine runs on."""

from __future__ import annotations

import os
from typing import Any


def ensure_ray() -> None:
    """Connect to the Ray cluster in ``RAY_ADDRESS``, or start a local one (local mode)."""
    import ray

    if ray.is_initialized():
        return
    # Train's controller polls worker reports at this interval (2 s by default): every checkpoint
    # report would wait that long. Set before Ray starts so every Ray process inherits it.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    ray_env_for_serving(os.environ)
    ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)


def ray_env_for_serving(environ: Any) -> None:
    """Serve's HAProxy ingress answers in ~1 ms where its Python proxy takes ~10 ms, but it does not
    terminate TLS: use it unless the runtime URL is https. Read by Serve's controller when it starts,
    so it must be in the environment Ray starts with."""
    https = (environ.get("RAYMAKER_RUNTIME_URL") or "").startswith("https:")
    environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "0" if https else "1")
    # Under HAProxy a stopping replica lingers 30 s for external load balancers to notice; here the
    # only balancer is Serve's own HAProxy, which the controller updates at once.
    environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
