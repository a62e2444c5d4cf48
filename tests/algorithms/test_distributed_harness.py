"""The local multi-process harness behind the distributed conformance check reports a failing rank
(with its traceback) instead of hanging or passing."""

from __future__ import annotations

import numpy as np
import pytest

from raymaker.algorithms import get_algorithm
from raymaker.testing.distributed import Job, run_distributed


class Failing(get_algorithm("pca")):
    """No collective to join (trainer "data_parallel"), so a failure cannot hang the other rank."""

    trainer = "data_parallel"

    def train(self, hp, data, ctx, model_dir):
        if ctx.rank == 1:
            raise RuntimeError("rank 1 lost its data")
        return {}


def test_a_failing_rank_is_reported(tmp_path) -> None:
    job = Job(
        "fails",
        Failing,
        {"feature_dim": "2", "mini_batch_size": "2", "num_components": "1"},
        [np.ones((2, 2))] * 2,
    )
    with pytest.raises(RuntimeError, match=r"(?s)worker rank 1 failed.*rank 1 lost its data"):
        run_distributed([job], str(tmp_path), timeout_s=120)
