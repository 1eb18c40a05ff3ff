#!/usr/bin/env bash
# Shows the vjepa-jax training log of one TPU worker (worker 0 by default).
set -euo pipefail
# shellcheck source=launch/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $VJ_SCRIPT --name NAME --zone ZONE [--worker N] [--lines N] [--no-follow]

Prints the last lines of ~/$VJ_REMOTE_LOG on one worker and keeps following it (Ctrl-C stops
following, not training). Worker 0 is the one that writes metrics; look at another worker when it
failed on its own.

Options:
  --worker N           worker index (default 0)
  --lines N            lines of history to show first (default 100)
  --no-follow          print and return
$COMMON_TPU_USAGE
EOF
}

worker=0 lines=100 follow=1
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --worker) need_value "$@"; need_int "$1" "$2" 0; worker=$2; shift ;;
    --lines) need_value "$@"; need_int "$1" "$2" 0; lines=$2; shift ;;
    --no-follow) follow=0 ;;
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
tail_log "$worker" "$lines" "$follow"
