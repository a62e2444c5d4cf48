"""SageMaker-shaped errors. The JSON 1.1 protocol sends them as ``{"__type": code, "message": ...}``
with an HTTP status, and boto3 raises ``ClientError`` with ``Error.Code == code``; the in-process
backend raises these classes directly, so both backends report the same codes and messages."""

from __future__ import annotations

from typing import Any


class SageMakerError(Exception):
    """An API error with SageMaker's error code and HTTP status."""

    code: str = "InternalFailure"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status

    def to_wire(self) -> dict[str, Any]:
        """The JSON 1.1 error body."""
        return {"__type": self.code, "message": self.message}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}: {self.message!r})"


class ValidationError(SageMakerError, ValueError):
    """The request is malformed or breaks a rule; the message says what to change."""

    code = "ValidationException"
    http_status = 400


class ResourceInUse(SageMakerError):
    """A resource with this name already exists (names are unique per account and region)."""

    code = "ResourceInUse"
    http_status = 400


class ResourceNotFound(SageMakerError):
    """No resource has this name."""

    code = "ResourceNotFound"
    http_status = 400


class ResourceLimitExceeded(SageMakerError):
    """A quota (concurrent jobs, instances) would be exceeded."""

    code = "ResourceLimitExceeded"
    http_status = 400


class ConflictException(SageMakerError):
    """The resource changed under the request (e.g. a compare-and-set on its status lost the race)."""

    code = "ConflictException"
    http_status = 400


# --- the wire and the caller: what AWS's JSON services answer before an operation runs -----------


class SerializationException(SageMakerError):
    """The request body is not the JSON the operation's input shape describes."""

    code = "SerializationException"
    http_status = 400


class UnknownOperationException(SageMakerError):
    """``X-Amz-Target`` names no operation this service has."""

    code = "UnknownOperationException"
    http_status = 400


class MissingAuthenticationToken(SageMakerError):
    """The request carries no AWS signature."""

    code = "MissingAuthenticationTokenException"
    http_status = 403


class IncompleteSignature(SageMakerError):
    """The Authorization header or X-Amz-Date is malformed (a part is missing or unreadable)."""

    code = "IncompleteSignatureException"
    http_status = 403


class InvalidSignature(SageMakerError):
    """The signature does not match the request, it has expired (clock skew), or it was already used."""

    code = "InvalidSignatureException"
    http_status = 403


class UnrecognizedClient(SageMakerError):
    """The access key is unknown (never issued, deleted, or rotated away)."""

    code = "UnrecognizedClientException"
    http_status = 403


class AccessDenied(SageMakerError):
    """The caller's policies do not allow the action on the resource (or an explicit Deny forbids it)."""

    code = "AccessDeniedException"
    http_status = 400


_BY_CODE: dict[str, type[SageMakerError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        ResourceInUse,
        ResourceNotFound,
        ResourceLimitExceeded,
        ConflictException,
        SerializationException,
        UnknownOperationException,
        MissingAuthenticationToken,
        IncompleteSignature,
        InvalidSignature,
        UnrecognizedClient,
        AccessDenied,
    )
}


def error_from_wire(body: dict[str, Any], http_status: int | None = None) -> SageMakerError:
    """The error class for a JSON 1.1 error body (``__type`` may carry a ``prefix#`` namespace)."""
    code = str(body.get("__type", "InternalFailure")).rpartition("#")[2]
    message = str(body.get("message") or body.get("Message") or "")
    cls = _BY_CODE.get(code, SageMakerError)
    return cls(message, code=code, http_status=http_status)
