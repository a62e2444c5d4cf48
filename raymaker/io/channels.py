"""Training channels: SageMaker's ``Channel`` request, the objects it names, and who reads which.

``Channel.from_request`` parses one entry of CreateTrainingJob's InputDataConfig; ``list_objects``
resolves it to objects (an S3 prefix, a local directory, or a manifest); ``shard_objects`` applies
S3DataDistributionType and ShuffleConfig for one worker and one epoch; ``pass_order`` orders the files a
worker already holds (File, FastFile) for one pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from raymaker.io.storage import ObjectInfo, S3Settings, parse_uri, storage_for

INPUT_MODES = ("File", "Pipe", "FastFile")
S3_DATA_TYPES = ("S3Prefix", "ManifestFile")
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")
COMPRESSION_TYPES = ("None", "Gzip")
RECORD_WRAPPER_TYPES = ("None", "RecordIO")

T = TypeVar("T")

_CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")  # botocore's ChannelName shape


@dataclass(frozen=True)
class Channel:
    name: str
    s3_uri: str
    s3_data_type: str = "S3Prefix"
    distribution: str = "FullyReplicated"
    content_type: str | None = None
    compression: str = "None"
    record_wrapper: str = "None"
    input_mode: str = "File"
    shuffle_seed: int | None = None

    @classmethod
    def from_request(cls, d: Mapping[str, Any], default_input_mode: str = "File") -> Channel:
        """Parse a SageMaker Channel dict; errors name the channel and the field to fix."""
        if not isinstance(d, Mapping):
            raise ValueError(
                f"InputDataConfig entry must be an object with ChannelName and DataSource, got {d!r}"
            )
        name = d.get("ChannelName")
        if not isinstance(name, str) or not _CHANNEL_NAME_RE.match(name):
            raise ValueError(
                f"ChannelName {name!r} is invalid: use 1-64 characters of letters, digits, '.', '-' and '_'"
            )

        def bad(field: str, problem: str) -> ValueError:
            return ValueError(f"channel {name!r}: {field} {problem}")

        def choice(field: str, value: Any, allowed: Sequence[str]) -> str:
            if value not in allowed:
                raise bad(field, f"is {value!r}; use one of {', '.join(allowed)}")
            return value

        source = d.get("DataSource")
        if not isinstance(source, Mapping):
            raise bad("DataSource", "is required (DataSource.S3DataSource with S3Uri)")
        if "S3DataSource" not in source:
            other = ", ".join(sorted(source)) or "nothing"
            raise bad("DataSource", f"has {other}; only DataSource.S3DataSource is supported")
        s3 = source["S3DataSource"]
        if not isinstance(s3, Mapping):
            raise bad("DataSource.S3DataSource", "must be an object with S3Uri")
        uri = s3.get("S3Uri")
        if not isinstance(uri, str) or not uri:
            raise bad("DataSource.S3DataSource.S3Uri", "is required")
        try:
            parse_uri(uri)
        except ValueError as e:
            raise bad("DataSource.S3DataSource.S3Uri", f"is invalid: {e}") from None
        data_type = s3.get("S3DataType", "S3Prefix")
        if data_type == "AugmentedManifestFile":
            raise bad(
                "DataSource.S3DataSource.S3DataType",
                "AugmentedManifestFile is not supported yet; use S3Prefix or ManifestFile",
            )
        data_type = choice("DataSource.S3DataSource.S3DataType", data_type, S3_DATA_TYPES)
        distribution = choice(
            "DataSource.S3DataSource.S3DataDistributionType",
            s3.get("S3DataDistributionType", "FullyReplicated"),
            DISTRIBUTIONS,
        )
        # AttributeNames only applies to augmented manifests, which are refused above.

        content_type = d.get("ContentType")
        if content_type is not None and (not isinstance(content_type, str) or not content_type.strip()):
            raise bad(
                "ContentType", f"is {content_type!r}; give a MIME type such as text/csv or leave it out"
            )
        compression = choice("CompressionType", d.get("CompressionType", "None"), COMPRESSION_TYPES)
        wrapper = choice("RecordWrapperType", d.get("RecordWrapperType", "None"), RECORD_WRAPPER_TYPES)
        # A channel's own InputMode overrides the job's TrainingInputMode.
        mode = choice("InputMode", d.get("InputMode") or default_input_mode, INPUT_MODES)
        if mode == "FastFile" and data_type != "S3Prefix":
            raise bad(
                "InputMode", "FastFile works with S3DataType S3Prefix only; use File or Pipe for manifests"
            )

        seed = None
        shuffle = d.get("ShuffleConfig")
        if shuffle is not None:
            if not isinstance(shuffle, Mapping) or "Seed" not in shuffle:
                raise bad("ShuffleConfig", "must be an object with an integer Seed")
            seed = shuffle["Seed"]
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise bad("ShuffleConfig.Seed", f"is {seed!r}; give an integer")

        return cls(
            name=name,
            s3_uri=uri,
            s3_data_type=data_type,
            distribution=distribution,
            content_type=content_type,
            compression=compression,
            record_wrapper=wrapper,
            input_mode=mode,
            shuffle_seed=seed,
        )


def parse_channels(
    input_data_config: Sequence[Mapping[str, Any]], default_input_mode: str = "File"
) -> list[Channel]:
    """Parse a whole InputDataConfig list; channel names must be unique."""
    channels = [Channel.from_request(d, default_input_mode) for d in input_data_config]
    seen: set[str] = set()
    for c in channels:
        if c.name in seen:
            raise ValueError(
                f"InputDataConfig has two channels named {c.name!r}: channel names must be unique"
            )
        seen.add(c.name)
    return channels


def inputdataconfig_entry(channel: Channel) -> dict[str, str]:
    """The channel's value in /opt/ml/input/config/inputdataconfig.json (note ``S3DistributionType``)."""
    entry = {}
    if channel.content_type:
        entry["ContentType"] = channel.content_type
    entry.update(
        TrainingInputMode=channel.input_mode,
        S3DistributionType=channel.distribution,
        RecordWrapperType=channel.record_wrapper,
    )
    return entry


def inputdataconfig(channels: Sequence[Channel]) -> dict[str, dict[str, str]]:
    """The whole inputdataconfig.json document."""
    return {c.name: inputdataconfig_entry(c) for c in channels}


# ------------------------------------------------------------------------------------------ listing


def list_objects(channel: Channel, settings: S3Settings | None = None) -> list[ObjectInfo]:
    """The channel's objects in a deterministic order (key order for a prefix, manifest order for a
    manifest), so every worker that lists independently sees the same list. Raises ValueError before
    any data moves when nothing matches."""
    storage = storage_for(channel.s3_uri, settings)
    if channel.s3_data_type == "S3Prefix":
        try:
            return storage.list(channel.s3_uri)
        except ValueError as e:
            raise ValueError(f"channel {channel.name!r}: {e}") from None
    return _list_manifest(channel, settings)


def _list_manifest(channel: Channel, settings: S3Settings | None) -> list[ObjectInfo]:
    manifest_uri = channel.s3_uri
    where = f"channel {channel.name!r}: manifest {manifest_uri}"
    try:
        doc = json.loads(storage_for(manifest_uri, settings).read_bytes(manifest_uri))
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist: check the S3Uri") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{where} is not valid JSON ({e})") from None
    shape = 'a JSON array: [{"prefix": "s3://bucket/prefix/"}, "relative/key1", ...]'
    if (
        not isinstance(doc, list)
        or not doc
        or not isinstance(doc[0], dict)
        or not isinstance(doc[0].get("prefix"), str)
    ):
        raise ValueError(f"{where} must be {shape}")
    prefix = doc[0]["prefix"]
    entries = doc[1:]
    for i, rel in enumerate(entries, start=1):
        if not isinstance(rel, str) or not rel:
            raise ValueError(
                f"{where}: element {i} is {rel!r}; expected a key relative to the prefix ({shape})"
            )
    if not entries:
        raise ValueError(f"{where} lists no objects after the prefix")
    try:
        storage = storage_for(prefix, settings)
    except ValueError as e:
        raise ValueError(f"{where}: prefix is invalid: {e}") from None

    def stat(rel: str) -> ObjectInfo:
        uri = prefix + rel  # SageMaker concatenates prefix and entry as written
        try:
            info = storage.stat(uri)
        except FileNotFoundError:
            raise ValueError(f"{where} lists {rel!r}, but {uri} does not exist") from None
        return ObjectInfo(uri=info.uri, key=info.key, relative=rel, size=info.size, etag=info.etag)

    # One HEAD per entry; in parallel because manifests often list thousands of shards.
    with ThreadPoolExecutor(max_workers=min(16, len(entries))) as pool:
        return list(pool.map(stat, entries))


# ------------------------------------------------------------------------------------------ sharding


def shuffled(objects: Sequence[T], seed: int | None, epoch: int = 0) -> list[T]:
    """``objects`` in ShuffleConfig order: unchanged without a seed; otherwise a permutation fixed by
    (seed, epoch), identical in every process, different each epoch."""
    objects = list(objects)
    if seed is None:
        return objects
    rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, epoch])
    return [objects[i] for i in rng.permutation(len(objects))]


def pass_order(names: Iterable[str], seed: int | None, epoch: int) -> list[str]:
    """The order in which a worker reads, in pass ``epoch``, the files it already holds (File and
    FastFile mode, where which files a worker holds is fixed when the channel is opened).

    Sorted without a seed, the same every pass. With a ShuffleConfig seed, the sorted names permuted by
    (seed, epoch): a new order every pass, the same in every process. Sorting first makes the order
    independent of how the files were gathered; for a FullyReplicated S3Prefix channel (sorted names are
    the listing order) pass ``epoch`` is exactly ``shuffled(listing, seed, epoch)``, Pipe mode's order."""
    return shuffled(sorted(names), seed, epoch)


def shard_objects(
    objects: Sequence[T],
    *,
    num_workers: int,
    rank: int,
    distribution: str,
    seed: int | None = None,
    epoch: int = 0,
) -> list[T]:
    """The objects worker ``rank`` of ``num_workers`` reads in ``epoch``.

    FullyReplicated: all of them. ShardedByS3Key: round-robin over the (shuffled) list, so the shards
    are disjoint, cover everything, and differ in size by at most one object; workers beyond the number
    of objects get none. With a seed the order, and so the assignment, changes every epoch."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    if not 0 <= rank < num_workers:
        raise ValueError(f"rank must be in 0..{num_workers - 1}, got {rank}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"S3DataDistributionType {distribution!r}: use one of {', '.join(DISTRIBUTIONS)}")
    order = shuffled(objects, seed, epoch)
    if distribution == "FullyReplicated":
        return order
    return order[rank::num_workers]


def worker_objects(
    channel: Channel,
    *,
    num_workers: int = 1,
    rank: int = 0,
    epoch: int = 0,
    settings: S3Settings | None = None,
    objects: Sequence[ObjectInfo] | None = None,
) -> list[ObjectInfo]:
    """This worker's objects of a channel: the listing (``objects``, or listed now) sharded by the
    channel's S3DataDistributionType in ``epoch``'s ShuffleConfig order."""
    if objects is None:
        objects = list_objects(channel, settings)
    return shard_objects(
        objects,
        num_workers=num_workers,
        rank=rank,
        distribution=channel.distribution,
        seed=channel.shuffle_seed,
        epoch=epoch,
    )
