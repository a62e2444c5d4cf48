"""A hosted model, loaded once, answering requests in SageMaker's formats: a built-in algorithm's
``model.tar.gz``, or a script model (a framework image: the user's ``inference.py`` behind SageMaker's
handler contract, ``serve.handlers``). Endpoint replicas and batch-transform actors both use this
class, so an endpoint and a transform job give the same bytes for the same records."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

from raymaker.algorithms import Algorithm, get_algorithm
from raymaker.io.storage import S3Settings, storage_for
from raymaker.serve.codecs import BadRequest, choose_accept, decode_request, encode_response
from raymaker.serve.container import ContainerServer
from raymaker.serve.handlers import ScriptModel
from raymaker.serve.script_contract import SCRIPT, submit_directory

CONTAINER = "container"  # ModelSpec.algorithm of a custom serving container


@dataclass(frozen=True)
class ModelSpec:
    """What a replica needs to load a model: plain values, so it pickles into any Ray process."""

    name: str
    algorithm: str  # a built-in algorithm, "script" (script_contract.SCRIPT) or "container" (CONTAINER)
    model_data_url: str  # "" for a script model without model data (its code comes from elsewhere)
    environment: tuple[tuple[str, str], ...] = ()
    # "pytorch", "sklearn" or "xgboost" for a script model: whose framework container (and default
    # handlers) it asked for; "" for a built-in algorithm.
    framework: str = ""
    image: str = ""  # a custom serving container's image ("" for built-ins and scripts)
    cpus: float = 0.0  # a custom container's limits: its instance type's (0: none)
    memory_gb: float = 0.0

    @property
    def is_script(self) -> bool:
        return bool(self.framework)

    @property
    def is_container(self) -> bool:
        return bool(self.image)

    @classmethod
    def container(
        cls, name: str, image: str, model_data_url: str | None, environment: dict[str, str] | None = None
    ) -> ModelSpec:
        return cls(name, CONTAINER, model_data_url or "", tuple(sorted((environment or {}).items())), image=image)

    @classmethod
    def script(
        cls, name: str, framework: str, model_data_url: str | None, environment: dict[str, str] | None = None
    ) -> ModelSpec:
        return cls(name, SCRIPT, model_data_url or "", tuple(sorted((environment or {}).items())), framework)


class LoadedModel:
    def __init__(self, spec: ModelSpec, settings: S3Settings | None = None):
        self.spec = spec
        env = dict(spec.environment)
        self.container: ContainerServer | None = None
        if spec.is_container:
            self.algorithm = self.script = self.model = None
            self.default_accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or "application/json"
            self.container = self._start_container(spec, env, settings)
            return
        if spec.is_script:
            self.algorithm = None
            self.script = self._load_script(spec, env, settings)
            self.default_accept = self.script.default_accept
            self.model = self.script.model
            return
        self.script = None
        self.algorithm: Algorithm = get_algorithm(spec.algorithm)()
        # The SageMaker containers' knob for the Accept used when a request names none.
        self.default_accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or self.algorithm.default_accept
        self.model = self._load(spec.model_data_url, settings)

    def _load_script(self, spec: ModelSpec, env: dict[str, str], settings: S3Settings | None) -> ScriptModel:
        """The model archive (if any) extracted to a directory that lives as long as this object (the
        script may read it after ``model_fn``), the code found in it or in the SAGEMAKER_SUBMIT_DIRECTORY
        archive, and the script's handlers loaded on it."""
        tmp = tempfile.mkdtemp(prefix=f"raymaker-model-{spec.name}-")
        weakref.finalize(self, shutil.rmtree, tmp, True)
        try:
            model_dir = os.path.join(tmp, "model")
            os.makedirs(model_dir)
            if spec.model_data_url:
                _fetch_archive(spec.model_data_url, model_dir, tmp, settings, "ModelDataUrl")
            archive, inside = submit_directory(env)
            if archive:
                code_dir = os.path.join(tmp, "code")
                _fetch_archive(archive, code_dir, tmp, settings, "Environment SAGEMAKER_SUBMIT_DIRECTORY")
            else:
                code_dir = os.path.join(model_dir, inside)
            return ScriptModel(spec.framework, model_dir, code_dir, env, label=spec.name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _start_container(self, spec: ModelSpec, env: dict[str, str], settings: S3Settings | None) -> ContainerServer:
        """``model.tar.gz`` extracted where the container sees ``/opt/ml/model`` (kept while it runs),
        then ``<image> serve``, healthy before this returns."""
        tmp = tempfile.mkdtemp(prefix=f"raymaker-model-{spec.name}-")
        model_dir = os.path.join(tmp, "model")
        os.makedirs(model_dir)
        try:
            if spec.model_data_url:
                _fetch_archive(spec.model_data_url, model_dir, tmp, settings, "ModelDataUrl")
            server = ContainerServer(
                spec.image, model_dir, env, name=f"raymaker-{spec.name}-{uuid.uuid4().hex[:8]}", owner=spec.name,
                cpus=spec.cpus or None, memory_mib=int(spec.memory_gb * 1024) or None,
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        weakref.finalize(self, _close_container, server, tmp)
        return server

    @property
    def healthy(self) -> bool:
        """False while a custom container is down (it is being started again)."""
        return self.container is None or self.container.healthy

    def execution_parameters(self) -> dict[str, Any] | None:
        """A custom container's ``GET /execution-parameters`` (batch transform), else None."""
        return self.container.execution_parameters() if self.container is not None else None

    def close(self) -> None:
        """Stop what the model runs (a custom container: SIGTERM, SIGKILL after 30 s)."""
        if self.container is not None:
            self.container.close()

    def accept_for(self, accept: str | None) -> str:
        """The Accept a batch transform sends with every request: a built-in algorithm's choice among
        the types it writes (NotAcceptable when none), a script's Accept as given (its output_fn
        decides), the default when none or ``*/*``."""
        if self.container is not None:  # the container decides what it writes
            return accept.strip() if accept and accept.strip() and accept.strip() != "*/*" else self.default_accept
        if self.script is None:
            return choose_accept(accept, self.default_accept)
        if not accept or not accept.strip() or accept.strip() == "*/*":
            return self.default_accept
        return accept.strip()

    def _load(self, url: str, settings: S3Settings | None) -> Any:
        if not url.endswith(".tar.gz"):
            raise ValueError(
                f"ModelDataUrl {url!r} must name a .tar.gz archive (a training job's model.tar.gz)"
            )
        tmp = tempfile.mkdtemp(prefix=f"raymaker-model-{self.spec.name}-")
        try:
            archive = os.path.join(tmp, "model.tar.gz")
            try:
                storage_for(url, settings).download(url, archive)
            except FileNotFoundError:
                raise FileNotFoundError(f"ModelDataUrl {url!r} does not exist") from None
            model_dir = os.path.join(tmp, "model")
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    tar.extractall(model_dir, filter="data")
            except (tarfile.TarError, OSError, EOFError) as e:
                raise ValueError(f"ModelDataUrl {url!r} is not a readable .tar.gz archive: {e}") from None
            try:
                return self.algorithm.load(model_dir)
            except Exception as e:
                raise ValueError(
                    f"ModelDataUrl {url!r} does not hold a {self.spec.algorithm} model the algorithm can load: "
                    f"{type(e).__name__}: {e}"
                ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def invoke(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None = None,
        target_variant: str | None = None,
    ) -> tuple[bytes, str]:
        """Request bytes in, response bytes and their content type out; bad input raises
        ``codecs.InvocationError`` subclasses (400/406/413/415). A ``ValueError`` from the algorithm's
        ``predict`` (e.g. "the model was trained on 30 features; the request has 29") is the request's
        to fix: a 400 whose message is the error's own. Any other exception is the server's and
        propagates (the replica answers 500 and keeps serving). A script model answers as
        ``handlers.ScriptModel.invoke`` says (its script's failures are 424 ModelErrors)."""
        if self.container is not None:  # its errors are 424 ModelErrors (serve.container)
            out, ct, _ = self.container.invoke(body, content_type, accept, custom_attributes, target_variant)
            return out, ct
        if self.script is not None:
            return self.script.invoke(body, content_type, accept)
        batch = decode_request(body, content_type, self.algorithm.inference_content_types)
        try:
            outputs = self.algorithm.predict(self.model, batch)
        except ValueError as e:  # XGBoostError included (a ValueError subclass)
            raise BadRequest(predict_error_message(e)) from None
        return encode_response(
            outputs,
            accept,
            default_accept=self.default_accept,
            envelope=self.algorithm.response_envelope,
        )


    async def ainvoke(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None = None,
        target_variant: str | None = None,
    ) -> tuple[bytes, str]:
        """``invoke`` for an event loop: a custom container is awaited, so the loop takes other requests
        meanwhile; a built-in's or a script's prediction runs here, as ``invoke``."""
        if self.container is not None:
            out, ct, _ = await self.container.ainvoke(body, content_type, accept, custom_attributes, target_variant)
            return out, ct
        return self.invoke(body, content_type, accept, custom_attributes, target_variant)


def _close_container(server: ContainerServer, tmp: str) -> None:
    server.close()
    shutil.rmtree(tmp, ignore_errors=True)


def _fetch_archive(url: str, dest: str, tmp: str, settings: S3Settings | None, field: str) -> None:
    """Download the ``.tar.gz`` at ``url`` and extract it into ``dest``; ValueError / FileNotFoundError
    name the field and say what is wrong."""
    archive = os.path.join(tmp, "download.tar.gz")
    try:
        storage_for(url, settings).download(url, archive)
    except FileNotFoundError:
        raise FileNotFoundError(f"{field} {url!r} does not exist") from None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"{field} {url!r} is not a readable .tar.gz archive: {e}") from None
    finally:
        os.remove(archive)


# XGBoost prefixes its checks with "[12:00:00] /path/to/learner.cc:1289: " (where in its C++ it failed).
_NATIVE_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\] [^\s:]+:\d+: ")
_MAX_MESSAGE = 1000


def predict_error_message(error: ValueError) -> str:
    """The message a client sees for a ``ValueError`` from ``predict``: the error's own message, cut at
    the first line (native libraries append stack traces the client cannot use) and without a native
    library's source-location prefix; its type name when it has no message."""
    first = (str(error).strip().splitlines() or [""])[0].strip()
    first = _NATIVE_PREFIX.sub("", first)
    if not first:
        return f"the model cannot score this request ({type(error).__name__})"
    return first if len(first) <= _MAX_MESSAGE else first[:_MAX_MESSAGE] + "..."
