"""Deploying an endpoint onto Ray Serve, in the job service (so it outlives the caller): bring the
endpoint to what its record asks (deploy on Creating / Updating, remove on Deleting) and keep the
runtime's routing table in step with the records."""

from __future__ import annotations

from typing import Any

from raymaker.engine.billing import meter_endpoint
from raymaker.engine.failures import failure_reason
from raymaker.engine.hosting import DEFAULT_STARTUP_TIMEOUT_S, variant_plans
from raymaker.engine.kinds import Kind
from raymaker.engine.resource_states import EndpointStatus as E
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import service_name
from raymaker.io.storage import S3Settings


def routing_table(res: ResourceStore) -> dict[str, list[dict[str, Any]]]:
    """Every endpoint that serves traffic now: its variants' applications and weights."""
    table = {}
    for record in res.list(Kind.ENDPOINT, max_results=100_000):
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

    record = res.find(Kind.ENDPOINT, name)
    if record is None:
        return "Deleted"
    status, state = record["status"], dict(record["state"])
    hosting.start_serve()
    old_apps = [v["app"] for v in state.get("variants") or []]
    if status == E.DELETING:
        hosting.set_routes(
            {k: v for k, v in routing_table(res).items() if k.lower() != name.lower()}, service_name(res.store)
        )
        for app in old_apps:
            hosting.delete_app(app)
        meter_endpoint(res.store, name, [])  # billed until now
        res.delete(Kind.ENDPOINT, name)
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
        reason = failure_reason(e, prefix="Model failed to load or start: ")
        if status == E.CREATING:
            res.update(Kind.ENDPOINT, name, status=E.FAILED, failure_reason=reason)
            return E.FAILED
        # A failed update leaves the endpoint serving its previous config, as SageMaker rolls back.
        back = E.IN_SERVICE if old_apps else E.FAILED
        state.pop("pending_config", None)
        res.update(Kind.ENDPOINT, name, status=back, failure_reason=f"Update failed: {reason}", state=state)
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
    res.update(Kind.ENDPOINT, name, state=state)  # the table below reads the new apps from the record
    hosting.set_routes(routing_table(res), service_name(res.store))
    hosting.wait_reachable(name)
    for app in old_apps:
        if app not in started:
            hosting.delete_app(app)
    res.update(Kind.ENDPOINT, name, status=E.IN_SERVICE, failure_reason=None)
    # Billed from now per variant (an update's new counts replace the old ones from now on).
    meter_endpoint(res.store, name, [(p.variant, p.instance_type, p.instance_count) for p in plans])
    return E.IN_SERVICE
