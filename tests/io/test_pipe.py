"""Pipe mode into Ray Data, end to end: real Ray, objects in the moto S3 server, a real 2-worker Trainer."""

from __future__ import annotations

import gzip
import io
import json
import os
import uuid

import numpy as np
import pytest
import scipy.sparse as sp

from raymaker.io.channels import Channel, list_objects, shard_objects, shuffled
from raymaker.io.modes.pipe import PipeEpochIterator, batches_to_numpy, pipe_dataset
from raymaker.io.modes.train_data import ChannelDataConfig
from raymaker.io.recordio import write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor

pytestmark = pytest.mark.e2e

ROWS_PER_OBJECT = 40
WIDTH = 4


def _dense(first_id: int, n: int = ROWS_PER_OBJECT) -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(first_id, first_id + n, dtype=np.float32)
    x = np.stack([ids + j / 10 for j in range(WIDTH)], axis=1).astype(np.float32)
    return x, ids


def _recordio_dense(first_id: int) -> bytes:
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, *_dense(first_id))
    return buf.getvalue()


def _put_dense(s3, bucket: str, prefix: str, objects: int, *, compress: bool = False) -> int:
    for i in range(objects):
        body = _recordio_dense(i * ROWS_PER_OBJECT)
        s3.client.put_object(
            Bucket=bucket, Key=f"{prefix}/part-{i:02d}.rec", Body=gzip.compress(body) if compress else body
        )
    return objects * ROWS_PER_OBJECT


def _put_csv(s3, bucket: str, prefix: str, objects: int) -> int:
    for i in range(objects):
        x, ids = _dense(1000 + i * ROWS_PER_OBJECT)
        lines = [",".join([f"{lab:g}", *(f"{v:g}" for v in row)]) for lab, row in zip(ids, x)]
        s3.client.put_object(Bucket=bucket, Key=f"{prefix}/part-{i}.csv", Body="\n".join(lines) + "\n")
    return objects * ROWS_PER_OBJECT


def _channel(name: str, bucket: str, prefix: str, **kw) -> Channel:
    return Channel(name=name, s3_uri=f"s3://{bucket}/{prefix}/", input_mode="Pipe", **kw)


def _check_dense(batch, first_id: int, total: int) -> None:
    order = np.argsort(batch.labels)
    x, ids = _dense(first_id, total)
    np.testing.assert_array_equal(batch.labels[order], ids)
    np.testing.assert_array_equal(batch.features[order], x)


def test_recordio_dense_rows_stream_without_local_copy(ray_session, s3_server, s3_bucket, raymaker_home):
    total = _put_dense(s3_server, s3_bucket, "dense", 3)
    # RAYMAKER_HOME is shared by the session (File-mode tests fill its cache): compare before/after.
    before = _files_under(raymaker_home)
    ds = pipe_dataset(_channel("train", s3_bucket, "dense", content_type="application/x-recordio-protobuf"))
    batches = list(ds.iter_batches(batch_size=32, batch_format="numpy"))
    assert batches[0]["features"].shape[1:] == (WIDTH,)
    assert batches[0]["features"].dtype == np.float32
    _check_dense(batches_to_numpy(batches), 0, total)
    # Pipe mode makes no local copy: nothing lands in the object cache (or anywhere) under RAYMAKER_HOME.
    assert _files_under(raymaker_home) == before


def _files_under(root: str) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


def test_recordio_sparse_rows_become_indices_and_values(ray_session, s3_server, s3_bucket):
    rng = np.random.default_rng(0)
    mats = [
        sp.random(30, 50, density=0.1, format="csr", dtype=np.float32, random_state=rng) for _ in range(2)
    ]
    for i, m in enumerate(mats):
        buf = io.BytesIO()
        write_spmatrix_to_sparse_tensor(buf, m, np.arange(i * 30, i * 30 + 30, dtype=np.float32))
        s3_server.client.put_object(Bucket=s3_bucket, Key=f"sparse/p{i}.rec", Body=buf.getvalue())
    ds = pipe_dataset(_channel("train", s3_bucket, "sparse"))  # RecordIO-protobuf is the default
    assert {"indices", "values", "num_features", "label"} <= set(ds.columns())
    got = batches_to_numpy(ds.iter_batches(batch_format="numpy"))
    order = np.argsort(got.labels)
    assert got.features.shape == (60, 50)
    np.testing.assert_array_equal(got.features[order].toarray(), sp.vstack(mats).toarray())


def test_csv_pipe(ray_session, s3_server, s3_bucket):
    total = _put_csv(s3_server, s3_bucket, "csv", 2)
    ds = pipe_dataset(_channel("train", s3_bucket, "csv", content_type="text/csv"))
    _check_dense(batches_to_numpy(ds.iter_batches(batch_format="numpy")), 1000, total)


def test_gzip_objects_are_decompressed_on_the_fly(ray_session, s3_server, s3_bucket):
    total = _put_dense(s3_server, s3_bucket, "gz", 2, compress=True)
    channel = _channel("train", s3_bucket, "gz", compression="Gzip")
    _check_dense(batches_to_numpy(pipe_dataset(channel).iter_batches(batch_format="numpy")), 0, total)
    # Without CompressionType Gzip the bytes are decoded as stored, and the decoder says they are not RecordIO.
    with pytest.raises(Exception, match="part-00.rec"):
        pipe_dataset(_channel("train", s3_bucket, "gz")).materialize()
    # And CompressionType Gzip over plain objects names the object and the setting to change.
    _put_dense(s3_server, s3_bucket, "plain", 1)
    with pytest.raises(ValueError, match=r"s3://.*/plain/part-00.rec is not valid gzip data"):
        pipe_dataset(_channel("train", s3_bucket, "plain", compression="Gzip")).materialize()


def test_sharded_datasets_are_disjoint_and_cover_everything(ray_session, s3_server, s3_bucket):
    total = _put_dense(s3_server, s3_bucket, "shards", 3)
    channel = _channel("train", s3_bucket, "shards", distribution="ShardedByS3Key")
    objects = list_objects(channel)
    ids = [
        set(batches_to_numpy(ds.iter_batches(batch_format="numpy")).labels.tolist())
        for ds in (pipe_dataset(channel, num_workers=2, rank=r, objects=objects) for r in range(2))
    ]
    assert len(ids[0]) == 2 * ROWS_PER_OBJECT and len(ids[1]) == ROWS_PER_OBJECT
    assert not ids[0] & ids[1] and ids[0] | ids[1] == set(range(total))
    # More workers than objects: the extra worker's stream is empty, as in SageMaker.
    assert pipe_dataset(channel, num_workers=4, rank=3, objects=objects).count() == 0


def test_channel_data_config_configure(ray_session, s3_server, s3_bucket):
    import ray.data

    total = _put_dense(s3_server, s3_bucket, "cfg", 3)
    channel = _channel("train", s3_bucket, "cfg", distribution="ShardedByS3Key")
    cfg = ChannelDataConfig({"train": channel})
    datasets = {**cfg.datasets(), "extra": ray.data.range(10)}
    per_rank = cfg.configure(datasets, world_size=2, worker_handles=None, worker_node_ids=None)
    ids = [
        set(batches_to_numpy(r["train"].iter_batches(batch_format="numpy")).labels.tolist()) for r in per_rank
    ]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == set(range(total))
    # Datasets that are not channels keep DataConfig's behaviour; unless named in datasets_to_split,
    # every worker gets all of them.
    assert [r["extra"].materialize().count() for r in per_rank] == [10, 10]
    with pytest.raises(TypeError, match="not a Channel"):
        ChannelDataConfig({"train": "s3://bucket/train/"})


def _train_fn(config: dict) -> None:
    import ray.train

    from raymaker.io.modes.pipe import batches_to_numpy

    rank = ray.train.get_context().get_world_rank()
    out = {}
    shard = ray.train.get_dataset_shard("train")
    out["train"] = sorted(batches_to_numpy(shard.iter_batches(batch_format="numpy")).labels.tolist())
    # The validation channel has a ShuffleConfig seed: two passes are epochs 0 and 1, in order.
    shard = ray.train.get_dataset_shard("validation")
    out["validation"] = [
        batches_to_numpy(shard.iter_batches(batch_format="numpy")).labels.tolist() for _ in range(2)
    ]
    with open(os.path.join(config["out"], f"rank-{rank}.json"), "w") as f:
        json.dump(out, f)


def test_trainer_workers_get_sagemaker_shards(ray_session, s3_server, s3_bucket, tmp_path):
    from ray.train import RunConfig, ScalingConfig

    # V2 trainer (ray.train.data_parallel_trainer is the deprecated V1 one, which rejects V2 configs).
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    n_train = _put_dense(s3_server, s3_bucket, "train", 5)
    n_val = _put_csv(s3_server, s3_bucket, "validation", 4)
    cfg = ChannelDataConfig(
        {
            "train": _channel("train", s3_bucket, "train", distribution="ShardedByS3Key"),
            "validation": _channel(
                "validation", s3_bucket, "validation", content_type="text/csv", shuffle_seed=2
            ),
        }
    )
    out = tmp_path / "out"
    out.mkdir()
    trainer = DataParallelTrainer(
        _train_fn,
        train_loop_config={"out": str(out)},
        # Half a CPU per worker leaves a CPU for the read tasks (whole-CPU workers deadlock Ray Data).
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name=f"pipe-{uuid.uuid4().hex[:8]}", storage_path=str(tmp_path / "runs")),
        datasets=cfg.datasets(),
        dataset_config=cfg,
    )
    trainer.fit()
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]
    train = [set(r["train"]) for r in ranks]
    # ShardedByS3Key: round-robin objects -> 3 and 2 objects, disjoint, together everything.
    assert [len(t) for t in train] == [3 * ROWS_PER_OBJECT, 2 * ROWS_PER_OBJECT]
    assert not train[0] & train[1] and train[0] | train[1] == set(range(n_train))
    # FullyReplicated: every worker sees the whole channel.
    # FullyReplicated with ShuffleConfig: every worker sees the whole channel, each epoch in that
    # epoch's order (the same on every worker), through the iterator Train pickled into the worker.
    assert n_val == 4 * ROWS_PER_OBJECT
    expected_val = [[1000 + r for r in _rows(shuffled(list(range(4)), 2, epoch))] for epoch in range(2)]
    assert ranks[0]["validation"] == ranks[1]["validation"] == expected_val
    assert expected_val[0] != expected_val[1]


def _object_ids(labels) -> list[int]:
    """The objects a pass read, in the order read (each object holds ROWS_PER_OBJECT consecutive ids)."""
    ids = (np.asarray(labels) // ROWS_PER_OBJECT).astype(int).tolist()
    return [i for n, i in enumerate(ids) if n == 0 or ids[n - 1] != i]


def _rows(object_ids: list[int]) -> list[float]:
    return [float(i * ROWS_PER_OBJECT + r) for i in object_ids for r in range(ROWS_PER_OBJECT)]


def test_shuffle_config_reshuffles_every_pass(ray_session, s3_server, s3_bucket, tmp_path):
    from raymaker.engine.channel_data import worker_training_data

    _put_dense(s3_server, s3_bucket, "epochs", 5)
    seeded = _channel("train", s3_bucket, "epochs", shuffle_seed=11)
    # A one-instance job's shard is planned once (pipe_dataset(...).iterator()); with a seed the
    # channel replans it per pass.
    data = worker_training_data(
        [seeded],
        {"train": "application/x-recordio-protobuf"},
        str(tmp_path),
        num_workers=1,
        rank=0,
        settings=None,
        shard_for=lambda name: pipe_dataset(seeded).iterator(),
    )
    passes = [data.load("train").labels.tolist() for _ in range(3)]
    # Pass n reads epoch n's ShuffleConfig order, rows in object order, every object once.
    assert passes == [_rows(shuffled(list(range(5)), 11, epoch)) for epoch in range(3)]
    assert len({tuple(p) for p in passes}) == 3


def test_channel_data_config_shuffle_moves_shards_per_epoch(ray_session, s3_server, s3_bucket):
    import pickle

    _put_dense(s3_server, s3_bucket, "moves", 5)
    seeded = _channel("train", s3_bucket, "moves", distribution="ShardedByS3Key", shuffle_seed=5)
    cfg = ChannelDataConfig({"train": seeded, "plain": _channel("plain", s3_bucket, "moves")})
    per_rank = cfg.configure(cfg.datasets(), world_size=2, worker_handles=None, worker_node_ids=None)
    assert not isinstance(per_rank[0]["plain"], PipeEpochIterator)  # no seed: planned once, as before
    # Train pickles each rank's iterator into its worker; each counts its own passes from epoch 0.
    iterators = [pickle.loads(pickle.dumps(r["train"])) for r in per_rank]
    listing = [f"part-{i:02d}.rec" for i in range(5)]
    for epoch in range(2):
        read = [
            _object_ids(batches_to_numpy(it.iter_batches(batch_format="numpy")).labels) for it in iterators
        ]
        expected = [
            [
                int(o[5:7])
                for o in shard_objects(
                    listing, num_workers=2, rank=r, distribution="ShardedByS3Key", seed=5, epoch=epoch
                )
            ]
            for r in range(2)
        ]
        assert read == expected  # SageMaker: each epoch reshuffles across workers
        assert sorted(read[0] + read[1]) == list(range(5))
