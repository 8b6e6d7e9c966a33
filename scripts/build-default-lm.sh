#!/usr/bin/env bash
# Rebuild the default model's phoneme LM (phonestream/default_model/lm.arpa.gz).
# Text: the same offline English sources the default model's synthetic training text comes from
# (fortunes + WordNet example sentences, Debian packages installed by scripts/install-train-deps.sh),
# with every sentence of the evaluation manifests (CMU ARCTIC prompts read in fraser_arctic, FSDD) and
# every sentence sharing an 8-word run with one removed. Words -> phonemes by the CMU dictionary that
# pocketsphinx ships (stress removed); 6-gram interpolated Kneser-Ney (4-gram until the fifth session of 2026-12-06).
#
# Environment (all optional): OUT (another output file), ORDER (n-gram order), EXCLUDE (more manifests,
# space separated, whose sentences are left out the same way: scripts/tune-decoder-heldout.py's held-out
# sentences, for an LM to tune decoder settings with).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-phonestream/default_model/lm.arpa.gz}
ORDER=${ORDER:-6}
read -r -a EXTRA <<< "${EXCLUDE:-}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
.venv/bin/python - "$TMP/text.txt" "$DATA/fraser_arctic/manifest.tsv" "$DATA/fsdd/manifest.tsv" "${EXTRA[@]}" <<'PY'
import sys
from pathlib import Path
from phonestream.train.text import load_sentences
out, manifests = Path(sys.argv[1]), [Path(m) for m in sys.argv[2:]]
sentences = load_sentences(manifests)
out.write_text("\n".join(sentences) + "\n")
print(f"{len(sentences)} sentences", file=sys.stderr)
PY
ARGS=(--exclude-manifest "$DATA/fraser_arctic/manifest.tsv" --exclude-manifest "$DATA/fsdd/manifest.tsv")
for m in "${EXTRA[@]}"; do ARGS+=(--exclude-manifest "$m"); done
.venv/bin/phonestream lm build "$OUT" --text "$TMP/text.txt" --order "$ORDER" "${ARGS[@]}"
