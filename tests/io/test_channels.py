"""Channels: parsing SageMaker Channel requests, listing (prefix and manifest), sharding and shuffling."""

from __future__ import annotations

import json

import pytest

from raymaker.io.channels import (
    Channel,
    inputdataconfig,
    inputdataconfig_entry,
    list_objects,
    parse_channels,
    shard_objects,
)
from raymaker.io.storage import ObjectInfo, storage_for


def request(**overrides):
    d = {
        "ChannelName": "train",
        "DataSource": {"S3DataSource": {"S3Uri": "s3://bucket/train/", "S3DataType": "S3Prefix"}},
    }
    d.update(overrides)
    return d


def s3_source(**fields):
    return {"S3DataSource": {"S3Uri": "s3://bucket/train/", **fields}}


# ------------------------------------------------------------------------------------------ parsing


def test_from_request_full_and_defaults():
    c = Channel.from_request(
        {
            "ChannelName": "train",
            "DataSource": {
                "S3DataSource": {
                    "S3Uri": "s3://bucket/train/",
                    "S3DataType": "ManifestFile",
                    "S3DataDistributionType": "ShardedByS3Key",
                    "AttributeNames": ["ignored"],
                }
            },
            "ContentType": "text/csv",
            "CompressionType": "Gzip",
            "RecordWrapperType": "RecordIO",
            "InputMode": "Pipe",
            "ShuffleConfig": {"Seed": 7},
        },
        default_input_mode="File",
    )
    assert c == Channel(
        name="train",
        s3_uri="s3://bucket/train/",
        s3_data_type="ManifestFile",
        distribution="ShardedByS3Key",
        content_type="text/csv",
        compression="Gzip",
        record_wrapper="RecordIO",
        input_mode="Pipe",
        shuffle_seed=7,
    )
    d = Channel.from_request(request(), default_input_mode="FastFile")
    assert (d.s3_data_type, d.distribution, d.compression, d.record_wrapper) == (
        "S3Prefix",
        "FullyReplicated",
        "None",
        "None",
    )
    assert d.input_mode == "FastFile" and d.content_type is None and d.shuffle_seed is None
    # The channel's InputMode overrides the job's.
    assert Channel.from_request(request(InputMode="File"), default_input_mode="Pipe").input_mode == "File"
    assert Channel.from_request(request(DataSource=s3_source()), "File").s3_uri == "s3://bucket/train/"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"DataSource": {"S3DataSource": {}}}, "channel 'train': DataSource.S3DataSource.S3Uri is required"),
        (
            {"DataSource": {"S3DataSource": {"S3Uri": "s3:/bucket"}}},
            "channel 'train': DataSource.S3DataSource.S3Uri is invalid: malformed",
        ),
        (
            {"DataSource": s3_source(S3DataType="AugmentedManifestFile")},
            "channel 'train': DataSource.S3DataSource.S3DataType AugmentedManifestFile is not supported yet",
        ),
        (
            {"DataSource": s3_source(S3DataType="Prefix")},
            "channel 'train': DataSource.S3DataSource.S3DataType is 'Prefix'; use one of S3Prefix, ManifestFile",
        ),
        (
            {"DataSource": s3_source(S3DataDistributionType="Sharded")},
            "channel 'train': DataSource.S3DataSource.S3DataDistributionType is 'Sharded'",
        ),
        (
            {"DataSource": {"FileSystemDataSource": {}}},
            "channel 'train': DataSource has FileSystemDataSource; only DataSource.S3DataSource is supported",
        ),
        ({"DataSource": None}, "channel 'train': DataSource is required"),
        ({"CompressionType": "Zip"}, "channel 'train': CompressionType is 'Zip'; use one of None, Gzip"),
        ({"RecordWrapperType": "TFRecord"}, "channel 'train': RecordWrapperType is 'TFRecord'"),
        ({"InputMode": "Stream"}, "channel 'train': InputMode is 'Stream'; use one of File, Pipe, FastFile"),
        (
            {"InputMode": "FastFile", "DataSource": s3_source(S3DataType="ManifestFile")},
            "channel 'train': InputMode FastFile works with S3DataType S3Prefix only",
        ),
        ({"ShuffleConfig": {"Seed": "7"}}, "channel 'train': ShuffleConfig.Seed is '7'; give an integer"),
        ({"ShuffleConfig": {}}, "channel 'train': ShuffleConfig must be an object with an integer Seed"),
        ({"ContentType": ""}, "channel 'train': ContentType is ''"),
        ({"ChannelName": "bad name"}, "ChannelName 'bad name' is invalid"),
    ],
)
def test_from_request_errors_name_channel_and_field(overrides, message):
    with pytest.raises(ValueError) as e:
        Channel.from_request(request(**overrides))
    assert message in str(e.value)


def test_parse_channels_and_inputdataconfig():
    channels = parse_channels(
        [request(ContentType="text/csv"), request(ChannelName="validation", InputMode="Pipe")], "File"
    )
    assert inputdataconfig(channels) == {
        "train": {
            "ContentType": "text/csv",
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        },
        "validation": {
            "TrainingInputMode": "Pipe",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        },
    }
    sharded = Channel.from_request(request(DataSource=s3_source(S3DataDistributionType="ShardedByS3Key")))
    assert inputdataconfig_entry(sharded)["S3DistributionType"] == "ShardedByS3Key"
    with pytest.raises(ValueError, match="two channels named 'train'"):
        parse_channels([request(), request()])


# ------------------------------------------------------------------------------------------ listing


def test_list_objects_prefix_and_empty(s3_bucket):
    s = storage_for(f"s3://{s3_bucket}")
    for name in ("b", "a", "c/d"):
        s.put_bytes(f"s3://{s3_bucket}/train/{name}", name.encode())
    c = Channel(name="train", s3_uri=f"s3://{s3_bucket}/train/")
    assert [o.relative for o in list_objects(c)] == ["a", "b", "c/d"]
    empty = Channel(name="train", s3_uri=f"s3://{s3_bucket}/nothing/")
    with pytest.raises(
        ValueError, match=rf"channel 'train': no objects under s3://{s3_bucket}/nothing/: check the S3Uri"
    ):
        list_objects(empty)


def test_list_objects_manifest(s3_bucket):
    s = storage_for(f"s3://{s3_bucket}")
    for name in ("p/x1", "p/sub/x2", "p/unlisted"):
        s.put_bytes(f"s3://{s3_bucket}/{name}", name.encode())
    manifest = f"s3://{s3_bucket}/m.json"
    s.put_bytes(manifest, json.dumps([{"prefix": f"s3://{s3_bucket}/p/"}, "sub/x2", "x1"]).encode())
    c = Channel(name="train", s3_uri=manifest, s3_data_type="ManifestFile")
    objs = list_objects(c)
    assert [(o.relative, o.uri, o.size) for o in objs] == [
        ("sub/x2", f"s3://{s3_bucket}/p/sub/x2", 8),
        ("x1", f"s3://{s3_bucket}/p/x1", 4),
    ]  # manifest order
    assert all(o.etag for o in objs)

    def bad(doc, message):
        s.put_bytes(manifest, doc if isinstance(doc, bytes) else json.dumps(doc).encode())
        with pytest.raises(ValueError, match=message):
            list_objects(c)

    bad(
        [{"prefix": f"s3://{s3_bucket}/p/"}, "x1", "gone"], r"lists 'gone', but s3://.*/p/gone does not exist"
    )
    bad(["x1"], r"must be a JSON array: \[\{\"prefix\"")
    bad([{"prefix": f"s3://{s3_bucket}/p/"}], "lists no objects")
    bad([{"prefix": f"s3://{s3_bucket}/p/"}, 3], "element 1 is 3")
    bad(b"{not json", "is not valid JSON")
    missing = Channel(name="train", s3_uri=f"s3://{s3_bucket}/none.json", s3_data_type="ManifestFile")
    with pytest.raises(ValueError, match="none.json does not exist"):
        list_objects(missing)


def test_list_objects_local_manifest(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"aa")
    (tmp_path / "m.json").write_text(json.dumps([{"prefix": f"{tmp_path}/d/"}, "a"]))
    c = Channel(name="t", s3_uri=str(tmp_path / "m.json"), s3_data_type="ManifestFile")
    assert [(o.relative, o.size) for o in list_objects(c)] == [("a", 2)]


# ------------------------------------------------------------------------------------------ sharding


def objects(n):
    return [ObjectInfo(f"s3://b/k{i:02d}", f"k{i:02d}", f"k{i:02d}", i, None) for i in range(n)]


def test_sharded_by_s3_key_is_disjoint_balanced_and_complete():
    objs = objects(7)
    shards = [shard_objects(objs, num_workers=2, rank=r, distribution="ShardedByS3Key") for r in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(objs)
    assert sorted(len(s) for s in shards) == [3, 4]
    many = [shard_objects(objs[:3], num_workers=5, rank=r, distribution="ShardedByS3Key") for r in range(5)]
    assert [len(s) for s in many] == [1, 1, 1, 0, 0]


def test_fully_replicated_gives_everyone_everything():
    objs = objects(5)
    for r in range(3):
        assert shard_objects(objs, num_workers=3, rank=r, distribution="FullyReplicated") == objs


def test_shuffle_is_deterministic_and_changes_per_epoch():
    objs = objects(20)

    def shard(rank, epoch, seed=42, n=2):
        return shard_objects(
            objs, num_workers=n, rank=rank, distribution="ShardedByS3Key", seed=seed, epoch=epoch
        )

    assert shard(0, 0) == shard(0, 0)  # same seed and epoch: same order everywhere
    assert shard(0, 0) != shard(0, 1)  # next epoch: reshuffled, and the assignment moves
    assert shard(0, 0, seed=1) != shard(0, 0, seed=2)
    for epoch in range(3):
        a, b = shard(0, epoch), shard(1, epoch)
        assert not set(a) & set(b) and set(a) | set(b) == set(objs)
    full = shard_objects(objs, num_workers=1, rank=0, distribution="FullyReplicated", seed=42, epoch=0)
    assert sorted(full, key=lambda o: o.key) == objs and full != objs
    assert shard_objects(objs, num_workers=1, rank=0, distribution="FullyReplicated", epoch=3) == objs


def test_shard_argument_errors():
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        shard_objects(objects(2), num_workers=2, rank=2, distribution="ShardedByS3Key")
    with pytest.raises(ValueError, match="num_workers must be at least 1"):
        shard_objects(objects(2), num_workers=0, rank=0, distribution="ShardedByS3Key")
    with pytest.raises(ValueError, match="S3DataDistributionType 'x'"):
        shard_objects(objects(2), num_workers=1, rank=0, distribution="x")
