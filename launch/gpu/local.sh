#!/usr/bin/env bash
# Starts K vjepa-jax processes on this machine that form one multi-process JAX job.
set -euo pipefail
# shellcheck source=launch/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../tpu/common.sh"

usage() {
  cat <<EOF
Usage: $VJ_SCRIPT --num-processes K [options] [--config FILE[:ARG] --workdir DIR]
          [--config.key=value ...] [-- more flags for the module]

Starts K processes of python -m MODULE (default vjepa_jax.main) on this machine, each with
VJEPA_COORDINATOR=127.0.0.1:PORT, VJEPA_NUM_PROCESSES=K and VJEPA_PROCESS_ID=i, from which
vjepa_jax.distributed starts the JAX distributed runtime. Use it to test multi-process runs on
one CPU machine, or to run one process per GPU group on a multi-GPU machine. Process 0 prints to
the terminal, process i to LOG_DIR/process_i.log. When one process fails, the others get
--grace-seconds to end on their own and are then stopped; the exit status is the first failure's.

Options:
  --num-processes K            number of processes (>= 1)
  --port PORT                  coordinator port (default: a free one)
  --cpu-devices-per-process N  simulate N CPU devices per process (sets JAX_PLATFORMS=cpu and
                               VJEPA_CPU_DEVICES=N)
  --gpus-per-process G         give process i the GPUs i*G .. i*G+G-1 (CUDA_VISIBLE_DEVICES)
  --config FILE[:ARG]          trainer config, e.g. configs/demo.py (needed for vjepa_jax.main)
  --workdir DIR                trainer workdir (needed for vjepa_jax.main)
  --config.KEY=VALUE           config override, passed verbatim (repeatable)
  --module MODULE              Python module to run (default vjepa_jax.main; use
                               vjepa_jax.distributed to check the wiring alone)
  --python PATH                interpreter (default: .venv/bin/python in the repository when it
                               exists, else python3)
  --log-dir DIR                logs of processes 1..K-1 (default: logs/local in the repository)
  --grace-seconds S            after a failure, how long the others may take to end (default 10)
  --dry-run                    print the commands, one per line; start nothing
  -h, --help                   show this help

Example:
  $VJ_SCRIPT --num-processes 2 --cpu-devices-per-process 4 --config configs/demo.py \\
    --workdir /tmp/vjepa-demo-2proc
EOF
}

count='' port='' cpu_devices='' gpus_per_process='' config='' workdir=''
module=vjepa_jax.main log_dir="$VJ_REPO_ROOT/logs/local" python='' grace=10
args=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --config.*) override_option "$1"; args+=("$1") ;;
    --) shift; args+=("$@"); break ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --num-processes) need_value "$@"; need_int "$1" "$2"; count=$2; shift ;;
    --port) need_value "$@"; need_int "$1" "$2"; port=$2; shift ;;
    --cpu-devices-per-process) need_value "$@"; need_int "$1" "$2"; cpu_devices=$2; shift ;;
    --gpus-per-process) need_value "$@"; need_int "$1" "$2"; gpus_per_process=$2; shift ;;
    --config) need_value "$@"; config=$2; shift ;;
    --workdir) need_value "$@"; workdir=$2; shift ;;
    --module) need_value "$@"; module=$2; shift ;;
    --python) need_value "$@"; python=$2; shift ;;
    --log-dir) need_value "$@"; log_dir=$2; shift ;;
    --grace-seconds) need_value "$@"; need_int "$1" "$2" 0; grace=$2; shift ;;
    --dry-run) VJ_DRY_RUN=1 ;;
    *) die "unknown argument '$1'" ;;
  esac
  shift
done
[[ -n $count ]] || die "--num-processes is required"
[[ -z $cpu_devices || -z $gpus_per_process ]] ||
  die "use one of --cpu-devices-per-process and --gpus-per-process"
if [[ $module == vjepa_jax.main ]]; then
  [[ -n $config && -n $workdir ]] || die "--config and --workdir are required to train"
fi
trainer_args=()
if [[ -n $config ]]; then
  trainer_args+=(--config "$config")
fi
if [[ -n $workdir ]]; then
  trainer_args+=(--workdir "$workdir")
fi
trainer_args+=("${args[@]}")
if [[ -z $python ]]; then
  python=python3
  if [[ -x $VJ_REPO_ROOT/.venv/bin/python ]]; then
    python=$VJ_REPO_ROOT/.venv/bin/python
  fi
fi
if [[ -z $port ]]; then
  port=$("$python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
fi

# command_for I: sets CMD to the command line of process I.
command_for() {
  CMD=(env "VJEPA_COORDINATOR=127.0.0.1:$port" "VJEPA_NUM_PROCESSES=$count"
    "VJEPA_PROCESS_ID=$1")
  if [[ -n $cpu_devices ]]; then
    CMD+=(JAX_PLATFORMS=cpu "VJEPA_CPU_DEVICES=$cpu_devices")
  fi
  if [[ -n $gpus_per_process ]]; then
    CMD+=("CUDA_VISIBLE_DEVICES=$(seq -s, $(($1 * gpus_per_process)) \
      $(($1 * gpus_per_process + gpus_per_process - 1)))")
  fi
  CMD+=("$python" -m "$module" "${trainer_args[@]}")
}

log_for() {
  printf '%s/process_%s.log' "$log_dir" "$1"
}

if ((VJ_DRY_RUN)); then
  for ((i = 0; i < count; i++)); do
    command_for "$i"
    if ((i == 0)); then
      printf '%s &\n' "$(shell_quote "${CMD[@]}")"
    else
      printf '%s > %s 2>&1 &\n' "$(shell_quote "${CMD[@]}")" "$(quote_word "$(log_for "$i")")"
    fi
  done
  echo wait
  exit 0
fi

mkdir -p "$log_dir"
pids=()
any_alive() {
  local pid
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      return 0
    fi
  done
  return 1
}
# settle SECONDS: waits until every process has ended, at most SECONDS.
settle() {
  local t
  for ((t = 0; t < $1; t++)); do
    any_alive || return 0
    sleep 1
  done
}
signal_all() {
  local pid
  for pid in "${pids[@]}"; do
    kill "-$1" "$pid" 2>/dev/null || true
  done
}
# A process whose peer died stays blocked in a collective: ask, then insist.
stop_all() {
  signal_all TERM
  settle "$grace"
  signal_all KILL
}
trap 'stop_all; exit 130' INT TERM
for ((i = 0; i < count; i++)); do
  command_for "$i"
  printf '+ %s\n' "$(shell_quote "${CMD[@]}")" >&2
  if ((i == 0)); then
    "${CMD[@]}" &
  else
    "${CMD[@]}" >"$(log_for "$i")" 2>&1 &
  fi
  pids+=("$!")
done
((count == 1)) || echo "processes 1..$((count - 1)) log to $log_dir/process_<i>.log" >&2

status=0
for ((left = count; left > 0; left--)); do
  rc=0
  wait -n || rc=$?
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "$VJ_SCRIPT: a process exited with status $rc; stopping the others" >&2
    settle "$grace"
    stop_all
  fi
done
exit "$status"
