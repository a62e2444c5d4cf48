"""Batch transform output keys: ``<S3OutputPath>/<relative key>.out`` for every input object, and a
clear error naming the key when an input's relative key (from a listing or a manifest entry) would
put the output outside S3OutputPath."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raymaker.serve.model import ModelSpec
from raymaker.serve.transform import TransformPlan, check_relative_key, safe_output_key, work_units


@pytest.mark.parametrize(
    ("prefix", "relative", "expected"),
    [
        ("s3://b/out", "data.csv", "s3://b/out/data.csv.out"),
        ("s3://b/out/", "dataset01/data.csv", "s3://b/out/dataset01/data.csv.out"),
        ("file:///tmp/out//", "a/b/c", "file:///tmp/out/a/b/c.out"),
        ("s3://b/out", "..hidden/x..y", "s3://b/out/..hidden/x..y.out"),  # '..' inside a name is fine
        ("s3://b/out", "a/./b", "s3://b/out/a/./b.out"),
    ],
)
def test_output_key_is_the_relative_key_plus_out(prefix: str, relative: str, expected: str) -> None:
    assert safe_output_key(prefix, relative) == expected


@pytest.mark.parametrize(
    ("relative", "needle"),
    [
        ("../secret", "'..' segment"),
        ("a/../../b", "'..' segment"),
        ("a/..", "'..' segment"),
        ("..", "'..' segment"),
        ("a\\..\\b", "'..' segment"),
        ("/etc/passwd", "absolute path"),
        ("\\share\\x", "absolute path"),
        ("", "is empty"),
        ("a\0b", "NUL byte"),
    ],
)
def test_keys_that_escape_the_output_path_are_refused_naming_the_key(relative: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        safe_output_key("s3://b/out", relative, source="s3://b/in/manifest")
    message = str(info.value)
    assert needle in message
    assert repr(relative) in message
    assert "s3://b/in/manifest" in message


@settings(max_examples=200, deadline=1000, database=None)
@given(st.lists(st.sampled_from(["a", "b.csv", ".", "..", "", "x..", "\\.."]), min_size=1, max_size=5))
def test_an_accepted_key_never_climbs_out_of_the_prefix(parts: list[str]) -> None:
    relative = "/".join(parts)
    try:
        key = safe_output_key("/out", relative)
    except ValueError:
        return
    depth = 0
    for seg in key.removeprefix("/out/").replace("\\", "/").split("/"):
        depth += -1 if seg == ".." else (0 if seg in ("", ".") else 1)
        assert depth >= 0, key


@dataclass(frozen=True)
class Obj:
    uri: str
    relative: str
    size: int


def test_work_units_refuse_an_escaping_key_before_any_unit_runs() -> None:
    plan = TransformPlan(
        model=ModelSpec("m", "xgboost", "s3://b/model.tar.gz"), content_type="text/csv", accept=None
    )
    objects = [Obj("s3://b/in/ok.csv", "ok.csv", 10), Obj("s3://b/in/../x.csv", "../x.csv", 10)]
    with pytest.raises(
        ValueError, match=r"input s3://b/in/\.\./x\.csv: relative key '\.\./x\.csv' has a '\.\.'"
    ):
        work_units(objects, plan)
    assert len(work_units(objects[:1], plan)) == 1


def test_check_relative_key_passes_ordinary_keys() -> None:
    for relative in ("a", "a/b/c.csv", "part-00000", "x y/z.json", ".a", "a..b"):
        check_relative_key(relative)


def test_execution_parameters_fill_in_only_what_the_request_left_out() -> None:
    """SageMaker's precedence: the request's value, then the container's /execution-parameters, then
    the default."""
    model = ModelSpec("m", "xgboost", "s3://b/model.tar.gz")
    plan = TransformPlan(model, "text/csv", None, split_type="Line", strategy="MultiRecord",
                         max_payload_bytes=6 << 20)
    doc = {"BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 4}
    filled = plan.with_execution_parameters(doc)
    assert (filled.strategy, filled.max_payload_bytes) == ("SingleRecord", 2 << 20)
    requested = replace(plan, given=frozenset({"BatchStrategy", "MaxPayloadInMB"}))
    assert requested.with_execution_parameters(doc) == requested  # the request's values stand
    assert plan.with_execution_parameters(None) == plan  # no /execution-parameters: the defaults
    assert plan.with_execution_parameters({"MaxPayloadInMB": 500}) == plan  # over SageMaker's 100 MB: ignored
    whole = replace(plan, split_type="None", strategy="SingleRecord")
    assert whole.with_execution_parameters({"BatchStrategy": "MULTI_RECORD"}).strategy == "SingleRecord"
