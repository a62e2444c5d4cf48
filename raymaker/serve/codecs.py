"""Request decoding and response encoding for hosted built-in algorithms (``POST /invocations``).

``decode_request`` turns an InvokeEndpoint body into a ``Batch`` using the training-side format readers
(``raymaker.io.formats``), with the inference defaults SageMaker documents: CSV carries no label column
(``label_size=0`` unless the content type says otherwise). ``encode_response`` turns an algorithm's
``predict`` outputs into the body SageMaker's built-ins answer with: ``{"predictions": [{...}, ...]}``
for JSON, one object per line for JSON lines, one line per row for CSV, and one ``Record`` per row with
the outputs in its ``label`` map for RecordIO-protobuf (contract §1.3, §3.3).

Client mistakes raise an ``InvocationError`` subclass carrying the HTTP status and the
``x-amzn-ErrorType`` value, so the HTTP layer maps them without knowing the formats: 415 for a content
type the algorithm does not take, 400 for a body that does not parse (the message names the line or
record), 406 for an Accept we cannot produce, 413 for a body over InvokeEndpoint's 6 MB limit.
``decode_request`` raises nothing else for any body: what the format readers throw on hostile input
(JSON nested past the recursion limit, integers too large for C, bytes that are not UTF-8) becomes a
400 whose message says what to change. Those checks run only once a reader has failed, so they cost
nothing on the fast path.

Latency matters for one-row requests: pyarrow's CSV reader costs ~0.5 ms per call, so small plain
numeric CSV bodies are parsed with ``bytes.split`` + NumPy instead; anything unusual (quotes, blanks,
``nan``, a bad cell) goes to the pyarrow reader, which also produces the error messages.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raymaker.io.batch import Batch, DataFormatError
from raymaker.io.formats import csv as csv_format
from raymaker.io.formats import get_format, parse_content_type
from raymaker.io.record_pb import Record
from raymaker.io.recordio import write_records
from raymaker.io.recordio.columns import _record_layout
from raymaker.io.recordio.framing import _frame_bytes

__all__ = [
    "JSON",
    "JSONLINES",
    "CSV",
    "MAX_PAYLOAD_BYTES",
    "RECORDIO",
    "RESPONSE_CONTENT_TYPES",
    "BadRequest",
    "InvocationError",
    "NotAcceptable",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "choose_accept",
    "clip",
    "decode_request",
    "encode_records",
    "encode_response",
]

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's Body limit (BOTO-RT: 6,291,456 bytes)

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
RECORDIO = "application/x-recordio-protobuf"
RESPONSE_CONTENT_TYPES: tuple[str, ...] = (JSON, JSONLINES, CSV, RECORDIO)


# --- errors ---------------------------------------------------------------------------------------


class InvocationError(Exception):
    """A request the endpoint cannot serve; ``status`` is the HTTP status, ``error_type`` the value for
    the ``x-amzn-ErrorType`` header (botocore reports it as the ClientError code).

    Subclasses fix status and type: ``BadRequest("...")``. The base class also takes them explicitly,
    for errors outside the codecs: ``InvocationError(400, "ValidationError", "...")``."""

    status: int = 400
    error_type: str = "ValidationError"

    def __init__(
        self, message_or_status: str | int, error_type: str | None = None, message: str | None = None
    ):
        if isinstance(message_or_status, int):
            if error_type is None or message is None:
                raise TypeError("InvocationError(status, error_type, message) needs all three")
            self.status = message_or_status
            self.error_type = error_type
        else:
            message = message_or_status
        super().__init__(message)
        self.message = message


class UnsupportedMediaType(InvocationError):
    """The request's Content-Type is not one the algorithm takes (HTTP 415)."""

    status = 415
    error_type = "UnsupportedMediaType"


class BadRequest(InvocationError):
    """The body does not parse as its Content-Type; the message names the line or record (HTTP 400)."""

    status = 400
    error_type = "ValidationError"


class NotAcceptable(InvocationError):
    """The Accept header names no response format we can produce (HTTP 406)."""

    status = 406
    error_type = "NotAcceptable"


class PayloadTooLarge(InvocationError):
    """The body exceeds InvokeEndpoint's 6 MB limit (HTTP 413). SageMaker's runtime reports an oversized
    body as a ValidationError, so that is the error type a client sees."""

    status = 413
    error_type = "ValidationError"


# --- requests -------------------------------------------------------------------------------------

# Small bodies made only of these bytes are parsed without pyarrow. Anything else (spaces, quotes,
# '\r', "nan"/"inf", or '_', which Python's float() takes as a digit separator) goes to the pyarrow
# reader, so that the fast path never accepts what the full reader would reject.
_FAST_CSV_BYTES = b"0123456789.eE+-,\n"
_FAST_CSV_MAX = 16 * 1024  # above this pyarrow's parser is faster than splitting in Python


def decode_request(
    body: bytes | bytearray | memoryview, content_type: str | None, accepted: Sequence[str]
) -> Batch:
    """Decode an InvokeEndpoint body into a ``Batch`` (features, and labels if the format carries them).

    ``accepted`` is the algorithm's ``inference_content_types``. A missing Content-Type means
    ``application/json`` when the algorithm takes JSON, else the first of ``accepted`` (a choice:
    SageMaker leaves the default to the container). ``text/csv`` defaults to ``label_size=0`` (no label column at
    inference); a ``label_size`` parameter overrides it.

    Raises PayloadTooLarge (413), UnsupportedMediaType (415), or BadRequest (400: empty body, no
    records, or a parse error whose message names the line/record).
    """
    size = body.nbytes if isinstance(body, memoryview) else len(body)
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"request body is {size} bytes; InvokeEndpoint accepts at most {MAX_PAYLOAD_BYTES} bytes (6 MB)"
        )
    accepted_lower = [a.lower() for a in accepted]
    if not content_type or not content_type.strip():
        if not accepted_lower:
            raise UnsupportedMediaType("the request has no Content-Type and the algorithm accepts none")
        content_type = JSON if JSON in accepted_lower else accepted_lower[0]
    try:
        ct = parse_content_type(content_type)
    except ValueError:
        raise UnsupportedMediaType(
            f"malformed Content-Type {clip(content_type)!r}: parameters must be key=value, "
            "as in 'text/csv; label_size=0'"
        ) from None
    if ct.mime not in accepted_lower:
        raise UnsupportedMediaType(
            f"content type {clip(ct.mime)!r} is not supported by this algorithm; "
            f"supported: {', '.join(accepted) or 'none'}"
        )
    if size == 0:
        raise BadRequest(f"empty request body: send at least one record as {ct.mime}")
    data = bytes(body) if not isinstance(body, bytes) else body
    if ct.mime in _JSON_TYPES and _NULL_FIRST.match(data):
        # pyarrow 26's JSON reader, which the JSON-lines decoder tries first, segfaults (taking the
        # replica with it) when the first value is null; such a body holds no instance anyway.
        line = data.count(b"\n", 0, data.index(b"null")) + 1
        raise BadRequest(
            f"could not decode the {ct.mime} request body: line {line}: expected an instance such as "
            '{"features": [1.5, 2.0]} or [1.5, 2.0], got null'
        )
    try:
        if ct.mime == CSV:
            batch = _decode_csv(data, dict(ct.params))
        else:
            try:
                fmt, params = get_format(content_type)
            except ValueError as exc:  # accepted by the algorithm but no reader registered
                raise UnsupportedMediaType(str(exc)) from None
            batch = fmt.read(data, **params)
    # Everything a reader may throw on hostile bytes (DataFormatError is a ValueError; pyarrow's
    # errors subclass ValueError, TypeError, IndexError or NotImplementedError): the body's fault.
    # MemoryError and OSError stay server errors.
    except _READER_ERRORS as exc:
        raise BadRequest(
            f"could not decode the {ct.mime} request body: {_describe(exc, ct.mime, data)}"
        ) from None
    if len(batch) == 0:
        raise BadRequest(f"the {ct.mime} request body holds no records")
    return batch


_JSON_TYPES = frozenset((JSON, JSONLINES))
_NULL_FIRST = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\n\r]*null")  # after an optional BOM and blanks
_READER_ERRORS = (ValueError, TypeError, LookupError, ArithmeticError, RecursionError, NotImplementedError)
_TEXT_TYPES = frozenset((CSV, JSON, JSONLINES, "text/libsvm", "text/x-libsvm"))
_MAX_MESSAGE = 1000  # characters of a reader's message we pass on (a bad cell may be megabytes)


def clip(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters (with a note of the full length), for echoing
    client-supplied values such as headers in error messages."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def _describe(exc: Exception, mime: str, data: bytes) -> str:
    """The message for a body a reader rejected (only runs on that error path)."""
    if mime in _TEXT_TYPES:
        # Text that is not UTF-8 is the root cause whatever the reader tripped over next (pyarrow
        # shows such bytes as U+FFFD, libsvm fails in a codec): say so, and where.
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            line = data.count(b"\n", 0, bad.start) + 1
            return (
                f"line {line}: byte 0x{data[bad.start]:02x} at offset {bad.start} is not UTF-8 "
                f"({bad.reason}); {mime} bodies must be UTF-8 text"
            )
    if isinstance(exc, RecursionError):
        return (
            "arrays or objects are nested too deeply to parse; send instances as flat lists of numbers, "
            'e.g. {"instances": [{"features": [1.5, 2.0]}]}'
        )
    if isinstance(exc, OverflowError):
        return f"a number is too large ({exc}); indices, shapes and keys must fit in 64 bits"
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    if "integer string conversion" in text:  # CPython's 4300-digit guard; its advice is for servers
        return "a number has more than 4300 digits; send numbers of ordinary size"
    # Decoders name bytes sources "<bytes>"; the client knows which body it sent.
    if isinstance(exc, DataFormatError) and exc.source == "<bytes>":
        text = text.removeprefix("<bytes>: ")
    return clip(text, _MAX_MESSAGE)


def _decode_csv(data: bytes, params: dict[str, str]) -> Batch:
    params.setdefault("label_size", "0")  # inference CSV has no label column (contract §3.3)
    label_size = params["label_size"].strip()
    if (
        len(data) <= _FAST_CSV_MAX
        and label_size in ("0", "1")
        and set(params) <= {"label_size", "charset"}
        and not data.translate(None, _FAST_CSV_BYTES)
    ):
        batch = _fast_csv(data, int(label_size))
        if batch is not None:
            return batch
    # pyarrow (as of 26) cannot infer columns from one unterminated line: terminate it.
    if not data.endswith(b"\n"):
        data += b"\n"
    return csv_format.read(data, **params)


def _fast_csv(data: bytes, label_size: int) -> Batch | None:
    """Plain numeric CSV (no blanks, quotes, CR or NaN spellings) parsed with ``bytes.split``; None when
    the input needs the full reader (which then parses it, or names the offending line)."""
    text = data.rstrip(b"\n")
    if not text or b"\n\n" in text or text.startswith(b"\n"):
        return None  # blank lines: the full reader skips them and keeps line numbers right
    lines = text.split(b"\n")
    commas = lines[0].count(b",")
    if len(lines) > 1 and any(line.count(b",") != commas for line in lines):
        return None  # ragged rows: an error the full reader reports with the line number
    try:
        values = np.array(text.replace(b"\n", b",").split(b","), dtype=np.float32)
    except ValueError:
        return None  # an empty cell (NaN for the full reader) or a malformed number
    values = values.reshape(len(lines), commas + 1)
    if label_size:
        return Batch(values[:, 1:], values[:, 0].copy())
    return Batch(values)


# --- responses ------------------------------------------------------------------------------------


def choose_accept(accept: str | None, default_accept: str) -> str:
    """The response content type for an Accept header: missing, empty or ``*/*`` gives
    ``default_accept``; a list (``text/csv;q=0.5, application/json``) gives the most preferred type we
    produce; ``type/*`` prefers ``default_accept`` if it matches. Parameters (e.g. ``verbose=True``)
    are ignored. NotAcceptable when none of the listed types can be produced."""
    if not accept or not accept.strip():
        return default_accept
    choices: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept.split(",")):
        mime, _, rest = part.partition(";")
        mime = mime.strip().lower()
        q = 1.0
        for param in rest.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if mime and q > 0:
            choices.append((-q, i, mime))
    for _, _, mime in sorted(choices):
        if mime == "*/*":
            return default_accept
        if mime.endswith("/*"):
            prefix = mime[:-1]
            if default_accept.startswith(prefix):
                return default_accept
            match = next((t for t in RESPONSE_CONTENT_TYPES if t.startswith(prefix)), None)
            if match:
                return match
        elif mime in RESPONSE_CONTENT_TYPES:
            return mime
    raise NotAcceptable(
        f"cannot produce any of the types in Accept {clip(accept)!r}; "
        f"supported: {', '.join(RESPONSE_CONTENT_TYPES)}"
    )


def encode_response(
    outputs: Mapping[str, np.ndarray],
    accept: str | None,
    *,
    default_accept: str,
    envelope: str = "predictions",
) -> tuple[bytes, str]:
    """Encode ``predict`` outputs (name -> array with one entry or row per input row) for ``accept``.

    Returns (body, content type). ``accept`` missing, empty or ``*/*`` means ``default_accept``.
    JSON: ``{envelope: [{name: value, ...} per row]}``; JSON lines: one such object per line; CSV: one
    line per row holding the ``score`` (comma-joined for a 2-D score) or, without a score, every output
    flattened and comma-joined in dict order; RecordIO-protobuf: see ``encode_records``. Float32 values
    are written as their shortest round-tripping decimal (0.87, not 0.8700000047683716).
    Raises NotAcceptable (406) for an Accept we cannot produce.
    """
    if default_accept.lower() not in RESPONSE_CONTENT_TYPES:
        raise ValueError(
            f"default_accept {default_accept!r} is not one of {', '.join(RESPONSE_CONTENT_TYPES)}"
        )
    content_type = choose_accept(accept, default_accept.lower())
    names, arrays, n = _columns(outputs)
    if content_type == JSON:
        rows = _json_rows(names, arrays)
        return json.dumps({envelope: rows}).encode(), JSON
    if content_type == JSONLINES:
        text = "".join(json.dumps(row) + "\n" for row in _json_rows(names, arrays))
        return text.encode(), JSONLINES
    if content_type == CSV:
        return _csv_body(names, arrays, n), CSV
    return encode_records(dict(zip(names, arrays))), RECORDIO


def _columns(outputs: Mapping[str, Any]) -> tuple[list[str], list[np.ndarray], int]:
    """Output names and arrays, checked to have one entry per row; booleans become 0/1."""
    if not outputs:
        raise ValueError("predict returned no outputs")
    names = list(outputs)
    arrays = []
    for name in names:
        arr = np.asarray(outputs[name])
        if arr.ndim == 0:
            raise ValueError(f"output {name!r} is a scalar; expected one entry per input row")
        if arr.dtype == np.bool_:
            arr = arr.astype(np.int64)
        arrays.append(arr)
    n = arrays[0].shape[0]
    for name, arr in zip(names, arrays):
        if arr.shape[0] != n:
            raise ValueError(f"output {name!r} has {arr.shape[0]} rows, {names[0]!r} has {n}")
    return names, arrays, n


def _plain(arr: np.ndarray) -> list:
    """Python numbers for JSON. Narrow floats go through their shortest decimal string so JSON shows
    0.87 rather than the float32 value's exact double expansion (it still parses back to the same
    float32); NumPy does this vectorised."""
    if arr.dtype.kind == "f" and arr.dtype.itemsize < 8:
        arr = arr.astype(str).astype(np.float64)
    return arr.tolist()


def _json_rows(names: list[str], arrays: list[np.ndarray]) -> list[dict[str, Any]]:
    if len(names) == 1:
        name = names[0]
        return [{name: v} for v in _plain(arrays[0])]
    columns = [_plain(a) for a in arrays]
    return [dict(zip(names, values)) for values in zip(*columns)]


def _csv_body(names: list[str], arrays: list[np.ndarray], n: int) -> bytes:
    if n == 0:
        return b""
    # The score alone when there is one (what SageMaker's CSV responses hold), else every output.
    columns = [arrays[names.index("score")]] if "score" in names else arrays
    # astype(str) gives the shortest round-tripping decimal per dtype (float32 0.87 -> "0.87").
    if len(columns) == 1 and columns[0].ndim == 1:
        return ("\n".join(columns[0].astype(str).tolist()) + "\n").encode()
    cells = np.concatenate([c.reshape(n, -1).astype(str) for c in columns], axis=1)
    return ("\n".join(",".join(row) for row in cells.tolist()) + "\n").encode()


_TEMPLATE_MIN_ROWS = 32  # below this, building each Record with protobuf is as fast as the template


def encode_records(outputs: Mapping[str, np.ndarray]) -> bytes:
    """RecordIO-protobuf response: one ``Record`` per row whose ``label`` map holds every output as a
    float32 tensor (the row's value, or values for a 2-D output) and whose ``features`` map is empty,
    as SageMaker's built-ins and the XGBoost container answer. Framed as ``raymaker.io.recordio``
    (and the SageMaker SDK) write: cflag 0, padded to 4 bytes."""
    names, arrays, n = _columns(outputs)
    if n == 0:
        return b""
    mats = [np.ascontiguousarray(a.reshape(n, -1), dtype=np.float32) for a in arrays]
    if n >= _TEMPLATE_MIN_ROWS and all(m.shape[1] for m in mats):
        body = _records_from_template(names, mats, n)
        if body is not None:
            return body
    buf = io.BytesIO()
    write_records(buf, [_record(names, mats, i) for i in range(n)])
    return buf.getvalue()


def _record(names: list[str], mats: list[np.ndarray], i: int) -> Any:
    record = Record()
    for name, mat in zip(names, mats):
        record.label[name].float32_tensor.values.extend(mat[i].tolist())
    return record


def _records_from_template(names: list[str], mats: list[np.ndarray], n: int) -> bytes | None:
    """Every row's record has the same bytes around its values (fixed-width float32), so serialize
    row 0 with protobuf and paste all rows' value bytes into copies of it; None if the layout is not
    the expected one (the caller then serializes row by row)."""
    payload = _record(names, mats, 0).SerializeToString()
    template = np.frombuffer(_frame_bytes(payload), np.uint8)
    layout = _record_layout(template, len(payload))
    if layout is None:
        return None
    spans = {
        key: spans[0]
        for map_name, key, tensor, spans in layout.columns
        if map_name == "label" and tensor == 2
    }
    by_name = dict(zip(names, mats))
    if len(layout.columns) != len(names) or set(spans) != set(names):
        return None
    out = np.empty((n, template.size), np.uint8)
    out[:] = template
    for name, (start, nbytes) in spans.items():
        mat = by_name[name]
        if nbytes != mat.shape[1] * 4:
            return None
        out[:, start : start + nbytes] = mat.astype("<f4", copy=False).view(np.uint8).reshape(n, -1)
    return out.tobytes()
