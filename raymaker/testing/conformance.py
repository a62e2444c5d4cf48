"""The conformance suite every registered algorithm must pass (scikit-learn's ``estimator_checks`` idea).

Each algorithm declares what to train it on (``Algorithm.conformance_cases``) and what it supports
(``distributed``, ``incremental``, ``checkpointing``); ``checks_for(algo)`` names the checks that apply
to it, and only those: a check that does not apply is not generated, rather than skipped.
``run_check(algo, name)`` runs one for every case; ``check_algorithm(algo)`` runs them all.
``tests/algorithms/test_conformance.py`` makes each (algorithm, check) pair its own test.

This module sits above ``raymaker.algorithms`` and ``raymaker.serve`` (the hosting check serves the
model as an endpoint replica does), so the algorithms never import it.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import (
    Algorithm,
    ConformanceCase,
    HyperparameterError,
    LocalContext,
    TrainingData,
)
from raymaker.io.batch import Batch
from raymaker.io.formats import parse_content_type, supported_content_types

TRAIN_ROWS, HELD_OUT_ROWS = 300, 100
PROBLEMS = ("binary", "multiclass", "regression", "clusters")
# Predictions that must agree (same model, or a resumed / distributed run of it).
RTOL, ATOL = 1e-5, 1e-6

AlgorithmLike = type[Algorithm] | str


# --- data ----------------------------------------------------------------------------------------------


def make_data(problem: str, rows: int, cols: int, seed: int, sparse: bool = False) -> Batch:
    """Gaussian features with labels for ``problem`` (none for "clusters": 3 well-separated blobs)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    w = np.linspace(-1, 1, cols).astype(np.float32)
    if problem == "binary":
        y = (x @ w > 0).astype(np.float32)
    elif problem == "multiclass":
        y = np.digitize(x @ w, np.quantile(x @ w, [1 / 3, 2 / 3])).astype(np.float32)
    elif problem == "regression":
        y = (x @ w + 0.1 * rng.normal(size=rows)).astype(np.float32)
    elif problem == "clusters":
        centers = np.random.default_rng(1234).normal(scale=4, size=(3, cols)).astype(np.float32)
        x = centers[rng.integers(0, 3, rows)] + x
        y = None
    else:
        raise ValueError(f"unknown conformance problem {problem!r}; one of {', '.join(PROBLEMS)}")
    if sparse:
        x[np.abs(x) < 0.8] = 0
        return Batch(sp.csr_matrix(x), y)
    return Batch(x, y)


@dataclass
class _Problem:
    """One case's data: training rows, held-out rows, and the channel the held-out rows go to."""

    train: Batch
    held_out: Batch
    held_out_channel: str | None

    @classmethod
    def of(cls, algo: type[Algorithm], case: ConformanceCase, seed: int = 0) -> _Problem:
        declared = [c.name for c in algo.channels]
        channel = next((c for c in ("validation", "test") if c in declared), None)
        return cls(
            make_data(case.problem, TRAIN_ROWS, case.features, seed, case.sparse),
            make_data(case.problem, HELD_OUT_ROWS, case.features, seed + 1, case.sparse),
            channel,
        )

    def channels(self, train: Batch | None = None) -> dict[str, Batch]:
        out = {"train": self.train if train is None else train}
        if self.held_out_channel:
            out[self.held_out_channel] = self.held_out
        return out


def _rows(batch: Batch, start: int, stop: int) -> Batch:
    labels = None if batch.labels is None else batch.labels[start:stop]
    return Batch(batch.features[start:stop], labels)


@dataclass
class _Trained:
    model_dir: str
    final: dict[str, float]
    ctx: LocalContext


def _train(
    algo: type[Algorithm],
    hyperparameters: Mapping[str, str],
    channels: Mapping[str, Any],
    model_dir: str,
    ctx: LocalContext | None = None,
) -> _Trained:
    """Train in-process; channels are Batches, or a directory for ``model``."""
    hp = algo.validate_hyperparameters(hyperparameters)
    data = TrainingData(
        {
            name: (value if isinstance(value, str) else (lambda b=value: iter([b])))
            for name, value in channels.items()
        }
    )
    ctx = ctx if ctx is not None else LocalContext()
    os.makedirs(model_dir, exist_ok=True)
    final = algo().train(hp, data, ctx, model_dir)
    return _Trained(model_dir, final, ctx)


def _predict(algo: type[Algorithm], model_dir: str, batch: Batch) -> dict[str, np.ndarray]:
    instance = algo()
    return instance.predict(instance.load(model_dir), batch)


def _assert_same(
    algo: type[Algorithm], want: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], what: str
) -> None:
    assert set(got) == set(want), f"{algo.name}: {what}: outputs {sorted(got)}, expected {sorted(want)}"
    for key in want:
        np.testing.assert_allclose(
            np.asarray(got[key], np.float64),
            np.asarray(want[key], np.float64),
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"{algo.name}: {what}: {key!r} differs",
        )


def _label(algo: type[Algorithm], case: ConformanceCase) -> str:
    return f"{algo.name} case {algo.conformance_cases.index(case)} ({case.problem}{', sparse' if case.sparse else ''})"


def _meets_quality(
    algo: type[Algorithm], case: ConformanceCase, final: Mapping[str, float], what: str
) -> None:
    for metric, bound in case.quality.items():
        assert metric in final, (
            f"{_label(algo, case)}: {what} reported no final {metric!r} (got {sorted(final)})"
        )
        value = final[metric]
        if algo.metric(metric).maximize:
            assert value >= bound, f"{_label(algo, case)}: {what}: {metric} = {value:.6g}, below {bound:g}"
        else:
            assert value <= bound, f"{_label(algo, case)}: {what}: {metric} = {value:.6g}, above {bound:g}"


# --- the checks ------------------------------------------------------------------------------------------

_METRIC_NAME = re.compile(r"^(train|validation|test):[A-Za-z0-9_\-]+$")
_KINDS = {"int", "float", "bool", "str", "list"}


def check_declarations(algo: type[Algorithm]) -> None:
    """Hyperparameters, channels, content types, metrics, capabilities and conformance cases are
    declared consistently."""
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
    assert algo.incremental == ("model" in channel_names), (
        f"{algo.name}: incremental={algo.incremental} but a 'model' channel is "
        f"{'declared' if 'model' in channel_names else 'not declared'}"
    )
    known = set(supported_content_types())
    for ct in (*algo.content_types, *algo.inference_content_types):
        assert parse_content_type(ct).mime in known, f"{algo.name}: no reader for content type {ct!r}"
    assert algo.default_content_type in algo.content_types, f"{algo.name}: default content type not accepted"
    assert algo.metrics, f"{algo.name}: declares no metrics"
    for m in algo.metrics:
        assert _METRIC_NAME.match(m.name), f"{algo.name}: metric {m.name!r} is not '<channel>:<name>'"
    assert algo.trainer in ("xgboost", "torch", "data_parallel"), (
        f"{algo.name}: unknown trainer {algo.trainer!r}"
    )

    assert algo.conformance_cases, f"{algo.name}: declare at least one ConformanceCase in conformance_cases"
    for case in algo.conformance_cases:
        where = _label(algo, case)
        assert case.problem in PROBLEMS, (
            f"{where}: problem {case.problem!r} is not one of {', '.join(PROBLEMS)}"
        )
        algo.validate_hyperparameters(case.hyperparameters)
        for ct in case.content_types:
            assert ct in algo.inference_content_types, (
                f"{where}: {ct!r} is not one of its inference content types"
            )
        for metric in case.quality:
            algo.metric(metric)  # KeyError naming the declared ones
        assert case.distributed_result in ("same", "equivalent"), (
            f"{where}: distributed_result {case.distributed_result!r} is not 'same' or 'equivalent'"
        )
        if algo.distributed and case.distributed_result == "equivalent":
            assert case.quality, (
                f"{where}: an 'equivalent' distributed result needs quality bounds to compare"
            )
        if algo.incremental:
            assert case.steps is not None, (
                f"{where}: an incremental algorithm's case names its steps hyperparameter"
            )
        if case.steps is not None:
            hp = algo.hyperparameter(case.steps)
            assert hp.kind == "int", f"{where}: steps hyperparameter {case.steps!r} is not an integer"
            assert case.steps in case.hyperparameters, (
                f"{where}: set {case.steps!r} in the case's hyperparameters"
            )


def check_hyperparameter_validation(algo: type[Algorithm]) -> None:
    """Unknown, missing, mistyped and out-of-range hyperparameters are refused with a message naming them."""
    for case in algo.conformance_cases:
        raw = dict(case.hyperparameters)
        algo.validate_hyperparameters(raw)
        _raises(lambda r=raw: algo.validate_hyperparameters({**r, "no_such_hp": "1"}), "no_such_hp")
        for hp in algo.hyperparameters:
            if hp.required and hp.name in raw:
                missing = {k: v for k, v in raw.items() if k != hp.name}
                _raises(lambda m=missing: algo.validate_hyperparameters(m), hp.name)
            if hp.kind in ("int", "float") and hp.choices is None:
                _raises(
                    lambda h=hp, r=raw: algo.validate_hyperparameters({**r, h.name: "not-a-number"}), hp.name
                )
                if hp.low is not None:
                    _raises(
                        lambda h=hp, r=raw: algo.validate_hyperparameters({**r, h.name: str(h.low - 1)}),
                        hp.name,
                    )
        # SageMaker's own additions are not the algorithm's concern
        typed = algo.validate_hyperparameters(
            {**raw, "_tuning_objective_metric": "x", "sagemaker_region": "y"}
        )
        assert typed.get("_tuning_objective_metric") == "x", f"{algo.name}: the tuning objective was dropped"


def check_save_load(algo: type[Algorithm]) -> None:
    """Train in-process, load the saved model, predict: outputs have one finite entry per row and every
    reported metric is a declared one."""
    declared = {m.name for m in algo.metrics}
    for case in algo.conformance_cases:
        problem = _Problem.of(algo, case)
        with tempfile.TemporaryDirectory() as tmp:
            run = _train(algo, case.hyperparameters, problem.channels(), tmp)
            assert os.listdir(tmp), f"{_label(algo, case)}: train wrote no model files"
            out = _predict(algo, tmp, problem.held_out)
        reported = {k for _, values in run.ctx.metrics for k in values} | set(run.final)
        undeclared = reported - declared
        assert not undeclared, f"{_label(algo, case)}: reported undeclared metrics {sorted(undeclared)}"
        assert out, f"{_label(algo, case)}: predict returned nothing"
        n = len(problem.held_out)
        for key, value in out.items():
            assert len(value) == n, f"{_label(algo, case)}: predict[{key!r}] has {len(value)} rows, not {n}"
            assert np.all(np.isfinite(np.asarray(value, dtype=np.float64))), (
                f"{_label(algo, case)}: predict[{key!r}] not finite"
            )


def check_quality(algo: type[Algorithm]) -> None:
    """Each case's final metrics on the held-out rows are within the bounds the case declares."""
    for case in algo.conformance_cases:
        if not case.quality:
            continue
        problem = _Problem.of(algo, case)
        with tempfile.TemporaryDirectory() as tmp:
            run = _train(algo, case.hyperparameters, problem.channels(), tmp)
        _meets_quality(algo, case, run.final, "training")


def check_deterministic(algo: type[Algorithm]) -> None:
    """The same data, hyperparameters and seed give the same model."""
    case = algo.conformance_cases[0]
    problem = _Problem.of(algo, case, seed=3)
    outs = []
    for _ in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            _train(algo, case.hyperparameters, problem.channels(), tmp, LocalContext(seed=3))
            outs.append(_predict(algo, tmp, problem.held_out))
    _assert_same(algo, outs[0], outs[1], "a second run with the same seed")


def check_feature_count(algo: type[Algorithm]) -> None:
    """Rows with fewer or more features than the model was trained on are refused with a ValueError
    naming both counts, by ``predict`` and by the hosted model (a 400 for the caller)."""
    from raymaker.serve.model import LoadedModel, ModelSpec

    for case in algo.conformance_cases:
        problem = _Problem.of(algo, case)
        n = case.features
        x = problem.held_out.features[:5]
        dense = x.toarray() if sp.issparse(x) else np.asarray(x)
        wrong = [np.ascontiguousarray(dense[:, : n - 1]), np.hstack([dense, dense[:, :1]])]
        if sp.issparse(x):
            wrong.append(sp.csr_matrix(wrong[1]))  # sparse rows may be narrower (libsvm), never wider
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = os.path.join(tmp, "model")
            _train(algo, case.hyperparameters, problem.channels(), model_dir)
            instance = algo()
            model = instance.load(model_dir)
            assert instance.num_features(model) == n, (
                f"{_label(algo, case)}: num_features() is {instance.num_features(model)}, trained on {n}"
            )
            for features in wrong:
                width = features.shape[1]
                needle = f"the model was trained on {n} features; the request has {width}"
                try:
                    instance.predict(model, Batch(features))
                except ValueError as e:
                    assert needle in str(e), f"{_label(algo, case)}: {str(e)!r} does not say {needle!r}"
                else:
                    raise AssertionError(
                        f"{_label(algo, case)}: predict took rows of {width} features (trained on {n})"
                    )
            if "text/csv" in algo.inference_content_types:
                served = LoadedModel(
                    ModelSpec("conformance", algo.name, "file://" + _archive(model_dir, tmp))
                )
                body = _csv(wrong[0])
                try:
                    served.invoke(body, "text/csv", "application/json")
                except Exception as e:  # the hosting layer's error type: it answers 400 for it
                    assert f"trained on {n} features" in str(e) and f"has {n - 1}" in str(e), (
                        f"{_label(algo, case)}: hosted answer {str(e)!r} does not name both feature counts"
                    )
                else:
                    raise AssertionError(
                        f"{_label(algo, case)}: the hosted model scored rows of {n - 1} features"
                    )


def check_hosting(algo: type[Algorithm]) -> None:
    """The saved ``model.tar.gz`` served as an endpoint replica serves it (``serve.model.LoadedModel``):
    every request format the case exercises gives the same answers as ``predict``, in every response
    format (JSON in the algorithm's envelope, JSON lines, CSV, RecordIO's label map)."""
    from raymaker.io import recordio
    from raymaker.serve.model import LoadedModel, ModelSpec

    for case in algo.conformance_cases:
        problem = _Problem.of(algo, case)
        validation = _rows(problem.held_out, 0, 40)
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = os.path.join(tmp, "model")
            _train(algo, case.hyperparameters, {"train": problem.train}, model_dir)
            served = LoadedModel(ModelSpec("conformance", algo.name, "file://" + _archive(model_dir, tmp)))
            want = _predict(algo, model_dir, validation)
        bodies = _request_bodies(validation)
        if case.content_types:
            wanted = case.content_types
            unbuilt = [ct for ct in wanted if ct not in bodies]
            assert not unbuilt, (
                f"{_label(algo, case)}: the suite sends no {', '.join(unbuilt)} requests for it"
            )
        else:
            wanted = tuple(ct for ct in algo.inference_content_types if ct in bodies)
        n = len(validation)
        for content_type in wanted:
            body = bodies[content_type]
            where = f"{_label(algo, case)}: {content_type} request"
            out, ct = served.invoke(body, content_type, "application/json")
            assert ct == "application/json", f"{where}: answered {ct}"
            rows = json.loads(out)[algo.response_envelope]
            assert len(rows) == n, f"{where}: {len(rows)} predictions for {n} rows"
            for key, values in want.items():
                got = np.array([r[key] for r in rows], dtype=np.float64)
                np.testing.assert_allclose(
                    got, np.asarray(values, np.float64), rtol=RTOL, atol=ATOL, err_msg=where
                )
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
                rtol=RTOL,
                atol=ATOL,
                err_msg=f"{where}: RecordIO label {first!r}",
            )


class _Interrupted(Exception):
    """Raised by ``_InterruptingContext`` as a lost instance would stop a job."""


class _InterruptingContext(LocalContext):
    """Stops training right after its first checkpoint is saved."""

    def save_checkpoint(self, state_dir: str, *, step: int) -> None:
        super().save_checkpoint(state_dir, step=step)
        raise _Interrupted(step)


def check_checkpoint_resume(algo: type[Algorithm]) -> None:
    """Interrupted right after its first checkpoint and started again on the same checkpoint directory,
    training resumes from the checkpoint (every checkpoint it saves is for a later step) and ends with
    the model of an uninterrupted run."""
    for case in algo.conformance_cases:
        problem = _Problem.of(algo, case)
        where = _label(algo, case)
        with tempfile.TemporaryDirectory() as tmp:
            whole = _train(
                algo,
                case.hyperparameters,
                problem.channels(),
                os.path.join(tmp, "whole"),
                LocalContext(checkpoint_dir=os.path.join(tmp, "ckpt-whole")),
            )
            assert whole.ctx.checkpoints, f"{where}: declares checkpointing but saved no checkpoint"
            ckpt = os.path.join(tmp, "ckpt")
            first = _InterruptingContext(checkpoint_dir=ckpt)
            try:
                _train(algo, case.hyperparameters, problem.channels(), os.path.join(tmp, "first"), first)
            except _Interrupted:
                pass
            else:
                raise AssertionError(f"{where}: training went on after the checkpoint was saved")
            stopped_at = first.checkpoints[0]
            resumed = _train(
                algo,
                case.hyperparameters,
                problem.channels(),
                os.path.join(tmp, "resumed"),
                LocalContext(checkpoint_dir=ckpt),
            )
            redone = [s for s in resumed.ctx.checkpoints if s <= stopped_at]
            assert not redone, (
                f"{where}: interrupted after the checkpoint of step {stopped_at}, the resumed run checkpointed "
                f"steps {resumed.ctx.checkpoints}: it started over instead of resuming"
            )
            want = _predict(algo, whole.model_dir, problem.held_out)
            got = _predict(algo, resumed.model_dir, problem.held_out)
        _assert_same(
            algo, want, got, f"case {algo.conformance_cases.index(case)}: resumed after step {stopped_at}"
        )


def check_incremental(algo: type[Algorithm]) -> None:
    """n steps, then n more from the ``model`` channel holding the first model, give the model of 2n
    steps in one run (and not the first model again)."""
    for case in algo.conformance_cases:
        assert case.steps is not None, f"{_label(algo, case)}: names no steps hyperparameter"
        problem = _Problem.of(algo, case)
        steps = int(case.hyperparameters[case.steps])
        with tempfile.TemporaryDirectory() as tmp:
            first = _train(algo, case.hyperparameters, problem.channels(), os.path.join(tmp, "first"))
            more = _train(
                algo,
                case.hyperparameters,
                {**problem.channels(), "model": first.model_dir},
                os.path.join(tmp, "more"),
            )
            longer = {**case.hyperparameters, case.steps: str(2 * steps)}
            whole = _train(algo, longer, problem.channels(), os.path.join(tmp, "whole"))
            outs = [_predict(algo, r.model_dir, problem.held_out) for r in (first, more, whole)]
        key = next(iter(outs[0]))
        assert not np.allclose(np.asarray(outs[0][key], np.float64), np.asarray(outs[1][key], np.float64)), (
            f"{_label(algo, case)}: training from the model channel left the model unchanged"
        )
        _assert_same(
            algo, outs[2], outs[1], f"case {algo.conformance_cases.index(case)}: {steps} + {steps} steps"
        )


def check_distributed_equals_single(algo: type[Algorithm]) -> None:
    """Two workers, each on half of the training rows (the held-out channel replicated, as SageMaker's
    FullyReplicated does), report the same final metrics, only rank 0 writes the model, and it is the
    one a single worker trains on all the rows: the same predictions for a "same" case; for an
    "equivalent" one, both meet the case's quality bounds."""
    from raymaker.testing.distributed import Job, run_distributed

    cases = algo.conformance_cases
    problems = [_Problem.of(algo, case) for case in cases]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for i, (case, problem) in enumerate(zip(cases, problems, strict=True)):
            half = len(problem.train) // 2
            shards = [_rows(problem.train, 0, half), _rows(problem.train, half, len(problem.train))]
            replicated = {k: v for k, v in problem.channels().items() if k != "train"}
            jobs.append(Job(f"case{i}", algo, dict(case.hyperparameters), shards, replicated=replicated))
        results = run_distributed(jobs, os.path.join(tmp, "dist"))
        for case, problem, job, result in zip(cases, problems, jobs, results, strict=True):
            where = f"{_label(algo, case)}, 2 workers"
            finals = [r["final"] for r in result["ranks"]]
            assert set(finals[0]) == set(finals[1]), f"{where}: ranks report different metrics"
            for metric in finals[0]:
                np.testing.assert_allclose(
                    finals[1][metric],
                    finals[0][metric],
                    rtol=1e-6,
                    err_msg=f"{where}: ranks disagree on {metric}",
                )
            assert not os.listdir(result["model_dirs"][1]), f"{where}: rank 1 wrote model files"
            single = _train(
                algo, case.hyperparameters, problem.channels(), os.path.join(tmp, f"single-{job.tag}")
            )
            if case.distributed_result == "same":
                want = _predict(algo, single.model_dir, problem.held_out)
                got = _predict(algo, result["model_dir"], problem.held_out)
                _assert_same(algo, want, got, f"{where} against 1 worker")
            else:
                _meets_quality(algo, case, single.final, "1 worker")
                _meets_quality(algo, case, finals[0], "2 workers")


# --- which checks apply ------------------------------------------------------------------------------------

Check = Callable[[type[Algorithm]], None]

# name -> (check, does it apply to this algorithm)
CHECKS: dict[str, tuple[Check, Callable[[type[Algorithm]], bool]]] = {
    "check_declarations": (check_declarations, lambda a: True),
    "check_hyperparameter_validation": (check_hyperparameter_validation, lambda a: True),
    "check_save_load": (check_save_load, lambda a: True),
    "check_quality": (check_quality, lambda a: any(c.quality for c in a.conformance_cases)),
    "check_deterministic": (check_deterministic, lambda a: True),
    "check_feature_count": (check_feature_count, lambda a: True),
    "check_hosting": (check_hosting, lambda a: bool(a.inference_content_types)),
    "check_checkpoint_resume": (check_checkpoint_resume, lambda a: a.checkpointing),
    "check_incremental": (check_incremental, lambda a: a.incremental),
    "check_distributed_equals_single": (check_distributed_equals_single, lambda a: a.distributed),
}


def _resolve(algo: AlgorithmLike) -> type[Algorithm]:
    return get_algorithm(algo) if isinstance(algo, str) else algo


def checks_for(algo: AlgorithmLike) -> list[str]:
    """The names of the checks that apply to ``algo``, in the order ``check_algorithm`` runs them."""
    cls = _resolve(algo)
    return [name for name, (_, applies) in CHECKS.items() if applies(cls)]


def run_check(algo: AlgorithmLike, name: str) -> None:
    """Run one check (for every case); ValueError if it does not apply to ``algo``."""
    cls = _resolve(algo)
    if name not in checks_for(cls):
        raise ValueError(f"{cls.name}: {name!r} is not one of its checks ({', '.join(checks_for(cls))})")
    if name != "check_declarations":
        assert cls.conformance_cases, f"{cls.name}: declare at least one ConformanceCase in conformance_cases"
    CHECKS[name][0](cls)


def check_algorithm(algo: AlgorithmLike) -> None:
    """Every check that applies to ``algo``."""
    for name in checks_for(algo):
        run_check(algo, name)


def iter_checks(names: list[str]) -> Iterator[tuple[str, str]]:
    """(algorithm, check) for every registered algorithm in ``names`` and every check that applies."""
    for name in names:
        for check in checks_for(name):
            yield name, check


# --- helpers ---------------------------------------------------------------------------------------------


def _archive(model_dir: str, tmp: str) -> str:
    archive = os.path.join(tmp, "model.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for name in os.listdir(model_dir):
            tar.add(os.path.join(model_dir, name), arcname=name)
    return archive


def _csv(x: np.ndarray) -> bytes:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in x).encode()


def _request_bodies(batch: Batch) -> dict[str, bytes]:
    """The rows as a client sends them, in every request format the suite knows for them. Sparse rows go
    in sparse formats only: a zero in CSV or Parquet is a value, where sparse rows leave it missing
    (XGBoost tells the two apart)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raymaker.io import recordio

    x = batch.features
    bodies: dict[str, bytes] = {}
    csr = sp.csr_matrix(x)
    # libsvm (with the dummy label a request carries) names only the non-zero columns, as clients send it.
    bodies["text/libsvm"] = "".join(
        "0 " + " ".join(f"{j}:{float(v)!r}" for j, v in zip(csr[i].indices, csr[i].data, strict=True)) + "\n"
        for i in range(csr.shape[0])
    ).encode()
    bodies["text/x-libsvm"] = bodies["text/libsvm"]
    if sp.issparse(x):
        instances = [
            {
                "data": {
                    "features": {"keys": r.indices.tolist(), "shape": [x.shape[1]], "values": r.data.tolist()}
                }
            }
            for r in (csr[i] for i in range(csr.shape[0]))
        ]
        buf = io.BytesIO()
        recordio.write_spmatrix_to_sparse_tensor(buf, x)
    else:
        instances = [{"features": row.tolist()} for row in x]
        bodies["text/csv"] = _csv(x)
        table = pa.table({"features": pa.array([row.tolist() for row in x], type=pa.list_(pa.float32()))})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        bodies["application/x-parquet"] = buf.getvalue()
        buf = io.BytesIO()
        recordio.write_numpy_to_dense_tensor(buf, x)
    bodies["application/json"] = json.dumps({"instances": instances}).encode()
    bodies["application/jsonlines"] = "".join(json.dumps(i) + "\n" for i in instances).encode()
    bodies["application/x-recordio-protobuf"] = buf.getvalue()
    return bodies


def _raises(fn: Callable[[], object], needle: str) -> None:
    try:
        fn()
    except HyperparameterError as e:
        assert needle in str(e), f"error message {str(e)!r} does not name {needle!r}"
        return
    raise AssertionError(f"expected a HyperparameterError naming {needle!r}")


__all__ = [
    "CHECKS",
    "check_algorithm",
    "checks_for",
    "iter_checks",
    "make_data",
    "run_check",
]
