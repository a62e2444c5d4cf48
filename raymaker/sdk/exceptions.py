"""The SDK's own exceptions, named as the SageMaker Python SDK's (``sagemaker.exceptions``). API errors
are not here: they are ``raymaker.protocol.errors.SageMakerError`` and its subclasses, as the engine
raises them."""

from __future__ import annotations


class UnexpectedStatusException(ValueError):
    """A job or endpoint ended in a status other than the ones waited for (as the SageMaker SDK raises
    it, a ``ValueError`` with ``allowed_statuses`` and ``actual_status``)."""

    def __init__(self, message: str, allowed_statuses: list[str], actual_status: str):
        super().__init__(message)
        self.allowed_statuses = allowed_statuses
        self.actual_status = actual_status
