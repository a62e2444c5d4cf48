"""The conformance suite every built-in algorithm must pass (scikit-learn's ``estimator_checks`` idea).

``check_algorithm(name)`` runs them all; ``tests/algorithms/test_conformance.py`` runs it for every
registered algorithm, so a new algorithm cannot land without a ``CASES`` entry and passing checks.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import Algorithm, HyperparameterError, LocalContext, TrainingData
from raymaker.io.batch import Batch
from raymaker.io.formats import parse_content_type, supported_content_types


@dataclass(frozen=True)
class Case:
    """A small training problem for one algorithm: hyperparameters (strings, as on the wire) and data."""

    hyperparameters: dict[str, str]
    problem: str  # "binary", "multiclass", "regression" or "unsupervised"
    sparse: bool = False


def _data(problem: str, rows: int, cols: int, seed: int, sparse: bool = False) -> Batch:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    w = np.linspace(-1, 1, cols).astype(np.float32)
    if problem == "binary":
        y = (x @ w > 0).astype(np.float32)
    elif problem == "multiclass":
        y = np.digitize(x @ w, np.quantile(x @ w, [1 / 3, 2 / 3])).astype(np.float32)
    elif problem == "regression":
        y = (x @ w + 0.1 * rng.normal(size=rows)).astype(np.float32)
    else:
        centers = rng.normal(scale=4, size=(3, cols)).astype(np.float32)
        x = centers[rng.integers(0, 3, rows)] + x
        y = None
    if sparse:
        x[np.abs(x) < 0.8] = 0
        return Batch(sp.csr_matrix(x), y)
    return Batch(x, y)


# Every registered algorithm needs at least one case.
CASES: dict[str, list[Case]] = {
    "xgboost": [
        Case({"num_round": "5", "objective": "binary:logistic", "eval_metric": "auc"}, "binary"),
        Case({"num_round": "5", "objective": "multi:softprob", "num_class": "3"}, "multiclass"),
        Case({"num_round": "5", "objective": "reg:squarederror"}, "regression", sparse=True),
    ],
    "linear-learner": [
        Case({"predictor_type": "binary_classifier", "epochs": "3", "mini_batch_size": "64"}, "binary"),
        Case(
            {"predictor_type": "regressor", "epochs": "3", "mini_batch_size": "64"}, "regression", sparse=True
        ),
        Case(
            {
                "predictor_type": "multiclass_classifier",
                "num_classes": "3",
                "epochs": "3",
                "mini_batch_size": "64",
            },
            "multiclass",
        ),
    ],
    "kmeans": [
        Case({"k": "3", "feature_dim": "6", "mini_batch_size": "64", "epochs": "2"}, "unsupervised"),
        Case({"k": "3", "feature_dim": "6", "init_method": "kmeans++"}, "unsupervised", sparse=True),
    ],
    "pca": [
        Case({"num_components": "3", "feature_dim": "6", "mini_batch_size": "64"}, "unsupervised"),
        Case(
            {
                "num_components": "2",
                "feature_dim": "6",
                "mini_batch_size": "64",
                "algorithm_mode": "randomized",
            },
            "unsupervised",
            sparse=True,
        ),
    ],
}

_METRIC_NAME = re.compile(r"^(train|validation|test):[A-Za-z0-9_\-]+$")
_KINDS = {"int", "float", "bool", "str", "list"}


def check_declarations(algo: type[Algorithm]) -> None:
    """Hyperparameters, channels, content types and metrics are declared consistently."""
    names = [hp.name for hp in algo.hyperparameters]
    assert len(names) == len(set(names)), f"{algo.name}: duplicate hyperparameter names"
    for hp in algo.hyperparameters:
        assert hp.kind in _KINDS, f"{algo.name}.{hp.name}: unknown kind {hp.kind!r}"
        if not hp.required and hp.default is not None:
            hp.parse(hp.default)  # a default must itself be valid
    channel_names = [c.name for c in algo.channels]
    assert "train" in channel_names, f"{algo.name}: every built-in takes a 'train' channel"
    assert any(c.name == "train" and c.required for c in algo.channels), (
        f"{algo.name}: 'train' must be required"
    )
    known = set(supported_content_types())
    for ct in algo.content_types:
        assert parse_content_type(ct).mime in known, f"{algo.name}: no reader for content type {ct!r}"
    assert algo.default_content_type in algo.content_types, f"{algo.name}: default content type not accepted"
    assert algo.metrics, f"{algo.name}: declares no metrics"
    for m in algo.metrics:
        assert _METRIC_NAME.match(m.name), f"{algo.name}: metric {m.name!r} is not '<channel>:<name>'"
    assert algo.trainer in ("xgboost", "torch", "data_parallel"), (
        f"{algo.name}: unknown trainer {algo.trainer!r}"
    )


def check_hyperparameter_validation(algo: type[Algorithm], case: Case) -> None:
    """Unknown, missing, mistyped and out-of-range hyperparameters are refused with a message naming them."""
    algo.validate_hyperparameters(case.hyperparameters)
    _raises(lambda: algo.validate_hyperparameters({**case.hyperparameters, "no_such_hp": "1"}), "no_such_hp")
    for hp in algo.hyperparameters:
        if hp.required and hp.name in case.hyperparameters:
            missing = {k: v for k, v in case.hyperparameters.items() if k != hp.name}
            _raises(lambda m=missing: algo.validate_hyperparameters(m), hp.name)
        if hp.kind in ("int", "float") and hp.choices is None:
            _raises(
                lambda h=hp: algo.validate_hyperparameters({**case.hyperparameters, h.name: "not-a-number"}),
                hp.name,
            )
            if hp.low is not None:
                below = hp.low - 1
                _raises(
                    lambda h=hp, b=below: algo.validate_hyperparameters(
                        {**case.hyperparameters, h.name: str(b)}
                    ),
                    hp.name,
                )
    # SageMaker's own additions are not the algorithm's concern
    typed = algo.validate_hyperparameters(
        {**case.hyperparameters, "_tuning_objective_metric": "x", "sagemaker_region": "y"}
    )
    assert typed.get("_tuning_objective_metric") == "x", f"{algo.name}: the tuning objective was dropped"


def check_train_save_load_predict(algo: type[Algorithm], case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    """Train in-process, load the saved model, predict: outputs have one entry per row and the
    reported metrics are declared ones. Returns the predictions."""
    train = _data(case.problem, 300, 6, seed, case.sparse)
    validation = _data(case.problem, 100, 6, seed + 1, case.sparse)
    channels = {"train": train}
    if any(c.name == "validation" for c in algo.channels):
        channels["validation"] = validation
    hp = algo.validate_hyperparameters(case.hyperparameters)
    ctx = LocalContext(seed=seed)
    with tempfile.TemporaryDirectory() as model_dir:
        final = algo().train(hp, TrainingData.from_batches(**channels), ctx, model_dir)
        assert os.listdir(model_dir), f"{algo.name}: train wrote no model files"
        model = algo().load(model_dir)
        out = algo().predict(model, validation)
    declared = {m.name for m in algo.metrics}
    reported = {k for _, values in ctx.metrics for k in values} | set(final)
    undeclared = reported - declared
    assert not undeclared, f"{algo.name}: reported undeclared metrics {sorted(undeclared)}"
    assert out, f"{algo.name}: predict returned nothing"
    for key, value in out.items():
        assert len(value) == len(validation), (
            f"{algo.name}: predict[{key!r}] has {len(value)} rows, not {len(validation)}"
        )
        assert np.all(np.isfinite(np.asarray(value, dtype=np.float64))), (
            f"{algo.name}: predict[{key!r}] not finite"
        )
    return out


def _request_bodies(batch: Batch) -> dict[str, bytes]:
    """The validation rows as a client sends them, in every request format a built-in may take."""
    import io
    import json

    from raymaker.io import recordio

    x = batch.features
    bodies: dict[str, bytes] = {}
    if sp.issparse(x):
        rows = [x.getrow(i) for i in range(x.shape[0])]
        instances = [
            {"data": {"features": {"keys": r.indices.tolist(), "shape": [x.shape[1]], "values": r.data.tolist()}}}
            for r in rows
        ]
        buf = io.BytesIO()
        recordio.write_spmatrix_to_sparse_tensor(buf, x)
    else:
        instances = [{"features": row.tolist()} for row in x]
        bodies["text/csv"] = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in x).encode()
        buf = io.BytesIO()
        recordio.write_numpy_to_dense_tensor(buf, x)
    bodies["application/json"] = json.dumps({"instances": instances}).encode()
    bodies["application/jsonlines"] = "".join(json.dumps(i) + "\n" for i in instances).encode()
    bodies["application/x-recordio-protobuf"] = buf.getvalue()
    return bodies


def check_hosting(algo: type[Algorithm], case: Case) -> None:
    """The saved ``model.tar.gz`` served as an endpoint replica serves it (``serve.model.LoadedModel``):
    every request format the algorithm declares gives the same answers as ``predict``, in every
    response format (JSON in the algorithm's envelope, JSON lines, CSV, RecordIO's label map)."""
    import io
    import json
    import tarfile

    from raymaker.io import recordio
    from raymaker.serve.model import LoadedModel, ModelSpec

    train = _data(case.problem, 300, 6, 0, case.sparse)
    validation = _data(case.problem, 40, 6, 1, case.sparse)
    hp = algo.validate_hyperparameters(case.hyperparameters)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        os.makedirs(model_dir)
        algo().train(hp, TrainingData.from_batches(train=train), LocalContext(), model_dir)
        archive = os.path.join(tmp, "model.tar.gz")
        with tarfile.open(archive, "w:gz") as tar:
            for name in os.listdir(model_dir):
                tar.add(os.path.join(model_dir, name), arcname=name)
        served = LoadedModel(ModelSpec("conformance", algo.name, "file://" + archive))
        want = algo().predict(algo().load(model_dir), validation)
    n = len(validation)
    for content_type, body in _request_bodies(validation).items():
        if content_type not in algo.inference_content_types:
            continue
        where = f"{algo.name}: {content_type} request"
        out, ct = served.invoke(body, content_type, "application/json")
        assert ct == "application/json", f"{where}: answered {ct}"
        rows = json.loads(out)[algo.response_envelope]
        assert len(rows) == n, f"{where}: {len(rows)} predictions for {n} rows"
        for key, values in want.items():
            got = np.array([r[key] for r in rows], dtype=np.float64)
            np.testing.assert_allclose(got, np.asarray(values, np.float64), rtol=1e-5, atol=1e-6, err_msg=where)
        lines, _ = served.invoke(body, content_type, "application/jsonlines")
        assert len(lines.decode().splitlines()) == n, f"{where}: JSON lines answer has the wrong length"
        csv_out, _ = served.invoke(body, content_type, "text/csv")
        assert len(csv_out.decode().splitlines()) == n, f"{where}: CSV answer has the wrong length"
        rec, _ = served.invoke(body, content_type, "application/x-recordio-protobuf")
        records = recordio.read_records(io.BytesIO(rec))
        assert len(records) == n, f"{where}: RecordIO answer has {len(records)} records for {n} rows"
        first = next(iter(want))
        got = [list(r.label[first].float32_tensor.values) for r in records]
        np.testing.assert_allclose(
            np.asarray(got, np.float64).reshape(np.shape(want[first])),
            np.asarray(want[first], np.float64),
            rtol=1e-5,
            atol=1e-6,
            err_msg=f"{where}: RecordIO label {first!r}",
        )


def check_deterministic(algo: type[Algorithm], case: Case) -> None:
    """The same data, hyperparameters and seed give the same model."""
    a = check_train_save_load_predict(algo, case, seed=3)
    b = check_train_save_load_predict(algo, case, seed=3)
    for key in a:
        np.testing.assert_allclose(
            a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=f"{algo.name}: {key} not reproducible"
        )


def check_algorithm(name: str) -> None:
    algo = get_algorithm(name)
    assert name in CASES, f"{name}: add a conformance Case to raymaker.algorithms.checks.CASES"
    check_declarations(algo)
    for case in CASES[name]:
        check_hyperparameter_validation(algo, case)
        check_train_save_load_predict(algo, case)
        check_hosting(algo, case)
    check_deterministic(algo, CASES[name][0])


def _raises(fn: Callable[[], object], needle: str) -> None:
    try:
        fn()
    except HyperparameterError as e:
        assert needle in str(e), f"error message {str(e)!r} does not name {needle!r}"
        return
    raise AssertionError(f"expected a HyperparameterError naming {needle!r}")
