# shellcheck shell=bash disable=SC2034
# Sourced by the vjepa-jax launch scripts (launch/tpu/*.sh and launch/gpu/*.sh): errors, option
# parsing, shell quoting, dry-run aware execution, and the gcloud pieces every TPU script shares.
# (SC2034: the variables set here are read by the scripts that source this file.)

VJ_SCRIPT=$(basename "$0")
VJ_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VJ_DRY_RUN=0

# Workers keep the checkout, its .venv and the training log here, relative to the home directory.
VJ_REMOTE_DIR=${VJEPA_REMOTE_DIR:-vjepa-jax}
VJ_REMOTE_LOG="$VJ_REMOTE_DIR/logs/train.log"

TPU_NAME=${VJEPA_TPU_NAME:-}
TPU_ZONE=${VJEPA_TPU_ZONE:-}
GCP_PROJECT=${VJEPA_GCP_PROJECT:-}
GCLOUD_LOCATION=()

die() {
  printf '%s: error: %s\nRun %s --help for usage.\n' "$VJ_SCRIPT" "$*" "$VJ_SCRIPT" >&2
  exit 2
}

# need_value "$@": the option in $1 is followed by a value.
need_value() {
  [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value"
}

# need_int NAME VALUE [MIN]: VALUE is an integer >= MIN (default 1).
need_int() {
  if ! [[ $2 =~ ^[0-9]+$ ]] || ((10#$2 < ${3:-1})); then
    die "$1 must be an integer >= ${3:-1}, got '$2'"
  fi
}

# quote_word WORD: WORD as a POSIX shell word. Only unsafe words get quotes; for --flag=value
# only the value is quoted, so the output reads like a command a person would type.
quote_word() {
  local word=$1 sq="'\\''"
  if [[ $word =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$word"
  elif [[ $word =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}'${BASH_REMATCH[2]//\'/$sq}'"
  else
    printf '%s' "'${word//\'/$sq}'"
  fi
}

# shell_quote ARG...: the arguments as one command line that a shell splits back into them.
shell_quote() {
  local arg sep=''
  for arg in "$@"; do
    printf '%s' "$sep"
    quote_word "$arg"
    sep=' '
  done
  printf '\n'
}

# run CMD...: with --dry-run print CMD on one line; otherwise echo it to stderr and run it.
run() {
  if ((VJ_DRY_RUN)); then
    shell_quote "$@"
  else
    printf '+ %s' "$(shell_quote "$@")" >&2
    printf '\n' >&2
    "$@"
  fi
}

# override_option ARG: ARG is a --config.key=value override for the trainer.
override_option() {
  [[ $1 == --config.*=* ]] || die "write config overrides as --config.key=value, got '$1'"
}

# env_option ARG: ARG is KEY=VALUE with a valid variable name.
env_option() {
  [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs KEY=VALUE, got '$1'"
}

COMMON_TPU_USAGE="Common options:
  --name NAME          TPU VM or queued resource name (default: \$VJEPA_TPU_NAME)
  --zone ZONE          e.g. us-central2-b, us-east5-a (default: \$VJEPA_TPU_ZONE)
  --project PROJECT    Google Cloud project (default: \$VJEPA_GCP_PROJECT, else gcloud's)
  --dry-run            print the commands, one per line, and change nothing
  -h, --help           show this help"

# common_tpu_option "$@": takes an option every TPU script shares and sets SHIFT_BY to the number of
# words it used, or to 0 when $1 is not one of them.
common_tpu_option() {
  SHIFT_BY=2
  case $1 in
    --name) need_value "$@"; TPU_NAME=$2 ;;
    --zone) need_value "$@"; TPU_ZONE=$2 ;;
    --project) need_value "$@"; GCP_PROJECT=$2 ;;
    --dry-run) VJ_DRY_RUN=1; SHIFT_BY=1 ;;
    *) SHIFT_BY=0 ;;
  esac
}

# finish_tpu_options: checks the shared options and builds GCLOUD_LOCATION.
finish_tpu_options() {
  [[ -n $TPU_NAME ]] || die "--name is required"
  [[ -n $TPU_ZONE ]] || die "--zone is required"
  [[ $TPU_NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
    die "--name must be lowercase letters, digits and dashes, got '$TPU_NAME'"
  GCLOUD_LOCATION=(--zone="$TPU_ZONE")
  if [[ -n $GCP_PROJECT ]]; then
    GCLOUD_LOCATION+=(--project="$GCP_PROJECT")
  fi
}

# tpu_ssh WORKER COMMAND: run COMMAND (one string, for the worker's shell) on WORKER (a number or
# "all"; with "all", gcloud runs it on every worker of the slice at the same time).
tpu_ssh() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_LOCATION[@]}" --worker="$1" \
    --command="$2"
}

# tail_log WORKER LINES FOLLOW: show the training log of one worker.
tail_log() {
  local tail_flags=(-n "$2")
  if (($3)); then
    tail_flags+=(-F)
  fi
  tpu_ssh "$1" "$(shell_quote tail "${tail_flags[@]}" "$VJ_REMOTE_LOG")"
}
