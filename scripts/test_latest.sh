#!/usr/bin/env bash
# The fast tests on the NEWEST versions that pyproject.toml allows (not the lock), in .venv-latest, so that a
# library's next breaking release is found here and not by a user. CPU torch stays pinned (an unpinned torch
# pulls a multi-GB CUDA build).
#
# Usage: bash scripts/test_latest.sh [--write-lock | --oldest] [pytest args]
#   --write-lock   after the tests pass, write this environment's versions to constraints.txt (refreshes the
#                  lock); then run `bash scripts/test.sh` on the new lock and commit both.
#   --oldest       the same with transformers at the oldest version pyproject.toml allows (the KV-cache code
#                  follows the installed version's API), in .venv-oldest.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in --write-lock|--oldest) shift ;; *) mode="" ;; esac
PY="${PYTHON:-python3}"
venv=.venv-latest
extra=()
if [ "$mode" = "--oldest" ]; then
  venv=.venv-oldest
  floor=$(grep -oE '"transformers>=[0-9.]+' pyproject.toml | cut -d= -f2)
  extra=("transformers==$floor")
fi
rm -rf "$venv"
"$PY" -m venv "$venv"
"$venv"/bin/python -m pip install -q --upgrade pip
torch_pin=$(grep -E '^torch==' constraints.txt)
"$venv"/bin/python -m pip install -q "$torch_pin"
"$venv"/bin/python -m pip install -q --upgrade --upgrade-strategy eager "$torch_pin" "${extra[@]}" -e ".[test,doc,eval,genes]"
"$venv"/bin/python -m pip list 2>/dev/null \
  | grep -iE '^(torch|transformers|tokenizers|lightning|scvi-tools|anndata|scanpy|numpy|pandas|scipy|pot) ' || true
"$venv"/bin/python -m pytest -m "not slow" -q "$@"
if [ "$mode" = "--write-lock" ]; then
  {
    echo "# The tested stack: every direct and indirect dependency of .[test,doc,eval,genes], pinned."
    echo "# Written by 'bash scripts/test_latest.sh --write-lock' on $(date -u +%Y-%m-%d)" \
      "(Python $("$venv"/bin/python -c 'import platform; print(platform.python_version())'))."
    echo "# CPU build of torch from the local wheel; an unpinned torch pulls a multi-GB CUDA build."
    echo "$torch_pin"
    "$venv"/bin/python -m pip freeze --exclude-editable 2>/dev/null | grep -viE '^(torch==|scflowlm)' | sort -f
  } > constraints.txt
  echo "constraints.txt rewritten ($(grep -cvE '^\s*(#|$)' constraints.txt) pins); now run: bash scripts/test.sh"
fi
