"""Where the built-in algorithms train: the device choice from a context's GPUs, and the torch
algorithms' tensors on the chosen device. Needs torch and NumPy only (no Ray, no xgboost), so it runs on
a GPU machine as it is; the GPU-only checks skip elsewhere, and the rest use the CPU and torch's "meta"
device (tensors with a device and a shape but no data) to show that every tensor follows the device."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from raymaker.algorithms import _streaming as st
from raymaker.algorithms import devices as dv
from raymaker.algorithms.base import LocalContext, TrainContext, TrainingData
from raymaker.algorithms.kmeans import KMeans
from raymaker.algorithms.linear_learner import LinearLearner, _Models, _Scaler, _Setup, _to_torch
from raymaker.algorithms.pca import PCA
from raymaker.io.batch import Batch

CUDA = torch.cuda.is_available()


def probe(count: int):
    return lambda: (count, f"a probe that sees {count} device(s)")


# --- the device choice ---------------------------------------------------------------------------


def test_no_gpus_is_the_cpu():
    for devices in (dv.choose_devices(), dv.choose_devices([]), dv.context_devices(LocalContext())):
        assert devices == dv.CPU
        assert (devices.torch, devices.xgboost, devices.cuda) == ("cpu", "cpu", False)


def test_the_context_carries_the_gpus():
    assert TrainContext.gpus == () and LocalContext().gpus == ()
    assert LocalContext(gpus=[1, 2]).gpus == (1, 2)

    class Old:  # a context from before the field: no GPUs
        pass

    assert dv.context_devices(Old()) == dv.CPU


def test_deciding_on_the_cpu_imports_neither_torch_nor_ray():
    code = (
        "import sys; from raymaker.algorithms import devices as dv; "
        "assert dv.choose_devices(()).torch == 'cpu'; "
        "print(sorted(m for m in ('torch', 'ray', 'xgboost') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "gpus, visible, expected",
    [
        ([0], None, (0,)),  # CUDA_VISIBLE_DEVICES unset: Ray's ids are CUDA's
        ([3], None, (3,)),
        ([3], "3", (0,)),  # Ray set it to the assigned GPU: CUDA calls it 0
        (["3"], "2,3", (1,)),
        ([2, 3], "2,3", (0, 1)),
    ],
)
def test_gpus_become_cuda_ordinals(gpus, visible, expected):
    devices = dv.choose_devices(gpus, probe=probe(4), visible_devices=visible)
    assert devices.gpus == expected and devices.cuda
    assert devices.torch == devices.xgboost == f"cuda:{expected[0]}"


def test_gpus_assigned_but_no_usable_cuda_is_a_clear_error():
    with pytest.raises(dv.DeviceError, match=r"instance type has 1 GPU\(s\).*no usable CUDA.*0 device"):
        dv.choose_devices([0], probe=probe(0), visible_devices="0")


def test_gpus_assigned_but_torch_has_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(dv.DeviceError, match=r"no usable CUDA: torch.cuda.is_available\(\) is False"):
        dv.choose_devices([0], visible_devices="0")  # the default probe: torch's


def test_an_assigned_gpu_cuda_cannot_see_is_an_error():
    with pytest.raises(dv.DeviceError, match="CUDA device 2 is not usable"):
        dv.choose_devices([2], probe=probe(1), visible_devices=None)
    with pytest.raises(dv.DeviceError, match="not in CUDA_VISIBLE_DEVICES='0'"):
        dv.choose_devices([1], probe=probe(1), visible_devices="0")


def test_the_gpu_is_logged_on_rank_0_only():
    lines: list[str] = []
    ctx = LocalContext()
    ctx.log = lines.append
    dv.log_devices(ctx, "pca", dv.CPU)
    dv.log_devices(ctx, "pca", dv.Devices((0, 1)))
    ctx.rank = 1
    dv.log_devices(ctx, "pca", dv.Devices((0,)))
    assert lines == [
        "pca: training on GPU cuda:0; 1 more GPU(s) of the instance stay idle (one GPU per instance)"
    ]


# --- the torch algorithms follow the device ---------------------------------------------------------


def _setup(dim: int = 3) -> _Setup:
    scaler = _Scaler(np.arange(dim, dtype=np.float32), np.full(dim, 2.0, dtype=np.float32))
    return _Setup("binary_classifier", "logistic", 1, dim, scaler, [(0.1, 0.0, 0.0)] * 2, "adam")


def test_linear_learner_tensors_are_built_on_the_device():
    hp = LinearLearner.validate_hyperparameters({"predictor_type": "binary_classifier"})
    setup = _setup()
    for device in ("cpu", "meta"):
        models = _Models(setup, hp, torch.device(device))
        tensors = [*models.weights, *models.biases, models.shift]
        assert {t.device.type for t in tensors} == {device}
        assert all(w.is_leaf and w.requires_grad for w in models.weights)
        dense = _to_torch(np.ones((4, 3)), setup.scaler, 3, torch.device(device))
        sparse = _to_torch(sp.random(4, 3, density=0.5, format="csr"), setup.scaler, 3, torch.device(device))
        assert dense.device.type == sparse.device.type == device and sparse.is_sparse
        assert models.forward(dense).shape == (4, 2, 1)


def test_linear_learner_starts_from_the_same_weights_on_every_device():
    hp = LinearLearner.validate_hyperparameters({"predictor_type": "binary_classifier"})
    torch.manual_seed(7)
    on_cpu = _Models(_setup(), hp, torch.device("cpu")).weights[0].detach()
    torch.manual_seed(7)
    elsewhere = _Models(_setup(), hp, torch.device("meta")).weights[0]
    assert elsewhere.device.type == "meta"  # drawn on the CPU, then moved: same values on a GPU
    torch.manual_seed(7)
    np.testing.assert_array_equal(on_cpu.numpy(), _Models(_setup(), hp, "cpu").weights[0].detach().numpy())


@pytest.mark.parametrize("sparse", [False, True])
def test_torch_rows_follow_the_device_and_match_numpy(sparse):
    rng = np.random.default_rng(0)
    x = sp.random(50, 7, density=0.3, format="csr", random_state=1) if sparse else rng.normal(size=(50, 7))
    x = st.as_matrix(x, 7, "test")
    meta = st.TorchRows(x, torch.device("meta"))
    assert (meta.sparse if sparse else meta.dense).device.type == "meta"

    rows = st.TorchRows(x, torch.device("cpu"))
    centers = rng.normal(size=(4, 7))
    q = rng.normal(size=(7, 3))
    assign = rng.integers(0, 4, size=50)
    dense = x.toarray() if sparse else x
    m = rng.normal(size=(50, 2))
    checks = {
        "matmul": (rows.matmul(torch.from_numpy(q)), dense @ q),
        "t_matmul": (rows.t_matmul(torch.from_numpy(m)), dense.T @ m),
        "row_sq_norms": (rows.row_sq_norms(), st.row_sq_norms(x)),
        "col_sums": (rows.col_sums(), dense.sum(axis=0)),
        "gram": (rows.gram(), st.gram(x)),
        "sq_distances": (rows.sq_distances(torch.from_numpy(centers)), st.sq_distances(x, centers)),
        "sum_rows_by": (rows.sum_rows_by(torch.from_numpy(assign), 4), st.sum_rows_by(x, assign, 4)),
    }
    for name, (got, want) in checks.items():
        assert got.device.type == "cpu" and got.dtype == torch.float64, name
        np.testing.assert_allclose(st.to_numpy(got), want, rtol=1e-10, atol=1e-10, err_msg=name)


def test_kmeans_and_pca_compute_with_numpy_unless_a_gpu_or_torch_is_asked_for():
    assert st.compute_device(LocalContext(), "kmeans") is None
    assert st.compute_device(LocalContext(), "kmeans", "torch") == torch.device("cpu")


def _blobs(rows: int = 600, dim: int = 8, sparse: bool = False):
    rng = np.random.default_rng(3)
    centers = rng.normal(scale=6.0, size=(4, dim))
    x = centers[rng.integers(0, 4, size=rows)] + rng.normal(size=(rows, dim))
    if sparse:
        x[np.abs(x) < 1.0] = 0.0
        return sp.csr_matrix(x)
    return x


def _train(algo_cls, compute: str, hp: dict[str, str], x, tmp_path, ctx: LocalContext | None = None):
    algo = algo_cls()
    algo.compute = compute
    model_dir = tmp_path / f"{algo_cls.name}-{compute}-{len(os.listdir(tmp_path))}"
    data = TrainingData.from_batches(train=Batch(x), test=Batch(x[:200]))
    final = algo.train(
        algo_cls.validate_hyperparameters(hp), data, ctx or LocalContext(seed=1), str(model_dir)
    )
    return final, algo.load(str(model_dir))


@pytest.mark.parametrize("sparse", [False, True])
def test_kmeans_in_torch_matches_numpy(sparse, tmp_path):
    x = _blobs(sparse=sparse)
    hp = {"k": "4", "feature_dim": "8", "mini_batch_size": "64", "epochs": "2", "init_method": "kmeans++"}
    final_np, model_np = _train(KMeans, "auto", hp, x, tmp_path)
    final_t, model_t = _train(KMeans, "torch", hp, x, tmp_path)
    np.testing.assert_allclose(model_t.centers, model_np.centers, rtol=1e-9, atol=1e-9)
    assert final_t == pytest.approx(final_np, rel=1e-9)


@pytest.mark.parametrize("mode", ["regular", "randomized"])
@pytest.mark.parametrize("sparse", [False, True])
def test_pca_in_torch_matches_numpy(mode, sparse, tmp_path):
    x = _blobs(sparse=sparse)
    hp = {"num_components": "3", "feature_dim": "8", "mini_batch_size": "100", "algorithm_mode": mode}
    final_np, model_np = _train(PCA, "auto", hp, x, tmp_path)
    final_t, model_t = _train(PCA, "torch", hp, x, tmp_path)
    np.testing.assert_allclose(model_t.components, model_np.components, atol=1e-8)
    np.testing.assert_allclose(model_t.explained_variance, model_np.explained_variance, rtol=1e-9)
    assert final_t == pytest.approx(final_np, rel=1e-9)


class KMeansTorch(KMeans):
    compute = "torch"


class PCATorch(PCA):
    compute = "torch"


def test_distributed_torch_path_matches_numpy(tmp_path):
    """Two gloo workers on halves of the rows: the torch path's all-reduced centers and moments give
    the NumPy path's model."""
    from raymaker.testing.distributed import Job, run_distributed

    x = _blobs(rows=800)
    km = {"k": "4", "feature_dim": "8", "mini_batch_size": "64", "epochs": "2"}
    pca = {
        "num_components": "3",
        "feature_dim": "8",
        "mini_batch_size": "100",
        "algorithm_mode": "randomized",
    }
    jobs = [
        Job(tag, cls, hp, [x[:400], x[400:]])
        for tag, cls, hp in (
            ("km-np", KMeans, km),
            ("km-t", KMeansTorch, km),
            ("pca-np", PCA, pca),
            ("pca-t", PCATorch, pca),
        )
    ]
    km_np, km_t, pca_np, pca_t = run_distributed(jobs, str(tmp_path))
    centers = [KMeans().load(r["model_dir"]).centers for r in (km_np, km_t)]
    np.testing.assert_allclose(centers[1], centers[0], rtol=1e-9, atol=1e-9)
    components = [PCA().load(r["model_dir"]).components for r in (pca_np, pca_t)]
    np.testing.assert_allclose(components[1], components[0], atol=1e-8)


def test_collectives_take_tensors_where_the_backend_wants_them():
    class Gloo:
        @staticmethod
        def get_backend():
            return "gloo"

    class Mixed:
        @staticmethod
        def get_backend():
            return "cpu:gloo,cuda:nccl"

    assert st._collective_device(Gloo) == st._collective_device(Mixed) == torch.device("cpu")


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("algo_cls", [LinearLearner, KMeans, PCA])
def test_training_with_gpus_assigned_but_no_cuda_fails_clearly(algo_cls, tmp_path):
    hp = {
        "linear-learner": {"predictor_type": "regressor", "epochs": "1"},
        "kmeans": {"k": "2", "feature_dim": "8"},
        "pca": {"num_components": "2", "feature_dim": "8", "mini_batch_size": "50"},
    }[algo_cls.name]
    x = _blobs(rows=50)
    data = TrainingData.from_batches(train=Batch(x, x[:, 0]))
    with pytest.raises(dv.DeviceError, match="no usable CUDA"):
        algo_cls().train(algo_cls.validate_hyperparameters(hp), data, LocalContext(gpus=[0]), str(tmp_path))


# --- on a GPU ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_on_the_gpu_results_match_the_cpu(tmp_path):
    x = _blobs(rows=2000)
    hp = {"k": "4", "feature_dim": "8", "mini_batch_size": "256", "epochs": "2"}
    _, cpu = _train(KMeans, "auto", hp, x, tmp_path)
    _, gpu = _train(KMeans, "auto", hp, x, tmp_path, LocalContext(seed=1, gpus=[0]))
    np.testing.assert_allclose(gpu.centers, cpu.centers, rtol=1e-7, atol=1e-7)
    hp = {"num_components": "3", "feature_dim": "8", "mini_batch_size": "256"}
    _, cpu = _train(PCA, "auto", hp, x, tmp_path)
    _, gpu = _train(PCA, "auto", hp, x, tmp_path, LocalContext(seed=1, gpus=[0]))
    np.testing.assert_allclose(gpu.components, cpu.components, atol=1e-7)
    y = (x[:, 0] > 0).astype(np.float32)
    hp_ll = LinearLearner.validate_hyperparameters(
        {"predictor_type": "binary_classifier", "epochs": "3", "mini_batch_size": "100"}
    )
    finals = []
    for ctx in (LocalContext(seed=1), LocalContext(seed=1, gpus=[0])):
        data = TrainingData.from_batches(
            train=Batch(x.astype(np.float32), y), validation=Batch(x[:500], y[:500])
        )
        finals.append(LinearLearner().train(hp_ll, data, ctx, str(tmp_path / f"ll-{len(finals)}")))
    acc = "validation:binary_classification_accuracy"
    assert abs(finals[0][acc] - finals[1][acc]) < 0.02
