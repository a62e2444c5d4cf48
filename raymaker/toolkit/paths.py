"""The per-job, per-host directory tree laid out as SageMaker's ``/opt/ml`` (the container contract,
sagemaker-contract.md section 2.2). Scripts see it through ``SM_*`` variables (``SAGEMAKER_BASE_DIR``
is its root), never a fixed ``/opt/ml``, so many jobs and hosts share one machine."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class MLTree:
    """``root`` stands for ``/opt/ml``."""

    root: str

    @property
    def input_dir(self) -> str:
        return os.path.join(self.root, "input")

    @property
    def config_dir(self) -> str:
        return os.path.join(self.root, "input", "config")

    @property
    def data_dir(self) -> str:
        return os.path.join(self.root, "input", "data")

    def channel_dir(self, channel: str) -> str:
        """File and FastFile channels: a directory of the channel's objects."""
        return os.path.join(self.data_dir, channel)

    def fifo(self, channel: str, epoch: int) -> str:
        """Pipe channels: one FIFO per epoch."""
        return os.path.join(self.data_dir, f"{channel}_{epoch}")

    def config_file(self, name: str) -> str:
        """``hyperparameters``, ``inputdataconfig``, ``resourceconfig`` or ``checkpointconfig``."""
        return os.path.join(self.config_dir, f"{name}.json")

    @property
    def model_dir(self) -> str:
        return os.path.join(self.root, "model")

    @property
    def output_dir(self) -> str:
        return os.path.join(self.root, "output")

    @property
    def output_data_dir(self) -> str:
        return os.path.join(self.root, "output", "data")

    @property
    def intermediate_dir(self) -> str:
        return os.path.join(self.root, "output", "intermediate")

    @property
    def failure_file(self) -> str:
        return os.path.join(self.root, "output", "failure")

    @property
    def success_file(self) -> str:
        return os.path.join(self.root, "output", "success")

    @property
    def code_dir(self) -> str:
        return os.path.join(self.root, "code")

    @property
    def checkpoint_dir(self) -> str:
        """``CheckpointConfig.LocalPath``'s default, ``/opt/ml/checkpoints``."""
        return os.path.join(self.root, "checkpoints")

    def local_path(self, path: str) -> str:
        """A path the request names under ``/opt/ml`` (e.g. CheckpointConfig.LocalPath), inside this
        tree; any other absolute path is used as it is."""
        norm = os.path.normpath(path)
        if norm == "/opt/ml" or norm.startswith("/opt/ml/"):
            return os.path.join(self.root, os.path.relpath(norm, "/opt/ml"))
        return norm

    def make(self) -> MLTree:
        """Create the directories SageMaker creates before the script starts."""
        for d in (self.config_dir, self.data_dir, self.model_dir, self.output_data_dir,
                  self.intermediate_dir, self.code_dir, self.checkpoint_dir):
            os.makedirs(d, exist_ok=True)
        return self
