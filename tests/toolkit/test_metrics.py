"""MetricDefinitions applied to log lines as SageMaker applies them: first capture group, on the line as
CloudWatch stores it (TAB as #011) and as printed."""

from __future__ import annotations

import pytest

from raymaker.toolkit.metrics import MetricParser

# The XGBoost container's own validation definition (sagemaker-contract.md 2.10), and one for train.
XGB = [
    ("validation:error", r".*\[[0-9]+\].*#011validation-error:(\S+)"),
    ("train:error", r".*\[[0-9]+\]#011train-error:([0-9.]+)"),
]


def test_tab_escaped_regex_matches_a_line_printed_with_tabs():
    parser = MetricParser(XGB)
    assert parser.feed("[0]\ttrain-error:0.14588\tvalidation-error:0.15525") == {
        "validation:error": 0.15525,
        "train:error": 0.14588,
    }


def test_regex_written_for_the_raw_line_also_matches():
    parser = MetricParser([("loss", r"loss=\t([0-9.]+)"), ("acc", r"acc: ([0-9.e-]+)")])
    assert parser.feed("epoch 3 loss=\t0.25 acc: 9.5e-1") == {"loss": 0.25, "acc": 0.95}


def test_first_capture_group_is_the_value():
    parser = MetricParser([("f1", r"(f1)=([0-9.]+)"), ("second", r"f1=(?:[0-9.]+) ([0-9.]+)")])
    # The first group here is "f1", not a number: skipped, never a wrong value.
    assert parser.feed("f1=0.8 0.9") == {"second": 0.9}


def test_non_numbers_nan_and_misses_are_skipped():
    parser = MetricParser([("loss", r"loss: (\S+)")])
    assert parser.feed("loss: n/a") == {}
    assert parser.feed("loss: nan") == {}
    assert parser.feed("loss: inf") == {}
    assert parser.feed("nothing here") == {}
    assert parser.feed("loss: -3") == {"loss": -3.0}


def test_no_definitions_no_values():
    assert MetricParser([]).feed("loss: 1") == {}


def test_invalid_regex_is_refused_naming_the_metric():
    with pytest.raises(ValueError, match="'val:acc'.*invalid Regex"):
        MetricParser([("ok", r"a(\d)"), ("val:acc", r"acc=([0-9")])


def test_regex_without_a_capture_group_is_refused():
    with pytest.raises(ValueError, match="'loss'.*no capture group"):
        MetricParser([("loss", r"loss=[0-9.]+")])
