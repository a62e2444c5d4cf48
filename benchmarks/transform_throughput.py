"""Batch transform throughput: a raymaker transform job vs one process scoring the whole file (issue #4).

Starts its own S3 API server (moto, on 127.0.0.1) and a fresh local Ray with a throwaway RAYMAKER_HOME,
trains a small xgboost binary model in-process (synthetic data), and writes the same CSV rows (features
only, ``%.6g``) as one object and as N objects. Then, interleaved in each repeat:

* baseline:  one process: GetObject -> ``raymaker.io.formats.csv.read(data, label_size=0)`` (pyarrow) ->
             the algorithm's ``predict`` (one ``Booster.predict`` over every row) -> ``encode_response``
             (text/csv, one score per line) -> PutObject. Model loaded beforehand.
* raymaker:  ``Model(...).transformer(count, "local", strategy="MultiRecord", assemble_with="Line",
             accept="text/csv", max_payload=6).transform(prefix, content_type="text/csv",
             split_type="Line")``, wait=True, on the 1-object and the N-object input, for each instance
             count; timed from the ``transform()`` call to its return. "to start" is the job record's
             TransformStartTime - CreationTime (the hand-off to the job service).

Every raymaker output must equal the baseline's bytes (the N objects' outputs concatenated in order).
Figures are the best of the repeats. Target (issue #4): raymaker records/s >= the baseline's.

With ``--profile`` it then runs a ``TransformWorker`` in this process (no Ray) on the 1-object input
and splits its time into reading, line packing, and per mini-batch decode / predict / encode; and times
``LoadedModel.invoke`` on one mini-batch inside a 1-CPU Ray actor (the thread limits a worker gets).

The S3 server, Ray and the baseline share the machine's cores: figures include that contention.

    python benchmarks/transform_throughput.py [--rows 1000000] [--cols 20] [--objects 8] [--counts 1,2]
        [--repeat 3] [--rounds 50] [--depth 6] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import shutil
import tarfile
import tempfile
import time
from typing import Any

import numpy as np

from raymaker.testing import start_moto_server, stop

BUCKET = "bench"
PAYLOAD_MB = 6


# --- data and model --------------------------------------------------------------------------------


def build_model(work: str, cols: int, rounds: int, depth: int) -> str:
    """Train xgboost binary:logistic in-process on synthetic rows; return the model.tar.gz path."""
    from raymaker.algorithms import get_algorithm
    from raymaker.algorithms.base import LocalContext, TrainingData
    from raymaker.io.batch import Batch

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50_000, cols)).astype(np.float32)
    w = np.linspace(-1, 1, cols).astype(np.float32)
    y = (x @ w + 0.5 * rng.normal(size=len(x)) > 0).astype(np.float32)
    algo = get_algorithm("xgboost")
    hp = algo.validate_hyperparameters(
        {"objective": "binary:logistic", "num_round": str(rounds), "max_depth": str(depth)}
    )
    model_dir = os.path.join(work, "model")
    os.makedirs(model_dir)
    with contextlib.redirect_stdout(io.StringIO()):  # the per-round log lines
        algo().train(hp, TrainingData.from_batches(train=Batch(x, y)), LocalContext(), model_dir)
    archive = os.path.join(work, "model.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for name in os.listdir(model_dir):
            tar.add(os.path.join(model_dir, name), arcname=name)
    return archive


def csv_lines(rows: int, cols: int) -> list[bytes]:
    """One CSV line (with its newline) per row, features only, %.6g."""
    rng = np.random.default_rng(0)
    fmt = ",".join(["%.6g"] * cols) + "\n"
    out: list[bytes] = []
    for start in range(0, rows, 100_000):
        x = rng.normal(size=(min(100_000, rows - start), cols)).astype(np.float32)
        out += [line.encode() for line in map(fmt.__mod__, map(tuple, x.tolist()))]
    return out


# --- the baseline ----------------------------------------------------------------------------------


def baseline(client: Any, algo: Any, booster: Any, key: str, out_key: str) -> tuple[bytes, dict[str, float]]:
    """GetObject, parse, predict once, encode, PutObject; returns the output and each step's seconds."""
    from raymaker.io.formats import csv as csv_format
    from raymaker.serve.codecs import encode_response

    steps: dict[str, float] = {}
    t = time.perf_counter()
    data = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    steps["download"] = time.perf_counter() - t
    t = time.perf_counter()
    batch = csv_format.read(data, label_size=0)
    steps["parse"] = time.perf_counter() - t
    t = time.perf_counter()
    outputs = algo.predict(booster, batch)
    steps["predict"] = time.perf_counter() - t
    t = time.perf_counter()
    body, _ = encode_response(outputs, "text/csv", default_accept="text/csv")
    steps["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    client.put_object(Bucket=BUCKET, Key=out_key, Body=body)
    steps["upload"] = time.perf_counter() - t
    return body, steps


# --- raymaker --------------------------------------------------------------------------------------


def run_transform(model: Any, count: int, prefix: str, out: str) -> tuple[float, dict[str, Any]]:
    transformer = model.transformer(
        count,
        "local",
        strategy="MultiRecord",
        assemble_with="Line",
        accept="text/csv",
        max_payload=PAYLOAD_MB,
        output_path=out,
    )
    t = time.perf_counter()
    transformer.transform(prefix, content_type="text/csv", split_type="Line")
    secs = time.perf_counter() - t
    return secs, transformer.describe()


def read_outputs(client: Any, out_prefix: str, keys: list[str]) -> bytes:
    return b"".join(
        client.get_object(Bucket=BUCKET, Key=f"{out_prefix}/{k}.out")["Body"].read() for k in keys
    )


# --- profile ---------------------------------------------------------------------------------------


def profile_worker(model_uri: str, key: str, rows: int) -> None:
    """A TransformWorker in this process on the 1-object input: where its time goes."""
    from raymaker.io.channels import Channel, list_objects
    from raymaker.io.storage import S3Settings, storage_for
    from raymaker.serve import transform as st
    from raymaker.serve.codecs import decode_request, encode_response
    from raymaker.serve.model import ModelSpec

    settings = S3Settings().resolve()
    plan = st.TransformPlan(
        model=ModelSpec("bench", "xgboost", model_uri),
        content_type="text/csv",
        accept="text/csv",
        split_type="Line",
        strategy="MultiRecord",
        max_payload_bytes=PAYLOAD_MB << 20,
        assemble_with="Line",
    )
    t = time.perf_counter()
    worker = st.TransformWorker(plan, settings)
    load_s = time.perf_counter() - t
    objects = list_objects(Channel(name="t", s3_uri=f"s3://{BUCKET}/{key}", input_mode="File"), settings)
    units = st.work_units(objects, plan, plan.unit_bytes)

    read_s = pack_s = 0.0
    decode_s = predict_s = encode_s = 0.0
    payloads = 0
    outputs: list[bytes] = []
    model = worker.model
    t_all = time.perf_counter()
    for unit in units:
        t = time.perf_counter()
        data = worker._read(unit)
        read_s += time.perf_counter() - t
        # The packing of _fast_lines, with invoke's three steps timed apart.
        t = time.perf_counter()
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10) + 1
        pack_s += time.perf_counter() - t
        start = 0
        limit = plan.max_payload_bytes
        while start < len(data):
            t = time.perf_counter()
            stop_i = int(np.searchsorted(ends, start + limit, side="right")) - 1
            stop_b = int(ends[stop_i])
            body = data[start:stop_b]
            t1 = time.perf_counter()
            pack_s += t1 - t
            batch = decode_request(body, "text/csv", model.algorithm.inference_content_types)
            t2 = time.perf_counter()
            out = model.algorithm.predict(model.model, batch)
            t3 = time.perf_counter()
            enc, _ = encode_response(out, "text/csv", default_accept=model.default_accept)
            t4 = time.perf_counter()
            decode_s, predict_s, encode_s = decode_s + t2 - t1, predict_s + t3 - t2, encode_s + t4 - t3
            outputs.append(enc)
            payloads += 1
            start = stop_b
    total = time.perf_counter() - t_all
    t = time.perf_counter()
    storage_for(units[0].uri, settings).read_bytes(units[0].uri)
    whole_s = time.perf_counter() - t
    t = time.perf_counter()
    for unit in units:
        worker.run(unit)
    run_s = time.perf_counter() - t
    print(
        f"\nprofile: TransformWorker in this process (no Ray), 1-object input, {len(units)} units, "
        f"{payloads} payloads of <= {PAYLOAD_MB} MB; model load {load_s:.2f} s"
    )
    for label, secs in (
        (f"read ({len(units)} x {'s3fs range read' if units[0].end >= 0 else 'GetObject'})", read_s),
        ("  vs one GetObject of the object", whole_s),
        ("split/pack (newline scan)", pack_s),
        ("decode (pyarrow CSV)", decode_s),
        ("predict (DMatrix + Booster)", predict_s),
        ("encode (text/csv)", encode_s),
        ("sum of the steps", total),
        ("TransformWorker.run, all units", run_s),
    ):
        print(f"  {label:<32} {secs:6.2f} s  {rows / secs:>11,.0f} records/s")


def profile_in_actor(model_uri: str, key: str) -> None:
    """One 6 MB mini-batch through LoadedModel.invoke: here vs inside a 1-CPU Ray task (the thread
    limits a TransformWorker actor gets: Ray sets OMP_NUM_THREADS to its CPUs), and in one whose
    runtime_env sets OMP_NUM_THREADS to the machine's CPUs."""
    import ray

    from raymaker.io.storage import S3Settings
    from raymaker.serve.codecs import decode_request, encode_response
    from raymaker.serve.model import LoadedModel, ModelSpec

    settings = S3Settings().resolve()

    def measure(spec: ModelSpec, settings: S3Settings, body: bytes) -> dict[str, Any]:
        import pyarrow as pa

        pa.set_cpu_count(os.cpu_count() or 1)  # as TransformWorker does
        m = LoadedModel(spec, settings)
        m.invoke(body, "text/csv", "text/csv")  # warm
        out: dict[str, Any] = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
        for _ in range(3):
            t0 = time.perf_counter()
            batch = decode_request(body, "text/csv", m.algorithm.inference_content_types)
            t1 = time.perf_counter()
            o = m.algorithm.predict(m.model, batch)
            t2 = time.perf_counter()
            encode_response(o, "text/csv", default_accept="text/csv")
            t3 = time.perf_counter()
            for k, v in (("decode", t1 - t0), ("predict", t2 - t1), ("encode", t3 - t2)):
                out[k] = min(out.get(k, 1e9), v)
        out["rows"] = len(batch)
        m.model.set_param({"nthread": os.cpu_count() or 1})
        best_s = 1e9
        for _ in range(3):
            t0 = time.perf_counter()
            m.algorithm.predict(m.model, batch)
            best_s = min(best_s, time.perf_counter() - t0)
        out["predict_nthread"] = best_s
        return out

    from raymaker.io.storage import storage_for

    data = storage_for(f"s3://{BUCKET}/{key}", settings).read_bytes(f"s3://{BUCKET}/{key}")
    cut = data.rfind(b"\n", 0, PAYLOAD_MB << 20) + 1
    body = data[:cut]
    del data
    spec = ModelSpec("bench", "xgboost", model_uri)
    here = measure(spec, settings, body)
    remote = ray.remote(num_cpus=1)(measure)
    actor_1 = ray.get(remote.remote(spec, settings, body))
    # Ray sets OMP_NUM_THREADS to a worker's CPUs (1 here) unless its runtime_env sets it; libgomp reads
    # it once, so Booster nthread cannot raise it afterwards.
    omp = {"env_vars": {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}}
    actor_omp = ray.get(remote.options(runtime_env=omp).remote(spec, settings, body))
    print(
        f"\nprofile: LoadedModel.invoke on one {len(body) / 1e6:.1f} MB payload ({here['rows']} rows), best of 3"
    )
    print(
        f"  {'where':<30} {'OMP_NUM_THREADS':>15} {'decode':>8} {'predict':>8} {'encode':>8}"
        f"  predict with Booster nthread={os.cpu_count()}"
    )
    rows = (
        ("driver process", here),
        ("Ray task, num_cpus=1", actor_1),
        ("  + runtime_env OMP_NUM_THREADS", actor_omp),
    )
    for label, r in rows:
        print(
            f"  {label:<30} {r['OMP_NUM_THREADS']!s:>15} {r['decode'] * 1e3:6.0f}ms "
            f"{r['predict'] * 1e3:6.0f}ms {r['encode'] * 1e3:6.0f}ms  {r['predict_nthread'] * 1e3:6.0f}ms"
        )


# --- main ------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best(runs: list[float]) -> float:
    return min(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=20)
    ap.add_argument("--objects", type=int, default=8, help="objects in the multi-object input")
    ap.add_argument("--counts", default="1,2", help="instance counts to try, comma-separated")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="also profile a TransformWorker (see above)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]

    work = tempfile.mkdtemp(prefix="raymaker-bench-")
    log = open(os.path.join(work, "moto.log"), "wb")  # noqa: SIM115 (closed below)
    proc, endpoint = start_moto_server(log)
    try:
        # Before Ray starts, so every Ray process inherits the endpoint and credentials.
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=endpoint,
            RAYMAKER_HOME=os.path.join(work, "home"),
        )
        import boto3
        import pyarrow
        import ray
        import xgboost

        from raymaker.algorithms import get_algorithm
        from raymaker.cluster.runtime import ensure_ray
        from raymaker.sdk.model import Model
        from raymaker.sdk.session import Session

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)

        t = time.perf_counter()
        archive = build_model(work, args.cols, args.rounds, args.depth)
        train_s = time.perf_counter() - t
        client.upload_file(archive, BUCKET, "model/model.tar.gz")
        model_uri = f"s3://{BUCKET}/model/model.tar.gz"

        t = time.perf_counter()
        lines = csv_lines(args.rows, args.cols)
        one = b"".join(lines)
        client.put_object(Bucket=BUCKET, Key="in1/data.csv", Body=one)
        keys8 = []
        bounds = np.linspace(0, args.rows, args.objects + 1).astype(int)
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            keys8.append(f"part-{i:04d}.csv")
            client.put_object(Bucket=BUCKET, Key=f"inN/{keys8[-1]}", Body=b"".join(lines[a:b]))
        del lines
        nbytes = len(one)
        del one
        data_s = time.perf_counter() - t
        # The small input that starts the job service and Ray's workers before any measurement.
        client.put_object(Bucket=BUCKET, Key="warm/w.csv", Body=b",".join([b"0.5"] * args.cols) + b"\n")

        algo = get_algorithm("xgboost")()
        with tempfile.TemporaryDirectory() as d:
            with tarfile.open(archive) as tar:
                tar.extractall(d, filter="data")
            booster = algo.load(d)

        ensure_ray()  # raymaker's own local Ray (HAProxy env and all), as a first SDK call would start it
        session = Session()
        model = Model(model_uri, algorithm="xgboost", name="bench-xgb", session=session)
        t = time.perf_counter()
        run_transform(model, 1, f"s3://{BUCKET}/warm/", f"s3://{BUCKET}/out/warm")
        warm_s = time.perf_counter() - t

        configs = [
            (f"raymaker, 1 object, {c} instance{'s' if c > 1 else ''}", c, "in1", ["data.csv"])
            for c in counts
        ] + [
            (f"raymaker, {args.objects} objects, {c} instance{'s' if c > 1 else ''}", c, "inN", keys8)
            for c in counts
        ]
        base_runs: list[tuple[float, dict[str, float]]] = []
        fixed_runs: list[float] = []  # a 1-row job: what every job pays whatever its size
        job_runs: dict[str, list[tuple[float, float, float, int]]] = {c[0]: [] for c in configs}
        expected = b""
        for i in range(args.repeat):
            t = time.perf_counter()
            expected, steps = baseline(
                client, algo, booster, "in1/data.csv", f"out/baseline-{i}/data.csv.out"
            )
            base_runs.append((time.perf_counter() - t, steps))
            fixed_runs.append(
                run_transform(model, 1, f"s3://{BUCKET}/warm/", f"s3://{BUCKET}/out/warm-{i}")[0]
            )
            for label, count, prefix, keys in configs:
                out = f"out/{prefix}-{count}-{i}"
                secs, desc = run_transform(model, count, f"s3://{BUCKET}/{prefix}/", f"s3://{BUCKET}/{out}")
                got = read_outputs(client, out, keys)
                if got != expected:
                    raise SystemExit(
                        f"{label}: output differs from the baseline's ({len(got)} vs {len(expected)} bytes)"
                    )
                progress = model.session.call(
                    "GetTransformJobProgress", {"TransformJobName": desc["TransformJobName"]}
                )
                records = int(progress["RecordsTransformed"])
                if records != args.rows:
                    raise SystemExit(f"{label}: RecordsTransformed {records}, expected {args.rows}")
                created = desc["CreationTime"].timestamp()
                started = desc["TransformStartTime"].timestamp()
                ended = desc["TransformEndTime"].timestamp()
                job_runs[label].append((secs, started - created, ended - started, records))

        base_s = best([r[0] for r in base_runs])
        base_steps = min(base_runs, key=lambda r: r[0])[1]
        base_rps = args.rows / base_s
        print(
            f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}, Python "
            f"{platform.python_version()}, ray {ray.__version__}, xgboost {xgboost.__version__}, "
            f"pyarrow {pyarrow.__version__}; moto S3 server on the same cores"
        )
        print(
            f"data: {args.rows} CSV rows x {args.cols} features (%.6g), {nbytes / 1e6:.1f} MB, as 1 object "
            f"and as {args.objects} (write {data_s:.1f} s); xgboost binary:logistic, {args.rounds} rounds, "
            f"max_depth {args.depth} (train {train_s:.1f} s)"
        )
        print(
            f"transform: MultiRecord, MaxPayloadInMB {PAYLOAD_MB}, SplitType Line, AssembleWith Line, "
            f"text/csv -> text/csv; first (warm-up) job on 1 row: {warm_s:.2f} s"
        )
        print(f"repeats: {args.repeat}, interleaved; figures are the best run")
        print("baseline steps (best run): " + ", ".join(f"{k} {v:.2f} s" for k, v in base_steps.items()))
        print(
            f"{'path':<34} {'seconds':>8} {'records/s':>11} {'vs base':>8} {'queued':>7} {'job run':>8}  all runs (s)"
        )
        print(
            f"{'baseline, 1 process, 1 object':<34} {base_s:>8.2f} {base_rps:>11,.0f} {1:>7.2f}x {'-':>7} {'-':>8}  "
            + " ".join(f"{r[0]:.2f}" for r in base_runs)
        )
        verdicts = []
        for label, runs in job_runs.items():
            secs, to_start, job_run, _ = min(runs, key=lambda r: r[0])
            rps = args.rows / secs
            verdicts.append((label, rps / base_rps))
            print(
                f"{label:<34} {secs:>8.2f} {rps:>11,.0f} {rps / base_rps:>7.2f}x {to_start:>6.2f}s "
                f"{job_run:>7.2f}s  " + " ".join(f"{r[0]:.2f}" for r in runs)
            )
        fixed = best(fixed_runs)
        print(
            f"{'raymaker, 1 row (fixed cost)':<34} {fixed:>8.2f} {'-':>11} {'-':>8} {'-':>7} {'-':>8}  "
            + " ".join(f"{r:.2f}" for r in fixed_runs)
        )
        print(
            "queued: TransformStartTime - CreationTime (hand-off to the job service); job run: "
            "TransformEndTime - TransformStartTime; fixed cost: a 1-row job, paid by every job before its "
            "first record (with warm model actors: listing and dispatch; the first job on a model also starts its actors: process, imports, model load)"
        )
        print("outputs: every raymaker output equals the baseline's bytes; RecordsTransformed = rows")
        best_label, best_ratio = max(verdicts, key=lambda v: v[1])
        print(
            f"target (raymaker records/s >= baseline's): {'PASS' if best_ratio >= 1 else 'FAIL'} "
            f"(best: {best_label}, {best_ratio:.2f}x)"
        )
        for label, ratio in verdicts:
            print(f"  {label:<34} {'PASS' if ratio >= 1 else 'FAIL'} ({ratio:.2f}x)")

        if args.profile:
            logging.getLogger("raymaker").setLevel(logging.WARNING)
            profile_worker(model_uri, "in1/data.csv", args.rows)
            profile_in_actor(model_uri, "in1/data.csv")
        ray.shutdown()
    finally:
        stop(proc)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
