"""SDK-v2-style serializers and deserializers: what each produces, and that they round-trip with the
hosting codecs (what a Predictor sends is what an endpoint decodes, and what it answers is what the
deserializer reads)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from raymaker.algorithms.base import Algorithm
from raymaker.io.recordio import read_records
from raymaker.sdk.deserializers import (
    BaseDeserializer,
    BytesDeserializer,
    CSVDeserializer,
    JSONDeserializer,
    JSONLinesDeserializer,
    NumpyDeserializer,
    RecordDeserializer,
    StreamDeserializer,
    StringDeserializer,
)
from raymaker.sdk.serializers import (
    BaseSerializer,
    CSVSerializer,
    IdentitySerializer,
    JSONLinesSerializer,
    JSONSerializer,
    LibSVMSerializer,
    NumpySerializer,
    RecordSerializer,
)
from raymaker.serve.codecs import decode_request, encode_response

ACCEPTED = (*Algorithm.inference_content_types, "application/x-recordio-protobuf", "text/libsvm")


class Body(io.BytesIO):
    """A response body that remembers it was closed (deserializers must close it)."""

    was_closed = False

    def close(self) -> None:
        self.was_closed = True
        super().close()


def as_bytes(body) -> bytes:
    if hasattr(body, "read"):
        return body.read()
    return body.encode() if isinstance(body, str) else body


# --- serializers ---------------------------------------------------------------------------------


def test_content_types():
    assert CSVSerializer().CONTENT_TYPE == "text/csv"
    assert JSONSerializer().CONTENT_TYPE == "application/json"
    assert JSONLinesSerializer().CONTENT_TYPE == "application/jsonlines"
    assert NumpySerializer().CONTENT_TYPE == "application/x-npy"
    assert IdentitySerializer().CONTENT_TYPE == "application/octet-stream"
    assert IdentitySerializer(content_type="image/png").content_type == "image/png"
    assert LibSVMSerializer().CONTENT_TYPE == "text/libsvm"
    assert RecordSerializer().CONTENT_TYPE == "application/x-recordio-protobuf"
    assert CSVSerializer(content_type="text/csv;label_size=0").CONTENT_TYPE == "text/csv;label_size=0"
    with pytest.raises(ValueError, match="content_type must be a string"):
        CSVSerializer(content_type=None)
    with pytest.raises(TypeError):
        BaseSerializer()  # abstract


def test_csv_serializer_shapes():
    s = CSVSerializer()
    assert s.serialize([1, 2.5, 3]) == "1,2.5,3"
    assert s.serialize(np.array([1.5, 2.0])) == "1.5,2.0"
    assert s.serialize([[1, 2], [3, 4]]) == "1,2\n3,4"
    assert s.serialize(np.array([[1, 2], [3, 4]])) == "1,2\n3,4"
    assert s.serialize("1,2\n3,4") == "1,2\n3,4"
    assert s.serialize(["1,2", "3,4"]) == "1,2\n3,4"
    assert s.serialize(io.BytesIO(b"5,6")) == b"5,6"
    assert s.serialize(pd.DataFrame([[1, 2], [3, 4]])) == "1,2\n3,4\n"
    with pytest.raises(ValueError, match="empty"):
        s.serialize([])
    with pytest.raises(ValueError, match="Unable to handle"):
        s.serialize(3)


def test_json_serializer():
    s = JSONSerializer()
    assert json.loads(s.serialize(np.array([[1, 2], [3, 4]]))) == [[1, 2], [3, 4]]
    assert json.loads(s.serialize({"instances": np.array([1.5])})) == {"instances": [1.5]}
    assert json.loads(s.serialize({"instances": [{"features": np.array([1, 2])}]})) == {
        "instances": [{"features": [1, 2]}]
    }
    assert s.serialize(io.StringIO('{"a": 1}')) == '{"a": 1}'


def test_jsonlines_serializer():
    s = JSONLinesSerializer()
    assert s.serialize([{"features": [1, 2]}, {"features": [3, 4]}]) == (
        '{"features": [1, 2]}\n{"features": [3, 4]}'
    )
    assert s.serialize('{"a": 1}') == '{"a": 1}'
    with pytest.raises(ValueError, match="not JSON Lines serializable"):
        s.serialize(5)


def test_numpy_serializer_and_deserializer():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    body = NumpySerializer().serialize(x)
    stream = Body(body)
    np.testing.assert_array_equal(NumpyDeserializer().deserialize(stream, "application/x-npy"), x)
    assert stream.was_closed
    assert np.load(io.BytesIO(NumpySerializer(dtype="int16").serialize([1, 2]))).dtype == np.int16
    with pytest.raises(ValueError, match="empty"):
        NumpySerializer().serialize(np.array([]))


def test_identity_and_libsvm_serializers():
    assert IdentitySerializer().serialize(b"\x89PNG") == b"\x89PNG"
    assert LibSVMSerializer().serialize("0 1:2") == "0 1:2"
    with pytest.raises(ValueError, match="Unable to handle"):
        LibSVMSerializer().serialize([1, 2])


def test_record_serializer_writes_dense_records():
    x = np.array([[1.5, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    body = RecordSerializer().serialize(x)
    assert isinstance(body, io.BytesIO) and body.tell() == 0  # as the SDK returns it
    records = read_records(body)
    assert [list(r.features["values"].float32_tensor.values) for r in records] == x.tolist()
    one = read_records(RecordSerializer().serialize(np.array([1.0, 2.0], np.float32)))
    assert len(one) == 1
    with pytest.raises(ValueError, match="3D"):
        RecordSerializer().serialize(np.zeros((1, 2, 3)))


# --- deserializers -------------------------------------------------------------------------------


def test_accept_values():
    assert JSONDeserializer().ACCEPT == ("application/json",)
    assert CSVDeserializer().ACCEPT == ("text/csv",)
    assert JSONLinesDeserializer().ACCEPT == ("application/jsonlines",)
    assert NumpyDeserializer().ACCEPT == ("application/x-npy",)
    assert RecordDeserializer().ACCEPT == ("application/x-recordio-protobuf",)
    assert BytesDeserializer().ACCEPT == ("*/*",)
    assert NumpyDeserializer(accept=("text/csv", "application/json")).ACCEPT == (
        "text/csv",
        "application/json",
    )
    with pytest.raises(TypeError):
        BaseDeserializer()  # abstract


def test_simple_deserializers_read_and_close():
    for deserializer, expected in (
        (BytesDeserializer(), b"a,b\n"),
        (StringDeserializer(), "a,b\n"),
        (CSVDeserializer(), [["a", "b"]]),
    ):
        stream = Body(b"a,b\n")
        assert deserializer.deserialize(stream, "text/csv") == expected
        assert stream.was_closed
    stream = Body(b"x")
    assert StreamDeserializer().deserialize(stream, "text/plain") == (stream, "text/plain")
    assert not stream.was_closed


def test_numpy_deserializer_csv_and_json():
    assert NumpyDeserializer().deserialize(Body(b"1,2\n3,4\n"), "text/csv; charset=utf-8").tolist() == [
        [1, 2],
        [3, 4],
    ]
    got = NumpyDeserializer(dtype=np.float32).deserialize(Body(b"[[1, 2]]"), "application/json")
    assert got.dtype == np.float32 and got.tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="cannot read content type image/png"):
        NumpyDeserializer().deserialize(Body(b""), "image/png")


def test_numpy_deserializer_refuses_pickles_by_default():
    body = NumpySerializer().serialize(np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        NumpyDeserializer().deserialize(Body(body), "application/x-npy")
    got = NumpyDeserializer(allow_pickle=True).deserialize(Body(body), "application/x-npy")
    assert got[0] == {"a": 1}


# --- round trips with the hosting codecs ---------------------------------------------------------

X = np.random.default_rng(0).random((5, 4)).astype(np.float32)


@pytest.mark.parametrize(
    "serializer, data",
    [
        (CSVSerializer(), X),
        (CSVSerializer(), X.tolist()),
        (JSONSerializer(), {"instances": [{"features": row} for row in X]}),
        (JSONSerializer(), {"instances": [{"data": {"features": {"values": row.tolist()}}} for row in X]}),
        (JSONSerializer(), X),
        (JSONLinesSerializer(), [{"features": row.tolist()} for row in X]),
        (RecordSerializer(), X),
    ],
    ids=[
        "csv-array",
        "csv-lists",
        "json-features",
        "json-data-values",
        "json-array",
        "jsonlines",
        "recordio",
    ],
)
def test_serialized_requests_decode_to_the_same_array(serializer, data):
    body = as_bytes(serializer.serialize(data))
    batch = decode_request(body, serializer.CONTENT_TYPE, ACCEPTED)
    np.testing.assert_array_equal(batch.features, X)
    assert batch.labels is None


def test_single_row_csv_round_trip():
    batch = decode_request(as_bytes(CSVSerializer().serialize(X[0])), "text/csv", ACCEPTED)
    np.testing.assert_array_equal(batch.features, X[:1])


def test_sparse_record_serializer_round_trip():
    m = sp.random(4, 50, density=0.1, format="csr", dtype=np.float32, random_state=1)
    batch = decode_request(
        RecordSerializer().serialize(m).getvalue(), "application/x-recordio-protobuf", ACCEPTED
    )
    np.testing.assert_array_equal(batch.features.toarray(), m.toarray())


def test_libsvm_serializer_round_trip():
    body = LibSVMSerializer().serialize("0 0:1.5 2:3\n0 1:2\n")
    batch = decode_request(as_bytes(body), "text/libsvm", ACCEPTED)
    np.testing.assert_array_equal(batch.features.toarray(), [[1.5, 0, 3], [0, 2, 0]])


OUTPUTS = {"score": np.array([0.87, 0.125], np.float32), "predicted_label": np.array([1, 0])}


def test_responses_deserialize():
    def respond(accept):
        body, ct = encode_response(OUTPUTS, accept, default_accept="application/json")
        return Body(body), ct

    assert JSONDeserializer().deserialize(*respond("application/json")) == {
        "predictions": [{"score": 0.87, "predicted_label": 1}, {"score": 0.125, "predicted_label": 0}]
    }
    assert JSONLinesDeserializer().deserialize(*respond("application/jsonlines")) == [
        {"score": 0.87, "predicted_label": 1},
        {"score": 0.125, "predicted_label": 0},
    ]
    assert CSVDeserializer().deserialize(*respond("text/csv")) == [["0.87"], ["0.125"]]
    np.testing.assert_array_equal(
        NumpyDeserializer(dtype=np.float32).deserialize(*respond("text/csv")), OUTPUTS["score"]
    )
    stream, ct = respond("application/x-recordio-protobuf")
    records = RecordDeserializer().deserialize(stream, ct)
    assert stream.was_closed
    assert [r.label["score"].float32_tensor.values[0] for r in records] == OUTPUTS["score"].tolist()
    assert [r.label["predicted_label"].float32_tensor.values[0] for r in records] == [1.0, 0.0]
