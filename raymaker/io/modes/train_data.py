"""Pipe channels for your own Ray Train loops: ``ChannelDataConfig`` gives every Train worker its own
SageMaker-style stream of each channel (``pipe.pipe_dataset`` for that rank)::

    cfg = ChannelDataConfig({"train": train_channel, "validation": val_channel}, settings)
    trainer = DataParallelTrainer(fn, datasets=cfg.datasets(), dataset_config=cfg,
                                  scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}))
    # in fn: X, y = batches_to_numpy(ray.train.get_dataset_shard("train").iter_batches(batch_format="numpy"))

raymaker's own multi-instance jobs run in instance groups and read ``pipe_dataset`` per rank directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.data import DataIterator
from ray.train import DataConfig

from raymaker.io.channels import Channel, list_objects
from raymaker.io.modes.pipe import PipeEpochIterator, pipe_dataset
from raymaker.io.storage import S3Settings


class ChannelDataConfig(DataConfig):
    """Ray Train ``DataConfig`` that gives each Train worker its SageMaker shard of each channel.

    Datasets whose name is a channel here are replaced, per worker, by ``pipe_dataset`` over that
    worker's objects; pass ``datasets=cfg.datasets()`` (or any dataset under those names) to the
    trainer. A channel with ShuffleConfig gets a ``PipeEpochIterator``: every pass over the shard is the
    next epoch, starting at ``epoch``. Other datasets are handled as by ``DataConfig``; they are split
    across workers only when named in ``datasets_to_split`` (default: given whole to every worker)."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        settings: S3Settings | None = None,
        *,
        epoch: int = 0,
        datasets_to_split: list[str] | None = None,
        execution_options: Any = None,
    ):
        for name, channel in channels.items():
            if not isinstance(channel, Channel):
                raise TypeError(f"channels[{name!r}] is a {type(channel).__name__}, not a Channel")
        # Channel datasets are never "split" in Ray's sense (each rank gets its own dataset), which
        # also keeps Train's DatasetManager from making get_dataset_shard a barrier for them.
        split = [n for n in (datasets_to_split or []) if n not in channels]
        super().__init__(datasets_to_split=split, execution_options=execution_options)
        self._channels = dict(channels)
        # Resolved here, in the driver: the endpoint and credentials then travel with the config.
        self._settings = (settings or S3Settings()).resolve()
        self._epoch = epoch

    def datasets(self) -> dict[str, ray.data.Dataset]:
        """One lazy full-channel dataset per channel, to pass as the trainer's ``datasets``."""
        return {name: pipe_dataset(ch, settings=self._settings) for name, ch in self._channels.items()}

    def configure(
        self,
        datasets: dict[str, ray.data.Dataset],
        world_size: int,
        worker_handles: list[ActorHandle] | None,
        worker_node_ids: list[str] | None,
        **kwargs: Any,
    ) -> list[dict[str, DataIterator]]:
        output: list[dict[str, DataIterator]] = [{} for _ in range(world_size)]
        others = {n: d for n, d in datasets.items() if n not in self._channels}
        if others:
            parts = super().configure(others, world_size, worker_handles, worker_node_ids, **kwargs)
            for rank, part in enumerate(parts):
                output[rank].update(part)
        for name in datasets:
            channel = self._channels.get(name)
            if channel is None:
                continue
            objects = list_objects(channel, self._settings)  # one listing for all ranks
            if channel.shuffle_seed is not None:
                for rank in range(world_size):
                    output[rank][name] = PipeEpochIterator(
                        channel,
                        settings=self._settings,
                        num_workers=world_size,
                        rank=rank,
                        first_epoch=self._epoch,
                        objects=objects,
                        execution_options=self._resolve_execution_options(name),
                    )
                continue
            shared = None
            for rank in range(world_size):
                if shared is not None:
                    output[rank][name] = shared.iterator()
                    continue
                ds = pipe_dataset(
                    channel,
                    settings=self._settings,
                    num_workers=world_size,
                    rank=rank,
                    epoch=self._epoch,
                    objects=objects,
                )
                ds.context.execution_options = self._resolve_execution_options(name)
                if channel.distribution == "FullyReplicated":
                    shared = ds  # every rank streams the same objects: one plan, one iterator each
                output[rank][name] = ds.iterator()
        return output
