#!/usr/bin/env bash
# Creates the Cloud TPU VM (or queued resource) that vjepa-jax trains on.
set -euo pipefail
# shellcheck source=launch/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $VJ_SCRIPT --name NAME --zone ZONE --accelerator-type TYPE [options]

Creates a TPU VM slice (every host of it is a "worker"), or with --queued a queued resource whose
node has the same name, so setup.sh, run.sh, logs.sh and delete.sh work the same on both.

Options:
  --accelerator-type TYPE  slice type, e.g. v4-8, v5p-32, v6e-16, v5litepod-16
  --runtime-version V      TPU software version; default from the type: v4/v3/v2 ->
                           tpu-ubuntu2204-base, v5p -> v2-alpha-tpuv5, v5litepod/v5e ->
                           v2-alpha-tpuv5-lite, v6e -> v2-alpha-tpuv6e
  --spot                   Spot capacity: much cheaper, may be preempted at any time
  --preemptible            legacy preemptible TPU VM (not with --queued; prefer --spot)
  --service-account EMAIL  identity of the workers; it needs read access to the data and
                           pretrained weights and write access to the gs:// workdir
  --queued                 create a queued resource (waits in line for capacity)
  --reserved               queued resource from your reservation (with --queued)
  --wait                   with --queued: wait until the resource is ACTIVE
  --wait-minutes N         give up waiting after N minutes (default 60)
$COMMON_TPU_USAGE

Example:
  $VJ_SCRIPT --name vjepa-pod --zone us-east5-a --accelerator-type v5p-32 --spot --queued --wait
EOF
}

default_runtime_version() {
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v4-* | v3-* | v2-*) echo tpu-ubuntu2204-base ;;
    *) die "no default runtime version for '$1'; pass --runtime-version" ;;
  esac
}

accelerator='' runtime='' service_account='' capacity='' queued=0 reserved=0 wait=0
wait_minutes=60
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --accelerator-type) need_value "$@"; accelerator=$2; shift ;;
    --runtime-version) need_value "$@"; runtime=$2; shift ;;
    --service-account) need_value "$@"; service_account=$2; shift ;;
    --spot) capacity=--spot ;;
    --preemptible) capacity=--preemptible ;;
    --queued) queued=1 ;;
    --reserved) reserved=1 ;;
    --wait) wait=1 ;;
    --wait-minutes) need_value "$@"; need_int "$1" "$2"; wait_minutes=$2; shift ;;
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
[[ -n $accelerator ]] || die "--accelerator-type is required"
[[ $accelerator =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] ||
  die "--accelerator-type looks like v5p-32 or v6e-16, got '$accelerator'"
[[ -n $runtime ]] || runtime=$(default_runtime_version "$accelerator")
if ((queued)); then
  [[ $capacity != --preemptible ]] || die "--preemptible is for TPU VMs; use --spot with --queued"
  [[ -z $capacity || $reserved -eq 0 ]] || die "choose one of --spot and --reserved"
else
  ((reserved == 0)) || die "--reserved needs --queued"
  ((wait == 0)) || die "--wait needs --queued (a TPU VM create already waits)"
fi

flags=(--accelerator-type="$accelerator")
if ((queued)); then
  flags+=(--runtime-version="$runtime" --node-id="$TPU_NAME")
else
  flags+=(--version="$runtime")
fi
if [[ -n $capacity ]]; then
  flags+=("$capacity")
fi
if ((reserved)); then
  flags+=(--reserved)
fi
if [[ -n $service_account ]]; then
  flags+=(--service-account="$service_account")
fi
# Without the cloud-platform scope the workers could not write checkpoints to gs://.
flags+=(--scopes=https://www.googleapis.com/auth/cloud-platform)

if ((!queued)); then
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_LOCATION[@]}" "${flags[@]}"
  exit 0
fi

run gcloud compute tpus queued-resources create "$TPU_NAME" "${GCLOUD_LOCATION[@]}" "${flags[@]}"
describe=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${GCLOUD_LOCATION[@]}"
  --format='value(state.state)')
if ((!wait)); then
  if ((!VJ_DRY_RUN)); then
    echo "Queued. When this prints ACTIVE, run setup.sh: $(shell_quote "${describe[@]}")" >&2
  fi
  exit 0
fi
if ((VJ_DRY_RUN)); then
  shell_quote "${describe[@]}"
  exit 0
fi
deadline=$((SECONDS + wait_minutes * 60))
while :; do
  state=$("${describe[@]}")
  echo "$TPU_NAME: ${state:-unknown}" >&2
  case $state in
    ACTIVE) exit 0 ;;
    FAILED | SUSPENDED)
      die "queued resource $TPU_NAME is $state; inspect it with:" \
        "$(shell_quote "${describe[@]:0:6}" "${GCLOUD_LOCATION[@]}")"
      ;;
  esac
  ((SECONDS < deadline)) ||
    die "still ${state:-unknown} after $wait_minutes minutes; check later with:" \
      "$(shell_quote "${describe[@]}")"
  sleep 30
done
