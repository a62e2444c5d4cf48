"""The import graph of ``raymaker/``, built from the source (every import statement, lazy ones inside
functions included): no cycles, and no import against the layer order ARCHITECTURE.md documents."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "raymaker"

# Packages, lowest first: a module may import its own package and any package below it.
LAYERS = [
    ["raymaker.protocol"],
    ["raymaker.cluster", "raymaker.containers", "raymaker.metrics"],
    ["raymaker.io"],
    ["raymaker.algorithms", "raymaker.toolkit"],
    ["raymaker.serve"],
    ["raymaker.engine"],
    # The SDK (a client of the engine, through a backend), the API server (the engine on the wire) and
    # the web console it serves (which reads through the server's access rules, server.access).
    ["raymaker.sdk", "raymaker.server", "raymaker.console"],
    ["raymaker.cli", "raymaker.testing"],
    # The package's own __init__ and the SageMaker SDK's module names (raymaker.pytorch, ...): the public
    # SDK, re-exported.
    ["raymaker", *(f"raymaker.{m}" for m in ("pytorch", "sklearn", "xgboost"))],
]

# Inside the engine, lowest first.
ENGINE_LAYERS = [
    # database: the two back ends; migrations: Alembic's scripts of the schema (they import no raymaker).
    ["kinds", "states", "resource_states", "policies", "arns", "metering", "failures", "iam", "database",
     "migrations"],
    ["store", "resources"],
    ["validation", "tuning_spec", "channel_data", "worker", "script_job", "container_job", "context"],
    ["training_jobs", "hosting", "transform_jobs", "tuning_jobs", "billing", "audit", "resource_logs", "users"],
    ["instances", "instance_group", "train_launch", "job_metrics", "job_run", "deployment", "transform_run",
     "tuning_run"],
    ["dispatch"],
    ["service"],
    ["api"],
]

# The SDK reaches the engine only through a backend: the registry that builds the in-process one.
SDK_ENGINE_GATE = "raymaker.sdk.backends"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {_resolve(a.name) for a in node.names if a.name.split(".")[0] == "raymaker"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] != "raymaker":
                continue
            for alias in node.names:  # "from raymaker.engine import api" imports a module
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else _resolve(base))
    found.discard(module)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str, layers: list[list[str]], prefix: str = "") -> int | None:
    best = None
    for i, names in enumerate(layers):
        for name in names:
            full = prefix + name
            if module == full or module.startswith(full + "."):
                if best is None or len(full) > best[1]:
                    best = (i, len(full))
    return None if best is None else best[0]


def test_the_graph_sees_lazy_imports() -> None:
    # A guard on the test itself: imports inside functions count.
    assert "raymaker.engine.api" in GRAPH["raymaker.sdk.backends"], GRAPH["raymaker.sdk.backends"]


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_every_module_has_a_layer() -> None:
    missing = [m for m in MODULES if _layer(m, LAYERS) is None]
    assert not missing
    # "raymaker" is a prefix of every module: one directly under the package must be named in LAYERS.
    top = [m for m in MODULES if m.count(".") == 1 and not any(m in names for names in LAYERS)]
    assert not top, f"add these modules to LAYERS (and ARCHITECTURE.md): {top}"
    engine = [m for m in MODULES if m.startswith("raymaker.engine.")]
    unplaced = [m for m in engine if _layer(m, ENGINE_LAYERS, "raymaker.engine.") is None]
    assert not unplaced, f"add these engine modules to ENGINE_LAYERS (and ARCHITECTURE.md): {unplaced}"


def _violations(layers: list[list[str]], prefix: str = "", scope: str = "raymaker") -> list[str]:
    bad = []
    for module, imports in GRAPH.items():
        if not module.startswith(scope):
            continue
        mine = _layer(module, layers, prefix)
        for target in imports:
            theirs = _layer(target, layers, prefix)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    return sorted(bad)


def test_packages_import_only_downwards() -> None:
    assert not _violations(LAYERS)


def test_engine_modules_import_only_downwards() -> None:
    assert not _violations(ENGINE_LAYERS, "raymaker.engine.", "raymaker.engine.")


@pytest.mark.parametrize("forbidden", ["raymaker.engine", "raymaker.serve", "raymaker.algorithms"])
def test_the_sdk_reaches_the_engine_only_through_a_backend(forbidden: str) -> None:
    bad = [
        f"{m} imports {t}"
        for m, imports in GRAPH.items()
        if m.startswith("raymaker.sdk") and m != SDK_ENGINE_GATE
        for t in imports
        if t == forbidden or t.startswith(forbidden + ".")
    ]
    assert not bad


def test_the_cli_goes_through_the_sdk() -> None:
    bad = [
        f"{m} imports {t}"
        for m, imports in GRAPH.items()
        if m.startswith("raymaker.cli")
        for t in imports
        if any(t == p or t.startswith(p + ".") for p in ("raymaker.engine", "raymaker.serve"))
    ]
    assert not bad  # ``raymaker server`` hosts the engine through raymaker.server, a package of its own
