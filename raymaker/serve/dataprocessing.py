"""Batch transform ``DataProcessing``: InputFilter, JoinSource and OutputFilter.

Per record, SageMaker (1) selects part of the input with the ``InputFilter`` JSONPath and sends that
to the model, (2) with ``JoinSource=Input`` joins the *original* input record with the model's output
for it, and (3) keeps part of the (joined) record with the ``OutputFilter`` JSONPath. Sources: DG
``batch-transform-data-processing`` ("Associate Prediction Results with Input Records", including its
"Supported JSONPath Operators" table and examples), API ``DataProcessing``; contract reference §3.4.

Formats: ``text/csv`` (each line is a JSON array of its fields, RFC 4180 quoting, so only index and
slice paths apply), ``application/json`` and ``application/jsonlines`` (one JSON value per record).

Choices where the docs are silent or contradict each other are marked "Choice:" below; the big one is
that slices include their end index, as the DG's prose says (``$[1:4]`` is the second through fifth
columns), not Python's exclusive end.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_PATH_LENGTH", "DataProcessing", "JsonPath"]

MAX_PATH_LENGTH = 63  # API DataProcessing: InputFilter/OutputFilter length 0..63

_CSV = "text/csv"
_JSON = "application/json"
_JSONL = "application/jsonlines"
_FAMILY = {_CSV: "csv", _JSON: "json", _JSONL: "json"}
_OUTPUT_KEY = "SageMakerOutput"
_INPUT_KEY = "SageMakerInput"


# --------------------------------------------------------------------------------------------------
# JSONPath (SageMaker's subset)


@dataclass(frozen=True)
class _Name:  # .name or ['name']
    key: str


@dataclass(frozen=True)
class _Names:  # ['a','b',...]: several child names
    keys: tuple[str, ...]


@dataclass(frozen=True)
class _Wildcard:  # .* or [*]
    pass


@dataclass(frozen=True)
class _Indexes:  # [i,j], [s:e], or (Choice: a superset of SageMaker) a mix such as [0,5:]
    items: tuple[int | tuple[int | None, int | None], ...]

    @property
    def single(self) -> bool:
        return len(self.items) == 1 and isinstance(self.items[0], int)


_Step = _Name | _Names | _Wildcard | _Indexes

# A dot-notation name: anything up to the next '.', '[' or a character that means an unsupported
# construct (filters, scripts, unions) -- those get a specific error below.
_NAME = re.compile(r"[^.\[\]\s'\"*()?@,:]+")
_INT = re.compile(r"-?\d+")


class JsonPath:
    """A parsed SageMaker JSONPath expression; parse once, apply to every record.

    Supported (DG "Supported JSONPath Operators"): ``$``; ``.name`` and ``['name']``; several names
    ``['a','b']`` (DG ``$['id','SageMakerOutput']``); ``*`` / ``[*]``; index lists ``[1,3,5]`` with
    negative indexes (``-1`` is the last element); slices ``[start:end]`` with either side optional
    and negative bounds allowed; and chains of these (``$.features[1:]``). ``.[`` is accepted as
    ``[`` (the DG writes ``$.field1.['child1','child2']``). Not supported, with a ValueError naming
    the expression: ``..`` (recursive descent), filters ``[?(...)]``, scripts ``[(...)]``, slice steps
    ``[a:b:c]``, ``@``, and expressions over 63 characters.

    Results (``apply``): one selected value for a path of single selections (``$.id``, ``$[0]``);
    a list when any step can select several (index list, slice, ``*``), in document order for
    wildcards and in the listed order for index lists; several names as the last step give an object
    with just those keys (``$['id','SageMakerOutput']`` -> ``{"id": ..., "SageMakerOutput": ...}``).

    Choice (DG prose vs its table): slice ends are *inclusive* by default -- the DG says "The colon
    (:) tells SageMaker to include all of the elements between two values, inclusive. For example,
    ``$[1:4]`` specifies the second through fifth columns" and "``[:5]`` ... the first column (index 0)
    through the sixth column". ``slice_end_inclusive=False`` gives Python/Jayway's exclusive end.

    Choice (API ``OutputFilter``: "If you specify indexes that aren't within the dimension size of the
    joined dataset, you get an error"): an index, or an explicit slice bound, outside the array is a
    ValueError; a missing key likewise. Omitted slice bounds never fail.

    Choice: ``[0,5:]`` (an index list mixed with slices, the API's own OutputFilter example) is
    accepted; SageMaker has been reported to reject more than one range in one bracket
    (sagemaker-python-sdk#1112) -- raymaker accepts it. An empty expression means ``$``.
    """

    __slots__ = ("expr", "steps", "slice_end_inclusive")

    def __init__(self, expr: str, steps: tuple[_Step, ...], slice_end_inclusive: bool = True):
        self.expr = expr
        self.steps = steps
        self.slice_end_inclusive = slice_end_inclusive

    def __repr__(self) -> str:
        return f"JsonPath({self.expr!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonPath) and (self.steps, self.slice_end_inclusive) == (
            other.steps,
            other.slice_end_inclusive,
        )

    def __hash__(self) -> int:
        return hash((self.steps, self.slice_end_inclusive))

    @property
    def is_root(self) -> bool:
        """True for ``$``: the whole value, unchanged."""
        return not self.steps

    @property
    def uses_names(self) -> bool:
        """True when the path selects object keys (meaningless for CSV rows)."""
        return any(isinstance(s, _Name | _Names) for s in self.steps)

    # ---- parsing ----

    @classmethod
    def parse(cls, expr: str | None, *, slice_end_inclusive: bool = True) -> JsonPath:
        """Parse ``expr``; ValueError naming the expression and what is wrong or unsupported."""
        if expr is None or expr == "":
            expr = "$"
        if not isinstance(expr, str):
            raise TypeError(f"a JSONPath must be a string, not {type(expr).__name__}")
        if len(expr) > MAX_PATH_LENGTH:
            raise ValueError(
                f"JSONPath {expr!r} is {len(expr)} characters; SageMaker allows at most {MAX_PATH_LENGTH}"
            )
        return cls(expr, tuple(_Parser(expr).steps()), slice_end_inclusive)

    # ---- evaluation ----

    def apply(self, value: Any) -> Any:
        """Select from ``value`` (parsed JSON, or a CSV row as a list of field strings)."""
        if not self.steps:
            return value
        nodes = [value]
        multi = False
        last = len(self.steps) - 1
        for k, step in enumerate(self.steps):
            out: list[Any] = []
            if isinstance(step, _Name):
                for node in nodes:
                    out.append(self._child(node, step.key))
            elif isinstance(step, _Names):
                for node in nodes:
                    picked = {key: self._child(node, key) for key in step.keys}
                    if k == last:
                        out.append(picked)  # an object with just those keys
                    else:
                        out.extend(picked.values())
                multi |= k != last
            elif isinstance(step, _Wildcard):
                for node in nodes:
                    if isinstance(node, dict):
                        out.extend(node.values())
                    elif isinstance(node, list):
                        out.extend(node)
                    else:
                        raise ValueError(
                            f"JSONPath {self.expr!r}: '*' needs an object or array, got {_kind(node)}"
                        )
                multi = True
            else:
                for node in nodes:
                    if not isinstance(node, list):
                        raise ValueError(f"JSONPath {self.expr!r}: indexes need an array, got {_kind(node)}")
                    for i in self._indexes(step, len(node)):
                        out.append(node[i])
                multi |= not step.single
            nodes = out
        return nodes if multi else nodes[0]

    def _child(self, node: Any, key: str) -> Any:
        if not isinstance(node, dict):
            raise ValueError(f"JSONPath {self.expr!r}: cannot select key {key!r} from {_kind(node)}")
        try:
            return node[key]
        except KeyError:
            raise ValueError(f"JSONPath {self.expr!r}: key {key!r} not found") from None

    def _indexes(self, step: _Indexes, n: int) -> list[int]:
        out: list[int] = []
        for item in step.items:
            if isinstance(item, int):
                out.append(self._bound(item, n, "index"))
                continue
            start, end = item
            lo = 0 if start is None else self._bound(start, n, "slice start")
            if end is None:
                hi = n
            elif self.slice_end_inclusive:
                hi = self._bound(end, n, "slice end") + 1
            else:  # exclusive end: n itself is a valid end
                hi = end + n if end < 0 else end
                if not 0 <= hi <= n:
                    raise ValueError(self._range_error("slice end", end, n))
            out.extend(range(lo, hi))
        return out

    def _bound(self, i: int, n: int, what: str) -> int:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise ValueError(self._range_error(what, i, n))
        return j

    def _range_error(self, what: str, i: int, n: int) -> str:
        return f"JSONPath {self.expr!r}: {what} {i} is outside an array of {n} element{'s' * (n != 1)}"


def _kind(node: Any) -> str:
    if isinstance(node, dict):
        return "an object"
    if isinstance(node, list):
        return "an array"
    return f"a scalar ({_dumps(node)})"


class _Parser:
    def __init__(self, expr: str):
        self.expr = expr
        self.pos = 0

    def fail(self, why: str) -> ValueError:
        return ValueError(f"unsupported JSONPath {self.expr!r} (at character {self.pos + 1}): {why}")

    def steps(self) -> list[_Step]:
        s = self.expr
        if not s.startswith("$"):
            raise self.fail("an expression must start with '$' (the root)")
        self.pos = 1
        out: list[_Step] = []
        while self.pos < len(s):
            c = s[self.pos]
            if c == ".":
                if s.startswith("..", self.pos):
                    raise self.fail("recursive descent '..' is not supported")
                self.pos += 1
                if self.pos == len(s):
                    raise self.fail("a name must follow '.'")
                if s[self.pos] == "*":
                    out.append(_Wildcard())
                    self.pos += 1
                elif s[self.pos] == "[":
                    continue  # '.[' is read as '['
                else:
                    m = _NAME.match(s, self.pos)
                    if not m:
                        raise self.fail(f"expected a name after '.', found {s[self.pos]!r}")
                    out.append(_Name(m.group()))
                    self.pos = m.end()
            elif c == "[":
                out.append(self.bracket())
            else:
                raise self.fail(self.unexpected(c))
        return out

    def unexpected(self, c: str) -> str:
        if c in "?(@":
            return "filter and script expressions ('?(...)', '(...)', '@') are not supported"
        return f"unexpected {c!r}; expected '.name', '.*' or '[...]'"

    def skip_space(self) -> None:
        while self.pos < len(self.expr) and self.expr[self.pos] == " ":
            self.pos += 1

    def bracket(self) -> _Step:
        s = self.expr
        self.pos += 1  # '['
        self.skip_space()
        if self.pos >= len(s):
            raise self.fail("unclosed '['")
        c = s[self.pos]
        if c == "*":
            self.pos += 1
            self.close()
            return _Wildcard()
        if c in "'\"":
            keys = [self.quoted()]
            self.skip_space()
            while self.pos < len(s) and s[self.pos] == ",":
                self.pos += 1
                self.skip_space()
                if self.pos >= len(s) or s[self.pos] not in "'\"":
                    raise self.fail("names in brackets must all be quoted, e.g. ['id','SageMakerOutput']")
                keys.append(self.quoted())
                self.skip_space()
            self.close()
            return _Name(keys[0]) if len(keys) == 1 else _Names(tuple(keys))
        if c in "?(@":
            raise self.fail(self.unexpected(c))
        end = s.find("]", self.pos)
        if end < 0:
            raise self.fail("unclosed '['")
        body = s[self.pos : end]
        items: list[int | tuple[int | None, int | None]] = []
        for raw in body.split(","):
            part = raw.strip()
            if ":" in part:
                bounds = [b.strip() for b in part.split(":")]
                if len(bounds) > 2:
                    raise self.fail(f"slice steps ('{part}') are not supported; use [start:end]")
                items.append((self.int_or_none(bounds[0], part), self.int_or_none(bounds[1], part)))
            elif _INT.fullmatch(part):
                items.append(int(part))
            else:
                raise self.fail(
                    f"{part!r} is not an index; brackets hold '*', quoted names, indexes or start:end slices"
                    if part
                    else "empty index"
                )
        self.pos = end + 1
        return _Indexes(tuple(items))

    def int_or_none(self, text: str, part: str) -> int | None:
        if not text:
            return None
        if not _INT.fullmatch(text):
            raise self.fail(f"slice bound {text!r} in {part!r} is not an integer")
        return int(text)

    def quoted(self) -> str:
        s = self.expr
        q = s[self.pos]
        self.pos += 1
        buf: list[str] = []
        while self.pos < len(s):
            c = s[self.pos]
            if c == "\\" and self.pos + 1 < len(s):
                buf.append(s[self.pos + 1])
                self.pos += 2
                continue
            if c == q:
                self.pos += 1
                return "".join(buf)
            buf.append(c)
            self.pos += 1
        raise self.fail("unterminated quoted name")

    def close(self) -> None:
        self.skip_space()
        if self.pos >= len(self.expr) or self.expr[self.pos] != "]":
            raise self.fail("expected ']'")
        self.pos += 1


# --------------------------------------------------------------------------------------------------
# Record codecs


class _Number(str):
    """A JSON float kept as its source text, so "1.50" and "1e3" are written back unchanged."""

    __slots__ = ()


def _loads(record: bytes, what: str) -> Any:
    try:
        return json.loads(record, parse_float=_Number)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{what} is not valid JSON ({e}): {_preview(record)}") from None


def _dumps(value: Any) -> str:
    """Compact JSON (no spaces, like Jackson), non-ASCII kept as is, float text preserved."""
    if isinstance(value, _Number):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{_dumps(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)


def _csv_fields(record: bytes, what: str) -> list[str]:
    try:
        line = record.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not UTF-8 text ({e})") from None
    if '"' not in line:
        return line.split(",")  # the common case, without the csv module
    return next(csv.reader([line]), [""])


def _csv_line(value: Any) -> str:
    fields = value if isinstance(value, list) else [value]
    return ",".join(_csv_field(f) for f in fields)


def _csv_field(f: Any) -> str:
    s = f if isinstance(f, str) else ("" if f is None else _dumps(f))
    if any(c in s for c in ',"\n\r'):
        return '"' + s.replace('"', '""') + '"'  # RFC 4180: quote only where needed
    return s


def _strip_newline(record: bytes) -> bytes:
    if record.endswith(b"\n"):
        record = record[:-2] if record.endswith(b"\r\n") else record[:-1]
    return record


def _preview(record: bytes, n: int = 80) -> str:
    text = bytes(record[:n]).decode("utf-8", "replace")
    return repr(text + ("..." if len(record) > n else ""))


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


# --------------------------------------------------------------------------------------------------


class DataProcessing:
    """One transform job's ``DataProcessing`` settings, validated, ready to apply per record.

    ``filter_input(record)`` gives the bytes to send to the model for one input record;
    ``finish(input_record, output_record)`` gives the bytes to write for it (no trailing newline).
    When ``identity`` is True (all defaults) neither needs calling.

    Validation (DG): filters and joins work only on ``text/csv``, ``application/json`` and
    ``application/jsonlines`` (media-type parameters such as ``; charset=utf-8`` are ignored). With
    ``JoinSource=Input`` the input and output are joined into one record, so ContentType and Accept
    must be in the same family: CSV with CSV, or JSON/JSON Lines with JSON/JSON Lines (Choice: the DG
    only says both must be one of the three types and that "the algorithm must support your chosen
    format for both input and output files"; a CSV row cannot be joined with a JSON document). CSV
    rows are JSON arrays, so a name path (``$.id``) on CSV is rejected up front.

    Join (DG/API ``JoinSource``): CSV -- the output's fields are appended after the input's fields;
    JSON -- an input object gets a ``SageMakerOutput`` key holding the parsed output; any other input
    (an array, a scalar) becomes ``{"SageMakerInput": input, "SageMakerOutput": output}``.
    Choice: an input object that already has ``SageMakerOutput`` is a ValueError (the DG says the name
    is reserved and the input "can't have" it; SageMaker may silently overwrite it instead).

    Output: CSV fields keep their original text (``1.50`` stays ``1.50``) and are re-quoted per
    RFC 4180 only where needed (Choice: a field quoted without need, ``"abc"``, comes back as ``abc``);
    JSON is written compactly with float text kept as in the source.
    """

    def __init__(
        self,
        input_filter: str = "$",
        join_source: str = "None",
        output_filter: str = "$",
        content_type: str = _CSV,
        accept: str = _CSV,
        *,
        slice_end_inclusive: bool = True,
    ):
        self.input_filter = JsonPath.parse(input_filter, slice_end_inclusive=slice_end_inclusive)
        self.output_filter = JsonPath.parse(output_filter, slice_end_inclusive=slice_end_inclusive)
        js = "None" if join_source is None else str(join_source)
        if js.lower() not in ("none", "input"):
            raise ValueError(f"JoinSource must be Input or None; got {join_source!r}")
        self.join = js.lower() == "input"
        self.content_type = content_type
        self.accept = accept
        in_family = _FAMILY.get(_media_type(content_type))
        out_family = _FAMILY.get(_media_type(accept))
        supported = "text/csv, application/json or application/jsonlines"
        if not self.input_filter.is_root and in_family is None:
            raise ValueError(
                f"InputFilter {self.input_filter.expr!r} needs ContentType {supported}; got {content_type!r}"
            )
        if self.join:
            for name, ct, fam in (("ContentType", content_type, in_family), ("Accept", accept, out_family)):
                if fam is None:
                    raise ValueError(f"JoinSource Input needs {name} {supported}; got {ct!r}")
            if in_family != out_family:
                raise ValueError(
                    f"JoinSource Input joins each input record with its output, so ContentType and Accept "
                    f"must both be CSV or both JSON/JSON Lines; got ContentType {content_type!r} "
                    f"and Accept {accept!r}"
                )
        # The output filter sees the joined record (input's format) or the output alone (Accept's).
        self._in_family = in_family
        self._out_family = in_family if self.join else out_family
        if not self.output_filter.is_root and self._out_family is None:
            raise ValueError(
                f"OutputFilter {self.output_filter.expr!r} needs Accept {supported}; got {accept!r}"
            )
        for which, path, fam in (
            ("InputFilter", self.input_filter, self._in_family),
            ("OutputFilter", self.output_filter, self._out_family),
        ):
            if fam == "csv" and path.uses_names:
                raise ValueError(
                    f"{which} {path.expr!r} selects names, but CSV rows are arrays: "
                    "use index or slice paths such as $[1:] or $[0,-1]"
                )

    def __repr__(self) -> str:
        return (
            f"DataProcessing(input_filter={self.input_filter.expr!r}, "
            f"join_source={'Input' if self.join else 'None'!r}, output_filter={self.output_filter.expr!r}, "
            f"content_type={self.content_type!r}, accept={self.accept!r})"
        )

    @property
    def identity(self) -> bool:
        """True for the defaults (``$``, ``None``, ``$``): records pass through untouched."""
        return self.input_filter.is_root and not self.join and self.output_filter.is_root

    def filter_input(self, record: bytes) -> bytes:
        """Apply the InputFilter to one record: a CSV line (no newline), a JSON line, or a whole JSON
        document. Returns the filtered record in the same format. A single selected value becomes a
        one-field CSV row, or that JSON value."""
        if self.input_filter.is_root:
            return record
        record = _strip_newline(record)
        if self._in_family == "csv":
            return _csv_line(self.input_filter.apply(_csv_fields(record, "input record"))).encode()
        return _dumps(self.input_filter.apply(_loads(record, "input record"))).encode()

    def finish(self, input_record: bytes, output_record: bytes) -> bytes:
        """The record to write for one input: join the original (unfiltered) ``input_record`` with
        the model's ``output_record`` when JoinSource is Input, then apply the OutputFilter.
        A trailing newline on either is ignored; the result has none."""
        output_record = _strip_newline(output_record)
        if not self.join and self.output_filter.is_root:
            return output_record
        csv_family = self._out_family == "csv"
        if self.join:
            input_record = _strip_newline(input_record)
            if csv_family:
                value: Any = _csv_fields(input_record, "input record") + _csv_fields(
                    output_record, "model output"
                )
            else:
                value = _join_json(
                    _loads(input_record, "input record"), _loads(output_record, "model output")
                )
        elif csv_family:
            value = _csv_fields(output_record, "model output")
        else:
            value = _loads(output_record, "model output")
        value = self.output_filter.apply(value)
        return (_csv_line(value) if csv_family else _dumps(value)).encode()


def _join_json(inp: Any, out: Any) -> Any:
    if isinstance(inp, dict):
        if _OUTPUT_KEY in inp:
            raise ValueError(
                f"input record already has the key {_OUTPUT_KEY!r}, which JoinSource Input reserves for "
                "the model's output; rename it in the input"
            )
        return {**inp, _OUTPUT_KEY: out}
    return {_INPUT_KEY: inp, _OUTPUT_KEY: out}
