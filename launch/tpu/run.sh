#!/usr/bin/env bash
# Starts (or restarts) vjepa-jax training on every worker of a TPU slice at once.
set -euo pipefail
# shellcheck source=launch/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $VJ_SCRIPT --name NAME --zone ZONE --config FILE[:ARG] --workdir gs://BUCKET/DIR
          [options] [--config.key=value ...] [-- more trainer flags]

On every worker at once, in ~/$VJ_REMOTE_DIR (see setup.sh), starts in the background
  python -m vjepa_jax.main --config FILE[:ARG] --workdir gs://... [--config.key=value ...]
appending its output to ~/$VJ_REMOTE_LOG, then follows that log on worker 0
(Ctrl-C stops following, not training). A trainer still running from an earlier call is stopped
first (SIGTERM, so it saves; SIGKILL after 120 s). The trainer resumes from the newest checkpoint
in the workdir, so after a preemption or a crash, re-running the same command continues the run.

Options:
  --config FILE[:ARG]  config file relative to the repository, e.g. configs/vjepa2_ac_droid.py
  --workdir gs://...   checkpoints, metrics and logs; every worker must reach it, so gs:// only
  --config.KEY=VALUE   config override, passed to the trainer verbatim (repeatable)
  --env KEY=VALUE      environment variable for the trainer (repeatable)
  --no-tail            return once started instead of following worker 0's log
$COMMON_TPU_USAGE

Example:
  $VJ_SCRIPT --name vjepa-pod --zone us-east5-a --config configs/vjepa2_ac_droid.py \\
    --workdir gs://my-bucket/vjepa/droid-run1 --config.data.path=gs://gresearch/robotics/droid/1.0.0
EOF
}

config='' workdir='' tail=1
overrides=() envs=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --config.*) override_option "$1"; overrides+=("$1") ;;
    --) shift; overrides+=("$@"); break ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --config) need_value "$@"; config=$2; shift ;;
    --workdir) need_value "$@"; workdir=$2; shift ;;
    --env) need_value "$@"; env_option "$2"; envs+=("$2"); shift ;;
    --no-tail) tail=0 ;;
    *)
      common_tpu_option "$@"
      ((SHIFT_BY)) || die "unknown argument '$1'"
      shift "$SHIFT_BY"
      continue
      ;;
  esac
  shift
done
finish_tpu_options
[[ -n $config ]] || die "--config is required"
[[ -n $workdir ]] || die "--workdir is required"
[[ $workdir == gs://?* ]] || die "--workdir must be a gs:// path that every worker can reach"

# VJEPA_DISTRIBUTED=1 makes the trainer start the JAX distributed runtime, which finds the other
# workers from the TPU metadata.
trainer=$(shell_quote env VJEPA_DISTRIBUTED=1 "${envs[@]}" .venv/bin/python -m vjepa_jax.main \
  --config "$config" --workdir "$workdir" "${overrides[@]}")
# The snippets in single quotes expand on the workers.
# shellcheck disable=SC2016
stop_previous=(
  'pid=$(cat logs/train.pid 2>/dev/null || true);'
  'if [ -n "$pid" ] && grep -qs vjepa_jax /proc/"$pid"/cmdline; then'
  'echo "stopping the previous trainer ($pid)"; kill "$pid";'
  'timeout 120 tail --pid="$pid" -f /dev/null || kill -9 "$pid"; fi'
)
# shellcheck disable=SC2016
steps=(
  "cd $(quote_word "$VJ_REMOTE_DIR")"
  '{ [ -x .venv/bin/python ] || { echo "no .venv: run setup.sh first" >&2; false; }; }'
  'mkdir -p logs'
  "{ ${stop_previous[*]}; }"
  'echo "=== vjepa-jax run started $(date -u +%FT%TZ) on $(hostname) ===" >> logs/train.log'
  # setsid detaches the trainer from the ssh session, which ends right after.
  "{ setsid $trainer >> logs/train.log 2>&1 < /dev/null & echo \$! > logs/train.pid; }"
)
remote=$(printf ' && %s' "${steps[@]}")
tpu_ssh all "${remote# && }"
if ((tail)); then
  tail_log 0 100 1
fi
