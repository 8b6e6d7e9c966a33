#!/usr/bin/env bash
# Everything the default model's training recipe (python -m phonestream.train) needs beyond the
# package itself: the offline voices, the text sources, and the Python extras. Run as root.
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
    fortunes fortunes-min wordnet-base sox
python -m pip install -e ".[train]"
