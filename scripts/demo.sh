#!/usr/bin/env bash
# The main job on the embedded default: synthetic perturbation data, a small CaLMFlow, a held-out
# combination predicted and scored against simple baselines. A few minutes on a laptop CPU.
source "$(dirname "$0")/_env.sh" ""
exec .venv/bin/python -m scflowlm demo "$@"
