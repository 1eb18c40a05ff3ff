#!/usr/bin/env bash
# Deletes the TPU VM (or queued resource) made by create.sh; the gs:// workdir is kept.
set -euo pipefail
# shellcheck source=launch/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $VJ_SCRIPT --name NAME --zone ZONE [--queued]

Deletes the TPU VM without asking for confirmation; billing for it stops when it is gone. With
--queued, deletes the queued resource and its node (use it when create.sh had --queued). Files on
the workers are lost; the gs:// workdir (checkpoints, metrics) is kept and keeps costing storage.

Options:
  --queued             the TPU was created with create.sh --queued
$COMMON_TPU_USAGE
EOF
}

queued=0
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --queued) queued=1 ;;
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
if ((queued)); then
  run gcloud compute tpus queued-resources delete "$TPU_NAME" "${GCLOUD_LOCATION[@]}" --force \
    --quiet
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_LOCATION[@]}" --quiet
fi
