"""What every ``raymaker`` command shares: the session it talks to, JSON and table printing, error
lines, the option definitions more than one command takes, and the one builder of the ``list``,
``describe`` and ``stop`` subcommands of every resource kind (from the ``RESOURCES`` table)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from raymaker.protocol.errors import ResourceNotFound, SageMakerError, ValidationError
from raymaker.sdk import Session, TrainingInput

Subparsers = argparse._SubParsersAction  # what ``add_subparsers`` returns; argparse names it privately

ENDED = ("Completed", "Failed", "Stopped")
ALGORITHMS = "xgboost, linear-learner, kmeans or pca"

# --- session, output ------------------------------------------------------------------------------


def get_session(args: argparse.Namespace) -> Session:
    """The session the command talks to: the one ``main`` was handed (a script, a test's fake
    backend), else a local-mode ``Session()``, made on first use so ``io`` commands never make one."""
    session = getattr(args, "session", None)
    if session is None:
        session = args.session = Session()
    return session


def json_default(value: Any) -> str:
    """Datetimes as ISO 8601; anything else JSON cannot hold as its ``str``."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=json_default))


def print_error(message: str) -> None:
    print(f"raymaker: error: {message}", file=sys.stderr)


def print_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Columns as wide as their widest cell, two spaces apart, no trailing blanks."""
    table = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip())


def clock(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


# --- URIs and content types -----------------------------------------------------------------------

EXTENSIONS = {
    ".csv": "text/csv",
    ".libsvm": "text/libsvm",
    ".svm": "text/libsvm",
    ".jsonl": "application/jsonlines",
    ".json": "application/json",
    ".parquet": "application/x-parquet",
    ".rec": "application/x-recordio-protobuf",
    ".pbr": "application/x-recordio-protobuf",
    ".recordio": "application/x-recordio-protobuf",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
}


def content_type_of(path: str) -> str | None:
    """The content type a file's extension (under any ``.gz``) names, or None."""
    name = path[:-3] if path.endswith(".gz") else path
    return EXTENSIONS.get(os.path.splitext(name)[1].lower())


def local_uri(path: str) -> str:
    """A URI as given; a path as an absolute file:// URI (the job runs elsewhere: never a relative path),
    keeping a trailing slash (a prefix)."""
    if "://" in path:
        return path
    slash = "/" if path.endswith(("/", os.sep)) else ""
    return "file://" + os.path.abspath(os.path.expanduser(path)) + slash


def require_lasting_cluster(session: Session, command: str, what: str) -> None:
    """Refuse to start something (an endpoint, a job not waited for) that would die with this process.
    The in-process backend's ``ensure_ready()`` joins or starts Ray and the job service, and answers
    False when it had to start a Ray head in this process, which stops when the command exits (None,
    not known, lets the command go on). A backend without it (a remote server, a test's fake) holds its
    own cluster, so there is nothing to check."""
    ensure_ready = getattr(session.backend, "ensure_ready", None)
    if ensure_ready is None or ensure_ready() is not False:
        return
    raise SystemExit(
        f"{command} needs a running Ray cluster: one started by this command would stop when it "
        f"exits, taking {what} with it: start one with `raymaker up` (or set RAY_ADDRESS to a "
        f"running cluster) and {command} again"
    )


# --- shared options -------------------------------------------------------------------------------


class Option:
    """One option's definition, added to every command that takes it, so ``--instance-type`` (say)
    means the same, with the same default and help, wherever it appears."""

    def __init__(self, *flags: str, **kwargs: Any):
        self.flags = flags
        self.kwargs = kwargs

    def add(self, parser: argparse._ActionsContainer) -> argparse.Action:
        return parser.add_argument(*self.flags, **self.kwargs)

    def but(self, **changes: Any) -> Option:
        """The same option with some settings changed (``--algorithm`` required by ``train``)."""
        return Option(*self.flags, **{**self.kwargs, **changes})


def add_options(parser: argparse._ActionsContainer, *options: Option) -> None:
    for option in options:
        option.add(parser)


ALGORITHM = Option("--algorithm", help=ALGORITHMS)
INSTANCE_TYPE = Option("--instance-type", default="local", help="an ml.* instance type, or local (default)")
INSTANCE_COUNT = Option("--instance-count", type=int, default=1)
MODEL_DATA = Option("--model-data", help="the model.tar.gz (s3://, file:// or a path); needs --algorithm")
TRAINING_JOB = Option("--training-job", help="a Completed training job: its model and algorithm")
NO_WAIT = Option("--no-wait", action="store_true", help="return once it has started, not when it ends")
STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")

# ``train`` and ``tune`` (every trial) run the same training job definition.
TRAINING_OPTIONS = (
    ALGORITHM.but(required=True),
    Option("--train", required=True, help="URI of the train channel (s3://, file:// or a path)"),
    Option("--validation", help="URI of the validation channel"),
    Option("--test", help="URI of the test channel"),
    Option("--model", help="an earlier model.tar.gz to continue from (incremental training)"),
    Option("--content-type", help="e.g. text/csv (default: the algorithm's)"),
    Option("--distribution", choices=["FullyReplicated", "ShardedByS3Key"], help="of the train channel"),
    Option(
        "--hp", action="append", default=[], metavar="NAME=VALUE", help="a (static) hyperparameter (repeat)"
    ),
    INSTANCE_COUNT,
    INSTANCE_TYPE,
    Option("--input-mode", default="File", choices=["File", "Pipe", "FastFile"]),
    Option("--output-path", help="where the model goes (default: under $RAYMAKER_HOME/output)"),
    Option("--max-run", type=int, default=86400, help="MaxRuntimeInSeconds (of each training job)"),
    Option(
        "--keep-alive",
        type=int,
        metavar="SECONDS",
        help="KeepAlivePeriodInSeconds: keep the instances warm for the next job (warm pool)",
    ),
)


def hyperparameters(pairs: list[str]) -> dict[str, str]:
    """``--hp name=value`` pairs as a dict."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--hp {pair!r}: write hyperparameters as name=value")
        out[key] = value
    return out


def training_inputs(args: argparse.Namespace) -> dict[str, TrainingInput]:
    """The channels ``TRAINING_OPTIONS`` name, as ``fit()`` takes them."""
    channels = {"train": args.train, "validation": args.validation, "test": args.test, "model": args.model}
    return {
        name: TrainingInput(
            local_uri(uri),
            content_type=None if name == "model" else args.content_type,
            distribution=args.distribution if name == "train" else None,
        )
        for name, uri in channels.items()
        if uri
    }


def estimator_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Estimator``'s keyword arguments from ``TRAINING_OPTIONS`` (all but the channels)."""
    return {
        "hyperparameters": hyperparameters(args.hp),
        "instance_count": args.instance_count,
        "instance_type": args.instance_type,
        "input_mode": args.input_mode,
        "output_path": local_uri(args.output_path) if args.output_path else None,
        "max_run": args.max_run,
        "keep_alive_period_in_seconds": args.keep_alive,
    }


# --- list | describe | stop, for every resource kind ---------------------------------------------


@dataclass(frozen=True)
class Column:
    header: str
    width: int
    value: Callable[[dict[str, Any]], Any]
    align: str = "<"


@dataclass(frozen=True)
class Resource:
    """One kind of resource as the CLI lists, describes and stops it."""

    command: str  # raymaker <command> list|describe|stop
    noun: str  # "training job", in messages
    plural: str
    list_op: str
    summaries_key: str  # where list_op's answer holds the summaries
    describe_op: str
    name_key: str  # the request key and the summary key of the name
    status_key: str
    statuses: tuple[str, ...] = STATUSES
    end_key: str | None = None  # a SECONDS column when the summaries say when it ended
    stop_op: str | None = None
    stop_help: str = ""
    name_width: int = 48
    columns: tuple[Column, ...] = ()  # between STATUS and CREATED
    help: str = ""

    def table_columns(self) -> list[Column]:
        cols = [
            Column("NAME", self.name_width, lambda s: s[self.name_key]),
            Column("STATUS", 11, lambda s: s[self.status_key]),
            *self.columns,
            Column("CREATED", 20, lambda s: clock(s["CreationTime"])),
        ]
        if self.end_key:
            end = self.end_key
            cols.append(
                Column(
                    "SECONDS",
                    0,
                    lambda s: f"{(s[end] - s['CreationTime']).total_seconds():.0f}" if s.get(end) else "",
                )
            )
        return cols


def _limits(summary: dict[str, Any]) -> dict[str, Any]:
    return summary.get("ResourceLimits") or {}


RESOURCES = {
    r.command: r
    for r in (
        Resource(
            command="jobs",
            noun="training job",
            plural="training jobs",
            list_op="ListTrainingJobs",
            summaries_key="TrainingJobSummaries",
            describe_op="DescribeTrainingJob",
            name_key="TrainingJobName",
            status_key="TrainingJobStatus",
            end_key="TrainingEndTime",
            stop_op="StopTrainingJob",
            help="training jobs: list, describe, logs, stop",
        ),
        Resource(
            command="endpoints",
            noun="endpoint",
            plural="endpoints",
            list_op="ListEndpoints",
            summaries_key="Endpoints",
            describe_op="DescribeEndpoint",
            name_key="EndpointName",
            status_key="EndpointStatus",
            statuses=("Creating", "InService", "Updating", "Deleting", "Failed"),
            help="endpoints: list, describe, delete",
        ),
        Resource(
            command="transform-jobs",
            noun="transform job",
            plural="transform jobs",
            list_op="ListTransformJobs",
            summaries_key="TransformJobSummaries",
            describe_op="DescribeTransformJob",
            name_key="TransformJobName",
            status_key="TransformJobStatus",
            end_key="TransformEndTime",
            stop_op="StopTransformJob",
            help="batch transform jobs: list, describe, stop",
        ),
        Resource(
            command="tuning-jobs",
            noun="tuning job",
            plural="tuning jobs",
            list_op="ListHyperParameterTuningJobs",
            summaries_key="HyperParameterTuningJobSummaries",
            describe_op="DescribeHyperParameterTuningJob",
            name_key="HyperParameterTuningJobName",
            status_key="HyperParameterTuningJobStatus",
            end_key="HyperParameterTuningEndTime",
            stop_op="StopHyperParameterTuningJob",
            stop_help=" (its running trials stop too)",
            name_width=34,
            columns=(
                Column("STRATEGY", 10, lambda s: s["Strategy"]),
                Column("JOBS", 5, lambda s: _limits(s).get("MaxNumberOfTrainingJobs", ""), ">"),
            ),
            help="hyperparameter tuning jobs: list, describe, stop, trials",
        ),
    )
}


def describe(session: Session, resource: Resource, name: str) -> dict[str, Any]:
    """The Describe* answer; an unknown name says where to find the ones there are."""
    try:
        return session.call(resource.describe_op, {resource.name_key: name})
    except SageMakerError as e:
        if "Could not find" not in str(e):
            raise
        hint = f"`raymaker {resource.command} list` shows the {resource.plural} there are."
        raise type(e)(f"{e} {hint}", code=e.code, http_status=e.http_status) from None


def exists(session: Session, operation: str, key: str, name: str) -> dict[str, Any] | None:
    """The Describe* answer, or None when there is no such resource."""
    try:
        return session.call(operation, {key: name})
    except (ValidationError, ResourceNotFound):
        return None


def _list_command(resource: Resource) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        params: dict[str, Any] = {"MaxResults": args.max_results}
        if args.status:
            params["StatusEquals"] = args.status
        if args.name_contains:
            params["NameContains"] = args.name_contains
        summaries = get_session(args).call(resource.list_op, params)[resource.summaries_key]
        cols = resource.table_columns()

        def line(cells: list[Any]) -> str:
            padded = [f"{c!s:{col.align}{col.width}}" for c, col in zip(cells[:-1], cols[:-1], strict=True)]
            return " ".join([*padded, str(cells[-1])])

        print(line([c.header for c in cols]))
        for s in summaries:
            print(line([c.value(s) for c in cols]))
        return 0

    return run


def _describe_command(resource: Resource) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print_json(describe(get_session(args), resource, args.name))
        return 0

    return run


def _stop_command(resource: Resource) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        session = get_session(args)
        status = describe(session, resource, args.name)[resource.status_key]
        if status in ENDED:  # SageMaker refuses it too; this says why
            raise ValidationError(f"{resource.noun} {args.name} has already ended ({status})")
        session.call(resource.stop_op, {resource.name_key: args.name})
        print(f"stopping {args.name}")
        return 0

    return run


def add_resource_commands(sub: Subparsers, resource: Resource) -> Subparsers:
    """``raymaker <resource.command> list|describe[|stop]``; returns the subcommands, for the
    commands only one kind has (``jobs logs``, ``endpoints delete``, ``tuning-jobs trials``)."""
    commands = sub.add_parser(resource.command, help=resource.help).add_subparsers(
        dest=f"{resource.command.replace('-', '_')}_command", required=True
    )
    p = commands.add_parser("list", help=f"{resource.list_op} as a table")
    p.add_argument("--status", choices=resource.statuses)
    p.add_argument("--name-contains")
    p.add_argument("--max-results", type=int, default=50)
    p.set_defaults(func=_list_command(resource))
    p = commands.add_parser("describe", help=f"{resource.describe_op} as JSON")
    p.add_argument("name")
    p.set_defaults(func=_describe_command(resource))
    if resource.stop_op:
        p = commands.add_parser("stop", help=resource.stop_op + resource.stop_help)
        p.add_argument("name")
        p.set_defaults(func=_stop_command(resource))
    return commands
