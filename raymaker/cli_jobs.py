"""``raymaker train`` and ``raymaker jobs list|describe|logs|stop``: training jobs from the shell."""

from __future__ import annotations

import argparse
import json
import time


def _session():
    from raymaker import Session

    return Session()


def _hyperparameters(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--hp {pair!r}: write hyperparameters as name=value")
        out[key] = value
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from raymaker import Estimator, TrainingInput

    channels = {"train": args.train, "validation": args.validation, "test": args.test, "model": args.model}
    inputs = {
        name: TrainingInput(
            uri,
            content_type=None if name == "model" else args.content_type,
            distribution=args.distribution if name == "train" else None,
        )
        for name, uri in channels.items()
        if uri
    }
    est = Estimator(
        args.algorithm,
        hyperparameters=_hyperparameters(args.hp),
        instance_count=args.instance_count,
        instance_type=args.instance_type,
        input_mode=args.input_mode,
        output_path=args.output_path,
        max_run=args.max_run,
        session=_session(),
    )
    est.fit(inputs, wait=not args.no_wait, logs=True, job_name=args.job_name)
    job = est.latest_training_job
    print(f"training job: {job.name}")
    if not args.no_wait:
        print(f"model: {est.model_data}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    params = {"MaxResults": args.max_results}
    if args.status:
        params["StatusEquals"] = args.status
    if args.name_contains:
        params["NameContains"] = args.name_contains
    jobs = _session().call("ListTrainingJobs", params)["TrainingJobSummaries"]
    print(f"{'NAME':<48} {'STATUS':<11} {'CREATED':<20} SECONDS")
    for j in jobs:
        created = j["CreationTime"].strftime("%Y-%m-%d %H:%M:%S")
        secs = ""
        if j.get("TrainingEndTime"):
            secs = f"{(j['TrainingEndTime'] - j['CreationTime']).total_seconds():.0f}"
        print(f"{j['TrainingJobName']:<48} {j['TrainingJobStatus']:<11} {created:<20} {secs}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    desc = _session().call("DescribeTrainingJob", {"TrainingJobName": args.name})
    print(json.dumps(desc, indent=2, default=str))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from raymaker.sdk import TrainingJob, UnexpectedStatusException

    session = _session()
    if args.follow:
        try:
            TrainingJob(args.name, session).wait(logs=True)
        except UnexpectedStatusException:
            return 1
        return 0
    for event in session.call("GetTrainingJobLogs", {"TrainingJobName": args.name})["Events"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
        print(f"{stamp} {event['line']}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    _session().call("StopTrainingJob", {"TrainingJobName": args.name})
    print(f"stopping {args.name}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="run a training job with a built-in algorithm")
    p.add_argument("--algorithm", required=True, help="xgboost, linear-learner, kmeans or pca")
    p.add_argument("--train", required=True, help="URI of the train channel (s3://, file:// or a path)")
    p.add_argument("--validation")
    p.add_argument("--test")
    p.add_argument("--model", help="an earlier model.tar.gz to continue from (incremental training)")
    p.add_argument("--content-type", help="e.g. text/csv (default: the algorithm's)")
    p.add_argument("--distribution", choices=["FullyReplicated", "ShardedByS3Key"])
    p.add_argument(
        "--hp", action="append", default=[], metavar="NAME=VALUE", help="a hyperparameter (repeat)"
    )
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--instance-type", default="local")
    p.add_argument("--input-mode", default="File", choices=["File", "Pipe", "FastFile"])
    p.add_argument("--output-path")
    p.add_argument("--max-run", type=int, default=86400, help="MaxRuntimeInSeconds")
    p.add_argument("--job-name")
    p.add_argument("--no-wait", action="store_true", help="return once the job has started")
    p.set_defaults(func=cmd_train)

    jobs = sub.add_parser("jobs", help="training jobs: list, describe, logs, stop").add_subparsers(
        dest="jobs_command", required=True
    )
    p = jobs.add_parser("list")
    p.add_argument("--status", choices=["InProgress", "Completed", "Failed", "Stopping", "Stopped"])
    p.add_argument("--name-contains")
    p.add_argument("--max-results", type=int, default=50)
    p.set_defaults(func=cmd_list)
    for name, func, helptext in (
        ("describe", cmd_describe, "DescribeTrainingJob as JSON"),
        ("logs", cmd_logs, "the job's log lines"),
        ("stop", cmd_stop, "StopTrainingJob"),
    ):
        p = jobs.add_parser(name, help=helptext)
        p.add_argument("name")
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true", help="follow until the job ends")
        p.set_defaults(func=func)
