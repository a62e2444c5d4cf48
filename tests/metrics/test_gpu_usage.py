"""A training instance's GPU use, read from nvidia-smi's CSV query. No GPU on this machine: a stand-in
``nvidia-smi`` on PATH prints what NVIDIA's tool prints for ``--query-gpu=index,uuid,utilization.gpu,
memory.used,memory.total --format=csv,noheader,nounits`` on a two-GPU host, so the parsing and the
choice of the instance's own GPUs are checked here; the real tool's run is for a GPU machine."""

from __future__ import annotations

import os
import stat

import pytest

from raymaker.metrics.recorder import gpu_usage

SMI_OUTPUT = "0, GPU-aaaa-1111, 75, 4096, 16384\n1, GPU-bbbb-2222, 10, 8192, 16384\n"


@pytest.fixture
def two_gpus(tmp_path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    smi = tmp_path / "nvidia-smi"
    calls = tmp_path / "calls"
    smi.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nprintf "{SMI_OUTPUT.replace(chr(10), chr(92) + "n")}"\n')
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return [str(calls)]


def test_the_instances_own_gpus_by_index_or_uuid(two_gpus) -> None:
    assert gpu_usage(["0"]) == {"gpu": 75.0, "gpu_memory": 25.0}
    assert gpu_usage(["GPU-bbbb-2222"]) == {"gpu": 10.0, "gpu_memory": 50.0}
    assert gpu_usage(["0", "1"]) == {"gpu": 85.0, "gpu_memory": 75.0}  # summed, as CloudWatch's are
    assert gpu_usage(["7"]) == {}  # not this host's: nothing made up
    query = open(two_gpus[0]).read().split("\n")[0]
    assert "--query-gpu=index,uuid,utilization.gpu,memory.used,memory.total" in query


def test_no_nvidia_smi_means_no_gpu_series(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_usage(["0"]) == {}
