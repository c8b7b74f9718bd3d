#!/usr/bin/env bash
# The test suite (unit, end-to-end, notebooks, docs build). Installs what it needs into .venv.
source "$(dirname "$0")/_env.sh" "test,doc,eval,genes"
exec .venv/bin/python -m pytest "$@"
