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
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from raymaker.serve.codecs import (
    BadRequest,
    InvocationError,
    clip,
)
from raymaker.serve.script_code import (
    IMPORT_LOCK,
    call_user,
    import_user_module,
    install_requirements,
    release_code_dir,
    use_code_dir,
    where_raised,
)
from raymaker.serve.script_contract import (
    DEFAULT_ACCEPT_ENV,
    DEFAULT_TIMEOUT_S,
    FRAMEWORKS,
    JSON,
    MAX_MESSAGE,
    PROGRAM_ENV,
    SUBMIT_DIRECTORY_ENV,
    TEXT_TYPES,
    TIMEOUT_ENV,
    NoProgram,
    ScriptError,
    ScriptLoadError,
    first_line,
    script_program,
)
from raymaker.serve.script_defaults import DEFAULTS, encode_json, mime_of

logger = logging.getLogger(__name__)


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
            raise ScriptError(f"the script answered status {status}: {clip(message, MAX_MESSAGE)}")
        content_type = getattr(body, "mimetype", None) or content_type
        body = data
    if isinstance(body, str):
        return body.encode("utf-8"), content_type
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), content_type
    if body is None:
        return b"", content_type
    try:  # a list, dict or number: JSON, as TorchServe sends it
        return encode_json(body).encode("utf-8"), content_type if given else JSON
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
                f"{clip(first_line(e), MAX_MESSAGE)}{where_raised(e, self.code_dir)}{hint}"
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
        self._model_fn = call_user("model_fn", user("model_fn") or d.model_fn, 1)
        hook = user("pre_model_fn")
        self._pre_model_fn = call_user("pre_model_fn", hook, 1) if hook else None
        hook = user("model_warmup_fn")
        self._model_warmup_fn = call_user("model_warmup_fn", hook, 2) if hook else None
        self._transform_fn = call_user("transform_fn", transform_fn, 4) if transform_fn else None
        self._input_fn = call_user("input_fn", input_fn or d.input_fn, 2)
        self._predict_fn = call_user("predict_fn", predict_fn or d.predict_fn, 2)
        self._output_fn = call_user("output_fn", output_fn or d.output_fn, 2)

    def _load_step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except ScriptLoadError:
            raise
        except Exception as e:  # noqa: BLE001 - the script's failure, reported as the load's
            raise ScriptLoadError(
                f"{name} raised {type(e).__name__}: {clip(first_line(e), MAX_MESSAGE)}{where_raised(e, self.code_dir)}"
            ) from None

    # --- requests ----------------------------------------------------------------------------------

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        content_type = content_type.strip() if content_type and content_type.strip() else JSON
        if not accept or not accept.strip() or accept.strip() == "*/*":
            accept = self.default_accept
        data: Any = body
        if mime_of(content_type) in TEXT_TYPES:
            try:
                data = bytes(body).decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadRequest(
                    f"the {mime_of(content_type)} request body is not UTF-8 (byte 0x{body[e.start]:02x} at "
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
            message = f"{name} raised {type(e).__name__}: {clip(str(e).strip(), MAX_MESSAGE)}{where_raised(e, self.code_dir)}"
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
