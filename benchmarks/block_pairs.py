"""Each block of a benchmark against its neighbouring block of the other setting: the p50 differences'
median and range, so a run shows how much of its pooled difference is the machine's drift (shared by
``invoke_auth.py`` and ``metrics_overhead.py``)."""

from __future__ import annotations


def block_pairs(a_p50s: list[float], b_p50s: list[float]) -> str:
    """``"N pairs, p50 a - b: median +x ms, range -y to +z"`` for blocks measured in pairs, in order."""
    paired = sorted(a - b for a, b in zip(a_p50s, b_p50s, strict=True))
    return (
        f"{len(paired)} pairs, p50 difference: median {paired[len(paired) // 2]:+.3f} ms, "
        f"range {paired[0]:+.3f} to {paired[-1]:+.3f}"
    )
