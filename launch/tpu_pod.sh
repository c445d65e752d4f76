#!/usr/bin/env bash
# Pretraining on a Cloud TPU VM pod slice: one sub-command per stage.
# Run `launch/tpu_pod.sh help` for the usage; DRY_RUN=1 (or --dry-run) prints the
# gcloud commands instead of running them.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/tpu_pod.sh COMMAND --name=NAME --zone=ZONE [options] [-- --config.field=value ...]

commands (in the order of a run):
  create    create the TPU VM slice             needs --accelerator-type (e.g. v4-32, v5p-64)
  copy      copy this repository to every worker (tracked and untracked, not ignored, files)
  install   pip install requirements.txt and jax[tpu] on every worker
  run       start main.py on every worker       needs --config and --bucket
  logs      stream one worker's log              [--worker=0]
  delete    delete the slice
  help      this text

options:
  --name=NAME              TPU VM name (also names the run: gs://BUCKET/ebm_vision/NAME)
  --zone=ZONE              e.g. us-central2-b
  --project=PROJECT        GCP project (default: gcloud's configured one)
  --accelerator-type=TYPE  slice type for create, e.g. v4-32
  --version=VERSION        TPU VM software version (default: tpu-ubuntu2204-base)
  --spot                   create a Spot slice (preemptible: runs checkpoint on SIGTERM)
  --config=FILE            config file for run, e.g. configs/vit_l_mask.py
  --bucket=BUCKET          GCS bucket for run: workdir gs://BUCKET/ebm_vision/NAME,
                           data gs://BUCKET/tensorflow_datasets
  --worker=N               worker whose log `logs` streams (default 0)
  --dry-run                print the commands instead of running them (or DRY_RUN=1)
Arguments after `--` go to main.py (e.g. --config.batch_size=2048).

example:
  launch/tpu_pod.sh create --name=ebm-l --zone=us-central2-b --accelerator-type=v4-64
  launch/tpu_pod.sh copy --name=ebm-l --zone=us-central2-b
  launch/tpu_pod.sh install --name=ebm-l --zone=us-central2-b
  launch/tpu_pod.sh run --name=ebm-l --zone=us-central2-b --config=configs/vit_l_mask.py --bucket=my-bucket
  launch/tpu_pod.sh logs --name=ebm-l --zone=us-central2-b
  launch/tpu_pod.sh delete --name=ebm-l --zone=us-central2-b
EOF
}

die() { echo "tpu_pod.sh: $*" >&2; exit 2; }

command=${1:-help}
[[ $# -gt 0 ]] && shift
name="" zone="" project="" accelerator_type="" version="tpu-ubuntu2204-base" spot=""
config="" bucket="" worker=0 dry_run=${DRY_RUN:-}
main_args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --accelerator-type=*) accelerator_type=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --spot) spot=1 ;;
    --config=*) config=${1#*=} ;;
    --bucket=*) bucket=${1#*=} ;;
    --worker=*) worker=${1#*=} ;;
    --dry-run) dry_run=1 ;;
    --) shift; main_args=("$@"); break ;;
    *) die "unknown argument '$1' (see 'launch/tpu_pod.sh help')" ;;
  esac
  shift
done

case $command in
  help|-h|--help) usage; exit 0 ;;
  create|copy|install|run|logs|delete) ;;
  *) die "unknown command '$command': one of create, copy, install, run, logs, delete, help" ;;
esac
[[ -n $name ]] || die "$command needs --name=NAME"
[[ -n $zone ]] || die "$command needs --zone=ZONE"
if [[ -z $dry_run ]] && ! command -v gcloud >/dev/null; then
  die "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk) and run 'gcloud auth login'"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
remote_dir=ebm-vision
tpu=(compute tpus tpu-vm)
where=("--zone=$zone")
[[ -n $project ]] && where+=("--project=$project")

# Runs a command, or (dry run) prints it as a shell would take it.
run() {
  if [[ -n $dry_run ]]; then
    local arg words=()
    for arg in "$@"; do
      if [[ $arg =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then words+=("$arg"); else words+=("${arg@Q}"); fi
    done
    echo "${words[*]}"
  else
    "$@"
  fi
}

# Runs a shell command on every worker (or the one given).
on_workers() {
  local workers=$1
  shift
  run gcloud "${tpu[@]}" ssh "$name" "${where[@]}" "--worker=$workers" --command="$*"
}

case $command in
  create)
    [[ -n $accelerator_type ]] || die "create needs --accelerator-type=TYPE (e.g. v4-32)"
    run gcloud "${tpu[@]}" create "$name" "${where[@]}" "--accelerator-type=$accelerator_type" \
      "--version=$version" ${spot:+--spot}
    ;;
  copy)
    archive=$(mktemp -d)/ebm-vision.tar.gz
    pack="git -C $(printf %q "$repo") ls-files -co --exclude-standard -z | tar -C $(printf %q "$repo") --null -T - -czf $(printf %q "$archive")"
    if [[ -n $dry_run ]]; then echo "$pack"; else eval "$pack"; fi
    run gcloud "${tpu[@]}" scp "$archive" "$name:~/" "${where[@]}" --worker=all
    on_workers all "rm -rf ~/$remote_dir && mkdir -p ~/$remote_dir && tar -xzf ~/ebm-vision.tar.gz -C ~/$remote_dir"
    ;;
  install)
    jax_version=$(sed -n 's/^jax==\(.*\)$/\1/p' "$repo/requirements.txt")
    [[ -n $jax_version ]] || die "no 'jax==VERSION' line in requirements.txt"
    on_workers all "cd ~/$remote_dir && python3 -m pip install -q -r requirements.txt 'jax[tpu]==$jax_version'"
    ;;
  run)
    [[ -n $config ]] || die "run needs --config=FILE (e.g. configs/vit_l_mask.py)"
    [[ -n $bucket ]] || die "run needs --bucket=BUCKET (workdir and data live there)"
    args=("--config=$config" "--workdir=gs://$bucket/ebm_vision/$name"
          "--config.data.data_dir=gs://$bucket/tensorflow_datasets" --distributed=on
          ${main_args[@]+"${main_args[@]}"})
    quoted=$(printf '%q ' "${args[@]}")
    on_workers all "cd ~/$remote_dir && nohup python3 main.py $quoted > ~/ebm-vision.log 2>&1 &"
    ;;
  logs)
    on_workers "$worker" "tail -n +1 -f ~/ebm-vision.log"
    ;;
  delete)
    run gcloud "${tpu[@]}" delete "$name" "${where[@]}" --quiet
    ;;
esac
