"""A hosted model: a built-in algorithm's ``model.tar.gz`` loaded once, answering requests in
SageMaker's formats. Endpoint replicas and batch-transform actors both use this class, so an endpoint
and a transform job give the same bytes for the same records."""

from __future__ import annotations

import os
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
        ``codecs.InvocationError`` subclasses (400/406/413/415)."""
        batch = decode_request(body, content_type, self.algorithm.inference_content_types)
        try:
            outputs = self.algorithm.predict(self.model, batch)
        except ValueError as e:  # e.g. the wrong number of features: the request's to fix (400)
            # First line only: native libraries append stack traces the caller cannot use.
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise BadRequest(f"the model cannot score this request: {first}") from None
        return encode_response(
            outputs,
            accept,
            default_accept=self.default_accept,
            envelope=self.algorithm.response_envelope,
        )
