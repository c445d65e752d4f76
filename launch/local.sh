#!/usr/bin/env bash
# Runs pretraining on this machine (all local devices).
#   launch/local.sh CONFIG WORKDIR [--config.field=value ...]
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  echo "  e.g. $0 configs/demo.py /tmp/ebm_demo" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
cd "$(dirname "$0")/.."
exec python main.py --config="$config" --workdir="$workdir" "$@"
