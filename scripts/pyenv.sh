#!/usr/bin/env bash
# Creates the Python virtual environment .state/venv for the test clients in
# tools/pyclients and installs tools/pyclients/requirements.txt into it.
# Idempotent and quiet: the venv is (re)built only when the requirements file changed
# since the last successful install (its sha256 is kept in .state/venv/.requirements.sha256),
# so the usual run prints nothing. Callers then use .state/venv/bin/python.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.state/venv"
REQS="$ROOT/tools/pyclients/requirements.txt"
STAMP="$VENV/.requirements.sha256"
LOCK="$ROOT/.state/.pyenv.lock"

want=$(sha256sum "$REQS" | cut -d' ' -f1)
fresh() { [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; }
fresh && exit 0

# Serialise concurrent callers (parallel tests) and re-check under the lock.
mkdir -p "$ROOT/.state"
exec 9>"$LOCK"
flock 9
fresh && exit 0

echo "pyenv: installing $(basename "$REQS") into $VENV" >&2
log="$ROOT/.state/pyenv.log"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
rm -f "$STAMP"
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQS" >"$log" 2>&1; then
  cat "$log" >&2
  echo "pyenv: pip install failed (log: $log)" >&2
  exit 1
fi
echo "$want" >"$STAMP"
