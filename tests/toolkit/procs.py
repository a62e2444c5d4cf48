"""Whether a process is still running, for the toolkit's process tests."""

from __future__ import annotations

import time


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper is dead as far as a job is concerned)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # gone, even while being read
        return False


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False
