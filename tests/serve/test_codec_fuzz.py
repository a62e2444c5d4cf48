"""Hostile request bodies against every codec: ``decode_request`` either decodes or raises an
``InvocationError`` with a 4xx status and a message, never anything else (an exception that escaped
would be a 500 from the endpoint). Hypothesis drives arbitrary bytes and structured-but-wrong bodies
(JSON of every shape, CSV and libsvm with bad cells, RecordIO frames with garbage inside), plus the
cases found by fuzzing, pinned as plain tests."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raymaker.io.formats import supported_content_types
from raymaker.serve.codecs import (
    RESPONSE_CONTENT_TYPES,
    BadRequest,
    InvocationError,
    NotAcceptable,
    choose_accept,
    decode_request,
    encode_response,
)
from tests.serve.strategies import content_type_params, structured, with_bad_utf8

ALL_TYPES = tuple(supported_content_types())  # every registered reader, images and Parquet included
TEXT_TYPES = ("text/csv", "application/json", "application/jsonlines", "text/libsvm", "text/x-libsvm")

# Bounded: the whole file runs in a few seconds on a slow shared machine; no example database.
FUZZ = settings(
    max_examples=150,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def outcome(body: bytes, content_type: str | None, accepted=ALL_TYPES) -> str:
    """'ok', or the error's status; fails the test on any exception that is not an InvocationError."""
    try:
        decode_request(body, content_type, accepted)
    except InvocationError as e:
        assert 400 <= e.status < 500, (e.status, e.message)
        assert isinstance(e.message, str) and e.message.strip()
        assert e.error_type
        return str(e.status)
    return "ok"


# --- properties --------------------------------------------------------------------------------------


@FUZZ
@given(st.sampled_from(ALL_TYPES), content_type_params, st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_are_a_4xx(mime: str, params: str, body: bytes) -> None:
    outcome(body, mime + params)


@FUZZ
@given(st.data())
def test_structured_but_wrong_bodies_decode_or_are_a_4xx(data: st.DataObject) -> None:
    mime = data.draw(st.sampled_from(sorted(structured)))
    body = data.draw(structured[mime] | with_bad_utf8(structured[mime]))
    # Every codec sees every family's bodies too: a JSON body sent as CSV is a common mistake.
    sent_as = data.draw(st.sampled_from([mime, *ALL_TYPES]))
    outcome(body, sent_as + data.draw(content_type_params))


@FUZZ
@given(
    st.sampled_from(TEXT_TYPES),
    with_bad_utf8(st.sampled_from([b"1,2,3\n", b"1,2\n3,4", b'{"features": [1, 2]}\n', b"1 0:1\n0 2:1\n"])),
)
def test_text_that_is_not_utf8_is_a_400_naming_line_and_byte(mime: str, body: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        decode_request(body, mime, ALL_TYPES)
    bad = body.decode("utf-8", "replace").index("\ufffd")  # a bad byte's text position = its line's
    line = body.decode("utf-8", "replace")[:bad].count("\n") + 1
    assert f"line {line}: byte 0x" in info.value.message, info.value.message
    assert "is not UTF-8" in info.value.message


@FUZZ
@given(
    st.one_of(st.none(), st.text(max_size=60), st.text(alphabet="*/,;=q.0123456789 abcjsonvt", max_size=40))
)
def test_any_accept_header_is_produced_or_a_406(accept: str | None) -> None:
    try:
        chosen = choose_accept(accept, "text/csv")
    except NotAcceptable as e:
        assert e.status == 406
        return
    assert chosen in RESPONSE_CONTENT_TYPES
    body, ct = encode_response({"score": np.array([0.5], np.float32)}, accept, default_accept="text/csv")
    assert ct == chosen and body


@FUZZ
@given(st.text(max_size=200), st.binary(max_size=64))
def test_any_content_type_header_decodes_or_is_a_4xx(content_type: str, body: bytes) -> None:
    outcome(body, content_type)


# --- the fuzzer's finds, pinned ---------------------------------------------------------------------


@pytest.mark.parametrize("mime", ["application/json", "application/jsonlines"])
@pytest.mark.parametrize("depth", [900, 5000, 200_000])
def test_deeply_nested_json_is_a_400_not_a_recursion_error(mime: str, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    if mime == "application/jsonlines":
        body = b"[1, 2]\n" + body + b"\n"
    with pytest.raises(BadRequest) as info:
        decode_request(body, mime, ALL_TYPES)
    if depth > 1000:
        assert "nested too deeply" in info.value.message


def test_deeply_nested_instances_are_a_400() -> None:
    body = b'{"instances": [{"features": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]}"
    with pytest.raises(BadRequest, match="nested too deeply"):
        decode_request(body, "application/json", ALL_TYPES)


@pytest.mark.parametrize(
    ("mime", "body", "line"),
    [
        ("application/json", b'{"features": [1, "\xff"]}', 1),
        ("application/jsonlines", b'{"features": [1]}\n{"features": [1\xfe]}\n', 2),
        ("text/csv", b"1,2,3\n4,5\xc3,6\n", 2),
        ("text/libsvm", b"1 0:1\n0 1:2\n1 3:\xff\n", 3),
        ("text/libsvm", b"\xff 1:2\n", 1),
    ],
)
def test_invalid_utf8_is_a_400_naming_line_and_byte(mime: str, body: bytes, line: int) -> None:
    with pytest.raises(BadRequest) as info:
        decode_request(body, mime, ALL_TYPES)
    assert f"line {line}:" in info.value.message
    assert "is not UTF-8" in info.value.message


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": {"features": {"keys": [99999999999999999999999], "shape": [3], "values": [1]}}}',
        b'{"data": {"features": {"keys": [1], "shape": [99999999999999999999999], "values": [1]}}}',
    ],
)
def test_integers_too_large_for_c_are_a_400(body: bytes) -> None:
    with pytest.raises(BadRequest, match="too large"):
        decode_request(body, "application/json", ALL_TYPES)


def test_a_number_with_thousands_of_digits_is_a_400_without_python_advice() -> None:
    with pytest.raises(BadRequest) as info:
        decode_request(b'{"features": [' + b"9" * 5000 + b"]}", "application/json", ALL_TYPES)
    assert "4300 digits" in info.value.message
    assert "sys.set_int_max_str_digits" not in info.value.message


@pytest.mark.parametrize("mime", ["text/csv", "application/json", "text/libsvm"])
def test_empty_body_is_a_400_that_says_what_to_send(mime: str) -> None:
    with pytest.raises(BadRequest, match=f"empty request body: send at least one record as {mime}"):
        decode_request(b"", mime, ALL_TYPES)


def test_huge_or_garbage_content_types_are_415_with_a_clipped_echo() -> None:
    for content_type in ("x" * 100_000, "\x00\xff/\x01", "text/csv;" + "a=b;" * 10_000 + "c"):
        with pytest.raises(InvocationError) as info:
            decode_request(b"1,2", content_type, ALL_TYPES)
        assert info.value.status == 415
        assert len(info.value.message) < 400, info.value.message


def test_huge_accept_is_a_406_with_a_clipped_echo() -> None:
    with pytest.raises(NotAcceptable) as info:
        choose_accept("image/gif," * 10_000, "text/csv")
    assert len(info.value.message) < 400


def test_a_reader_message_naming_a_huge_cell_is_clipped() -> None:
    with pytest.raises(BadRequest) as info:
        decode_request(b"1," + b"x" * 100_000 + b"\n", "text/csv", ALL_TYPES)
    assert "line 1" in info.value.message
    assert len(info.value.message) < 1200


# pyarrow 26's JSON reader segfaults when the first value is null (found by the listener fuzz test):
# checked in a child process, so that a regression fails this test instead of killing the run.
NULL_FIRST_BODIES = [b"null\nnull\n", b"null null", b"\n\t null\n{}", b"\xef\xbb\xbfnull\n[1]", b"nullx\n1"]


def test_json_bodies_starting_with_null_are_a_400_not_a_segfault() -> None:
    script = (
        "import sys\n"
        "from raymaker.serve.codecs import BadRequest, decode_request\n"
        f"for body in {NULL_FIRST_BODIES!r}:\n"
        "    for mime in ('application/json', 'application/jsonlines'):\n"
        "        try:\n"
        "            decode_request(body, mime, [mime])\n"
        "        except BadRequest as e:\n"
        "            assert 'got null' in e.message, e.message\n"
        "        else:\n"
        "            sys.exit(f'{body!r} as {mime} decoded')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
