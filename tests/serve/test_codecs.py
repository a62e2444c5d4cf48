"""InvokeEndpoint bodies in and out for built-in algorithms: every content type, SageMaker's JSON
request shapes, the 400/406/413/415 errors and what their messages name, and RecordIO responses read
back by both our reader and the SageMaker training toolkit's."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.sparse as sp
from sagemaker_training import recordio as toolkit
from sagemaker_training.record_pb2 import Record as ToolkitRecord

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import Algorithm
from raymaker.io.formats import csv as csv_format
from raymaker.io.recordio import read_records, write_numpy_to_dense_tensor
from raymaker.serve.codecs import (
    MAX_PAYLOAD_BYTES,
    BadRequest,
    InvocationError,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
    choose_accept,
    decode_request,
    encode_records,
    encode_response,
)

DEFAULT = Algorithm.inference_content_types  # text/csv, application/json, application/jsonlines
WITH_RECORDIO = (*DEFAULT, "application/x-recordio-protobuf")
XGBOOST = get_algorithm("xgboost").inference_content_types


def features(body: bytes, content_type: str | None, accepted=DEFAULT) -> np.ndarray:
    batch = decode_request(body, content_type, accepted)
    return batch.features.toarray() if sp.issparse(batch.features) else batch.features


# --- requests: CSV -------------------------------------------------------------------------------


def test_csv_single_row_has_no_label_column():
    row = np.random.default_rng(0).random(30).astype(np.float32)
    body = ",".join(str(x) for x in row).encode()
    batch = decode_request(body, "text/csv", DEFAULT)
    assert batch.labels is None
    assert batch.features.dtype == np.float32
    np.testing.assert_array_equal(batch.features, row[None, :])


def test_csv_label_size_parameter_splits_off_the_label():
    batch = decode_request(b"1,0.5,0.25\n0,1.5,2.5\n", "text/csv;label_size=1", DEFAULT)
    np.testing.assert_array_equal(batch.labels, [1, 0])
    np.testing.assert_array_equal(batch.features, [[0.5, 0.25], [1.5, 2.5]])


@pytest.mark.parametrize(
    "body",
    [
        b"1,2,3",
        b"1,2,3\n",
        b"1,2,3\n4,5,6",
        b"1.5e3,-2.25,+0.5\n-1e-3,.5,7.\n",
        b"1,2,3\r\n4,5,6\r\n",  # CRLF
        b"1,2,3\n\n4,5,6\n",  # a blank line is skipped
        b'"1","2","3"\n',  # quoted cells
        b"1,,3\n",  # an empty cell is missing (NaN)
        b"nan,inf,-inf\n",
        b" 1, 2,3\n",
    ],
)
def test_csv_small_bodies_parse_as_the_csv_reader_does(body):
    # The fast path for small bodies must agree with the full reader on every input.
    expected = csv_format.read(body if body.endswith(b"\n") else body + b"\n", label_size=0).features
    np.testing.assert_array_equal(features(body, "text/csv"), expected)


def test_csv_large_body_uses_the_full_reader_and_agrees():
    x = np.random.default_rng(1).random((2000, 12)).astype(np.float32)
    body = "\n".join(",".join(str(v) for v in row) for row in x).encode()
    assert len(body) > 16 * 1024
    np.testing.assert_array_equal(features(body, "text/csv"), x)


def test_content_type_is_case_insensitive_and_may_carry_charset():
    np.testing.assert_array_equal(features(b"1,2\n", "Text/CSV; charset=utf-8"), [[1, 2]])


# --- requests: JSON, JSON lines, RecordIO, libsvm ------------------------------------------------


def test_json_dense_instances():
    body = json.dumps({"instances": [{"features": [1.5, 16.0, 14.0, 23.0]}, {"features": [1, 2, 3, 4]}]})
    np.testing.assert_array_equal(
        features(body.encode(), "application/json"), [[1.5, 16, 14, 23], [1, 2, 3, 4]]
    )


def test_json_data_features_values():
    body = json.dumps({"instances": [{"data": {"features": {"values": [1.5, 16.0, 14.0, 23.0]}}}]})
    np.testing.assert_array_equal(features(body.encode(), "application/json"), [[1.5, 16, 14, 23]])


def test_json_sparse_keys_and_shape():
    body = json.dumps(
        {"instances": [{"data": {"features": {"keys": [26, 182], "shape": [2000], "values": [1, 1]}}}]}
    )
    batch = decode_request(body.encode(), "application/json", DEFAULT)
    assert sp.issparse(batch.features)
    assert batch.features.shape == (1, 2000)
    assert batch.features[0, 26] == 1 and batch.features[0, 182] == 1 and batch.features.nnz == 2


def test_json_list_of_rows():
    np.testing.assert_array_equal(features(b"[[1, 2], [3, 4]]", "application/json"), [[1, 2], [3, 4]])


def test_jsonlines_both_instance_shapes():
    body = b'{"features": [1, 2]}\n{"data": {"features": {"values": [3, 4]}}}\n'
    np.testing.assert_array_equal(features(body, "application/jsonlines"), [[1, 2], [3, 4]])


def test_recordio_protobuf_request():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, x)
    np.testing.assert_array_equal(
        features(buf.getvalue(), "application/x-recordio-protobuf", WITH_RECORDIO), x
    )


def test_libsvm_request_for_xgboost():
    batch = decode_request(b"0 0:1.5 3:2\n0 1:4\n", "text/libsvm", XGBOOST)
    np.testing.assert_array_equal(batch.features.toarray(), [[1.5, 0, 0, 2], [0, 4, 0, 0]])


def test_missing_content_type_means_json_when_the_algorithm_takes_json():
    np.testing.assert_array_equal(features(b'{"instances": [[1, 2]]}', None), [[1, 2]])
    np.testing.assert_array_equal(features(b"[[1, 2]]", ""), [[1, 2]])


def test_missing_content_type_means_the_first_accepted_type_without_json():
    np.testing.assert_array_equal(features(b"1,2\n", None, ("text/csv", "text/libsvm")), [[1, 2]])


# --- request errors ------------------------------------------------------------------------------


def test_unsupported_content_type_is_415_naming_it_and_the_supported_ones():
    with pytest.raises(UnsupportedMediaType) as err:
        decode_request(b"x", "application/x-npy", DEFAULT)
    assert err.value.status == 415 and err.value.error_type == "UnsupportedMediaType"
    assert "application/x-npy" in err.value.message
    for ct in DEFAULT:
        assert ct in err.value.message


def test_content_type_the_algorithm_does_not_take_is_415_even_if_we_could_parse_it():
    with pytest.raises(UnsupportedMediaType, match="text/libsvm"):
        decode_request(b"0 1:1\n", "text/libsvm", DEFAULT)


def test_bad_csv_cell_is_400_naming_line_3():
    with pytest.raises(BadRequest) as err:
        decode_request(b"1,2,3\n4,5,6\n7,abc,9\n", "text/csv", DEFAULT)
    assert err.value.status == 400 and err.value.error_type == "ValidationError"
    assert "line 3" in err.value.message and "'abc'" in err.value.message
    assert "<bytes>" not in err.value.message


def test_ragged_csv_is_400_naming_the_line():
    with pytest.raises(BadRequest, match=r"line 2: expected 3 columns"):
        decode_request(b"1,2,3\n4,5\n", "text/csv", DEFAULT)


def test_malformed_number_in_a_small_body_names_the_line():
    with pytest.raises(BadRequest, match="line 2"):
        decode_request(b"1,2\n1e,2\n", "text/csv", DEFAULT)


def test_bad_json_is_400_naming_the_line_or_instance():
    with pytest.raises(BadRequest, match="line 2"):
        decode_request(b'{"features": [1]}\n{"features": [1,\n', "application/jsonlines", DEFAULT)
    with pytest.raises(BadRequest, match=r"instances\[1\]"):
        decode_request(b'{"instances": [{"features": [1]}, {"x": 1}]}', "application/json", DEFAULT)


def test_corrupt_recordio_is_400_naming_the_byte():
    with pytest.raises(BadRequest, match="byte 0"):
        decode_request(b"not recordio at all", "application/x-recordio-protobuf", WITH_RECORDIO)


def test_bad_content_type_parameter_is_400():
    with pytest.raises(BadRequest, match="label_size"):
        decode_request(b"1,2\n", "text/csv;label_size=7", DEFAULT)


def test_empty_body_is_400():
    with pytest.raises(BadRequest, match="empty request body"):
        decode_request(b"", "text/csv", DEFAULT)


def test_body_without_records_is_400():
    with pytest.raises(BadRequest, match="no records"):
        decode_request(b"\n\n", "text/csv", DEFAULT)
    with pytest.raises(BadRequest, match="no records"):
        decode_request(b'{"instances": []}', "application/json", DEFAULT)


def test_body_over_6_mb_is_413():
    assert MAX_PAYLOAD_BYTES == 6291456
    at_limit = b"[[1]]" + b" " * (MAX_PAYLOAD_BYTES - 5)
    np.testing.assert_array_equal(features(at_limit, "application/json"), [[1]])
    with pytest.raises(PayloadTooLarge) as err:
        decode_request(at_limit + b" ", "application/json", DEFAULT)
    assert err.value.status == 413
    assert str(MAX_PAYLOAD_BYTES + 1) in err.value.message and "6 MB" in err.value.message


def test_invocation_error_takes_status_and_type_explicitly():
    err = InvocationError(404, "ValidationError", "no such variant")
    assert (err.status, err.error_type, err.message, str(err)) == (
        404,
        "ValidationError",
        "no such variant",
        "no such variant",
    )
    assert InvocationError("plain").status == 400


# --- responses -----------------------------------------------------------------------------------

BINARY = {"score": np.array([0.87, 0.125], np.float32), "predicted_label": np.array([1, 0])}


def test_json_response_one_object_per_row_with_plain_numbers():
    body, ct = encode_response(BINARY, "application/json", default_accept="application/json")
    assert ct == "application/json"
    doc = json.loads(body)
    assert doc == {
        "predictions": [{"score": 0.87, "predicted_label": 1}, {"score": 0.125, "predicted_label": 0}]
    }
    assert type(doc["predictions"][0]["predicted_label"]) is int
    assert np.float32(doc["predictions"][0]["score"]) == np.float32(0.87)  # round-trips exactly


def test_json_response_2d_rows_become_lists_and_envelope_is_configurable():
    outputs = {"projection": np.array([[0.5, -1.25], [2.0, 3.0]], np.float32)}
    body, _ = encode_response(outputs, None, default_accept="application/json", envelope="projections")
    assert json.loads(body) == {"projections": [{"projection": [0.5, -1.25]}, {"projection": [2.0, 3.0]}]}


def test_pca_default_response_uses_its_envelope():
    pca = get_algorithm("pca")
    outputs = {"projection": np.ones((1, 2), np.float32)}
    body, ct = encode_response(
        outputs, "*/*", default_accept=pca.default_accept, envelope=pca.response_envelope
    )
    assert ct == "application/json" and json.loads(body) == {"projections": [{"projection": [1.0, 1.0]}]}


@pytest.mark.parametrize("accept", [None, "", "*/*"])
def test_missing_or_wildcard_accept_uses_the_default(accept):
    _, ct = encode_response(BINARY, accept, default_accept="text/csv")
    assert ct == "text/csv"


def test_accept_list_picks_the_preferred_type_we_produce():
    assert choose_accept("application/xml, text/csv;q=0.5, application/jsonlines", "application/json") == (
        "application/jsonlines"
    )
    assert choose_accept("application/jsonlines;verbose=True", "application/json") == "application/jsonlines"
    assert choose_accept("text/*", "application/json") == "text/csv"
    assert choose_accept("application/*", "application/json") == "application/json"


def test_unsupported_accept_is_406_naming_it():
    with pytest.raises(NotAcceptable) as err:
        encode_response(BINARY, "application/xml", default_accept="application/json")
    assert err.value.status == 406 and "application/xml" in err.value.message
    assert "text/csv" in err.value.message


def test_jsonlines_response_one_object_per_line():
    body, ct = encode_response(BINARY, "application/jsonlines", default_accept="application/json")
    assert ct == "application/jsonlines"
    assert body.endswith(b"\n")
    lines = body.decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"score": 0.87, "predicted_label": 1},
        {"score": 0.125, "predicted_label": 0},
    ]


def test_csv_response_is_the_score_one_line_per_row():
    body, ct = encode_response(BINARY, "text/csv", default_accept="application/json")
    assert (body, ct) == (b"0.87\n0.125\n", "text/csv")


def test_csv_response_2d_score_is_comma_joined():
    outputs = {"score": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32), "predicted_label": np.array([1, 0])}
    body, _ = encode_response(outputs, "text/csv", default_accept="application/json")
    assert body == b"0.25,0.75\n0.5,0.5\n"


def test_csv_response_without_score_joins_every_output():
    outputs = {"closest_cluster": np.array([2, 0]), "distance_to_cluster": np.array([0.5, 1.75], np.float32)}
    body, _ = encode_response(outputs, "text/csv", default_accept="application/json")
    assert body == b"2,0.5\n0,1.75\n"


def test_csv_response_floats_round_trip():
    scores = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    body, _ = encode_response({"score": scores}, "text/csv", default_accept="text/csv")
    np.testing.assert_array_equal(np.array(body.split(), dtype=np.float32), scores)
    doubles = np.random.default_rng(3).standard_normal(100)
    body, _ = encode_response({"score": doubles}, "text/csv", default_accept="text/csv")
    np.testing.assert_array_equal(np.array(body.split(), dtype=np.float64), doubles)


def _label_values(record) -> dict[str, list[float]]:
    return {k: list(v.float32_tensor.values) for k, v in record.label.items()}


@pytest.mark.parametrize("rows", [2, 100])  # below and above the template threshold
def test_recordio_response_reads_back_with_outputs_in_the_label_map(rows):
    rng = np.random.default_rng(4)
    outputs = {
        "score": rng.random((rows, 3)).astype(np.float32),
        "predicted_label": rng.integers(0, 3, rows),
    }
    body, ct = encode_response(outputs, "application/x-recordio-protobuf", default_accept="application/json")
    assert ct == "application/x-recordio-protobuf"
    records = read_records(body)
    assert len(records) == rows
    for i, record in enumerate(records):
        assert not record.features
        got = _label_values(record)
        assert got == {
            "score": outputs["score"][i].tolist(),
            "predicted_label": [float(outputs["predicted_label"][i])],
        }
        assert record.label["score"].WhichOneof("value") == "float32_tensor"


def test_recordio_response_matches_per_record_serialization_and_the_toolkit_reads_it():
    rng = np.random.default_rng(5)
    outputs = {"score": rng.random(64).astype(np.float32), "predicted_label": rng.integers(0, 2, 64)}
    fast = encode_records(outputs)  # 64 rows: the template path
    slow = b"".join(encode_records({k: v[i : i + 1] for k, v in outputs.items()}) for i in range(64))
    assert fast == slow
    payloads = list(toolkit._read_recordio(io.BytesIO(fast)))
    assert len(payloads) == 64
    first = ToolkitRecord()
    first.ParseFromString(payloads[0])
    assert first.label["score"].float32_tensor.values[0] == outputs["score"][0]
    assert first.label["predicted_label"].float32_tensor.values[0] == outputs["predicted_label"][0]


def test_zero_rows_and_mismatched_outputs():
    empty = {"score": np.zeros(0, np.float32)}
    assert json.loads(encode_response(empty, None, default_accept="application/json")[0]) == {
        "predictions": []
    }
    assert encode_response(empty, "text/csv", default_accept="application/json")[0] == b""
    assert encode_records(empty) == b""
    with pytest.raises(ValueError, match="rows"):
        encode_response(
            {"score": np.zeros(2), "predicted_label": np.zeros(3)}, None, default_accept="application/json"
        )


def test_end_to_end_csv_row_in_json_out():
    batch = decode_request(b"0.1,0.2,0.3", "text/csv", DEFAULT)
    outputs = {"score": batch.features.sum(axis=1), "predicted_label": (batch.features.sum(axis=1) > 0.5)}
    body, _ = encode_response(outputs, "application/json", default_accept="application/json")
    assert json.loads(body) == {"predictions": [{"score": pytest.approx(0.6), "predicted_label": 1}]}
