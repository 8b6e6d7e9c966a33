#!/usr/bin/env python3
"""Randomly initialised models for speed and precision checks, where compute matters and weights do not.

- ``wav2vec2 SIZE FOLDER``: a wav2vec2 CTC checkpoint over ARPAbet (``tiny``: the test suite's 2-layer
  model; ``base``: 94M parameters; ``large``: 315M, wav2vec2-large-lv60's shape), seed 0, its head
  sharpened (x40) so that it emits varied phonemes with clear margins rather than near-ties;
- ``default FOLDER``: the default model's shape with a random encoder: a Whisper tiny.en-shaped encoder
  converted to CTranslate2 (int8, as the shipped one is stored), under the shipped head, vocabulary and
  windows. For machines where the shipped encoder's 75 MB cannot travel (a lent GPU takes 64 MiB).

Usage::

    scripts/random_models.py wav2vec2 large /tmp/w2v2-large
    scripts/random_models.py default /tmp/default-random
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SIZES = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
    "base": {},
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def wav2vec2(size: str, folder: Path) -> Path:
    """A random wav2vec2 CTC folder (config, weights, ``vocab.json``, ``preprocessor_config.json``)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    sys.path.insert(0, str(REPO))
    from phonestream.phones import ARPABET

    vocab = ("<pad>", *ARPABET)
    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(vocab), pad_token_id=0, feat_extract_norm="layer", do_stable_layer_norm=True,
                            **SIZES[size])
    model = Wav2Vec2ForCTC(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000, "do_normalize": True}))
    return folder


def default_shaped(folder: Path) -> Path:
    """The default model folder with a random Whisper tiny.en-shaped CTranslate2 encoder in ``folder/encoder``."""
    import ctranslate2
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    # tiny.en: 4 encoder layers of 384 with 6 heads; one decoder layer, which the encoder never uses
    whisper = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=51864, d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
        decoder_layers=1, decoder_attention_heads=6, decoder_ffn_dim=1536, num_mel_bins=80))
    shipped = REPO / "phonestream" / "default_model"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        whisper.save_pretrained(tmp)
        ctranslate2.converters.TransformersConverter(tmp).convert(str(folder / "encoder"), quantization="int8",
                                                                  force=True)
    meta = json.loads((shipped / "phonestream.json").read_text())
    meta["backbone"]["path"] = str((folder / "encoder").resolve())
    (folder / "phonestream.json").write_text(json.dumps(meta, indent=2) + "\n")
    for name in ("vocab.txt", "head.safetensors"):
        shutil.copy(shipped / name, folder / name)
    return folder


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "wav2vec2" and sys.argv[2] in SIZES:
        print(wav2vec2(sys.argv[2], Path(sys.argv[3])))
    elif len(sys.argv) == 3 and sys.argv[1] == "default":
        print(default_shaped(Path(sys.argv[2])))
    else:
        sys.exit(f"usage: {sys.argv[0]} wav2vec2 {{{','.join(SIZES)}}} FOLDER | default FOLDER")
