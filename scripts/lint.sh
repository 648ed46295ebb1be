#!/usr/bin/env bash
# The linter (flake8, configured in setup.cfg) over the repository: prints nothing and exits 0
# when the code is clean. CI runs it after the tests.
#   bash scripts/lint.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FDENOISE_VENV:-$ROOT/.venv}"
cd "$ROOT"
exec "$VENV/bin/python" -m flake8 .
