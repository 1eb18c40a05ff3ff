#!/usr/bin/env bash
# Copies the metrics and logs of a vjepa-jax workdir from gs:// to this machine.
set -euo pipefail
# shellcheck source=launch/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Orbax keeps each checkpoint in a directory named after its step (plus temporary siblings while
# saving); those are large and not needed to read the metrics.
checkpoints_regex='(^|.*/)(checkpoints?|[0-9]+(\.orbax-checkpoint-tmp-[0-9]+)?)/.*'

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
