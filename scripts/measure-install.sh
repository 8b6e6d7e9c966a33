#!/usr/bin/env bash
# Install time and size of phonestream's default install and of [all], each in a fresh venv.
# Usage: scripts/measure-install.sh [WORKDIR]   (prints a Markdown table; needs PyPI access)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
echo "| install | command | time | venv size |"
echo "|---|---|---|---|"
for spec in default all; do
  venv="$work/venv-$spec"
  rm -rf "$venv"
  python3 -m venv "$venv"
  if [ "$spec" = default ]; then target="$repo"; pre=""; else target="$repo[all]"; pre="torch==2.13.0"; fi
  start=$(date +%s.%N)
  "$venv/bin/pip" install -q --no-cache-dir $pre "$target" >/dev/null 2>&1
  end=$(date +%s.%N)
  size=$(du -sm "$venv" | cut -f1)
  printf '| %s | `pip install %s%s` | %.0f s | %s MB |\n' "$spec" "${pre:+$pre }" \
    "$([ "$spec" = default ] && echo . || echo "'.[all]'")" "$(echo "$end - $start" | bc)" "$size"
done
