#!/usr/bin/env bash
# Copies the metrics and logs of a vjepa-jax workdir from gs:// to this machine.
set -euo pipefail
# shellcheck source=launch/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Large and not needed to read the metrics: checkpoints/ (orbax step directories, named after
# their step, plus temporary siblings while saving) and base/ (random-init weights of a run
# without converted ones).
checkpoints_regex='(^|.*/)(checkpoints?|base|[0-9]+(\.orbax-checkpoint-tmp-[0-9]+)?)/.*'

usage() {
  cat <<EOF
Usage: $VJ_SCRIPT --workdir gs://BUCKET/DIR [--dest DIR] [--with-checkpoints]

Mirrors the workdir (TensorBoard events, metrics JSONL, config, plots) into DIR with
gcloud storage rsync, skipping checkpoints. Re-running copies only what changed; it works while
training is running. View with: tensorboard --logdir DIR

Options:
  --workdir gs://...   the workdir given to run.sh
  --dest DIR           local directory (default ./workdir-<last part of the workdir>)
  --with-checkpoints   copy the checkpoints too (large)
  --project PROJECT    Google Cloud project billed for the requests (default: gcloud's)
  --dry-run            print the commands, one per line, and change nothing
  -h, --help           show this help
EOF
}

workdir='' dest='' exclude=1
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --workdir) need_value "$@"; workdir=${2%/}; shift ;;
    --dest) need_value "$@"; dest=$2; shift ;;
    --with-checkpoints) exclude=0 ;;
    --project) need_value "$@"; GCP_PROJECT=$2; shift ;;
    --dry-run) VJ_DRY_RUN=1 ;;
    *) die "unknown argument '$1'" ;;
  esac
  shift
done
[[ -n $workdir ]] || die "--workdir is required"
[[ $workdir == gs://?* ]] || die "--workdir must be a gs:// path, got '$workdir'"
[[ -n $dest ]] || dest="workdir-${workdir##*/}"

flags=(--recursive)
if ((exclude)); then
  flags+=(--exclude="$checkpoints_regex")
fi
if [[ -n $GCP_PROJECT ]]; then
  flags+=(--project="$GCP_PROJECT")
fi
run mkdir -p "$dest"
run gcloud storage rsync "${flags[@]}" "$workdir" "$dest"
