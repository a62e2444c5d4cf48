"""Batch transform's data path: one input object (or one byte range of a large line-split object) in,
the model's output bytes for it out, in record order.

The engine cuts the input into ``WorkUnit``s and streams them to a pool of ``TransformWorker`` actors
(one per instance, two units in flight each, the model loaded once and kept warm between jobs); it
writes ``<relative key>.out`` when every unit of an object has succeeded. The request bodies the model sees are exactly SageMaker's:
SplitType records, packed per BatchStrategy within MaxPayloadInMB, after the InputFilter."""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from raymaker.io.batch import DataFormatError
from raymaker.io.storage import S3Settings, storage_for
from raymaker.serve.codecs import InvocationError
from raymaker.serve.dataprocessing import DataProcessing
from raymaker.serve.model import LoadedModel, ModelSpec
from raymaker.serve.splitting import assemble, join_payload, mini_batches, split_records

UNIT_BYTES = 32 << 20  # line-split objects are cut into units of at most this, run in parallel
MIN_UNIT_BYTES = 4 << 20  # below this a unit's fixed costs outweigh the overlap it buys


@dataclass(frozen=True)
class TransformPlan:
    model: ModelSpec
    content_type: str | None
    accept: str | None
    split_type: str = "None"
    strategy: str = "MultiRecord"
    max_payload_bytes: int = 6 << 20
    assemble_with: str = "None"
    compression: str = "None"
    input_filter: str = "$"
    join_source: str = "None"
    output_filter: str = "$"
    unit_bytes: int = UNIT_BYTES  # Environment RAYMAKER_TRANSFORM_UNIT_BYTES overrides it
    # Which of BatchStrategy, MaxPayloadInMB, MaxConcurrentTransforms the request set: a custom
    # container's GET /execution-parameters decides the others (SageMaker's precedence).
    given: frozenset[str] = frozenset()

    def with_execution_parameters(self, doc: dict[str, Any] | None) -> TransformPlan:
        """The plan after a container's ``/execution-parameters``: the request's values first, then the
        container's, then the defaults (already in the plan)."""
        if not doc:
            return self
        changes: dict[str, Any] = {}
        strategy = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}.get(str(doc.get("BatchStrategy")))
        if strategy and "BatchStrategy" not in self.given and self.split_type != "None":
            changes["strategy"] = strategy
        payload = doc.get("MaxPayloadInMB")
        if isinstance(payload, (int, float)) and 0 < payload <= 100 and "MaxPayloadInMB" not in self.given:
            changes["max_payload_bytes"] = int(payload * (1 << 20))
        return replace(self, **changes) if changes else self

    def data_processing_key(self) -> tuple:
        """What a warm worker depends on besides the model (it may serve another job with these)."""
        return (self.input_filter, self.join_source, self.output_filter, self.content_type, self.accept)

    def data_processing(self) -> DataProcessing:
        return DataProcessing(
            self.input_filter,
            self.join_source,
            self.output_filter,
            content_type=(self.content_type or "text/csv").split(";")[0].strip(),
            accept=(self.accept or self.content_type or "text/csv").split(";")[0].strip(),
        )


@dataclass(frozen=True)
class WorkUnit:
    uri: str
    relative: str
    index: int  # position of this unit in its object
    count: int  # units in the object
    start: int  # byte range [start, end) whose lines this unit owns; (0, -1) = the whole object
    end: int


def check_relative_key(relative: str, source: str | None = None) -> None:
    """Refuse an input's relative key whose ``<relative>.out`` would not be an object below
    S3OutputPath: an absolute path or a ``..`` segment (a manifest entry or a local file name can hold
    either) would write outside it, and an empty key or a NUL byte names no object. ValueError names
    the key and, when given, the input it came from."""
    if relative and not relative.startswith(("/", "\\")) and "\0" not in relative:
        # Backslashes too: Windows tools and some S3 clients treat them as separators.
        if ".." not in relative.replace("\\", "/").split("/"):
            return
    where = f"input {source}: " if source else ""
    if not relative:
        problem = "is empty: it names no output object"
    elif "\0" in relative:
        problem = "holds a NUL byte, which no file name takes"
    elif relative.startswith(("/", "\\")):
        problem = "is an absolute path, so its output would land outside S3OutputPath"
    else:
        problem = "has a '..' segment, so its output would land outside S3OutputPath"
    raise ValueError(
        f"{where}relative key {relative!r} {problem}; rename the input object or fix the manifest "
        "entry (entries are keys relative to the manifest's prefix, without '..' segments)"
    )


def safe_output_key(prefix: str, relative: str, source: str | None = None) -> str:
    """``<prefix>/<relative>.out``, the output object for an input object with that relative key
    (SageMaker's naming); ValueError (see ``check_relative_key``) when it would escape ``prefix``."""
    check_relative_key(relative, source)
    return f"{prefix.rstrip('/')}/{relative}.out"


def work_units(
    objects: list[Any], plan: TransformPlan, unit_bytes: int = UNIT_BYTES, instances: int = 1
) -> list[WorkUnit]:
    """Units for listed objects (``ObjectInfo``): uncompressed Line-split objects in byte ranges,
    everything else whole (RecordIO frames and gzip streams cannot be entered mid-way). A large object
    gets at least two units per instance, so each instance reads one while it transforms another.
    ValueError for an object whose output key would escape the output path (``check_relative_key``),
    before any unit runs."""
    units = []
    for obj in objects:
        check_relative_key(obj.relative, obj.uri)
        size = min(unit_bytes, max(MIN_UNIT_BYTES, -(-obj.size // (2 * instances))))
        if plan.split_type == "Line" and plan.compression != "Gzip" and obj.size > size:
            bounds = list(range(0, obj.size, size)) + [obj.size]
            n = len(bounds) - 1
            units += [WorkUnit(obj.uri, obj.relative, i, n, bounds[i], bounds[i + 1]) for i in range(n)]
        else:
            units.append(WorkUnit(obj.uri, obj.relative, 0, 1, 0, -1))
    return units


class TransformWorker:
    """One instance of a transform job (a Ray actor): loads the model once, then turns units into
    output bytes; kept warm between jobs on the same model."""

    def __init__(self, plan: TransformPlan, settings: S3Settings | None):
        import pyarrow as pa

        # Ray caps a 1-CPU actor's thread pools at one thread; this actor is the instance, give it all.
        pa.set_cpu_count(os.cpu_count() or 1)
        self.settings = settings
        self.model = LoadedModel(plan.model, settings)
        self.execution = self.model.execution_parameters()  # a custom container's, asked once
        self.plan = plan = plan.with_execution_parameters(self.execution)
        self.dp = plan.data_processing()
        self.accept = self.model.accept_for(plan.accept)

    def run(self, unit: WorkUnit, plan: TransformPlan | None = None) -> tuple[bytes, int]:
        """One unit's output bytes and record count. ``plan``: the job's (a warm worker serves later
        jobs on the same model, whose batching and assembly settings may differ)."""
        if plan is not None:
            plan = plan.with_execution_parameters(self.execution)
        if plan is not None and plan != self.plan:
            self.plan, self.dp = plan, plan.data_processing()
            self.accept = self.model.accept_for(plan.accept)
        data = self._read(unit)
        try:
            return self._transform(data, unit.uri)
        except (InvocationError, DataFormatError, ValueError) as e:
            message = e.message if isinstance(e, InvocationError) else str(e)
            offset = self._lines_before(unit) if unit.start > 0 else 0
            raise TransformError(f"{unit.uri}: {_shift_lines(message, offset)}") from None

    # --- reading -----------------------------------------------------------------------------------

    def _read(self, unit: WorkUnit) -> bytes:
        storage = storage_for(unit.uri, self.settings)
        if unit.end < 0:
            data = storage.read_bytes(unit.uri)
            if self.plan.compression == "Gzip":
                try:
                    data = gzip.decompress(data)
                except (OSError, EOFError) as e:
                    raise TransformError(
                        f"{unit.uri}: CompressionType is Gzip but the object is not gzip: {e}"
                    ) from None
            return data
        # Lines belong to the unit their first byte falls in: skip the partial line at the start,
        # read past the end to finish the last line.
        begin = max(unit.start - 1, 0)
        data = storage.read_range(unit.uri, begin, unit.end)
        tail, at = b"", unit.end
        if not data.endswith(b"\n"):
            while True:
                chunk = storage.read_range(unit.uri, at, at + (1 << 16))
                if not chunk:
                    break
                cut = chunk.find(b"\n")
                if cut >= 0:
                    tail += chunk[: cut + 1]
                    break
                tail += chunk
                at += len(chunk)
        data += tail
        if unit.start > 0:
            first = data.find(b"\n")  # data[0] is the byte before start
            data = data[first + 1 :] if first >= 0 else b""
        return data

    def _lines_before(self, unit: WorkUnit) -> int:
        """Lines before a unit's first line (only computed to name a failing line)."""
        storage = storage_for(unit.uri, self.settings)
        count, remaining = 0, unit.start
        with storage.open_seekable(unit.uri) as f:
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 22))
                if not chunk:
                    break
                count += chunk.count(b"\n")
                remaining -= len(chunk)
        # A unit starting mid-line begins at the next line.
        return count

    # --- transforming ------------------------------------------------------------------------------

    def _transform(self, data: bytes, source: str) -> tuple[bytes, int]:
        plan = self.plan
        if not data.strip():
            return b"", 0
        if plan.split_type == "Line" and plan.strategy == "MultiRecord" and self.dp.identity:
            return self._fast_lines(data, source)
        records = split_records(data, plan.split_type, source=source)
        inputs = records if self.dp.identity else [self.dp.filter_input(r) for r in records]
        per_record = not self.dp.identity
        outputs: list[bytes] = []
        sep = 1 if plan.split_type == "Line" else 0
        for rng in mini_batches(
            inputs, plan.strategy, plan.max_payload_bytes, source=source, separator_bytes=sep
        ):
            body, line0 = join_payload(inputs[rng.start : rng.stop], plan.split_type), rng.start
            try:
                out, _ = self.model.invoke(body, plan.content_type, self.accept)
            except InvocationError as e:
                raise InvocationError(e.status, e.error_type, _shift_lines(e.message, line0)) from None
            if per_record:
                parts = self._split_output(out, len(rng), source)
                outputs += [self.dp.finish(records[i], p) for i, p in zip(rng, parts, strict=True)]
            else:
                outputs.append(out)
        return assemble(outputs, plan.assemble_with if not per_record else "Line"), len(records)

    def _fast_lines(self, data: bytes, source: str) -> tuple[bytes, int]:
        """Line split + MultiRecord without filters: pack whole lines into payloads straight from the
        newline positions, with no per-record Python objects."""
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10) + 1
        if not data.endswith(b"\n"):
            ends = np.append(ends, len(data))
        limit = self.plan.max_payload_bytes or len(data) + 1
        outputs, start, line = [], 0, 0
        while start < len(data):
            stop_i = int(np.searchsorted(ends, start + limit, side="right")) - 1
            if stop_i < line:  # the next line alone is over the limit
                size = int(ends[line] - start)
                raise ValueError(
                    f"record {line + 1} is {size} bytes, over MaxPayloadInMB "
                    f"({self.plan.max_payload_bytes} bytes): raise MaxPayloadInMB or shorten the record"
                )
            stop = int(ends[stop_i])
            try:
                out, _ = self.model.invoke(data[start:stop], self.plan.content_type, self.accept)
            except InvocationError as e:
                raise InvocationError(e.status, e.error_type, _shift_lines(e.message, line)) from None
            outputs.append(out)
            start, line = stop, stop_i + 1
        return assemble(outputs, self.plan.assemble_with), len(ends)

    def _split_output(self, out: bytes, n: int, source: str) -> list[bytes]:
        """The model's response for ``n`` records, one output per record (for joins and filters)."""
        accept = self.accept.split(";")[0].strip()
        if accept == "application/json":
            doc = json.loads(out)
            rows = next(iter(doc.values())) if isinstance(doc, dict) and len(doc) == 1 else doc
            parts = [json.dumps(r).encode() for r in rows]
        else:
            parts = out.splitlines()
        if len(parts) != n:
            raise ValueError(f"the model answered {len(parts)} records for {n} inputs; cannot join them")
        return parts


_LINE = re.compile(r"\bline (\d+)")


class TransformError(ValueError):
    """A record the model cannot take: names the object and the line."""


def _shift_lines(message: str, offset: int) -> str:
    """Batch-relative 'line N' -> object line numbers."""
    if not offset:
        return message
    return _LINE.sub(lambda m: f"line {int(m.group(1)) + offset}", message, count=1)
