"""Script models (``serve.handlers``) loaded as endpoints and transform jobs load them
(``serve.model.LoadedModel``), from model.tar.gz archives built here the way SageMaker's own examples
build them: a scikit-learn ``model_fn`` with joblib, a PyTorch ``model_fn`` returning an
``nn.Module``, TorchScript served by the defaults alone, a ``transform_fn``, the repack layout
(``code/inference.py`` inside the archive) and a separate sourcedir.tar.gz. The CreateModel checks that
pick a script model (``engine.hosting.spec_from_request``) are here too."""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import io
import json
import os
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from raymaker.engine.hosting import spec_from_request
from raymaker.protocol.errors import ValidationError
from raymaker.serve.codecs import BadRequest, InvocationError, NotAcceptable, UnsupportedMediaType
from raymaker.serve.model import LoadedModel, ModelSpec
from raymaker.serve.replicas import VariantReplica
from raymaker.serve.script_contract import ScriptError
from raymaker.serve.transform import TransformError, TransformPlan, TransformWorker, WorkUnit

SKLEARN_SCRIPT = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


def archive(tmp: Path, name: str, files: dict[str, bytes | str]) -> str:
    """A .tar.gz of ``files`` (archive path -> content), as a file:// URI."""
    path = tmp / name
    with tarfile.open(path, "w:gz") as tar:
        for arcname, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return f"file://{path}"


def dumped(obj: object) -> bytes:
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y, LogisticRegression(max_iter=500).fit(x, y)


@pytest.fixture(scope="module")
def sklearn_model(iris, tmp_path_factory) -> LoadedModel:
    tmp = tmp_path_factory.mktemp("sk")
    url = archive(tmp, "model.tar.gz", {"model.joblib": dumped(iris[2]), "code/inference.py": SKLEARN_SCRIPT})
    return LoadedModel(ModelSpec.script("iris", "sklearn", url))


def script_model(
    tmp: Path, framework: str, script: str | None, files: dict | None = None, env=None
) -> LoadedModel:
    content = dict(files or {})
    if script is not None:
        content["code/inference.py"] = textwrap.dedent(script)
    url = archive(tmp, "model.tar.gz", content)
    return LoadedModel(ModelSpec.script(tmp.name, framework, url, env))


# --- scikit-learn -------------------------------------------------------------------------------------


def test_sklearn_model_fn_with_joblib_and_default_handlers(sklearn_model, iris) -> None:
    x, _, clf = iris
    want = clf.predict(x[:5])
    csv_rows = "\n".join(",".join(f"{v:.9g}" for v in row) for row in x[:5])
    out, ct = sklearn_model.invoke(csv_rows.encode(), "text/csv", None)
    assert ct == "application/json"  # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT's default
    assert json.loads(out) == want.tolist()
    out, ct = sklearn_model.invoke(json.dumps(x[:5].tolist()).encode(), "application/json", "text/csv")
    assert ct == "text/csv"
    assert out.decode().split() == [str(v) for v in want]
    buf = io.BytesIO()
    np.save(buf, x[:5])
    out, ct = sklearn_model.invoke(buf.getvalue(), "application/x-npy", "application/x-npy")
    assert ct == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(out)), want)
    # an Accept list: the first type the default output_fn writes; */* is the default
    assert sklearn_model.invoke(csv_rows.encode(), "text/csv", "image/png, text/csv")[1] == "text/csv"
    assert sklearn_model.invoke(csv_rows.encode(), "text/csv", "*/*")[1] == "application/json"


def test_sklearn_statuses(sklearn_model, iris) -> None:
    row = ",".join(map(str, iris[0][0]))
    with pytest.raises(UnsupportedMediaType) as info:
        sklearn_model.invoke(b"GIF89a", "image/gif", None)
    assert info.value.status == 415 and "image/gif" in info.value.message
    with pytest.raises(NotAcceptable) as info:
        sklearn_model.invoke(f"{row}\n{row}".encode(), "text/csv", "application/xml")
    assert info.value.status == 406 and "application/xml" in info.value.message
    with pytest.raises(BadRequest) as info:
        sklearn_model.invoke(b"[[1, 2", "application/json", None)
    assert info.value.status == 400 and "application/json" in info.value.message
    with pytest.raises(BadRequest):
        sklearn_model.invoke(b"\xff\xfe", "text/csv", None)
    # One CSV row stays a 1 x 4 array (SageMaker's container squeezes it to 1-D, which scikit-learn
    # refuses), with or without its newline.
    for body in (row, row + "\n"):
        assert json.loads(sklearn_model.invoke(body.encode(), "text/csv", None)[0]) == [iris[1][0]]
    # A row the model cannot score: the error is the model's, with scikit-learn's message.
    with pytest.raises(ScriptError) as info:
        sklearn_model.invoke(b"1,2,3", "text/csv", None)
    assert info.value.status == 424 and info.value.error_type == "ModelError"
    assert "predict_fn raised ValueError: X has 3 features" in info.value.message


def test_user_input_fn_error_reaches_the_client_with_its_message(tmp_path, iris) -> None:
    model = script_model(
        tmp_path,
        "sklearn",
        SKLEARN_SCRIPT
        + textwrap.dedent(
            """
            def input_fn(request_body, request_content_type):
                if request_content_type != "text/csv":
                    raise ValueError(f"This model only supports text/csv input, not {request_content_type}")
                return [[float(v) for v in line.split(",")] for line in request_body.splitlines()]
            """
        ),
        {"model.joblib": dumped(iris[2])},
    )
    with pytest.raises(ScriptError) as info:
        model.invoke(b"[1, 2, 3, 4]", "application/json", None)
    message = info.value.message
    assert (
        "input_fn raised ValueError: This model only supports text/csv input, not application/json" in message
    )
    assert "(inference.py, line 12)" in message
    out, _ = model.invoke(b"5.1,3.5,1.4,0.2", "text/csv", None)
    assert json.loads(out) == [0]
    # the replica answers it as SageMaker's runtime does: 424 ModelError with the message
    replica = VariantReplica(None)
    replica.model = model
    status, body, _, error_type = asyncio.run(replica.invoke(b"[1]", "application/json", None))
    assert (status, error_type) == (424, "ModelError")
    assert b"only supports text/csv" in body


def test_an_error_with_a_status_code_keeps_its_4xx(tmp_path, iris) -> None:
    model = script_model(
        tmp_path,
        "sklearn",
        SKLEARN_SCRIPT
        + textwrap.dedent(
            """
            class GenericInferenceToolkitError(Exception):  # the inference toolkit's, by shape
                def __init__(self, status_code, message):
                    super().__init__(message)
                    self.status_code = status_code

            def input_fn(body, content_type):
                raise GenericInferenceToolkitError(400, "send features as CSV")
            """
        ),
        {"model.joblib": dumped(iris[2])},
    )
    with pytest.raises(InvocationError) as info:
        model.invoke(b"1", "text/csv", None)
    assert info.value.status == 400 and "send features as CSV" in info.value.message


def test_transform_fn_answers_with_its_own_content_type(tmp_path, iris) -> None:
    model = script_model(
        tmp_path,
        "sklearn",
        SKLEARN_SCRIPT
        + textwrap.dedent(
            """
            import json

            import numpy as np


            def transform_fn(model, request_body, content_type, accept):
                rows = np.array(json.loads(request_body)["instances"], dtype=np.float32)
                probabilities = model.predict_proba(rows)
                return json.dumps({"probabilities": probabilities.tolist()}), "application/vnd.iris+json"
            """
        ),
        {"model.joblib": dumped(iris[2])},
    )
    body = json.dumps({"instances": iris[0][:3].tolist()}).encode()
    out, ct = model.invoke(body, "application/json", None)
    assert ct == "application/vnd.iris+json"
    np.testing.assert_allclose(
        json.loads(out)["probabilities"], iris[2].predict_proba(iris[0][:3]), rtol=1e-5
    )


def test_load_errors_say_what_to_change(tmp_path, iris) -> None:
    cases = {
        "no-model-fn": ("def predict_fn(data, model):\n    return data\n", "define model_fn(model_dir)"),
        "both": (
            SKLEARN_SCRIPT + "def transform_fn(m, b, c, a):\n    pass\ndef input_fn(b, c):\n    pass\n",
            "transform_fn alone",
        ),
        "missing-package": ("import not_a_real_package_xyz\n", "code/requirements.txt"),
        "model-fn-fails": (
            "def model_fn(model_dir):\n    raise RuntimeError('weights missing')\n",
            "model_fn raised RuntimeError: weights missing (inference.py, line 2)",
        ),
        "no-code": (None, "no entry point"),
    }
    for name, (script, expected) in cases.items():
        tmp = tmp_path / name
        tmp.mkdir()
        with pytest.raises(ValueError) as info:
            script_model(tmp, "sklearn", script, {"model.joblib": dumped(iris[2])})
        assert expected in str(info.value), name


def test_source_directory_archive_and_models_that_share_a_helper_name(tmp_path, iris) -> None:
    """SAGEMAKER_SUBMIT_DIRECTORY as a sourcedir.tar.gz (sklearn's and xgboost's deploy), with a
    training script as the program; two such models in one process each import their own helper."""
    models = []
    for answer in (1, 2):
        tmp = tmp_path / f"m{answer}"
        tmp.mkdir()
        source = archive(
            tmp,
            "sourcedir.tar.gz",
            {
                "helper.py": f"ANSWER = {answer}\n",
                "train.py": textwrap.dedent(
                    """
                    import os

                    import joblib
                    from helper import ANSWER


                    def model_fn(model_dir):
                        return joblib.load(os.path.join(model_dir, "model.joblib"))


                    def predict_fn(data, model):
                        return [ANSWER] * len(data)


                    if __name__ == "__main__":
                        raise SystemExit("training code must not run when the model is served")
                    """
                ),
            },
        )
        url = archive(tmp, "model.tar.gz", {"model.joblib": dumped(iris[2])})
        env = {"SAGEMAKER_PROGRAM": "train.py", "SAGEMAKER_SUBMIT_DIRECTORY": source}
        models.append(LoadedModel(ModelSpec.script(f"m{answer}", "sklearn", url, env)))
    rows = b"1,2,3,4\n5,6,7,8"
    assert [json.loads(m.invoke(rows, "text/csv", None)[0]) for m in models] == [[1, 1], [2, 2]]


def test_a_hung_script_times_out_and_the_model_keeps_serving(tmp_path, iris) -> None:
    model = script_model(
        tmp_path,
        "sklearn",
        SKLEARN_SCRIPT
        + textwrap.dedent(
            """
            import time

            def predict_fn(data, model):
                if data[0][0] < 0:
                    time.sleep(30)
                return model.predict(data)
            """
        ),
        {"model.joblib": dumped(iris[2])},
        env={"SAGEMAKER_MODEL_SERVER_TIMEOUT": "0.5"},
    )
    start = time.monotonic()
    with pytest.raises(ScriptError) as info:
        model.invoke(b"-1,2,3,4\n1,2,3,4", "text/csv", None)
    assert time.monotonic() - start < 5
    assert "SAGEMAKER_MODEL_SERVER_TIMEOUT" in info.value.message
    assert json.loads(model.invoke(b"5.1,3.5,1.4,0.2\n6,3,5,2", "text/csv", None)[0]) == [0, 2]


def test_transform_worker_on_a_script_model(tmp_path, iris) -> None:
    x, _, clf = iris
    url = archive(
        tmp_path, "model.tar.gz", {"model.joblib": dumped(clf), "code/inference.py": SKLEARN_SCRIPT}
    )
    data = tmp_path / "in.csv"
    data.write_text("".join(",".join(f"{v:.9g}" for v in row) + "\n" for row in x[:40]))
    plan = TransformPlan(
        model=ModelSpec.script("t", "sklearn", url),
        content_type="text/csv",
        accept="text/csv",
        split_type="Line",
        assemble_with="Line",
        max_payload_bytes=300,  # several requests
    )
    worker = TransformWorker(plan, None)
    out, n = worker.run(WorkUnit(f"file://{data}", "in.csv", 0, 1, 0, -1))
    assert n == 40
    assert out.decode().split() == [str(v) for v in clf.predict(x[:40])]
    data.write_text("1,2,3\n")  # 3 features: the model wants 4
    with pytest.raises(TransformError, match="predict_fn raised ValueError"):
        worker.run(WorkUnit(f"file://{data}", "in.csv", 0, 1, 0, -1))


# --- PyTorch ------------------------------------------------------------------------------------------

TORCH_SCRIPT = """
import os

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.fc(x))


def model_fn(model_dir):
    model = Net()
    with open(os.path.join(model_dir, "model.pth"), "rb") as f:
        model.load_state_dict(torch.load(f))
    return model
"""


@pytest.fixture(scope="module")
def torch_net(tmp_path_factory):
    import torch

    namespace: dict = {}
    exec(TORCH_SCRIPT, namespace)
    torch.manual_seed(0)
    net = namespace["Net"]()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return net.eval(), buf.getvalue()


def test_pytorch_model_fn_with_default_input_predict_output(tmp_path, torch_net) -> None:
    import torch

    net, weights = torch_net
    model = script_model(tmp_path, "pytorch", TORCH_SCRIPT, {"model.pth": weights})
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    # JSON in, JSON out: eval mode (dropout off), so every answer is the same
    for _ in range(2):
        out, ct = model.invoke(json.dumps(x.tolist()).encode(), "application/json", None)
        assert ct == "application/json"
        np.testing.assert_allclose(json.loads(out), want, rtol=1e-5)
    buf = io.BytesIO()
    np.save(buf, x)
    out, ct = model.invoke(buf.getvalue(), "application/x-npy", "text/csv")
    assert ct == "text/csv"
    np.testing.assert_allclose(np.loadtxt(io.StringIO(out.decode()), delimiter=","), want, rtol=1e-5)
    out, _ = model.invoke(json.dumps(x.tolist()).encode(), "application/json", "application/x-npy")
    np.testing.assert_allclose(np.load(io.BytesIO(out)), want, rtol=1e-5)
    with pytest.raises(UnsupportedMediaType):
        model.invoke(b"1 2 3 4", "text/plain", None)
    # a pickled .npy body is refused rather than unpickled
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadRequest, match="does not unpickle"):
        model.invoke(pickled.getvalue(), "application/x-npy", None)


def test_pytorch_torchscript_served_by_the_defaults_alone(tmp_path, torch_net) -> None:
    import torch

    net, _ = torch_net
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 4)), buf)
    model = script_model(tmp_path, "pytorch", None, {"model.pt": buf.getvalue()})
    x = [[0.5, -1.0, 2.0, 0.0]]
    with torch.no_grad():
        want = net(torch.tensor(x)).numpy()
    np.testing.assert_allclose(
        json.loads(model.invoke(json.dumps(x).encode(), "application/json", None)[0]), want, rtol=1e-5
    )
    out, _ = model.invoke(b"0.5,-1.0,2.0,0.0", "text/csv", "application/json")
    np.testing.assert_allclose(json.loads(out), want[0], rtol=1e-5)  # one CSV row: a 1-D tensor
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="TorchScript"):
        script_model(empty, "pytorch", None, {"notes.txt": "no model"})


# --- requirements.txt ---------------------------------------------------------------------------------


def _wheel(directory: Path, name: str, module_source: str) -> None:
    """A pure-Python wheel, written by hand (no build backend, no index)."""
    dist = f"{name}-1.0"
    files = {
        f"{name}.py": module_source.encode(),
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(directory / f"{name}-1.0-py3-none-any.whl", "w") as z:
        for path, data in files.items():
            z.writestr(path, data)


def test_requirements_txt_is_installed_before_the_script_imports(tmp_path, iris, monkeypatch) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "rm_scaler_pkg", "FACTOR = 10\n")
    monkeypatch.setenv("RAYMAKER_PIP_FIND_LINKS", str(wheels))  # offline: only these wheels
    model = script_model(
        tmp_path,
        "sklearn",
        SKLEARN_SCRIPT
        + "\nfrom rm_scaler_pkg import FACTOR\n\ndef predict_fn(data, model):\n    return model.predict(data) * FACTOR\n",
        {"model.joblib": dumped(iris[2]), "code/requirements.txt": "rm_scaler_pkg==1.0\n"},
    )
    assert json.loads(model.invoke(b"5.1,3.5,1.4,0.2\n6,3,5,2", "text/csv", None)[0]) == [0, 20]
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(ValueError, match="requirements.txt could not be installed"):
        script_model(bad, "sklearn", SKLEARN_SCRIPT, {"code/requirements.txt": "rm_no_such_pkg==9\n"})


# --- CreateModel --------------------------------------------------------------------------------------

PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.3.0-cpu-py311"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def _request(image: str, url: str | None = "s3://bucket/model.tar.gz", **env: str) -> dict:
    container: dict = {"Image": image, "Environment": env}
    if url:
        container["ModelDataUrl"] = url
    return {"ModelName": "m", "PrimaryContainer": container}


def test_create_model_picks_script_models_by_image() -> None:
    spec = spec_from_request(
        "m",
        _request(
            PYTORCH_IMAGE, SAGEMAKER_PROGRAM="inference.py", SAGEMAKER_SUBMIT_DIRECTORY="/opt/ml/model/code"
        ),
    )
    assert (spec.algorithm, spec.framework, spec.is_script) == ("script", "pytorch", True)
    assert dict(spec.environment)["SAGEMAKER_PROGRAM"] == "inference.py"
    assert spec_from_request("m", _request(SKLEARN_IMAGE)).framework == "sklearn"
    # sagemaker-xgboost is the built-in algorithm unless a script is named
    built_in = spec_from_request("m", _request(XGBOOST_IMAGE))
    assert (built_in.algorithm, built_in.framework) == ("xgboost", "")
    script = spec_from_request(
        "m",
        _request(
            XGBOOST_IMAGE,
            SAGEMAKER_PROGRAM="train.py",
            SAGEMAKER_SUBMIT_DIRECTORY="s3://bucket/code/sourcedir.tar.gz",
        ),
    )
    assert script.framework == "xgboost"
    # the code may come without model data
    no_data = spec_from_request(
        "m", _request(SKLEARN_IMAGE, None, SAGEMAKER_SUBMIT_DIRECTORY="s3://bucket/code/sourcedir.tar.gz")
    )
    assert no_data.model_data_url == ""
    assert ModelSpec(**{**no_data.__dict__}) == no_data  # replicas rebuild it from its fields


def test_create_model_refuses_code_it_cannot_fetch() -> None:
    cases = {
        "s3://bucket/code/": "packed as a .tar.gz",
        "/home/me/src": "packed as a .tar.gz",
        "s3://Bad_Bucket/sourcedir.tar.gz": "invalid bucket name",
    }
    for value, expected in cases.items():
        with pytest.raises(ValidationError) as info:
            spec_from_request("m", _request(SKLEARN_IMAGE, SAGEMAKER_SUBMIT_DIRECTORY=value))
        assert "SAGEMAKER_SUBMIT_DIRECTORY" in str(info.value) and expected in str(info.value), value
    with pytest.raises(ValidationError, match="needs its code"):
        spec_from_request("m", _request(PYTORCH_IMAGE, None))
    with pytest.raises(ValidationError, match="SAGEMAKER_PROGRAM"):
        spec_from_request("m", _request(PYTORCH_IMAGE, SAGEMAKER_PROGRAM="../evil.py"))
    with pytest.raises(ValidationError, match="tar.gz"):
        spec_from_request("m", _request(PYTORCH_IMAGE, "s3://bucket/model.pth"))
    # Any other image is the user's own serving container, which reads its model itself.
    custom = spec_from_request("m", _request("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-server:1"))
    assert custom.is_container and custom.image.endswith("/my-server:1") and not custom.is_script


def test_script_model_archive_is_kept_while_loaded_and_removed_after(tmp_path, iris) -> None:
    model = script_model(
        tmp_path,
        "sklearn",
        SKLEARN_SCRIPT + "\ndef predict_fn(data, model):\n    return [os.path.exists(MODEL_DIR)]\n"
        "\nMODEL_DIR = None\n\ndef model_warmup_fn(model_dir, model):\n    global MODEL_DIR\n    MODEL_DIR = model_dir\n",
        {"model.joblib": dumped(iris[2])},
    )
    assert json.loads(model.invoke(b"1,2,3,4", "text/csv", None)[0]) == [True]
    directory, code_dir = model.script.model_dir, model.script.code_dir
    assert os.path.isdir(directory) and sys.path[0] == code_dir
    del model
    gc.collect()
    assert not os.path.exists(directory)
    assert code_dir not in sys.path


def test_helper_modules_import_lazily_while_the_model_lives(tmp_path, iris) -> None:
    """The code directory stays on sys.path, as in SageMaker's containers: a helper imported inside a
    handler (and a class a pickle names) is found at request time."""
    model = script_model(
        tmp_path,
        "sklearn",
        SKLEARN_SCRIPT + "\ndef predict_fn(data, model):\n    from lazy_helper import double\n"
        "    return double(model.predict(data))\n",
        {"model.joblib": dumped(iris[2]), "code/lazy_helper.py": "def double(x):\n    return x * 2\n"},
    )
    assert json.loads(model.invoke(b"5.1,3.5,1.4,0.2\n6,3,5,2", "text/csv", None)[0]) == [0, 4]
