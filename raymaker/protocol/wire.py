"""SageMaker's JSON 1.1 protocol, both directions, on botocore's own serializer and parser (the service
model is the schema; nothing hand-written): the server decodes requests and encodes responses and errors,
a remote client encodes requests and decodes responses exactly as boto3 does. botocore loads lazily."""

from __future__ import annotations

import binascii
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from raymaker.protocol import errors
from raymaker.protocol.service_model import operation_model, raymaker_operations, service_model

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "SageMaker"
_INTERNAL_MESSAGE = "The server encountered an internal error; see its log for details."


@functools.cache
def _operations() -> frozenset[str]:
    return frozenset(service_model().operation_names) | raymaker_operations()


def operation_from_target(target: str | None) -> str:
    """'SageMaker.DescribeTrainingJob' -> 'DescribeTrainingJob'; UnknownOperationException if missing,
    wrong prefix, or not an operation of SageMaker or raymaker's extension."""
    prefix, dot, operation = (target or "").partition(".")
    if prefix != TARGET_PREFIX or not dot or operation not in _operations():
        raise errors.UnknownOperationException(
            f"X-Amz-Target {target!r} names no operation of this service; "
            f"expected '{TARGET_PREFIX}.<Operation>', e.g. '{TARGET_PREFIX}.DescribeTrainingJob'"
        )
    return operation


def _model(operation: str) -> Any:
    if operation not in _operations():
        raise errors.UnknownOperationException(f"{operation!r} is no operation of this service")
    return operation_model(operation)


@functools.cache
def _codecs() -> tuple[Any, Any, Any, Any]:
    """(request parser, response serializer, client serializer, client parser). botocore's shape walkers
    run here in the direction its client never uses (parse an input shape; the serializer's own
    timestamp and blob conversions for an output shape, see ``_encoder``) through its private
    ``_parse_shape``/``_convert_timestamp_to_str``/``_get_base64``; botocore is pinned, and this is the
    one place."""
    from botocore.parsers import JSONParser, create_parser
    from botocore.serialize import TIMESTAMP_PRECISION_MILLISECOND, JSONSerializer, create_serializer

    class RequestParser(JSONParser):
        # Converts what fits the shape and passes the rest through unchanged (unknown keys included),
        # so the engine's validation names every problem, as it does for the in-process backend.
        def _parse_shape(self, shape: Any, node: Any) -> Any:
            kind = shape.type_name
            if kind in ("structure", "map") and not isinstance(node, dict):
                return node
            if kind == "list" and not isinstance(node, list):
                return node
            if kind == "timestamp":
                if isinstance(node, bool) or not isinstance(node, int | float | str):
                    return node
                try:
                    return self._timestamp_parser(node)
                except (ValueError, OverflowError, OSError):
                    return node
            if kind == "blob" and isinstance(node, str):
                try:
                    return binascii.a2b_base64(node, strict_mode=True)
                except binascii.Error:  # validation would accept the str; the engine wants bytes
                    raise errors.SerializationException(f"{shape.name} is not valid base64") from None
            return super()._parse_shape(shape, node)

        def _has_unknown_tagged_union_member(self, shape: Any, value: Any) -> bool:
            return False  # validation checks unions; botocore would rename an unknown member

        def _handle_structure(self, shape: Any, value: Any) -> Any:
            parsed = super()._handle_structure(shape, value)
            if not shape.is_document_type:
                known = {m.serialization.get("name", n) for n, m in shape.members.items()}
                parsed.update((k, v) for k, v in value.items() if k not in known)
            return parsed

    # SageMaker sends epoch seconds with milliseconds (1733140000.123); botocore's default sends whole
    # seconds or microseconds.
    response_serializer = JSONSerializer(timestamp_precision=TIMESTAMP_PRECISION_MILLISECOND)
    client_serializer = create_serializer("json", include_validation=False)
    return RequestParser(), response_serializer, client_serializer, create_parser("json")


def decode_request(operation: str, body: bytes) -> dict:
    """Server side: the request body -> the params as boto3 users pass them (timestamps -> datetime,
    blobs -> bytes). Types are not checked here: the engine's validation does it and names the problem."""
    shape = _model(operation).input_shape
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise errors.SerializationException(f"{operation} request body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise errors.SerializationException(
            f"{operation} request body must be a JSON object, not {type(value).__name__}"
        )
    if shape is None:
        return value
    try:
        return _codecs()[0]._parse_shape(shape, value)
    except RecursionError:
        raise errors.SerializationException(f"{operation} request body is nested too deeply") from None


def encode_response(operation: str, result: dict) -> bytes:
    """Server side: the engine's result -> JSON per the output shape (datetime -> epoch seconds with
    milliseconds, bytes -> base64; None members are omitted). A key the shape lacks raises ValueError."""
    shape = _model(operation).output_shape
    if shape is None:
        if result:
            raise ValueError(f"{operation} has no output, but the result has {sorted(result)}")
        return b"{}"
    return json.dumps(_encoder(shape)(result)).encode()


# Every answer goes through the output shape's encoder. botocore's serializer finds each member's method
# by name on every call (~0.2 ms for a DescribeTrainingJob, a tenth of the signed call); an encoder is
# built once per shape (botocore's shapes hash by identity) from the same model, and only timestamps and
# blobs call into botocore.
@functools.cache
def _encoder(shape: Any) -> Callable[[Any], Any] | None:
    """The function turning a value of ``shape`` into its JSON form, as botocore's JSONSerializer would
    write it; None where the value is its own JSON form (strings, numbers, lists and maps of them)."""
    return _build_encoder(shape)


def _build_encoder(shape: Any) -> Callable[[Any], Any] | None:
    kind = shape.type_name
    if kind == "structure":
        return None if shape.is_document_type else _StructureEncoder(shape)
    if kind == "list":
        item = _encoder(shape.member)
        return None if item is None else (lambda value: [item(v) for v in value])
    if kind == "map":
        item = _encoder(shape.value)
        return None if item is None else (lambda value: {k: item(v) for k, v in value.items()})
    serializer = _codecs()[1]
    if kind == "timestamp":
        form = shape.serialization.get("timestampFormat")
        return lambda value: serializer._convert_timestamp_to_str(value, form)
    if kind == "blob":
        return serializer._get_base64
    return None


class _StructureEncoder:
    """A structure's members by name, each with its wire name and encoder, read from the model at first
    use (SageMaker's shapes nest recursively). None members are left out, as SageMaker omits them; a
    member the shape lacks is a server bug that boto3 would silently drop, so it raises."""

    __slots__ = ("members", "shape")

    def __init__(self, shape: Any):
        self.shape, self.members = shape, None

    def __call__(self, value: dict) -> dict:
        members = self.members
        if members is None:
            members = self.members = {
                name: (member.serialization.get("name", name), _encoder(member))
                for name, member in self.shape.members.items()
            }
        out = {}
        for key, item in value.items():
            if item is None:
                continue
            found = members.get(key)
            if found is None:
                unknown = sorted(k for k, v in value.items() if v is not None and k not in members)
                raise ValueError(f"{self.shape.name} has no member(s) {unknown}")
            name, encode = found
            out[name] = item if encode is None else encode(item)
        return out


def encode_error(error: BaseException) -> tuple[int, bytes, dict[str, str]]:
    """Server side: (HTTP status, body, headers). Anything but a SageMakerError is a 500 InternalFailure
    whose message leaks nothing (the caller logs the exception itself)."""
    if not isinstance(error, errors.SageMakerError):
        error = errors.SageMakerError(_INTERNAL_MESSAGE, code="InternalFailure", http_status=500)
    headers = {"Content-Type": CONTENT_TYPE, "x-amzn-ErrorType": error.code}
    return error.http_status, json.dumps(error.to_wire()).encode(), headers


def encode_request(operation: str, params: dict) -> tuple[dict[str, str], bytes]:
    """Client side: (headers with X-Amz-Target and Content-Type, body), as boto3 sends them. Params boto3
    would refuse raise ValidationError with the message the engine's validation gives."""
    from botocore.validate import ParamValidator

    model = _model(operation)
    if model.input_shape is not None:
        report = ParamValidator().validate(params, model.input_shape)
        if report.has_errors():
            raise errors.ValidationError(f"{operation} request is invalid: {report.generate_report()}")
    request = _codecs()[2].serialize_to_request(params, model)
    return dict(request["headers"]), request["body"]


def decode_response(operation: str, status: int, headers: Mapping[str, str], body: bytes) -> dict:
    """Client side: a 2xx body parsed as boto3 parses it (without ResponseMetadata); otherwise raises the
    SageMakerError subclass for the error's code, with its message."""
    if 200 <= status < 300:
        parsed = _codecs()[3].parse(
            {"body": body, "headers": {}, "status_code": status}, _model(operation).output_shape
        )
        parsed.pop("ResponseMetadata", None)
        return parsed
    try:
        wire = json.loads(body) if body.strip() else {}
    except ValueError:
        wire = None
    if not isinstance(wire, dict):  # e.g. a proxy's HTML page
        wire = {"message": f"HTTP {status}: {body[:200].decode(errors='replace')}"}
    if "__type" not in wire:
        header = next((v for k, v in headers.items() if k.lower() == "x-amzn-errortype"), None)
        if header:
            wire["__type"] = header.partition(":")[0]  # 'Code:http://internal.amazon.com/...' form
    if not (wire.get("message") or wire.get("Message")):
        wire["message"] = f"HTTP {status}"
    raise errors.error_from_wire(wire, status)
