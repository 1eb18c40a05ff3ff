#!/usr/bin/env bash
# Renders launch/gpu/slurm.sbatch for N nodes x M GPUs and submits it with sbatch.
set -euo pipefail
# shellcheck source=launch/tpu/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../tpu/common.sh"

usage() {
  cat <<EOF
Usage: $VJ_SCRIPT --nodes N --gpus-per-node M --config FILE[:ARG] --workdir DIR [options]
          [--config.key=value ...] [-- more trainer flags]

Fills launch/gpu/slurm.sbatch, writes it to LOG_DIR/JOB_NAME-TIME.sbatch and submits it. The job
runs python -m vjepa_jax.main on every node through srun; the processes find each other from the
SLURM environment. Submitting the same command again resumes from the workdir's newest checkpoint.

Options:
  --nodes N             number of nodes
  --gpus-per-node M     GPUs used on each node
  --process-per-gpu     one process per GPU (M per node) instead of one per node with all its GPUs
  --config FILE[:ARG]   config file relative to the repository, e.g. configs/vjepa2_ac_droid.py
  --workdir DIR         checkpoints and metrics: a gs:// path or a directory every node shares
  --config.KEY=VALUE    config override, passed to the trainer verbatim (repeatable)
  --env KEY=VALUE       environment variable for the trainer (repeatable)
  --job-name NAME       SLURM job name (default vjepa-jax)
  --partition P, --account A, --time T, --qos Q
                        passed to sbatch
  --log-dir DIR         job logs and rendered scripts, on a shared filesystem
                        (default: logs/slurm in the repository)
  --python PATH         Python with vjepa-jax and its GPU extra installed
                        (default: .venv/bin/python in the repository, made by make)
  --dry-run             print the sbatch command and the rendered script; change nothing
  -h, --help            show this help

Example:
  $VJ_SCRIPT --nodes 4 --gpus-per-node 8 --config configs/vjepa2_ac_droid.py \\
    --workdir gs://my-bucket/vjepa/droid-run1 --config.data.path=gs://gresearch/robotics/droid/1.0.0
EOF
}

nodes='' gpus='' per_gpu=0 config='' workdir='' job_name=vjepa-jax
log_dir="$VJ_REPO_ROOT/logs/slurm" python="$VJ_REPO_ROOT/.venv/bin/python"
overrides=() envs=() sbatch_flags=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --config.*) override_option "$1"; overrides+=("$1") ;;
    --) shift; overrides+=("$@"); break ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --nodes) need_value "$@"; need_int "$1" "$2"; nodes=$2; shift ;;
    --gpus-per-node) need_value "$@"; need_int "$1" "$2"; gpus=$2; shift ;;
    --process-per-gpu) per_gpu=1 ;;
    --config) need_value "$@"; config=$2; shift ;;
    --workdir) need_value "$@"; workdir=$2; shift ;;
    --env) need_value "$@"; env_option "$2"; envs+=("$2"); shift ;;
    --job-name) need_value "$@"; job_name=$2; shift ;;
    --partition | --account | --time | --qos) need_value "$@"; sbatch_flags+=("$1=$2"); shift ;;
    --log-dir) need_value "$@"; log_dir=$2; shift ;;
    --python) need_value "$@"; python=$2; shift ;;
    --dry-run) VJ_DRY_RUN=1 ;;
    *) die "unknown argument '$1'" ;;
  esac
  shift
done
[[ -n $nodes ]] || die "--nodes is required"
[[ -n $gpus ]] || die "--gpus-per-node is required"
[[ -n $config ]] || die "--config is required"
[[ -n $workdir ]] || die "--workdir is required"
[[ $job_name =~ ^[A-Za-z0-9_.-]+$ ]] || die "--job-name takes letters, digits, _ . -"
# sbatch reads #SBATCH lines without a shell, so the log path cannot be quoted there.
[[ $log_dir =~ ^[A-Za-z0-9_./+-]+$ ]] || die "--log-dir must not contain spaces or quotes"

env_words=("${envs[@]}")
if ((per_gpu)); then
  tasks_per_node=$gpus
else
  tasks_per_node=1
  env_words=("VJEPA_LOCAL_DEVICE_IDS=$(seq -s, 0 $((gpus - 1)))" "${env_words[@]}")
fi

render() {
  local text
  text=$(<"$VJ_REPO_ROOT/launch/gpu/slurm.sbatch")
  # Quoted replacements stay literal (no & substitution in bash 5.2).
  text=${text//@JOB_NAME@/"$job_name"}
  text=${text//@NODES@/"$nodes"}
  text=${text//@GPUS_PER_NODE@/"$gpus"}
  text=${text//@TASKS_PER_NODE@/"$tasks_per_node"}
  text=${text//@LOG_DIR@/"$log_dir"}
  text=${text//@REPO_DIR@/"$(quote_word "$VJ_REPO_ROOT")"}
  local env_text=''
  if ((${#env_words[@]})); then
    env_text="$(shell_quote "${env_words[@]}") "
  fi
  text=${text//"@ENV@ "/"$env_text"}
  text=${text//@PYTHON@/"$(quote_word "$python")"}
  text=${text//@TRAINER_ARGS@/"$(shell_quote --config "$config" --workdir "$workdir" \
    "${overrides[@]}")"}
  printf '%s\n' "$text"
}

script="$log_dir/$job_name-$(date +%Y%m%d-%H%M%S).sbatch"
rendered=$(render)
if ((VJ_DRY_RUN)); then
  shell_quote sbatch "${sbatch_flags[@]}" "$script"
  printf '# %s:\n%s\n' "$script" "$rendered"
  exit 0
fi
mkdir -p "$log_dir"
printf '%s\n' "$rendered" >"$script"
run sbatch "${sbatch_flags[@]}" "$script"
