"""Script models: SageMaker's framework serving contract (the inference toolkits' handler functions),
for models whose container is a PyTorch, scikit-learn or XGBoost framework image.

The user's module (``SAGEMAKER_PROGRAM``, default ``inference.py``, found in the model's ``code/`` or
in the ``SAGEMAKER_SUBMIT_DIRECTORY`` archive) defines some of ``model_fn(model_dir)``,
``input_fn(body, content_type)``, ``predict_fn(data, model)``, ``output_fn(prediction, accept)``, or
``transform_fn(model, body, content_type, accept)`` in place of the last three (never with them); the
optional hooks ``pre_model_fn(model_dir)`` and ``model_warmup_fn(model_dir, model)`` run around
``model_fn``. Each function may take one more argument, the request context, which is ``None`` here.
What the module leaves out comes from the framework's defaults, as its serving container has them:

- **pytorch** (aws/sagemaker-pytorch-inference-toolkit ``default_pytorch_inference_handler.py`` on
  aws/sagemaker-inference-toolkit): ``model_fn`` loads TorchScript ``model.pt`` (or the one ``.pt`` /
  ``.pth`` file) onto CUDA if there is one, else the CPU; ``input_fn`` decodes JSON, CSV (float
  tensor), NPY and NPZ (``torch.from_numpy``) onto that device; ``predict_fn`` moves the model there,
  sets eval mode and calls ``model(data)`` under ``torch.no_grad()``; ``output_fn`` turns a tensor into
  a list and encodes JSON, CSV or NPY. With no module at all, every function is the default.
- **sklearn** (aws/sagemaker-scikit-learn-container ``serving.py`` on sagemaker-containers'
  ``_transformer.py`` / ``_encoders.py``): no default ``model_fn`` (the module must define one);
  ``input_fn`` decodes JSON, CSV (rows through ``csv.reader``: always rows x columns, see below) and
  NPY, JSON and CSV as float32; ``predict_fn`` is ``model.predict(data)``;
  ``output_fn`` encodes JSON, CSV (one row per line, ``csv.writer``) or NPY.
- **xgboost** (aws/sagemaker-xgboost-container ``serving.py`` / ``handler_service.py``): no default
  ``model_fn``; ``input_fn`` turns CSV, libsvm or RecordIO-protobuf into an ``xgboost.DMatrix`` (with
  raymaker's readers: no JSON, as there); ``predict_fn`` is ``model.predict(dmatrix,
  validate_features=False)``; ``output_fn`` as sklearn's.

JSON and CSV bodies reach ``input_fn`` / ``transform_fn`` as ``str`` (UTF-8), others as ``bytes``. A
missing Content-Type is ``application/json`` (sagemaker-containers' default). A missing or ``*/*``
Accept is ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``, else ``application/json`` (the toolkits'
``environment.py``). An ``output_fn`` / ``transform_fn`` answers ``bytes`` or ``str`` (content type:
the Accept) or ``(body, content_type)``; a list, dict or number is sent as JSON, a Flask-style response
object (sagemaker-containers' ``worker.Response``) as its data and mimetype.

Statuses (the replicas and batch transform take them from the ``InvocationError`` raised):

- a Content-Type the default ``input_fn`` cannot decode: 415 UnsupportedMediaType (sklearn and xgboost
  answer 415; the inference toolkit, hence pytorch, answers 500: raymaker answers 415 for all);
- an Accept the default ``output_fn`` cannot encode: 406 NotAcceptable (likewise);
- a body the default ``input_fn`` cannot parse: 400 ValidationError naming the problem (the containers
  answer 500 with the exception);
- an exception inside the user's functions (or a default ``predict_fn`` / ``output_fn``): 424 ModelError,
  the status SageMaker's runtime answers when a container fails (the toolkits answer 500 and the runtime
  turns it into 424; botocore retries a 500, not a 424), with the exception's type and message and
  where in the script it was raised, e.g. ``input_fn raised ValueError: expected 4 features (inference.py, line 12)``. An
  exception carrying an integer ``status_code`` (the inference toolkit's
  ``BaseInferenceToolkitError`` family) keeps a 4xx status of its own;
- no answer within ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` seconds (default 60, the toolkits'): 424
  ModelError saying so; the request never hangs (the stuck call is left to finish on its own thread).

The code directory is first on ``sys.path`` while its model lives, as in SageMaker's containers
(helpers imported lazily, pickles naming them). Several script models can live in one process (a
replica swapping in a new version of its model, tests): each module is imported under a name of its
own, and as a model loads, the helper modules other models imported from their code directories leave
``sys.modules``, so it imports its own ``utils.py`` rather than another's (the models already loaded
keep theirs; one of them importing a helper lazily afterwards gets the newest model's).
``code/requirements.txt`` is installed (a cached environment per content, shared with training) by
``raymaker.toolkit.entry_point.install_requirements``; its site-packages goes on ``sys.path``. The
model's Environment is set in the process's environment at load, as a container's would be.

Deliberate differences: NPY bodies are loaded without pickle (SageMaker's ``allow_pickle=True`` runs
any code a client sends); content types match without their parameters (``text/csv; charset=utf-8``
is CSV); an Accept list picks its first type the default ``output_fn`` can encode, ``*/*`` in it
meaning the default; scikit-learn's CSV decoder keeps one row (or one column) two-dimensional, where
sagemaker-containers' ``squeeze()`` makes it 1-D and every scikit-learn model then refuses a
one-row request or a SingleRecord transform ("Expected 2D array, got 1D array instead":
aws/sagemaker-scikit-learn-container#15 and #145, aws/sagemaker-containers#273, which AWS answered by
moving to the inference toolkit's decoder). A script that ran on SageMaker reshapes what it gets, and a
2-D array passes through those reshapes unchanged.
"""

from __future__ import annotations

import concurrent.futures
import csv
import importlib.util
import inspect
import io
import itertools
import json
import logging
import os
import re
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from raymaker.serve.codecs import (
    BadRequest,
    InvocationError,
    NotAcceptable,
    UnsupportedMediaType,
    clip,
    decode_request,
)

logger = logging.getLogger(__name__)

SCRIPT = "script"  # ModelSpec.algorithm of a script model
FRAMEWORKS = ("pytorch", "sklearn", "xgboost")
PROGRAM_ENV = "SAGEMAKER_PROGRAM"
SUBMIT_DIRECTORY_ENV = "SAGEMAKER_SUBMIT_DIRECTORY"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
DEFAULT_PROGRAM = "inference.py"
DEFAULT_TIMEOUT_S = 60.0
CONTAINER_MODEL_DIR = "/opt/ml/model"  # where SageMaker extracts model.tar.gz in the container

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
NPZ = "application/x-npz"
LIBSVM = ("text/libsvm", "text/x-libsvm")
RECORDIO = "application/x-recordio-protobuf"
TEXT_TYPES = (JSON, CSV)  # decoded to str before input_fn (the toolkits' UTF8_TYPES)
ENCODABLE = (JSON, CSV, NPY)  # what the default output_fn writes, in every framework

_MAX_MESSAGE = 1000


# --- errors -----------------------------------------------------------------------------------------


class ScriptError(InvocationError):
    """The user's script (or a framework default standing in for it) failed on a request: 424
    ModelError, as SageMaker's runtime answers when the container fails."""

    status = 424
    error_type = "ModelError"


class NoProgram(Exception):
    """The code directory has no such program (the path)."""


class ScriptLoadError(ValueError):
    """The script model cannot load (no entry point, an import error, ``model_fn`` raised): the message
    says what to change. A ValueError, as every other model load failure is."""


# --- where the code is ------------------------------------------------------------------------------


def script_program(environment: Mapping[str, str]) -> str:
    """``SAGEMAKER_PROGRAM`` (default ``inference.py``), checked: a relative path inside the code
    directory. ValueError says what to change."""
    program = (environment.get(PROGRAM_ENV) or "").strip() or DEFAULT_PROGRAM
    parts = program.replace("\\", "/").split("/")
    if program.startswith(("/", "\\")) or ".." in parts or "" in parts or "\0" in program:
        raise ValueError(
            f"Environment {PROGRAM_ENV} {clip(program)!r} must name the script inside its source "
            "directory, e.g. inference.py (a relative path without '..')"
        )
    return program


def submit_directory(environment: Mapping[str, str]) -> tuple[str | None, str]:
    """Where the code is, from ``SAGEMAKER_SUBMIT_DIRECTORY``: ``(archive URI, "")`` for a
    ``sourcedir.tar.gz`` to download, or ``(None, path)`` for a directory inside the model archive
    (``code`` when the variable is unset or ``/opt/ml/model/code``, the SDK's repack layout).
    ValueError says what to change for anything else."""
    value = (environment.get(SUBMIT_DIRECTORY_ENV) or "").strip()
    if not value:
        return None, "code"
    norm = os.path.normpath(value) if value.startswith("/") else value
    if norm == CONTAINER_MODEL_DIR or norm.startswith(CONTAINER_MODEL_DIR + "/"):
        return None, os.path.relpath(norm, CONTAINER_MODEL_DIR)
    fix = (
        f"Environment {SUBMIT_DIRECTORY_ENV} {clip(value)!r} must be the s3:// URI of the source "
        "directory packed as a .tar.gz (as the SageMaker SDK uploads source_dir: "
        f"s3://bucket/prefix/sourcedir.tar.gz), or {CONTAINER_MODEL_DIR}/code when the code is inside "
        "model.tar.gz"
    )
    if not value.endswith(".tar.gz"):
        raise ValueError(fix)
    from raymaker.io.storage import parse_uri

    try:
        parse_uri(value)
    except ValueError as e:
        raise ValueError(f"{fix}: {e}") from None
    return value, ""


# --- the default handlers of each framework ---------------------------------------------------------


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _text(data: Any) -> str:
    return data if isinstance(data, str) else bytes(data).decode("utf-8")


def _bytes(data: Any) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def _decode_json(data: Any) -> np.ndarray:
    return np.array(json.loads(_text(data)))


def _decode_npy(data: Any) -> np.ndarray:
    try:
        return np.load(io.BytesIO(_bytes(data)), allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(
                "the .npy body holds Python objects, which raymaker does not unpickle from requests; "
                "send a numeric array"
            ) from None
        raise


def _decode_npz(data: Any) -> Any:
    import scipy.sparse

    return scipy.sparse.load_npz(io.BytesIO(_bytes(data)))


def _decode_csv_toolkit(data: Any) -> np.ndarray:
    """The inference toolkit's CSV decoder (``np.genfromtxt``), as floats: the toolkit infers each
    column's type and fails on mixed int / float columns; its PyTorch handler makes floats anyway."""
    return np.genfromtxt(io.StringIO(_text(data)), dtype=float, delimiter=",")


def _decode_csv_containers(data: Any) -> np.ndarray:
    """sagemaker-containers' CSV decoder (rows through ``csv.reader``), without its ``squeeze()``: one
    row stays a 1 x n array (see the module's notes)."""
    rows = list(
        csv.reader(io.StringIO(_text(data)), delimiter=",", quotechar='"', doublequote=True, strict=True)
    )
    return np.array([row for row in rows if row]).astype(None)


def _encode_json(value: Any) -> str:
    def default(v: Any) -> Any:
        if hasattr(v, "tolist"):
            return v.tolist()
        return json.JSONEncoder().default(v)

    return json.dumps(value, default=default)


def _encode_npy(value: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, value)
    return buf.getvalue()


def _encode_csv_toolkit(value: Any) -> str:
    stream = io.StringIO()
    np.savetxt(stream, value, delimiter=",", fmt="%s")
    return stream.getvalue()


def _encode_csv_containers(value: Any) -> str:
    array = np.array(value)
    if array.ndim == 1:
        array = array.reshape(array.shape[0], 1)
    stream = io.StringIO()
    csv.writer(
        stream, lineterminator="\n", delimiter=",", quotechar='"', doublequote=True, strict=True
    ).writerows(array)
    return stream.getvalue()


def _pick_accept(accept: str, default_accept: str) -> str:
    """The first type of an Accept list the default output_fn writes (``*/*``: the default)."""
    for part in accept.split(","):
        mime = _mime(part)
        if mime == "*/*":
            mime = _mime(default_accept) if _mime(default_accept) in ENCODABLE else JSON
        if mime in ENCODABLE:
            return mime
    raise NotAcceptable(
        f"cannot produce any of the types in Accept {clip(accept)!r}: the default output_fn writes "
        f"{', '.join(ENCODABLE)}; write an output_fn in the script for other types"
    )


class FrameworkDefaults:
    """One framework's default handler functions (used for what the script leaves out)."""

    name = ""
    input_types: tuple[str, ...] = ()
    has_model_fn = False
    model_fn_hint = ""

    def __init__(self, default_accept: str):
        self.default_accept = default_accept

    def model_fn(self, model_dir: str) -> Any:
        raise ScriptLoadError(
            f"the script defines no model_fn, and SageMaker's {self.name} container has no default one: "
            f"define model_fn(model_dir) returning the loaded model{self.model_fn_hint}"
        )

    def decode(self, data: Any, mime: str) -> Any:
        raise NotImplementedError

    def input_fn(self, data: Any, content_type: str) -> Any:
        mime = _mime(content_type)
        if mime not in self.input_types:
            raise UnsupportedMediaType(
                f"content type {clip(content_type)!r} is not supported by the default input_fn of "
                f"{self.name}: it takes {', '.join(self.input_types)}; write an input_fn in the script "
                "for other types"
            )
        try:
            return self.decode(data, mime)
        except InvocationError:
            raise
        except (ValueError, TypeError, LookupError, ArithmeticError, RecursionError, OSError, csv.Error) as e:
            raise BadRequest(
                f"could not decode the {mime} request body with the default input_fn of {self.name}: "
                f"{type(e).__name__}: {clip(_first_line(e), _MAX_MESSAGE)}"
            ) from None

    def predict_fn(self, data: Any, model: Any) -> Any:
        return model.predict(data)

    def encode(self, prediction: Any, mime: str) -> Any:
        if mime == JSON:
            return _encode_json(prediction)
        if mime == CSV:
            return _encode_csv_containers(prediction)
        return _encode_npy(prediction)

    def output_fn(self, prediction: Any, accept: str) -> tuple[Any, str]:
        mime = _pick_accept(accept, self.default_accept)
        return self.encode(prediction, mime), mime


class SklearnDefaults(FrameworkDefaults):
    name = "sklearn"
    input_types = (JSON, CSV, NPY)
    model_fn_hint = " (e.g. joblib.load(os.path.join(model_dir, 'model.joblib')))"

    def decode(self, data: Any, mime: str) -> Any:
        if mime == NPY:
            return _decode_npy(data)
        array = _decode_json(data) if mime == JSON else _decode_csv_containers(data)
        return array.astype(np.float32)


class XGBoostDefaults(FrameworkDefaults):
    name = "xgboost"
    input_types = (CSV, *LIBSVM, RECORDIO)
    model_fn_hint = (
        " (e.g. booster = xgboost.Booster(); booster.load_model(os.path.join(model_dir, 'xgboost-model')))"
    )

    def decode(self, data: Any, mime: str) -> Any:
        import xgboost

        batch = decode_request(_bytes(data), mime, self.input_types)
        return xgboost.DMatrix(batch.features)

    def predict_fn(self, data: Any, model: Any) -> Any:
        return model.predict(data, validate_features=False)


class PyTorchDefaults(FrameworkDefaults):
    name = "pytorch"
    input_types = (JSON, CSV, NPY, NPZ)
    has_model_fn = True

    @staticmethod
    def device() -> Any:
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def model_fn(self, model_dir: str) -> Any:
        import torch

        path = os.path.join(model_dir, "model.pt")
        if not os.path.exists(path):
            files = sorted(
                f
                for f in os.listdir(model_dir)
                if os.path.isfile(os.path.join(model_dir, f)) and os.path.splitext(f)[1] in (".pt", ".pth")
            )
            if len(files) != 1:
                raise ScriptLoadError(
                    "the script defines no model_fn, and PyTorch's default one loads a TorchScript model.pt "
                    f"(or the only .pt / .pth file) from the model archive, which holds {files or 'none'}: "
                    "define model_fn(model_dir) in code/inference.py, or save the model with "
                    "torch.jit.save as model.pt"
                )
            path = os.path.join(model_dir, files[0])
        device = self.device()
        try:
            model = torch.jit.load(path, map_location=device)
        except RuntimeError as e:
            raise ScriptLoadError(
                f"PyTorch's default model_fn could not load {os.path.basename(path)}: please ensure the model "
                f"is saved with TorchScript (torch.jit.save), or define model_fn(model_dir) ({_first_line(e)})"
            ) from None
        return model.to(device)

    def decode(self, data: Any, mime: str) -> Any:
        import torch

        if mime in TEXT_TYPES:
            array = _decode_json(data) if mime == JSON else _decode_csv_toolkit(data)
            tensor = torch.FloatTensor(array)
        elif mime == NPZ:
            tensor = torch.from_numpy(_decode_npz(data).toarray())
        else:
            tensor = torch.from_numpy(_decode_npy(data))
        return tensor.to(self.device())

    def predict_fn(self, data: Any, model: Any) -> Any:
        import torch

        with torch.no_grad():
            device = self.device()
            model = model.to(device)
            model.eval()
            return model(data.to(device))

    def encode(self, prediction: Any, mime: str) -> Any:
        import torch

        if type(prediction) is torch.Tensor:
            prediction = prediction.detach().cpu().numpy().tolist()
        if mime == JSON:
            return _encode_json(prediction)
        if mime == CSV:
            return _encode_csv_toolkit(prediction)
        return _encode_npy(prediction)


DEFAULTS: dict[str, type[FrameworkDefaults]] = {
    "pytorch": PyTorchDefaults,
    "sklearn": SklearnDefaults,
    "xgboost": XGBoostDefaults,
}


# --- the user's module ------------------------------------------------------------------------------

_MODULE_IDS = itertools.count()
IMPORT_LOCK = threading.RLock()  # sys.path and sys.modules are the process's


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0].strip()


def _under(path: str | None, directory: str) -> bool:
    if not path:
        return False
    path = os.path.realpath(path)
    return path == directory or path.startswith(directory + os.sep)


def _where(error: BaseException, code_dir: str | None) -> str:
    """`` (inference.py, line 12)``: the deepest frame of the traceback inside the user's code."""
    if not code_dir:
        return ""
    found = ""
    for frame in traceback.extract_tb(error.__traceback__):
        if _under(frame.filename, code_dir):
            found = f" ({os.path.relpath(os.path.realpath(frame.filename), code_dir)}, line {frame.lineno})"
    return found


def _arity(fn: Callable[..., Any]) -> int | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _caller(name: str, fn: Callable[..., Any], nargs: int) -> Callable[..., Any]:
    """``fn`` called with ``nargs`` arguments, plus the request context (None) if it takes one more,
    as the inference toolkit's ``_run_handler_function`` does."""
    arity = _arity(fn)
    if arity is None or arity == nargs:
        return fn
    if arity == nargs + 1:
        return lambda *args: fn(*args, None)
    raise ScriptLoadError(
        f"{name} takes {arity} arguments; the serving contract calls it with {nargs} (or {nargs} and a context)"
    )


def import_user_module(code_dir: str, program: str, label: str) -> Any:
    """Import ``program`` from ``code_dir`` under a name of its own, so several models in one process
    do not collide (the caller has put ``code_dir`` on ``sys.path`` with ``use_code_dir``)."""
    path = os.path.join(code_dir, program)
    if not path.endswith(".py") and not os.path.isfile(path):
        path += ".py"  # SAGEMAKER_PROGRAM may name the module
    if not os.path.isfile(path):
        raise NoProgram(path)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"_raymaker_script_{next(_MODULE_IDS)}_{re.sub(r'[^0-9A-Za-z_]', '_', label)}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ScriptLoadError(f"{program} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look classes up by their module's name
    _CODE_DIRS.setdefault(os.path.realpath(code_dir), []).append(name)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


# code directory (real path) -> the unique module names imported from it, for the loaded models
_CODE_DIRS: dict[str, list[str]] = {}


def _drop_modules_under(directories: list[str]) -> None:
    if not directories:
        return
    prefixes = tuple(d + os.sep for d in directories)
    for name, module in sys.modules.copy().items():  # copy(): atomic, while other threads import
        path = getattr(module, "__file__", None)
        # Modules found through a code directory on sys.path have paths that start with it (it is a
        # real path): no realpath() per module, of which there are thousands.
        if isinstance(path, str) and path.startswith(prefixes):
            sys.modules.pop(name, None)


def use_code_dir(code_dir: str) -> None:
    """Put ``code_dir`` first on ``sys.path`` for as long as its model lives (the script may import
    its helper modules lazily, and pickles name them), as SageMaker's containers have it. The helper
    modules other loaded models imported from their code directories leave ``sys.modules`` first, so
    a model with a helper of the same name (a new version of the model, swapped in by an update)
    imports its own. Call with ``IMPORT_LOCK`` held."""
    code_dir = os.path.realpath(code_dir)
    _drop_modules_under([d for d in _CODE_DIRS if d != code_dir])
    _CODE_DIRS.setdefault(code_dir, [])
    while code_dir in sys.path:
        sys.path.remove(code_dir)
    sys.path.insert(0, code_dir)
    importlib.invalidate_caches()


def release_code_dir(code_dir: str) -> None:
    """Undo ``use_code_dir`` when its model is gone: off ``sys.path``, its modules forgotten."""
    code_dir = os.path.realpath(code_dir)
    with IMPORT_LOCK:
        for name in _CODE_DIRS.pop(code_dir, []):
            sys.modules.pop(name, None)
        while code_dir in sys.path:
            sys.path.remove(code_dir)
        _drop_modules_under([code_dir])


def install_requirements(code_dir: str) -> None:
    """``code_dir/requirements.txt``, installed as a training job's is (a cached environment per
    content, on top of the cluster's packages); its site-packages goes first on ``sys.path`` for good
    (packages import lazily)."""
    if not os.path.isfile(os.path.join(code_dir, "requirements.txt")):
        return
    from raymaker.protocol.environment import raymaker_home
    from raymaker.toolkit.entry_point import install_requirements as install

    try:
        target = install(code_dir, str(raymaker_home() / "cache" / "pip"))  # training's cache too
    except Exception as e:  # noqa: BLE001 - pip's failure is the requirements file's
        raise ScriptLoadError(
            f"code/requirements.txt could not be installed: {type(e).__name__}: {clip(str(e).strip(), _MAX_MESSAGE)}"
        ) from None
    if target and target not in sys.path:
        with IMPORT_LOCK:
            sys.path.insert(0, target)
            importlib.invalidate_caches()


# --- the served model -------------------------------------------------------------------------------


def _response(result: Any, accept: str) -> tuple[bytes, str]:
    """An output_fn's / transform_fn's return value as (body, content type)."""
    given = isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str)
    body, content_type = result if given else (result, accept)
    if hasattr(body, "get_data") and hasattr(body, "status_code"):  # a Flask / werkzeug Response
        status = int(body.status_code)
        data = body.get_data()
        if status >= 400:
            message = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
            raise ScriptError(f"the script answered status {status}: {clip(message, _MAX_MESSAGE)}")
        content_type = getattr(body, "mimetype", None) or content_type
        body = data
    if isinstance(body, str):
        return body.encode("utf-8"), content_type
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), content_type
    if body is None:
        return b"", content_type
    try:  # a list, dict or number: JSON, as TorchServe sends it
        return _encode_json(body).encode("utf-8"), content_type if given else JSON
    except (TypeError, ValueError):
        raise ScriptError(
            f"output_fn returned {type(body).__name__}; return bytes, a str, or (body, content_type)"
        ) from None


class ScriptModel:
    """A framework script model, loaded: ``invoke(body, content_type, accept) -> (bytes, content
    type)`` as ``serve.model.LoadedModel`` promises, errors as ``InvocationError``s.

    ``code_dir``: the directory holding ``program`` (None or a directory without it: no module, which
    only PyTorch serves, with its defaults). ``environment``: the model's Environment."""

    def __init__(
        self,
        framework: str,
        model_dir: str,
        code_dir: str | None,
        environment: Mapping[str, str],
        label: str = "model",
    ):
        if framework not in DEFAULTS:
            raise ScriptLoadError(f"unknown framework {framework!r}: raymaker serves {', '.join(FRAMEWORKS)}")
        env = dict(environment)
        self.framework = framework
        self.model_dir = model_dir
        self.code_dir = os.path.realpath(code_dir) if code_dir and os.path.isdir(code_dir) else None
        self.program = script_program(env)
        self.default_accept = env.get(DEFAULT_ACCEPT_ENV) or JSON
        self.timeout = _timeout(env)
        self.defaults = DEFAULTS[framework](self.default_accept)
        for key, value in env.items():  # the container's environment
            os.environ[key] = value
        self._lock = threading.Lock()
        self._pool = _new_pool()
        with IMPORT_LOCK:
            release = weakref.finalize(self, release_code_dir, self.code_dir) if self.code_dir else None
            try:
                if self.code_dir:
                    install_requirements(self.code_dir)  # behind the code directory on sys.path
                    use_code_dir(self.code_dir)
                self._bind(self._import(env, label))
                if self._pre_model_fn is not None:
                    self._load_step("pre_model_fn", self._pre_model_fn, model_dir)
                self.model = self._load_step("model_fn", self._model_fn, model_dir)
                if self._model_warmup_fn is not None:
                    self._load_step("model_warmup_fn", self._model_warmup_fn, model_dir, self.model)
            except BaseException:
                if release is not None:
                    release()
                raise

    # --- loading -----------------------------------------------------------------------------------

    def _import(self, env: Mapping[str, str], label: str) -> Any:
        named = bool((env.get(PROGRAM_ENV) or "").strip())
        if self.code_dir is None:
            if named or not self.defaults.has_model_fn:
                raise ScriptLoadError(self._no_entry_point())
            return None
        try:
            return import_user_module(self.code_dir, self.program, label)
        except NoProgram:
            if named or not self.defaults.has_model_fn:
                raise ScriptLoadError(self._no_entry_point()) from None
            return None
        except ScriptLoadError:
            raise
        except Exception as e:  # noqa: BLE001 - anything the module raises on import is the script's
            hint = ": list the package in code/requirements.txt" if isinstance(e, ModuleNotFoundError) else ""
            raise ScriptLoadError(
                f"{self.program} could not be imported: {type(e).__name__}: "
                f"{clip(_first_line(e), _MAX_MESSAGE)}{_where(e, self.code_dir)}{hint}"
            ) from None

    def _no_entry_point(self) -> str:
        return (
            f"no entry point: the model's code has no {self.program} ({PROGRAM_ENV}). Put the script in "
            f"model.tar.gz as code/{self.program} (SageMaker's layout, with code/requirements.txt if it "
            f"needs packages), or set Environment {SUBMIT_DIRECTORY_ENV} to the s3:// URI of a "
            "sourcedir.tar.gz holding it"
        )

    def _bind(self, module: Any) -> None:
        d = self.defaults
        user = (lambda name: getattr(module, name, None)) if module is not None else (lambda name: None)
        transform_fn, input_fn, predict_fn, output_fn = (
            user(n) for n in ("transform_fn", "input_fn", "predict_fn", "output_fn")
        )
        if transform_fn and (input_fn or predict_fn or output_fn):
            raise ScriptLoadError(
                f"{self.program} defines transform_fn and input_fn, predict_fn or output_fn: use "
                "transform_fn alone, or the other three"
            )
        self.user_functions = sorted(
            n
            for n in (
                "model_fn",
                "input_fn",
                "predict_fn",
                "output_fn",
                "transform_fn",
                "pre_model_fn",
                "model_warmup_fn",
            )
            if user(n)
        )
        self._model_fn = _caller("model_fn", user("model_fn") or d.model_fn, 1)
        hook = user("pre_model_fn")
        self._pre_model_fn = _caller("pre_model_fn", hook, 1) if hook else None
        hook = user("model_warmup_fn")
        self._model_warmup_fn = _caller("model_warmup_fn", hook, 2) if hook else None
        self._transform_fn = _caller("transform_fn", transform_fn, 4) if transform_fn else None
        self._input_fn = _caller("input_fn", input_fn or d.input_fn, 2)
        self._predict_fn = _caller("predict_fn", predict_fn or d.predict_fn, 2)
        self._output_fn = _caller("output_fn", output_fn or d.output_fn, 2)

    def _load_step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except ScriptLoadError:
            raise
        except Exception as e:  # noqa: BLE001 - the script's failure, reported as the load's
            raise ScriptLoadError(
                f"{name} raised {type(e).__name__}: {clip(_first_line(e), _MAX_MESSAGE)}{_where(e, self.code_dir)}"
            ) from None

    # --- requests ----------------------------------------------------------------------------------

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        content_type = content_type.strip() if content_type and content_type.strip() else JSON
        if not accept or not accept.strip() or accept.strip() == "*/*":
            accept = self.default_accept
        data: Any = body
        if _mime(content_type) in TEXT_TYPES:
            try:
                data = bytes(body).decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadRequest(
                    f"the {_mime(content_type)} request body is not UTF-8 (byte 0x{body[e.start]:02x} at "
                    f"offset {e.start}); send UTF-8 text"
                ) from None
        with self._lock:  # one request at a time, as one model server worker takes them
            future = self._pool.submit(self._handle, data, content_type, accept)
            try:
                result = future.result(timeout=self.timeout)
            except concurrent.futures.TimeoutError:
                stuck, self._pool = self._pool, _new_pool()
                stuck.shutdown(wait=False, cancel_futures=True)
                logger.error("script model %s: no answer within %s s", self.program, self.timeout)
                raise ScriptError(
                    f"the model did not answer within {self.timeout:g} s ({TIMEOUT_ENV}): the script's "
                    "handlers are still running; raise the timeout in the model's Environment or speed "
                    "them up"
                ) from None
        return _response(result, accept)

    def _handle(self, data: Any, content_type: str, accept: str) -> Any:
        if self._transform_fn is not None:
            return self._step("transform_fn", self._transform_fn, self.model, data, content_type, accept)
        decoded = self._step("input_fn", self._input_fn, data, content_type)
        prediction = self._step("predict_fn", self._predict_fn, decoded, self.model)
        return self._step("output_fn", self._output_fn, prediction, accept)

    def _step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except InvocationError:
            raise
        except Exception as e:  # noqa: BLE001 - the script's failure answers this request only
            logger.warning("script model %s: %s failed", self.program, name, exc_info=True)
            message = f"{name} raised {type(e).__name__}: {clip(str(e).strip(), _MAX_MESSAGE)}{_where(e, self.code_dir)}"
            status = getattr(e, "status_code", None)
            if isinstance(status, int) and 400 <= status < 500:
                raise InvocationError(status, "ModelError", message) from None
            raise ScriptError(message) from None


def _new_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raymaker-script")


def _timeout(env: Mapping[str, str]) -> float:
    value = env.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ScriptLoadError(
            f"Environment {TIMEOUT_ENV} {clip(value)!r} must be a positive number of seconds"
        )
    return seconds
