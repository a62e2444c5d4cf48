"""Recording the catalog's metrics through ``ray.util.metrics``, cheaply.

- ``bound(metric, tags)``: a Ray metric object with its labels fixed once (Ray's default tags), so a
  record passes no dict and builds none: one Cython call, ~3 us here.
- ``EndpointMetrics``: one variant's invocation metrics, bound once per replica (and per variant in
  the runtime ingress); counted in Python per request, handed to Ray once a second.
- ``UsageSampler``: a thread that samples one instance's processes (CPU, resident memory, its GPUs)
  every few seconds into the instance's gauges. Ray drops a gauge ~2 export intervals (20 s) after
  its last value, so an instance's series end with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from raymaker.metrics import catalog
from raymaker.metrics.catalog import COUNTER, GAUGE, HISTOGRAM, Metric

SAMPLE_S = 5.0  # Ray exports every 10 s: a sample per half interval keeps every export fresh
logger = logging.getLogger(__name__)

_cache: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
_lock = threading.Lock()


def bound(metric: Metric, tags: Mapping[str, str]) -> Any:
    """The Ray metric object for ``metric`` with ``tags`` as its labels (one per process and label set)."""
    key = (metric.name, tuple(sorted(tags.items())))
    found = _cache.get(key)
    if found is not None:
        return found
    from ray.util import metrics as ray_metrics

    missing = set(metric.labels) - set(tags)
    if missing:
        raise ValueError(f"{metric.name} needs labels {sorted(missing)}")
    with _lock:
        found = _cache.get(key)
        if found is None:
            if metric.kind == COUNTER:
                found = ray_metrics.Counter(metric.name, metric.description, metric.labels)
            elif metric.kind == GAUGE:
                found = ray_metrics.Gauge(metric.name, metric.description, metric.labels)
            elif metric.kind == HISTOGRAM:
                found = ray_metrics.Histogram(
                    metric.name, metric.description, list(metric.buckets), metric.labels
                )
            else:  # pragma: no cover - the catalog has only these kinds
                raise ValueError(metric.kind)
            found.set_default_tags({k: str(tags[k]) for k in metric.labels})
            _cache[key] = found
    return found


class EndpointMetrics:
    """One production variant's invocation metrics, recorded where its requests are answered.

    A request is counted in Python (a list append, an int add: well under a microsecond) and handed to
    Ray by ``flush``, once a second, from the same event loop (``flush_forever``): a Ray record costs
    ~4 us of Cython and can hand the GIL to another thread, which on a busy machine added tenths of a
    millisecond to each request when recorded inline. A replica that dies loses its last second."""

    __slots__ = ("_invocations", "_e4xx", "_e5xx", "_per_instance", "_model", "_overhead",
                 "_counts", "_model_us", "_overhead_us")  # fmt: skip

    def __init__(self, endpoint: str, variant: str):
        tags = {"EndpointName": endpoint, "VariantName": variant}
        self._invocations = bound(catalog.INVOCATIONS, tags)
        self._e4xx = bound(catalog.INVOCATION_4XX, tags)
        self._e5xx = bound(catalog.INVOCATION_5XX, tags)
        self._per_instance = bound(catalog.INVOCATIONS_PER_INSTANCE, tags)
        self._model = bound(catalog.MODEL_LATENCY, tags)
        self._overhead = bound(catalog.OVERHEAD_LATENCY, tags)
        self._counts = [0, 0, 0]  # invocations, 4xx, 5xx not yet handed to Ray
        self._model_us: list[float] = []
        self._overhead_us: list[float] = []
        # CloudWatch sends a 0 for every request that is not an error; here the error series start at
        # 0 once, so "no errors" is a value (not a missing series) and the first error is a rate.
        for counter in (self._e4xx, self._e5xx):
            _start_at_zero(counter)

    def model_ran(self, model_ns: int) -> None:
        """In the instance that ran the model: ModelLatency and its InvocationsPerInstance."""
        self._model_us.append(model_ns / 1000.0)

    def answered(self, status: int, overhead_ns: int) -> None:
        """Where the request was answered: Invocations, 4xx / 5xx, OverheadLatency."""
        counts = self._counts
        counts[0] += 1
        if status >= 500:
            counts[2] += 1
        elif status >= 400:
            counts[1] += 1
        self._overhead_us.append(max(overhead_ns, 0) / 1000.0)

    def request(self, status: int, overhead_ns: int, model_ns: int) -> None:
        """A request answered by the instance that ran its model (``model_ns`` 0: it did not run)."""
        if model_ns > 0:
            self._model_us.append(model_ns / 1000.0)
        self.answered(status, overhead_ns)

    def flush(self) -> None:
        """Hand what was counted since the last flush to Ray (call from the loop that counts)."""
        (n, e4, e5), self._counts = self._counts, [0, 0, 0]
        model, self._model_us = self._model_us, []
        overhead, self._overhead_us = self._overhead_us, []
        if n:
            self._invocations.inc(n)
        if e4:
            self._e4xx.inc(e4)
        if e5:
            self._e5xx.inc(e5)
        if model:
            self._per_instance.inc(len(model))
        for v in model:
            self._model.observe(v)
        for v in overhead:
            self._overhead.observe(v)


FLUSH_S = 1.0


def ensure_flusher(task: Any, current: Callable[[], Iterable[EndpointMetrics]]) -> Any:
    """``task`` if it flushes on the running loop, else a new ``flush_forever`` task there (the first
    request, or a loop that replaced the old one)."""
    import asyncio

    loop = asyncio.get_running_loop()
    if task is None or task.done() or task.get_loop() is not loop:
        task = loop.create_task(flush_forever(current))
    return task


async def flush_forever(current: Callable[[], Iterable[EndpointMetrics]], interval_s: float = FLUSH_S) -> None:
    """Flush the metrics ``current()`` names every ``interval_s``, on the loop that records them."""
    import asyncio

    while True:
        await asyncio.sleep(interval_s)
        for metrics in list(current()):
            try:
                metrics.flush()
            except Exception:  # noqa: BLE001 - never take the replica's loop down for a metric
                logger.debug("metrics flush failed", exc_info=True)


def _start_at_zero(counter: Any) -> None:
    """Record 0 on a Ray counter (``Counter.inc`` refuses 0): Ray's Cython metric takes it."""
    try:
        counter._metric.record(0.0, tags=counter._default_tags)
    except Exception:  # noqa: BLE001 - a Ray without that internal: the series starts at the first error
        logger.debug("could not start %s at 0", counter, exc_info=True)


# --- instance usage ---------------------------------------------------------------------------------


class UsageSampler:
    """Samples this process and its children (a script's process, a container's CLI) every
    ``interval_s`` into CPUUtilization and MemoryUtilization gauges, and the instance's GPUs (by
    nvidia-smi) into GPUUtilization and GPUMemoryUtilization where it has any. ``retarget`` changes the
    labels (a replica given another endpoint); ``stop`` ends the thread."""

    def __init__(
        self,
        cpu: Metric,
        memory: Metric,
        tags: Mapping[str, str],
        *,
        memory_bytes: float = 0.0,
        gpu: Metric | None = None,
        gpu_memory: Metric | None = None,
        gpus: Sequence[int | str] = (),
        interval_s: float = SAMPLE_S,
    ):
        import psutil

        self._metrics = (cpu, memory, gpu, gpu_memory)
        self._gauges: tuple[Any, ...] = ()
        self.retarget(tags)
        self.memory_bytes = memory_bytes or float(psutil.virtual_memory().total)
        self.gpus = tuple(str(g) for g in gpus)
        self.interval_s = interval_s
        self._me = psutil.Process()
        self._procs: dict[int, Any] = {self._me.pid: self._me}
        self._me.cpu_percent(None)  # the baseline the first sample measures from
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="raymaker-usage")
        self._thread.start()

    def retarget(self, tags: Mapping[str, str]) -> None:
        self._gauges = tuple(None if m is None else bound(m, tags) for m in self._metrics)

    def sample(self) -> dict[str, float]:
        """One sample, recorded; returned for tests."""
        import psutil

        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            children = []
        live = {self._me.pid: self._me}
        for child in children:
            live[child.pid] = self._procs.get(child.pid, child)
        cpu = rss = 0.0
        for proc in live.values():
            try:
                # A process seen for the first time reports 0.0 (its baseline); it counts from the next.
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        self._procs = live
        out = {"cpu": cpu, "memory": 100.0 * rss / self.memory_bytes}
        if self.gpus:
            out.update(gpu_usage(self.gpus))
        cpu_g, mem_g, gpu_g, gpu_mem_g = self._gauges
        cpu_g.set(out["cpu"])
        mem_g.set(out["memory"])
        if "gpu" in out and gpu_g is not None and gpu_mem_g is not None:
            gpu_g.set(out["gpu"])
            gpu_mem_g.set(out["gpu_memory"])
        return out

    def _run(self) -> None:
        wait = min(1.0, self.interval_s)  # a first value soon: short jobs get one too
        while not self._stop.wait(wait):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a failed sample must never touch the work it watches
                logger.debug("usage sample failed", exc_info=True)
            wait = self.interval_s

    def stop(self, final: bool = True) -> None:
        """End the thread; ``final``: one last sample first, so the end of a short job is seen."""
        self._stop.set()
        if final:
            with contextlib.suppress(Exception):
                self.sample()


def gpu_usage(gpus: Sequence[str]) -> dict[str, float]:
    """Summed utilization and memory use (percent) of the given GPUs (indices or UUIDs, as Ray gives
    them), by nvidia-smi; empty where it is missing or fails."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {}
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,uuid,utilization.gpu,memory.used,memory.total",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    wanted = set(gpus)
    util = mem = 0.0
    seen = 0
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5 or not (parts[0] in wanted or parts[1] in wanted):
            continue
        try:
            util += float(parts[2])
            mem += 100.0 * float(parts[3]) / max(float(parts[4]), 1.0)
        except ValueError:
            continue
        seen += 1
    return {"gpu": util, "gpu_memory": mem} if seen else {}


@contextlib.contextmanager
def training_host(
    host: str, *, memory_gb: float = 0.0, gpus: Sequence[int | str] = (), on: bool = True
) -> Iterator[UsageSampler | None]:
    """One training instance's usage under CloudWatch's ``Host`` (``<job>/algo-<n>``) while the block
    runs."""
    if not on:
        yield None
        return
    try:
        sampler = UsageSampler(
            catalog.TRAINING_CPU, catalog.TRAINING_MEMORY, {"Host": host},
            memory_bytes=memory_gb * 2**30, gpu=catalog.TRAINING_GPU,
            gpu_memory=catalog.TRAINING_GPU_MEMORY, gpus=gpus,
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - no metrics (no Ray worker here, say) never fails a job
        logger.debug("no usage metrics for %s", host, exc_info=True)
        yield None
        return
    try:
        yield sampler
    finally:
        sampler.stop()


def visible_gpus() -> tuple[str, ...]:
    """The GPUs Ray gave this process (its CUDA_VISIBLE_DEVICES), as nvidia-smi names them."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return tuple(v.strip() for v in value.split(",") if v.strip())
