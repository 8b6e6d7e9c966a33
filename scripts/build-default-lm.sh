#!/usr/bin/env bash
# Rebuild the default model's phoneme LM (phonestream/default_model/lm.arpa.gz).
# Text: the same offline English sources the default model's synthetic training text comes from
# (fortunes + WordNet example sentences, Debian packages installed by scripts/install-train-deps.sh),
# with every sentence of the evaluation manifests (CMU ARCTIC prompts read in fraser_arctic, FSDD) and
# every sentence sharing an 8-word run with one removed. Words -> phonemes by the CMU dictionary that
# pocketsphinx ships (stress removed); 4-gram interpolated Kneser-Ney.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
.venv/bin/python - "$DATA" "$TMP/text.txt" <<'PY'
import sys
from pathlib import Path
from phonestream.train.text import load_sentences
data, out = Path(sys.argv[1]), Path(sys.argv[2])
sentences = load_sentences([data / "fraser_arctic" / "manifest.tsv", data / "fsdd" / "manifest.tsv"])
out.write_text("\n".join(sentences) + "\n")
print(f"{len(sentences)} sentences", file=sys.stderr)
PY
.venv/bin/phonestream lm build phonestream/default_model/lm.arpa.gz --text "$TMP/text.txt" --order 4 \
    --exclude-manifest "$DATA/fraser_arctic/manifest.tsv" --exclude-manifest "$DATA/fsdd/manifest.tsv"
