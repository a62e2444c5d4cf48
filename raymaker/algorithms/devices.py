"""Where a built-in algorithm trains: the GPU its worker was given, else the CPU (SageMaker's rule: an
algorithm uses the GPU when its instance type has one).

The engine puts the GPUs Ray assigned to a worker on its ``TrainContext`` as ``gpus`` (what
``ray.get_gpu_ids()`` answers inside the worker; empty on a CPU instance type). ``choose_devices``
turns them into device names: Ray's ids are node-wide, while CUDA inside the worker numbers only the
devices in ``CUDA_VISIBLE_DEVICES`` (which Ray sets to the assigned ones), so an id is looked up there,
as ``ray.train.torch.get_device`` does. One worker uses one GPU, the first, as SageMaker's own
containers do outside their Dask mode.

Deciding imports nothing when no GPU was assigned, and never imports Ray or xgboost: with GPUs it asks
torch (or the probe it is given) whether CUDA is usable, and fails with ``DeviceError`` if not, instead
of training on the CPU of a GPU instance type unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


class DeviceError(RuntimeError):
    """The worker was given GPUs it cannot use (no CUDA driver, a CPU-only torch build, ...)."""


# A probe answers (CUDA devices this process can use, what was asked, for the error message).
CudaProbe = Callable[[], tuple[int, str]]


@dataclass(frozen=True)
class Devices:
    """The devices one worker trains on. ``gpus``: CUDA ordinals as this process numbers them."""

    gpus: tuple[int, ...] = ()

    @property
    def cuda(self) -> bool:
        return bool(self.gpus)

    @property
    def torch(self) -> str:
        """A torch device string: "cuda:N" or "cpu"."""
        return f"cuda:{self.gpus[0]}" if self.gpus else "cpu"

    @property
    def xgboost(self) -> str:
        """xgboost's ``device`` parameter (xgboost >= 2): "cuda:N" or "cpu"."""
        return f"cuda:{self.gpus[0]}" if self.gpus else "cpu"


CPU = Devices()


def torch_cuda_probe() -> tuple[int, str]:
    """How many CUDA devices torch can use here (imports torch)."""
    try:
        import torch
    except ImportError:
        return 0, "torch is not installed"
    build = f"torch {torch.__version__}, " + (
        f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    )
    if not torch.cuda.is_available():
        return 0, f"torch.cuda.is_available() is False ({build})"
    count = torch.cuda.device_count()
    return count, f"torch sees {count} CUDA device(s) ({build})"


def choose_devices(
    gpus: Iterable[int | str] = (),
    *,
    probe: CudaProbe | None = None,
    visible_devices: str | None = None,
) -> Devices:
    """The devices for a worker that was assigned ``gpus`` (Ray's GPU ids; empty: none).

    ``visible_devices`` is ``CUDA_VISIBLE_DEVICES`` (read from the environment when None); ``probe``
    says how many CUDA devices are usable (default: torch's answer). DeviceError when GPUs were
    assigned but CUDA cannot reach them."""
    ids = [str(g).strip() for g in gpus]
    if not ids:
        return CPU
    if visible_devices is None:
        visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    ordinals = _ordinals(ids, visible_devices)
    usable, detail = (probe or torch_cuda_probe)()
    if usable <= 0:
        raise DeviceError(
            f"the instance type has {len(ids)} GPU(s) (assigned GPU ids {', '.join(ids)}) but this node "
            f"has no usable CUDA: {detail}; install the NVIDIA driver and a CUDA build of the framework "
            "on the node, or choose an instance type without GPUs"
        )
    if max(ordinals) >= usable:
        raise DeviceError(
            f"the instance type has {len(ids)} GPU(s) but CUDA device {max(ordinals)} is not usable on "
            f"this node: {detail} (CUDA_VISIBLE_DEVICES={visible_devices!r}, GPU ids {', '.join(ids)})"
        )
    return Devices(tuple(ordinals))


def _ordinals(ids: list[str], visible: str | None) -> list[int]:
    """CUDA ordinals of Ray's GPU ids: their places in CUDA_VISIBLE_DEVICES, or the ids themselves
    when it is unset (then CUDA sees every device, numbered as Ray numbers them)."""
    if visible is None:
        try:
            return [int(i) for i in ids]
        except ValueError:
            raise DeviceError(
                f"GPU ids {', '.join(ids)} are not device numbers and CUDA_VISIBLE_DEVICES is not set"
            ) from None
    listed = [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "NoDevFiles"]
    missing = [i for i in ids if i not in listed]
    if missing:
        raise DeviceError(
            f"GPU id(s) {', '.join(missing)} assigned to this worker are not in "
            f"CUDA_VISIBLE_DEVICES={visible!r}: something changed CUDA_VISIBLE_DEVICES after Ray set it"
        )
    return [listed.index(i) for i in ids]


def context_devices(ctx: Any, *, probe: CudaProbe | None = None) -> Devices:
    """``choose_devices`` for the GPUs a TrainContext carries (``ctx.gpus``; none if it has no such
    field)."""
    return choose_devices(getattr(ctx, "gpus", ()) or (), probe=probe)


def log_devices(ctx: Any, algorithm: str, devices: Devices) -> None:
    """Say on rank 0's log which GPU training runs on (and that further GPUs of the worker stay
    idle); nothing for the CPU."""
    if not devices.cuda or getattr(ctx, "rank", 0) != 0:
        return
    idle = len(devices.gpus) - 1
    note = f"; {idle} more GPU(s) of the instance stay idle (one GPU per instance)" if idle else ""
    ctx.log(f"{algorithm}: training on GPU {devices.torch}{note}")


def torch_device(devices: Devices) -> Any:
    """The ``torch.device`` to train on; makes a GPU the current CUDA device, so collectives and
    ``all_gather_object`` under NCCL use it too. Imports torch."""
    import torch

    if devices.cuda:
        torch.cuda.set_device(devices.gpus[0])
    return torch.device(devices.torch)


__all__ = [
    "CPU",
    "DeviceError",
    "Devices",
    "choose_devices",
    "context_devices",
    "log_devices",
    "torch_cuda_probe",
    "torch_device",
]
