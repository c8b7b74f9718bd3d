# Create .venv (once) and install CPU torch from the constraints file, then scflowlm with the given extras.
# Usage: source scripts/_env.sh [extras]   e.g. "test" or "test,doc"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.scflowlm-installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  # CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q -c constraints.txt torch
  spec="."
  [ -n "$extras" ] && spec=".[${extras}]"
  .venv/bin/python -m pip install -q -c constraints.txt -e "$spec"
  touch "$stamp"
fi
