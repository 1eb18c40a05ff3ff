#!/usr/bin/env bash
# Installs vjepa-jax with its TPU extra on every worker of a TPU slice.
set -euo pipefail
# shellcheck source=launch/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $VJ_SCRIPT --name NAME --zone ZONE (--git-ref REF [--repo-url URL] | --wheel FILE) [options]

On every worker (--worker=all) puts vjepa-jax in ~/$VJ_REMOTE_DIR, creates ~/$VJ_REMOTE_DIR/.venv
(Python $default_python by default, fetched with uv when the image's Python is older) and installs
the project with its TPU extra. Safe to re-run, e.g. to move every worker to a new ref.

Source of the code, one of:
  --git-ref REF        branch, tag or commit to check out; the workers clone --repo-url
  --repo-url URL       repository to clone (default: this checkout's "origin" remote)
  --wheel FILE         a wheel built here (python -m pip wheel --no-deps -w dist .); it is
                       copied to the workers together with configs/ and installed as '[tpu]'
Options:
  --python VERSION     Python version of the workers' venv (default $default_python)
$COMMON_TPU_USAGE

Example:
  $VJ_SCRIPT --name vjepa-pod --zone us-east5-a --git-ref main
EOF
}

default_python=3.11
git_ref='' repo_url='' wheel='' python=$default_python
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --git-ref) need_value "$@"; git_ref=$2; shift ;;
    --repo-url) need_value "$@"; repo_url=$2; shift ;;
    --wheel) need_value "$@"; wheel=$2; shift ;;
    --python) need_value "$@"; python=$2; shift ;;
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
[[ -n $git_ref || -n $wheel ]] || die "pass --git-ref REF or --wheel FILE"
[[ -z $git_ref || -z $wheel ]] || die "pass only one of --git-ref and --wheel"
[[ $python =~ ^3\.[0-9]+$ ]] || die "--python looks like 3.11, got '$python'"

# Both sources end in the same state: ~/$VJ_REMOTE_DIR holds configs/ and a venv with the project.
dir=$(quote_word "$VJ_REMOTE_DIR")
venv=(
  "python3 -m pip install --quiet --user --upgrade uv"
  "{ [ -x $dir/.venv/bin/python ] || python3 -m uv venv --seed --python $python $dir/.venv; }"
  "$dir/.venv/bin/python -m pip install --quiet --upgrade pip"
)

if [[ -n $git_ref ]]; then
  if [[ -z $repo_url ]]; then
    repo_url=$(git -C "$VJ_REPO_ROOT" remote get-url origin 2>/dev/null) ||
      die "this checkout has no 'origin' remote; pass --repo-url"
    # Only a network URL (https://, ssh://, git://, user@host:path) can be cloned by the workers.
    if ! [[ $repo_url =~ ^[a-z+]+:// || $repo_url =~ ^[^/:]+@[^/:]+: ]]; then
      printf '%s: warning: origin is %s, which the TPU workers cannot clone; pass --repo-url URL of a repository they can reach (or install from --wheel)\n' \
        "$VJ_SCRIPT" "$repo_url" >&2
    fi
  fi
  steps=(
    "{ [ -d $dir/.git ] || git clone --quiet $(quote_word "$repo_url") $dir; }"
    "git -C $dir fetch --quiet origin $(quote_word "$git_ref")"
    "git -C $dir checkout --quiet --detach FETCH_HEAD"
    "${venv[@]}"
    "cd $dir"
    ".venv/bin/python -m pip install --quiet -e '.[tpu]'"
  )
  remote=$(printf ' && %s' "${steps[@]}")
  tpu_ssh all "${remote# && }"
  exit 0
fi

[[ $wheel == *.whl ]] || die "--wheel must be a .whl file, got '$wheel'"
((VJ_DRY_RUN)) || [[ -f $wheel ]] || die "no such wheel: $wheel"
wheel_name=$(quote_word "$(basename "$wheel")")
tpu_ssh all "mkdir -p $dir"
run gcloud compute tpus tpu-vm scp --recurse "$wheel" "$VJ_REPO_ROOT/configs" \
  "$TPU_NAME:$VJ_REMOTE_DIR/" "${GCLOUD_LOCATION[@]}" --worker=all
steps=(
  "${venv[@]}"
  "cd $dir"
  ".venv/bin/python -m pip install --quiet $(quote_word "./$(basename "$wheel")[tpu]")"
  # pip keeps an installed wheel of the same version; a rebuilt one must replace it.
  ".venv/bin/python -m pip install --quiet --no-deps --force-reinstall $wheel_name"
)
remote=$(printf ' && %s' "${steps[@]}")
tpu_ssh all "${remote# && }"
