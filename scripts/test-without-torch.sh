#!/usr/bin/env bash
# The default install passes its tests without PyTorch: a fresh venv with `pip install -e .` and the test
# tools (the [test] extra without [hf]), then the whole suite. Tests that need PyTorch/transformers are
# reported as skipped (tests/conftest.py), everything else must pass.
# Usage: scripts/test-without-torch.sh [VENV_DIR] [PYTEST_ARGS...]   (default venv: a new temporary folder)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$(mktemp -d)/venv}
shift || true
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -e "$repo" "pytest>=7" "ruff>=0.6" "pyte>=0.8" "pocketsphinx>=5" "selenium>=4.20"
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "error: $venv has torch installed; give a venv without it" >&2
  exit 2
fi
cd "$repo"
exec "$venv/bin/python" -m pytest -q -rs "$@"
