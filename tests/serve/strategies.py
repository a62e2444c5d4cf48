"""Hypothesis strategies for hostile InvokeEndpoint requests, shared by the codec and listener fuzz
tests: SageMaker's request shapes (JSON, JSON lines, CSV, libsvm, RecordIO) with wrong things inside,
and bodies with bytes that are not UTF-8."""

from __future__ import annotations

import io
import json

import numpy as np
from hypothesis import strategies as st

from raymaker.io.recordio import write_numpy_to_dense_tensor

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
feature_lists = st.lists(json_value, max_size=6) | st.lists(
    st.floats(allow_nan=True, allow_infinity=True), max_size=6
)
# SageMaker's request shapes with wrong things inside.
instance = st.one_of(
    feature_lists,
    st.builds(lambda f: {"features": f}, json_value | feature_lists),
    st.builds(
        lambda keys, shape, values, label: {
            "data": {"features": {"keys": keys, "shape": shape, "values": values}, "label": label}
        },
        json_value | st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=4),
        json_value | st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=2),
        json_value | feature_lists,
        json_value,
    ),
    json_value,
)
json_document = st.one_of(
    st.builds(lambda xs: {"instances": xs}, st.lists(instance, max_size=4) | json_value),
    st.lists(instance, max_size=4),
    instance,
)


def _dumps(doc: object) -> bytes:
    return json.dumps(doc).encode()


json_body = json_document.map(_dumps)
jsonlines_body = st.lists(json_document, min_size=1, max_size=4).map(
    lambda docs: b"\n".join(map(_dumps, docs)) + b"\n"
)
cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=6),
    st.sampled_from(["", '"', '""', "nan", "1e999", "1_000", " 1", "0x10", "\r", "1,5"]),
)
csv_body = st.lists(st.lists(cell, min_size=1, max_size=5), min_size=1, max_size=4).map(
    lambda rows: "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass")
)
libsvm_token = st.one_of(
    st.builds(
        lambda i, v: f"{i}:{v}",
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    st.text(alphabet="0123456789:.-e x\t", max_size=8),
)
libsvm_body = st.lists(
    st.builds(lambda label, toks: " ".join([label, *toks]), cell, st.lists(libsvm_token, max_size=4)),
    min_size=1,
    max_size=4,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


def _recordio(rows: int, cols: int) -> bytes:
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, np.ones((rows, cols), dtype=np.float32))
    return buf.getvalue()


recordio_body = st.builds(
    lambda base, at, junk: base[:at] + junk + base[at + len(junk) :],
    st.builds(_recordio, st.integers(1, 3), st.integers(1, 4)),
    st.integers(0, 60),
    st.binary(min_size=1, max_size=8),
)


@st.composite
def with_bad_utf8(draw: st.DrawFn, bodies: st.SearchStrategy[bytes]) -> bytes:
    body = draw(bodies)
    at = draw(st.integers(0, len(body)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\x80\x80", b"\xf8"]))
    return body[:at] + junk + body[at:]


structured = {
    "application/json": json_body,
    "application/jsonlines": jsonlines_body,
    "text/csv": csv_body,
    "text/libsvm": libsvm_body,
    "application/x-recordio-protobuf": recordio_body,
}

content_type_params = st.sampled_from(
    [
        "",
        ";label_size=0",
        ";label_size=1",
        ";label_size=7",
        ";label_size=x",
        ";header=present",
        ";num_features=3",
        ";num_features=-1",
        ";charset=latin-1",
        ";foo",
        ";foo=bar",
        ";;",
        ";=",
    ]
)
