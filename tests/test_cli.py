"""The ``raymaker`` command line without Ray: ``io`` run as a user would; every other command's parser,
and the commands that only talk to a backend (``audit``, ``jobs``, the ``list|describe|stop`` of every
resource kind, ``train`` / ``tune`` requests) against a fake backend handed in as ``Session(backend=...)``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from raymaker import Session
from raymaker.cli import build_parser, main
from raymaker.cli import common as cli
from raymaker.cli.audit import point_in_time
from raymaker.cli.quickstart import QUICKSTART_ALGORITHM
from raymaker.io import recordio
from raymaker.protocol.errors import ResourceNotFound, ValidationError

# --- io, for real ----------------------------------------------------------------------------------


def test_demo_runs_every_format(tmp_path, capsys):
    assert main(["io", "demo", "--dir", str(tmp_path), "--rows", "2000", "--no-ray"]) == 0
    out = capsys.readouterr().out
    assert out.count("matches") == 4 and "MISMATCH" not in out
    assert "worker 0: ['part-0.rec', 'part-2.rec']" in out


def test_convert_csv_to_recordio_and_inspect(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("1,0.5,2\n0,1.5,-3\n1,2.5,4\n")
    assert main(["io", "convert", str(tmp_path / "train.csv"), str(tmp_path / "train.rec")]) == 0
    features, labels = recordio.decode((tmp_path / "train.rec").read_bytes())
    np.testing.assert_array_equal(features, [[0.5, 2], [1.5, -3], [2.5, 4]])
    np.testing.assert_array_equal(labels, [1, 0, 1])
    assert main(["io", "inspect", str(tmp_path / "train.rec")]) == 0
    out = capsys.readouterr().out
    assert "rows: 3" in out and "labels: float32, 2 distinct: 0, 1" in out


def test_malformed_input_is_a_clear_error(tmp_path):
    (tmp_path / "bad.csv").write_text("1,2,3\n1,x,3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "raymaker.cli", "io", "inspect", str(tmp_path / "bad.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "bad.csv" in proc.stderr and "line 2" in proc.stderr


def test_unknown_extension_asks_for_content_type(tmp_path, capsys):
    (tmp_path / "data.bin").write_bytes(b"")
    with pytest.raises(SystemExit, match="--content-type"):
        main(["io", "inspect", str(tmp_path / "data.bin")])


# --- the parser ------------------------------------------------------------------------------------

# One command line per command: a new command without one here fails test_every_command_parses.
SAMPLES: dict[tuple[str, ...], list[str]] = {
    ("up",): ["--num-cpus", "2", "--dashboard-port", "8266", "--port", "6380", "--temp-dir", "/tmp/r"],
    ("down",): ["--timeout", "10"],
    ("status",): ["--json"],
    ("io", "inspect"): ["data.csv"],
    ("io", "convert"): ["a.csv", "a.rec"],
    ("io", "demo"): ["--rows", "10", "--no-ray"],
    ("quickstart",): ["--algorithm", "linear-learner"],
    ("train",): ["--algorithm", "xgboost", "--train", "d/", "--hp", "num_round=3", "--keep-alive", "60"],
    ("jobs", "list"): ["--status", "Completed"],
    ("jobs", "describe"): ["j"],
    ("jobs", "stop"): ["j"],
    ("jobs", "logs"): ["j", "-f"],
    ("jobs", "plot"): ["j", "--out", "c.png", "--metric", "validation:auc"],
    ("deploy",): ["--training-job", "j", "--min-instances", "1"],
    ("endpoints", "list"): ["--status", "InService"],
    ("endpoints", "describe"): ["e"],
    ("endpoints", "delete"): ["e", "--keep-config"],
    ("invoke",): ["e", "--body", "1,2"],
    ("transform",): ["--model", "m", "--input", "in/", "--output", "out/"],
    ("transform-jobs", "list"): [],
    ("transform-jobs", "describe"): ["t"],
    ("transform-jobs", "stop"): ["t"],
    ("tune",): ["--algorithm", "xgboost", "--train", "d/", "--objective-metric", "validation:auc"],
    ("tuning-jobs", "list"): ["--max-results", "5"],
    ("tuning-jobs", "describe"): ["t"],
    ("tuning-jobs", "stop"): ["t"],
    ("tuning-jobs", "trials"): ["t", "--best-first"],
    ("tuning-jobs", "plot"): ["t", "-o", "t.png"],
    ("audit",): ["--since", "10m", "--errors", "--max", "5", "--json", "--user", "bob", "--resource", "j"],
    ("billing",): ["--since", "1d", "--by", "user"],
    ("images", "load"): ["image.tar"],
    ("images", "list"): [],
    ("users", "create"): ["bob", "--admin", "--policy", "p.json"],
    ("users", "list"): [],
    ("users", "delete"): ["bob"],
    ("users", "rotate-key"): ["bob"],
    ("users", "put-policy"): ["bob", "readers", "p.json"],
    ("server",): ["--host", "127.0.0.1", "--port", "8443", "--certfile", "c.pem", "--keyfile", "k.pem"],
}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def leaf_parsers(
    parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every runnable command's parser, by its words (``("jobs", "list")``)."""
    parser = parser or build_parser()
    children = _subcommands(parser)
    if not children:
        return {path: parser}
    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for name, child in children.items():
        out.update(leaf_parsers(child, (*path, name)))
    return out


def _definition(action: argparse.Action) -> tuple[Any, ...]:
    return (
        type(action),
        tuple(action.option_strings),
        action.dest,
        action.default,
        action.type,
        tuple(action.choices) if action.choices else None,
        action.required,
        action.help,
        action.metavar,
        action.nargs,
    )


def _option_definition(option: cli.Option) -> tuple[Any, ...]:
    return _definition(option.add(argparse.ArgumentParser(add_help=False)))


def test_every_command_parses():
    leaves = leaf_parsers()
    assert set(leaves) == set(SAMPLES)
    parser = build_parser()
    for words, extra in SAMPLES.items():
        args = parser.parse_args([*words, *extra])
        assert callable(args.func), words


def test_shared_options_have_one_definition():
    """An option the CLI shares (--instance-type, the training job's options, --no-wait) is added from
    one definition: wherever a command takes it, it means the same, with the same default and help."""
    shared = [
        cli.ALGORITHM,
        QUICKSTART_ALGORITHM,
        cli.INSTANCE_TYPE,
        cli.INSTANCE_COUNT,
        cli.MODEL_DATA,
        cli.TRAINING_JOB,
        cli.NO_WAIT,
        *cli.TRAINING_OPTIONS,
    ]
    allowed: dict[str, list[tuple[Any, ...]]] = {}
    for option in shared:
        allowed.setdefault(option.flags[0], []).append(_option_definition(option))
    # The same words for another thing: transform's --model names a model, train's is a model.tar.gz;
    # --content-type is the request body's (invoke), the input's (transform, io) or the channels'.
    for flag in ("--model", "--content-type"):
        del allowed[flag]
    users: dict[str, list[tuple[str, ...]]] = {flag: [] for flag in allowed}
    for words, parser in leaf_parsers().items():
        for action in parser._actions:
            flag = action.option_strings[0] if action.option_strings else None
            if flag in allowed:
                assert _definition(action) in allowed[flag], (words, flag)
                users[flag].append(words)
    assert all(len(commands) >= 2 for commands in users.values()), users
    # train and tune run the same training job definition, option for option
    leaves = leaf_parsers()
    for option in cli.TRAINING_OPTIONS:
        train, tune = (
            next(a for a in leaves[(c,)]._actions if a.option_strings == list(option.flags))
            for c in ("train", "tune")
        )
        assert _definition(train) == _definition(tune) == _option_definition(option)
    assert {("train",), ("tune",), ("deploy",), ("transform",)} <= set(users["--instance-type"])


def test_every_resource_gets_the_same_list_describe_stop():
    leaves = leaf_parsers()
    for command, resource in cli.RESOURCES.items():
        listing = {a.dest: a for a in leaves[(command, "list")]._actions}
        assert tuple(listing["status"].choices) == resource.statuses
        assert listing["max_results"].default == 50 and "name_contains" in listing
        assert (command, "describe") in leaves
        assert ((command, "stop") in leaves) == bool(resource.stop_op)


# --- a fake backend --------------------------------------------------------------------------------


class FakeBackend:
    """Answers operations from ``handlers`` (a dict answer, or a function of the request) and records
    every call, so a test sees exactly what the CLI sent."""

    def __init__(self, **handlers: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]):
        self.handlers = handlers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((operation, dict(params)))
        if operation not in self.handlers:
            raise ValidationError(f"raymaker does not support the operation {operation!r} yet")
        handler = self.handlers[operation]
        return handler(params) if callable(handler) else handler

    def requests(self, operation: str) -> list[dict[str, Any]]:
        return [params for op, params in self.calls if op == operation]


def run(backend: FakeBackend, *argv: str) -> int:
    return main(list(argv), session=Session(backend=backend))


T0 = datetime(2025, 6, 1, 9, 30, tzinfo=UTC)


# --- audit -----------------------------------------------------------------------------------------


def _audit_event(i: int, name: str = "CreateTrainingJob", error: str | None = None) -> dict[str, Any]:
    record = {
        "eventTime": (T0 - timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventName": name,
        "userIdentity": {"type": "IAMUser", "userName": "alice"},
        "sourceIPAddress": "127.0.0.1",
        "userAgent": "raymaker-cli",
        "requestParameters": {"TrainingJobName": f"job-{i}"},
        "errorCode": error,
        "errorMessage": "it broke" if error else None,
        "requestID": f"req-{i}",
    }
    event = {
        "EventId": f"ev-{i}",
        "EventName": name,
        "EventTime": T0 - timedelta(minutes=i),
        "Username": "alice",
        "CloudTrailEvent": json.dumps(record),
    }
    if error:
        event["ErrorCode"] = error
    return event


def audit_backend(events: list[dict[str, Any]], page_size: int = 2) -> FakeBackend:
    """ListAuditEvents over ``events`` (in their order), filtering as the engine does, ``page_size`` at a
    time (or fewer when MaxResults asks) with a NextToken for the rest."""

    def list_audit_events(params: dict[str, Any]) -> dict[str, Any]:
        matching = [
            e
            for e in events
            if (not params.get("ErrorsOnly") or e.get("ErrorCode"))
            and params.get("EventName", e["EventName"]) == e["EventName"]
            and e["EventTime"] >= params.get("StartTime", e["EventTime"])
        ]
        start = int(params.get("NextToken") or 0)
        end = start + min(page_size, params.get("MaxResults") or page_size)
        page: dict[str, Any] = {"Events": matching[start:end]}
        if end < len(matching):
            page["NextToken"] = str(end)
        return page

    return FakeBackend(ListAuditEvents=list_audit_events)


def test_audit_prints_a_table_of_events(capsys):
    backend = audit_backend(
        [_audit_event(0, error="ValidationException"), _audit_event(1, "DescribeEndpoint")]
    )
    assert run(backend, "audit") == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["TIME", "(UTC)", "EVENT", "NAME", "USER", "ERROR"]
    assert rows[1].split() == ["2025-06-01", "09:30:00", "CreateTrainingJob", "alice", "ValidationException"]
    assert rows[2].split() == ["2025-06-01", "09:29:00", "DescribeEndpoint", "alice", "-"]
    assert backend.requests("ListAuditEvents") == [{"MaxResults": 50}]


def test_audit_follows_pages_up_to_max(capsys):
    backend = audit_backend([_audit_event(i) for i in range(7)], page_size=2)
    assert run(backend, "audit", "--max", "5") == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 5
    requests = backend.requests("ListAuditEvents")
    # three pages, each asking only for what is still wanted, each after the last page's token
    assert [r.get("NextToken") for r in requests] == [None, "2", "4"]
    assert [r["MaxResults"] for r in requests] == [5, 3, 1]

    backend = audit_backend([_audit_event(i) for i in range(3)], page_size=2)
    assert run(backend, "audit") == 0  # fewer than --max: stops when no NextToken comes back
    assert len(capsys.readouterr().out.splitlines()) == 1 + 3
    assert len(backend.requests("ListAuditEvents")) == 2


def test_audit_errors_event_name_and_since_become_the_request(capsys):
    events = [_audit_event(0), _audit_event(1, error="ResourceInUse"), _audit_event(2, "StopTrainingJob")]
    backend = audit_backend(events)
    assert run(backend, "audit", "--errors") == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split()[-1] for r in rows] == ["ResourceInUse"]
    assert backend.requests("ListAuditEvents")[0]["ErrorsOnly"] is True

    backend = audit_backend(events)
    before = datetime.now(UTC)
    assert run(backend, "audit", "--event-name", "StopTrainingJob", "--since", "2h") == 0
    request = backend.requests("ListAuditEvents")[0]
    assert request["EventName"] == "StopTrainingJob" and "ErrorsOnly" not in request
    assert abs(request["StartTime"] - (before - timedelta(hours=2))) < timedelta(seconds=5)
    assert request["StartTime"].tzinfo is not None


def test_audit_json_prints_full_records_one_a_line(capsys):
    backend = audit_backend([_audit_event(0, error="ValidationException"), _audit_event(1)])
    assert run(backend, "audit", "--json") == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2
    assert records[0]["errorCode"] == "ValidationException" and records[0]["requestID"] == "req-0"
    assert records[1]["requestParameters"] == {"TrainingJobName": "job-1"}
    assert set(records[0]) >= {"eventTime", "eventName", "userIdentity", "sourceIPAddress", "userAgent"}


def test_point_in_time():
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert point_in_time("10m", now) == now - timedelta(minutes=10)
    assert point_in_time("1d", now) == now - timedelta(days=1)
    assert point_in_time("30s", now) == now - timedelta(seconds=30)
    assert point_in_time("2025-06-01T09:30") == T0  # no offset: UTC
    assert point_in_time("2025-06-01T11:30+02:00") == T0
    with pytest.raises(argparse.ArgumentTypeError, match="10m"):
        point_in_time("yesterday")


def test_audit_refusals_are_clear(capsys):
    with pytest.raises(SystemExit) as e:  # argparse's own usage error, before any call
        run(FakeBackend(), "audit", "--since", "soon")
    assert e.value.code == 2 and "'soon'" in capsys.readouterr().err
    assert run(FakeBackend(), "audit") == 2  # a backend without the operation
    assert "ValidationException" in capsys.readouterr().err


# --- training jobs ----------------------------------------------------------------------------------


def test_logs_reads_every_page(capsys):
    lines = [(i, f"line {i}") for i in range(1, 6)]

    def get_logs(params: dict[str, Any]) -> dict[str, Any]:
        after = params.get("AfterSequenceNumber", 0)
        page = [(s, m) for s, m in lines if s > after][:2]
        return {"Events": [{"SequenceNumber": s, "Timestamp": T0, "Message": m} for s, m in page]}

    backend = FakeBackend(GetTrainingJobLogs=get_logs)
    assert run(backend, "jobs", "logs", "j") == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[1] for line in out] == [m for _, m in lines]
    assert all(len(line.split(" ", 1)[0]) == len("09:30:00") for line in out)
    assert [r.get("AfterSequenceNumber") for r in backend.requests("GetTrainingJobLogs")] == [None, 2, 4, 5]


def test_train_sends_the_training_options(tmp_path, capsys):
    backend = FakeBackend(CreateTrainingJob={"TrainingJobArn": "arn"})
    argv = ["train", "--algorithm", "xgboost", "--train", str(tmp_path / "train") + "/"]
    argv += ["--hp", "num_round=3", "--instance-type", "ml.m5.large", "--keep-alive", "60"]
    assert run(backend, *argv, "--job-name", "j1", "--no-wait") == 0
    assert capsys.readouterr().out == "training job: j1\n"
    (request,) = backend.requests("CreateTrainingJob")
    assert request["HyperParameters"] == {"num_round": "3"}
    assert request["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert request["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 60
    (channel,) = request["InputDataConfig"]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"file://{tmp_path}/train/"
    with pytest.raises(SystemExit, match="name=value"):
        run(backend, *argv[:-2], "--hp", "oops")


def test_tune_sends_the_same_training_options(tmp_path, capsys):
    """tune's trials get train's options through the same definitions and the same request code."""
    status = {"HyperParameterTuningJobStatus": "InProgress"}
    backend = FakeBackend(
        CreateHyperParameterTuningJob={"HyperParameterTuningJobArn": "arn"},
        DescribeHyperParameterTuningJob=status,
    )
    argv = ["tune", "--algorithm", "xgboost", "--train", str(tmp_path), "--hp", "num_round=3"]
    argv += ["--instance-type", "ml.m5.large", "--max-run", "600", "--objective-metric", "validation:auc"]
    argv += ["--integer", "max_depth=2:6", "--max-jobs", "2", "--job-name", "t1", "--no-wait"]
    assert run(backend, *argv) == 0
    assert "tuning job: t1\nstatus: InProgress" in capsys.readouterr().out
    (request,) = backend.requests("CreateHyperParameterTuningJob")
    definition = request["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"]["num_round"] == "3"
    assert definition["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert definition["StoppingCondition"]["MaxRuntimeInSeconds"] == 600
    assert definition["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"file://{tmp_path}"


# --- list | describe | stop ---------------------------------------------------------------------------


def test_list_tables_keep_their_columns(capsys):
    backend = FakeBackend(
        ListTrainingJobs={
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": "a",
                    "TrainingJobStatus": "Completed",
                    "CreationTime": T0,
                    "TrainingEndTime": T0 + timedelta(seconds=42),
                },
                {"TrainingJobName": "b", "TrainingJobStatus": "InProgress", "CreationTime": T0},
            ]
        },
        ListHyperParameterTuningJobs={
            "HyperParameterTuningJobSummaries": [
                {
                    "HyperParameterTuningJobName": "t",
                    "HyperParameterTuningJobStatus": "Completed",
                    "Strategy": "Random",
                    "ResourceLimits": {"MaxNumberOfTrainingJobs": 3},
                    "CreationTime": T0,
                    "HyperParameterTuningEndTime": T0 + timedelta(seconds=9),
                }
            ]
        },
        ListEndpoints={
            "Endpoints": [{"EndpointName": "e", "EndpointStatus": "InService", "CreationTime": T0}]
        },
    )
    assert run(backend, "jobs", "list", "--status", "Completed", "--name-contains", "a") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{'NAME':<48} {'STATUS':<11} {'CREATED':<20} SECONDS",
        f"{'a':<48} {'Completed':<11} {'2025-06-01 09:30:00':<20} 42",
        f"{'b':<48} {'InProgress':<11} {'2025-06-01 09:30:00':<20} ",
    ]
    assert backend.requests("ListTrainingJobs") == [
        {"MaxResults": 50, "StatusEquals": "Completed", "NameContains": "a"}
    ]
    assert run(backend, "tuning-jobs", "list") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{'NAME':<34} {'STATUS':<11} {'STRATEGY':<10} {'JOBS':>5} {'CREATED':<20} SECONDS",
        f"{'t':<34} {'Completed':<11} {'Random':<10} {'3':>5} {'2025-06-01 09:30:00':<20} 9",
    ]
    assert run(backend, "endpoints", "list") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{'NAME':<48} {'STATUS':<11} CREATED",
        f"{'e':<48} {'InService':<11} 2025-06-01 09:30:00",
    ]


def test_describe_prints_iso_json_and_points_unknown_names_to_list(capsys):
    def describe(params: dict[str, Any]) -> dict[str, Any]:
        if params["TransformJobName"] != "t":
            raise ValidationError(f'Could not find transform job "{params["TransformJobName"]}".')
        return {"TransformJobName": "t", "TransformJobStatus": "Completed", "CreationTime": T0}

    backend = FakeBackend(DescribeTransformJob=describe)
    assert run(backend, "transform-jobs", "describe", "t") == 0
    assert json.loads(capsys.readouterr().out)["CreationTime"] == "2025-06-01T09:30:00+00:00"
    assert run(backend, "transform-jobs", "describe", "nope") == 2
    err = capsys.readouterr().err
    assert err.startswith("raymaker: error: ValidationException: Could not find transform job")
    assert "`raymaker transform-jobs list` shows the transform jobs there are." in err

    def missing(params: dict[str, Any]) -> dict[str, Any]:
        raise ResourceNotFound("Could not find training job 'nope': check the TrainingJobName")

    assert run(FakeBackend(DescribeTrainingJob=missing), "jobs", "describe", "nope") == 2
    err = capsys.readouterr().err
    assert "ResourceNotFound" in err and "`raymaker jobs list`" in err


@pytest.mark.parametrize("command", ["jobs", "transform-jobs", "tuning-jobs"])
def test_stop_refuses_an_ended_job_and_stops_a_running_one(command, capsys):
    resource = cli.RESOURCES[command]
    status = {"n": "Completed"}
    backend = FakeBackend(
        **{
            resource.describe_op: lambda p: {
                resource.name_key: p[resource.name_key],
                resource.status_key: status["n"],
            },
            resource.stop_op: {},
        }
    )
    assert run(backend, command, "stop", "x") == 2
    err = capsys.readouterr().err
    assert f"ValidationException: {resource.noun} x has already ended (Completed)" in err
    assert backend.requests(resource.stop_op) == []
    status["n"] = "InProgress"
    assert run(backend, command, "stop", "x") == 0
    assert capsys.readouterr().out == "stopping x\n"
    assert backend.requests(resource.stop_op) == [{resource.name_key: "x"}]


# --- a cluster that outlives the command --------------------------------------------------------------


class _Backend:
    def __init__(self, ready: bool | None):
        self.ready = ready

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("no call expected")

    def ensure_ready(self) -> bool | None:
        return self.ready


def test_lasting_cluster_is_the_backends_answer():
    cli.require_lasting_cluster(Session(backend=_Backend(True)), "deploy", "the endpoint")
    cli.require_lasting_cluster(Session(backend=_Backend(None)), "deploy", "the endpoint")  # not known
    # a backend without ensure_ready (a remote server, a fake) keeps its own cluster
    cli.require_lasting_cluster(Session(backend=FakeBackend()), "deploy", "the endpoint")
    with pytest.raises(SystemExit, match="deploy needs a running Ray cluster.*raymaker up"):
        cli.require_lasting_cluster(Session(backend=_Backend(False)), "deploy", "the endpoint")
