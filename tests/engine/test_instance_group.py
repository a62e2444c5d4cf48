"""Instance groups without Ray: where a group's checkpoints live, how its ranks share the one they start
from, what a warm group is keyed by."""

from __future__ import annotations

import os

from raymaker.cluster.definition import InstanceType
from raymaker.engine.instance_group import checkpoint_location, collective_kind, group_key, group_libraries
from raymaker.engine.worker import GroupStart, InstanceContext, checkpoint_archive, collective


def test_checkpoint_location_local_and_s3() -> None:
    assert checkpoint_location("/home/u/.raymaker/checkpoints", "job", "/cache") == (
        "/home/u/.raymaker/checkpoints/job",
        None,
    )
    assert checkpoint_location("file:///data/ckpt/", "job", "/cache") == ("/data/ckpt/job", None)
    assert checkpoint_location("s3://bucket/ckpt/", "job", "/cache/") == (
        "/cache/job",
        "s3://bucket/ckpt/job",
    )


def test_warm_groups_are_keyed_by_type_count_and_libraries() -> None:
    m5 = InstanceType("ml.m5.xlarge", 1.0)
    assert collective_kind("xgboost") == "xgboost" and collective_kind("data_parallel") is None
    assert group_libraries("xgboost", "xgboost") == ("xgboost",)
    assert group_libraries("kmeans", "torch") == ("torch",)
    assert group_libraries("linear-learner", "torch")[0] == "torch"
    key = group_key(m5, 2, ("xgboost",))
    assert key == group_key(InstanceType("ml.m5.xlarge", 1.0), 2, ("xgboost",))
    assert key != group_key(m5, 3, ("xgboost",)) and key != group_key(m5, 2, ("torch",))


def _state(tmp_path, step: int) -> str:
    state = tmp_path / f"state-{step}"
    state.mkdir()
    (state / "step.txt").write_text(str(step))
    return str(state)


def test_rank_0_alone_writes_checkpoints_and_every_rank_starts_from_the_same(tmp_path) -> None:
    ckpt_dir = str(tmp_path / "ckpt")
    os.makedirs(ckpt_dir)
    assert checkpoint_archive(ckpt_dir, None, None) is None  # nothing yet: a fresh start

    rank1 = InstanceContext(None, 0, str(tmp_path / "elsewhere"), rank=1, world_size=2)
    rank1.save_checkpoint(_state(tmp_path, 1), step=1)
    assert not os.path.exists(tmp_path / "elsewhere")
    rank0 = InstanceContext(None, 0, ckpt_dir, rank=0, world_size=2)
    assert rank0.load_checkpoint() is None  # the group started without one
    rank0.save_checkpoint(_state(tmp_path, 7), step=7)

    archive = checkpoint_archive(ckpt_dir, None, None)  # what rank 0 reads for the restarted group
    assert archive
    for rank in (0, 1):
        ctx = InstanceContext(None, 0, ckpt_dir, rank=rank, world_size=2, start_checkpoint=archive)
        path = ctx.load_checkpoint()
        assert path is not None and open(os.path.join(path, "step.txt")).read() == "7"
        assert ctx.load_checkpoint() == path  # unpacked once
        ctx.cleanup()
        assert not os.path.exists(path)


def test_no_collective_for_one_rank_or_none() -> None:
    with collective(GroupStart(None), 0, 2):
        pass
    with collective(GroupStart("torch", "tcp://127.0.0.1:1"), 0, 1):  # one rank: nothing to join
        pass
