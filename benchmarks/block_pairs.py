"""Blocks of two settings measured A B B A, and each block set against its neighbouring block of the
other setting: the p50 differences' median and range, so a run shows how much of its pooled difference
is the machine's drift (shared by ``invoke_auth.py`` and ``metrics_overhead.py``)."""

from __future__ import annotations

from collections.abc import Callable


def alternate(order: tuple[str, str], blocks: int, measure: Callable[[str], list[float]]) -> dict[str, list[list[float]]]:
    """``blocks`` blocks of each setting in ``order``, A B B A ... (each as often first as second):
    setting -> its blocks' measurements, in the order taken."""
    out: dict[str, list[list[float]]] = {name: [] for name in order}
    for b in range(blocks):
        for name in order if b % 2 == 0 else order[::-1]:
            out[name].append(measure(name))
    return out


def block_pairs(a_p50s: list[float], b_p50s: list[float]) -> str:
    """``"N pairs, p50 a - b: median +x ms, range -y to +z"`` for blocks measured in pairs, in order."""
    paired = sorted(a - b for a, b in zip(a_p50s, b_p50s, strict=True))
    return (
        f"{len(paired)} pairs, p50 difference: median {paired[len(paired) // 2]:+.3f} ms, "
        f"range {paired[0]:+.3f} to {paired[-1]:+.3f}"
    )
