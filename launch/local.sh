#!/usr/bin/env bash
# Pretraining on this machine, with all its devices in one process.
#   launch/local.sh CONFIG WORKDIR [--config.field=value ...]
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  echo "  e.g. $0 configs/demo.py /tmp/ebm_demo" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
cd "$(dirname "$0")/.."
[[ -f $config ]] || { echo "local.sh: config file '$config' not found" >&2; exit 2; }
if [[ -n ${DRY_RUN:-} ]]; then
  echo "python main.py --config=$config --workdir=$workdir $*"
else
  exec python main.py --config="$config" --workdir="$workdir" "$@"
fi
