"""One way to turn an exception into the FailureReason a user reads: the innermost error that names the
user's problem, not Ray's wrapping of it, on one line, within SageMaker's 1024 characters."""

from __future__ import annotations

MAX_REASON = 1024  # FailureReason's maximum length in SageMaker's model


def failure_reason(
    exc: BaseException, *, prefix: str = "", plain: tuple[type[BaseException], ...] = ()
) -> str:
    """The most useful line of a failure. Walks the chain (``cause`` as Ray's task errors carry it,
    ``__cause__``, ``__context__``) to the innermost exception and takes the last non-empty line of its
    message, which is where Python and Ray put the error itself, as ``Type: message``. Exceptions of a
    ``plain`` type already speak to the user: their message stands alone. An exception carrying a
    ``failure_reason`` string (a failed script's) gives that, whole."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    inner = exc
    while isinstance(cur, BaseException) and id(cur) not in seen:
        seen.add(id(cur))
        inner = cur
        if isinstance(cur, plain):
            break
        cur = getattr(cur, "cause", None) or cur.__cause__ or cur.__context__
    own = getattr(inner, "failure_reason", None)
    if isinstance(own, str) and own.strip():  # e.g. a script's /opt/ml/output/failure, verbatim
        return f"{prefix}{own.strip()}"[:MAX_REASON]
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    name = type(inner).__name__
    if not lines:
        line = name
    elif isinstance(inner, plain) or lines[-1].startswith(name):
        line = lines[-1]
    else:
        line = f"{name}: {lines[-1]}"
    return f"{prefix}{line}"[:MAX_REASON]
