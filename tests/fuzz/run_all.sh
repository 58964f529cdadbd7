#!/usr/bin/env bash
# Run fuzz targets to N inputs each, J at a time, then print the figures table.
#   tests/fuzz/run_all.sh [N=1000000] [J=2] [TARGET...]
# Logs: $ONIONMESH_FUZZ_DIR/logs/TARGET.log (default /tmp/onionmesh-fuzz); crashes: .../crashes/
set -u
cd "$(dirname "$0")/../.."
N=${1:-1000000}
J=${2:-2}
shift 2 2>/dev/null || shift $#
PY=${PYTHON:-.venv/bin/python}
DIR=${ONIONMESH_FUZZ_DIR:-/tmp/onionmesh-fuzz}
mkdir -p "$DIR/logs"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <("$PY" tests/fuzz/run.py list | awk '{print $1}')
fi
printf '%s\n' "${TARGETS[@]}" | xargs -P "$J" -I{} sh -c '
  start=$(date +%s.%N)
  "$0" tests/fuzz/run.py {} --inputs "$1" --workdir "$2" --tolerate-known > "$2/logs/{}.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  echo "WALL target={} rc=$rc wall_s=$(echo "$end - $start" | bc)" >> "$2/logs/{}.log"
  echo "finished {} rc=$rc"
' "$PY" "$N" "$DIR"
"$PY" tests/fuzz/summary.py "$DIR" "${TARGETS[@]}"
