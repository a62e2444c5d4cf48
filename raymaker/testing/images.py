"""Container images for tests and benchmarks, built here from a local root filesystem (no registry is
reachable): a static busybox and shell scripts that follow SageMaker's container contract.

- ``train``: reads hyperparameters.json and its ``train`` channel (File: the folder; Pipe: the
  ``train_0`` FIFO), prints metric lines, writes ``/opt/ml/model``. ``MODE`` (Environment) picks
  another behaviour: ``fail`` (writes /opt/ml/output/failure, exits 2), ``crash`` (exits 3),
  ``sleep`` (runs until SIGTERM, then writes model/stopped), ``hosts`` (algo-1 listens on
  ``HOSTS_PORT``, the other hosts connect to it by name).
- ``serve``: ``GET /ping``, ``POST /invocations`` (one line out per line in: the sum of its
  comma-separated integers, in shell builtins; ``slow`` answers after a second; with ``Accept: application/json`` a JSON document that also echoes the
  request's content type, accept and custom attributes), ``GET /execution-parameters`` when
  ``EXECUTION_PARAMETERS`` holds its JSON; on ``$SAGEMAKER_BIND_TO_PORT`` (8080 by default), one
  ``sh`` per connection (busybox ``nc -ll -e``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from raymaker.containers.runtime import Runtime, find_runtime

BUSYBOX = "/bin/busybox"  # Debian's busybox-static: one static binary, every applet

TRAIN = r"""#!/bin/sh
echo "train: job $TRAINING_JOB_NAME on $(hostname), arguments: $*"
ml=/opt/ml
cp $ml/input/config/hyperparameters.json $ml/model/hyperparameters.json
cp $ml/input/config/resourceconfig.json "$ml/model/resourceconfig-$(hostname).json"
env | grep -E '^(TRAINING_JOB_|USER_)' | sort > "$ml/model/environment-$(hostname).txt"
{ cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; } > $ml/model/memory-limit.txt
{ cat /sys/fs/cgroup/cpu.max 2>/dev/null ||
  echo "$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"; } > $ml/model/cpu-limit.txt
case "$MODE" in
  fail) echo "ValueError: column 3 holds text, not numbers" > $ml/output/failure
        echo "failing on purpose" >&2; exit 2;;
  crash) echo "Segmentation fault (core dumped)" >&2; exit 3;;
  sleep) trap 'echo "train: got SIGTERM"; echo stopped > $ml/model/stopped; exit 0' TERM
         i=0; while true; do i=$((i+1)); echo "epoch=$i loss=0.$i"; sleep 0.2; done;;
  hosts) cp /etc/hosts "$ml/model/hosts-$(hostname)"
         if [ "$(hostname)" = algo-1 ]; then
           nc -l -p "$HOSTS_PORT" -e /usr/bin/receive  # the connection's bytes, to its end
         else
           i=0; until echo "hello from $(hostname)" | nc -w 2 algo-1 "$HOSTS_PORT"; do
             i=$((i+1)); [ $i -gt 100 ] && { echo "algo-1 unreachable" >&2; exit 4; }; sleep 0.2; done
         fi
         exit 0;;
esac
if [ -p $ml/input/data/train_0 ]; then cat $ml/input/data/train_0 > /tmp/data
else cat $ml/input/data/train/* > /tmp/data; fi
rows=$(wc -l < /tmp/data)
total=$(awk -F, '{s += $1} END {print s + 0}' /tmp/data)
echo "rows=$rows total=$total" > $ml/model/summary.txt
echo "data:$(tr '\n' ';' < /tmp/data)" > $ml/output/data/seen.txt
for e in 1 2 3; do echo "epoch=$e loss=$(awk "BEGIN {print 1 / $e}")"; done
echo "train: done"
"""

SERVE = r"""#!/bin/sh
port="${SAGEMAKER_BIND_TO_PORT:-8080}"
echo "serve: listening on $port, model: $(cat /opt/ml/model/summary.txt 2>/dev/null)"
trap 'echo "serve: got SIGTERM"; kill $child 2>/dev/null; exit 0' TERM
nc -ll -p "$port" -e /usr/bin/handle &
child=$!
wait $child
"""

RECEIVE = """#!/bin/sh
cat > /opt/ml/model/received.txt
"""

HANDLE = r"""#!/bin/sh
read -r method path proto
len=0; ct=""; accept=""; attrs=""; variant=""
while read -r line; do
  line="${line%?}"
  [ -z "$line" ] && break
  case "$line" in
    [Cc]ontent-[Ll]ength:*) len="${line#*: }";;
    [Cc]ontent-[Tt]ype:*) ct="${line#*: }";;
    [Aa]ccept:*) accept="${line#*: }";;
    [Xx]-[Aa]mzn-[Ss]age[Mm]aker-[Cc]ustom-[Aa]ttributes:*) attrs="${line#*: }";;
    [Xx]-[Aa]mzn-[Ss]age[Mm]aker-[Tt]arget-[Vv]ariant:*) variant="${line#*: }";;
  esac
done
reply() {  # status, content type, body
  printf 'HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
    "$1" "$2" "${#3}" "$3"
}
case "$path" in
  /ping)
    if [ -e /tmp/unhealthy ]; then reply "500 Internal Server Error" text/plain "unhealthy"
    else reply "200 OK" text/plain ""; fi;;
  /execution-parameters)
    if [ -n "$EXECUTION_PARAMETERS" ]; then reply "200 OK" application/json "$EXECUTION_PARAMETERS"
    else reply "404 Not Found" text/plain "no execution parameters"; fi;;
  /invocations)  # shell builtins only: no process but this one per request
    body=""
    [ "$len" -gt 0 ] && IFS= read -r -d '' -n "$len" body
    case "$body" in
      *boom*) reply "500 Internal Server Error" text/plain "the model cannot score boom"; exit 0;;
      *slow*) sleep 1; reply "200 OK" text/plain "slow"; exit 0;;  # a request that takes a second
    esac
    sums=""; list=""; rest="$body"
    while [ -n "$rest" ]; do
      row="${rest%%
*}"
      if [ "$row" = "$rest" ]; then rest=""; else rest="${rest#*
}"; fi
      [ -z "$row" ] && continue
      total=0; IFS=,; for v in $row; do total=$((total + v)); done; unset IFS
      sums="$sums$total
"; list="$list$total,"
    done
    if [ "$accept" = application/json ]; then
      reply "200 OK" application/json "{\"sums\": [${list%,}], \"content_type\": \"$ct\", \"accept\": \"$accept\", \"attributes\": \"$attrs\", \"batch\": \"$SAGEMAKER_BATCH\", \"strategy\": \"$SAGEMAKER_BATCH_STRATEGY\", \"payload_mb\": \"$SAGEMAKER_MAX_PAYLOAD_IN_MB\", \"concurrent\": \"$SAGEMAKER_MAX_CONCURRENT_TRANSFORMS\", \"tag\": \"$MODEL_TAG\", \"variant\": \"$variant\"}"
    else
      reply "200 OK" text/csv "$sums"
    fi;;
  *) reply "404 Not Found" text/plain "no such path: $path";;
esac
"""


def build_busybox_image(tag: str, runtime: Runtime | None = None, scripts: dict[str, str] | None = None) -> str:
    """Build ``tag`` (``localhost/<name>:<tag>``) from busybox and ``scripts`` (path -> text; by
    default ``/usr/bin/train``, ``/usr/bin/serve`` and the per-connection ``/usr/bin/handle``)."""
    runtime = runtime or find_runtime()
    if not os.path.exists(BUSYBOX):
        raise FileNotFoundError(f"{BUSYBOX} is missing: install Debian's busybox-static")
    root = tempfile.mkdtemp(prefix="raymaker-image-")
    try:
        for d in ("bin", "usr/bin", "tmp", "etc", "opt/ml", "proc", "sys", "dev"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy2(BUSYBOX, os.path.join(root, "bin/busybox"))
        applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", applet))
        with open(os.path.join(root, "etc/passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        default = {"/usr/bin/train": TRAIN, "/usr/bin/serve": SERVE, "/usr/bin/handle": HANDLE, "/usr/bin/receive": RECEIVE}
        for path, text in (scripts or default).items():
            target = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as f:
                f.write(text)
            os.chmod(target, 0o755)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([*runtime.base_command(), "import", "--change", "ENV PATH=/usr/bin:/bin", "-", tag],
                       stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()
        return tag
    finally:
        shutil.rmtree(root, ignore_errors=True)
