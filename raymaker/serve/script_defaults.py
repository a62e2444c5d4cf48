"""Each framework's default handlers, as its SageMaker serving container has them (see ``handlers.py``
for which and why): what a script model uses for every handler function its module leaves out."""

from __future__ import annotations

import csv
import io
import json
import os
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
from raymaker.serve.script_contract import (
    CSV,
    ENCODABLE,
    JSON,
    LIBSVM,
    MAX_MESSAGE,
    NPY,
    NPZ,
    RECORDIO,
    TEXT_TYPES,
    ScriptLoadError,
    first_line,
)

# --- the default handlers of each framework ---------------------------------------------------------


def mime_of(content_type: str | None) -> str:
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


def encode_json(value: Any) -> str:
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
        mime = mime_of(part)
        if mime == "*/*":
            mime = mime_of(default_accept) if mime_of(default_accept) in ENCODABLE else JSON
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
        mime = mime_of(content_type)
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
                f"{type(e).__name__}: {clip(first_line(e), MAX_MESSAGE)}"
            ) from None

    def predict_fn(self, data: Any, model: Any) -> Any:
        return model.predict(data)

    def encode(self, prediction: Any, mime: str) -> Any:
        if mime == JSON:
            return encode_json(prediction)
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
                f"is saved with TorchScript (torch.jit.save), or define model_fn(model_dir) ({first_line(e)})"
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
            return encode_json(prediction)
        if mime == CSV:
            return _encode_csv_toolkit(prediction)
        return _encode_npy(prediction)


DEFAULTS: dict[str, type[FrameworkDefaults]] = {
    "pytorch": PyTorchDefaults,
    "sklearn": SklearnDefaults,
    "xgboost": XGBoostDefaults,
}
