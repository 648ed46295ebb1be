#!/usr/bin/env bash
# README's test command: set up (idempotent), then run the whole test suite.
#   bash scripts/test.sh [pytest arguments]
# FDENOISE_VENV and FDENOISE_PYTHON choose the environment and its interpreter (scripts/setup.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# the onnx extra: the ONNX export's parity tests (tests/test_onnx.py)
bash "$ROOT/scripts/setup.sh" --with onnx
VENV="${FDENOISE_VENV:-$ROOT/.venv}"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
