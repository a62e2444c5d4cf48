"""A hosted model: a built-in algorithm's ``model.tar.gz`` loaded once, answering requests in
SageMaker's formats. Endpoint replicas and batch-transform actors both use this class, so an endpoint
and a transform job give the same bytes for the same records."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Any

from raymaker.algorithms import Algorithm, get_algorithm
from raymaker.io.storage import S3Settings, storage_for
from raymaker.serve.codecs import BadRequest, decode_request, encode_response


@dataclass(frozen=True)
class ModelSpec:
    """What a replica needs to load a model: plain values, so it pickles into any Ray process."""

    name: str
    algorithm: str
    model_data_url: str
    environment: tuple[tuple[str, str], ...] = ()


class LoadedModel:
    def __init__(self, spec: ModelSpec, settings: S3Settings | None = None):
        self.spec = spec
        self.algorithm: Algorithm = get_algorithm(spec.algorithm)()
        env = dict(spec.environment)
        # The SageMaker containers' knob for the Accept used when a request names none.
        self.default_accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or self.algorithm.default_accept
        self.model = self._load(spec.model_data_url, settings)

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

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        """Request bytes in, response bytes and their content type out; bad input raises
        ``codecs.InvocationError`` subclasses (400/406/413/415). A ``ValueError`` from the algorithm's
        ``predict`` (e.g. "the model was trained on 30 features; the request has 29") is the request's
        to fix: a 400 whose message is the error's own. Any other exception is the server's and
        propagates (the replica answers 500 and keeps serving)."""
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
