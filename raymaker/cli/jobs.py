"""``raymaker train`` and ``raymaker jobs list|describe|logs|plot|stop``: training jobs from the shell."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

from raymaker.cli.common import (
    NO_WAIT,
    RESOURCES,
    TRAINING_OPTIONS,
    Subparsers,
    add_options,
    add_resource_commands,
    describe,
    estimator_options,
    get_session,
    training_inputs,
)
from raymaker.sdk import Estimator, Session, TrainingJob, TrainingJobAnalytics, UnexpectedStatusException


def cmd_train(args: argparse.Namespace) -> int:
    est = Estimator(args.algorithm, **estimator_options(args), session=get_session(args))
    est.fit(training_inputs(args), wait=not args.no_wait, logs=True, job_name=args.job_name)
    print(f"training job: {est.latest_training_job.name}")
    if not args.no_wait:
        print(f"model: {est.model_data}")
    return 0


def training_job_logs(session: Session, name: str) -> Iterator[dict[str, Any]]:
    """Every log event of the job so far (``GetTrainingJobLogs``, page after page)."""
    after: int | None = None
    while True:
        params: dict[str, Any] = {"TrainingJobName": name}
        if after is not None:
            params["AfterSequenceNumber"] = after
        events = session.call("GetTrainingJobLogs", params)["Events"]
        if not events or (after is not None and events[-1]["SequenceNumber"] <= after):
            return
        yield from events
        after = events[-1]["SequenceNumber"]


def cmd_logs(args: argparse.Namespace) -> int:
    session = get_session(args)
    if args.follow:
        try:
            TrainingJob(args.name, session).wait(logs=True)
        except UnexpectedStatusException:
            return 1
        return 0
    for event in training_job_logs(session, args.name):
        print(f"{event['Timestamp'].astimezone().strftime('%H:%M:%S')} {event['Message']}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    session = get_session(args)
    describe(session, RESOURCES["jobs"], args.name)  # an unknown name says where to look
    out = args.out or f"{args.name}-curves.png"
    TrainingJobAnalytics(args.name, args.metric or None, sagemaker_session=session).plot(out)
    print(f"wrote {os.path.abspath(out)}")
    return 0


def add_commands(sub: Subparsers) -> None:
    p = sub.add_parser("train", help="run a training job with a built-in algorithm")
    add_options(p, *TRAINING_OPTIONS, NO_WAIT)
    p.add_argument("--job-name")
    p.set_defaults(func=cmd_train)

    jobs = add_resource_commands(sub, RESOURCES["jobs"])
    p = jobs.add_parser("logs", help="the job's log lines")
    p.add_argument("name")
    p.add_argument("--follow", "-f", action="store_true", help="follow until the job ends")
    p.set_defaults(func=cmd_logs)
    p = jobs.add_parser(
        "plot",
        help="the job's metric curves as a PNG",
        description="One panel per metric (rmse, auc, ...) with a line per channel (train, validation, "
        "...), against the time since the job's first metric.",
    )
    p.add_argument("name")
    p.add_argument("--out", "-o", metavar="PNG", help="where to write it (default: NAME-curves.png)")
    p.add_argument(
        "--metric", action="append", default=[], help="only this metric, e.g. validation:auc (repeat)"
    )
    p.set_defaults(func=cmd_plot)
