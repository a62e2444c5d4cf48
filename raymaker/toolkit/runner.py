"""One host's run of a script-mode job, start to end, as SageMaker's training toolkit runs it inside a
framework container: the tree and its config files, the user's code and its requirements, the ``SM_*``
environment and ``--key value`` arguments, the process with its output streamed and searched for
metrics, then ``output/success`` or a FailureReason.

No Ray here: the caller (an instance actor) passes a ``ScriptRun`` of plain values, callbacks for log
lines and metric values, a stop event, and ``stage_data``, the context in which channels are staged
into the tree and checkpoints synced.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shlex
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raymaker.io.channels import Channel
from raymaker.io.storage import S3Settings
from raymaker.protocol.environment import raymaker_home
from raymaker.toolkit import entry_point as ep
from raymaker.toolkit.environment import (
    decode_hyperparameters,
    input_data_config,
    resource_config,
    to_cmd_args,
    training_env,
    write_config,
)
from raymaker.toolkit.metrics import MetricParser
from raymaker.toolkit.paths import MLTree
from raymaker.toolkit.process import (
    MAX_REASON,
    STDERR_TAIL_LINES,
    error_message,
    failure_reason,
    run_process,
    toolkit_error,
)

if TYPE_CHECKING:
    from raymaker.toolkit.zygote import WarmLauncher


@dataclass(frozen=True)
class ScriptRun:
    """What one host needs to run the job's script: plain values, picklable, decided once by the
    engine. ``hyperparameters`` is the request's map as sent (strings); ``entry_point`` is
    ``sagemaker_program`` decoded; ``distribution`` is extra environment for a distributed launch
    (``MASTER_ADDR``, ``WORLD_SIZE``, ... for torch_distributed), applied last."""

    job_name: str
    job_arn: str
    entry_point: str
    submit_directory: str | None
    hyperparameters: dict[str, str]
    channels: tuple[Channel, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    metric_definitions: tuple[tuple[str, str], ...] = ()
    instance_type: str = "ml.m5.xlarge"
    hosts: tuple[str, ...] = ("algo-1",)
    current_host: str = "algo-1"
    num_cpus: int = 1
    num_gpus: int = 0
    checkpoint: dict[str, Any] | None = None
    distribution: dict[str, str] = field(default_factory=dict)


class ScriptError(Exception):
    """The job failed in the script's part of the run: ``reason`` is its FailureReason (at most 1024
    characters, possibly several lines: read ``reason``, not the last line of ``str()``).
    ``exit_code`` is the script's or pip's, None when nothing ran."""

    def __init__(self, reason: str, exit_code: int | None = None):
        super().__init__(reason)
        self.reason = reason[:MAX_REASON]
        self.exit_code = exit_code

    @property
    def failure_reason(self) -> str:  # what the engine's failure_reason reads, whole
        return self.reason

    def __reduce__(self) -> tuple[Any, ...]:  # survives pickling through Ray with both fields
        return (type(self), (self.reason, self.exit_code))


def _no_staging(tree: MLTree) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def write_host_config(tree: MLTree, spec: Any) -> None:
    """``input/config`` for one host of a ``ScriptRun`` or a ``toolkit.container.ContainerRun`` (both
    carry hyperparameters, channels, hosts, instance type and checkpoint config)."""
    write_config(
        tree,
        hyperparameters=spec.hyperparameters,
        input_data_config=input_data_config(spec.channels),
        resource_config=resource_config(spec.current_host, spec.hosts, spec.instance_type),
        checkpoint_config=spec.checkpoint,
    )


def default_cache_root() -> str:
    """Where requirements are installed once per node: ``$RAYMAKER_HOME/cache/pip``."""
    return str(raymaker_home() / "cache" / "pip")


def run_script(
    spec: ScriptRun,
    tree: MLTree,
    *,
    on_log: Callable[[str], None],
    on_metrics: Callable[[dict[str, float]], None],
    stop: threading.Event,
    settings: S3Settings | None = None,
    extra_env: Mapping[str, str] | None = None,
    stage_data: Callable[[MLTree], contextlib.AbstractContextManager[Any]] = _no_staging,
    cache_root: str | None = None,
    grace_s: float = 120.0,
    warm: WarmLauncher | None = None,
) -> None:
    """Run ``spec``'s script on this host in ``tree``; return when it exited 0 (``output/success``
    written), raise ``ScriptError`` with the FailureReason otherwise.

    Every line the script or pip prints goes to ``on_log`` and through the job's MetricDefinitions;
    the values a line holds go to ``on_metrics``. ``stop`` stops it as StopTrainingJob does (SIGTERM,
    SIGKILL after ``grace_s``); what the script then exits with decides success as usual, and the
    caller, which set ``stop``, knows the job was stopped.

    The environment, lowest first: this process's, ``extra_env`` (the caller's: S3 endpoint,
    devices), then ``training_env`` (SageMaker's and the request's variables under the toolkit's),
    PYTHONPATH (the code, its installed requirements, then what was there), ``spec.distribution``.

    ``warm`` (the instance's ``zygote.WarmLauncher`` for the job's framework) may start the script from
    an interpreter that has the framework imported, when that changes nothing the script can see but
    ``sys.modules``; a succeeded job has it prepare one for the next."""
    try:
        parser = MetricParser(spec.metric_definitions)
    except ValueError as e:
        raise ScriptError(f"ClientError: {e}") from None
    if not spec.entry_point:
        raise ScriptError("ClientError: no entry point: set the sagemaker_program hyperparameter (entry_point)")

    tree.make()
    user_hps, _ = decode_hyperparameters(spec.hyperparameters)
    write_host_config(tree, spec)
    env = dict(os.environ)
    env.update(extra_env or {})
    env.update(
        training_env(
            tree,
            job_name=spec.job_name,
            job_arn=spec.job_arn,
            hyperparameters=spec.hyperparameters,
            channels=spec.channels,
            current_host=spec.current_host,
            hosts=spec.hosts,
            instance_type=spec.instance_type,
            num_cpus=spec.num_cpus,
            num_gpus=spec.num_gpus,
            environment=spec.environment,
            entry_point=spec.entry_point,
        )
    )

    def line(text: str) -> None:
        on_log(text)
        values = parser.feed(text)
        if values:
            on_metrics(values)

    with stage_data(tree):
        if spec.submit_directory:
            try:
                ep.fetch_source(spec.submit_directory, tree.code_dir, settings)
            except (OSError, ValueError) as e:
                raise ScriptError(f"ClientError: {e}") from None
        try:
            installed = ep.prepare(
                spec.entry_point, tree.code_dir, cache_root or default_cache_root(),
                env=env, on_line=line, stop=stop,
            )
        except ep.InstallError as e:
            _write_failure(tree, e.reason)
            raise ScriptError(e.reason) from None
        except ValueError as e:
            raise ScriptError(f"ClientError: {e}") from None
        # The toolkit puts the code directory first on sys.path, then what pip installed.
        path_prefix = [tree.code_dir, *installed]
        env["PYTHONPATH"] = os.pathsep.join([*path_prefix, *filter(None, [env.get("PYTHONPATH")])])
        env.update(spec.distribution)

        cmd = ep.command(spec.entry_point, tree.code_dir, to_cmd_args(user_hps))
        on_log(f"Invoking script with the following command: {shlex.join(cmd)}")
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        launcher = warm.choose(cmd, tree.code_dir, env, path_prefix) if warm is not None else None
        code = run_process(
            cmd, cwd=tree.code_dir, env=env, on_line=line, stop=stop, grace_s=grace_s, stderr_tail=tail,
            launcher=launcher,
        )
        if code == 0 and warm is not None and not stop.is_set():
            warm.warm_up(cmd, tree.code_dir, env, path_prefix)

    if code == 0:
        with open(tree.success_file, "w"):
            pass
        return
    reason = failure_reason(tree, code, tail, cmd)
    _write_failure(tree, toolkit_error("ExecuteUserScriptError", code, error_message(tail), cmd))
    raise ScriptError(reason, exit_code=code)


def _write_failure(tree: MLTree, text: str) -> None:
    # As the toolkit: only when the script wrote none (its own words come first).
    if not os.path.exists(tree.failure_file):
        os.makedirs(tree.output_dir, exist_ok=True)
        with open(tree.failure_file, "w") as f:
            f.write(text)
