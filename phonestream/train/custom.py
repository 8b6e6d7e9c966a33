"""Fit a CTC head on a user's own frozen Hugging Face encoder: the same code path as the default model.

States are computed through the project's streamer with the same mix of window configurations as
the default model (plus whole-utterance windows), cached under WORK/custom-<name>, the head is trained
with :func:`~phonestream.train.trainer.train_head`, and the folder is saved in the backbone-plus-head
form that ``phonestream --model FOLDER`` loads (the encoder is referenced by its path).
"""

from __future__ import annotations

from pathlib import Path

from ..models.backbone import load_backbone, read_vocab_file
from ..models.base import StreamingDefaults
from .pipeline import export_model, stage_cache
from .states import read_manifest
from .trainer import TrainConfig, load_states, train_head


def fit_custom(backbone_path: str, vocab_file: Path, manifest: Path, out: Path, work: Path, head_spec: dict,
               minutes: float = 10.0, seed: int = 0, epochs: int = 40, augment_audio: bool = False,
               workers: int = 1, log=print) -> Path:
    vocab = read_vocab_file(vocab_file)
    if vocab.blank_id != 0:
        raise SystemExit(f"{vocab_file}: the blank <blank> must be the first symbol")
    items = read_manifest(Path(manifest), "phones", source="custom")
    known = set(vocab.symbols)
    unknown = sorted({p for it in items for p in it.phones.split()} - known)
    if unknown:
        raise SystemExit(f"manifest phones not in {vocab_file}: {' '.join(unknown[:20])}")
    if not items:
        raise SystemExit(f"{manifest} has no rows with phones")
    spec = {"type": "hf-encoder", "path": str(Path(backbone_path).resolve())}
    dim = load_backbone(spec).dim
    cache_root = work / f"custom-{out.name}"
    shards = stage_cache(cache_root, items, "custom", copies=1, workers=workers, backbone_spec=spec,
                         augment_audio=augment_audio)
    data = load_states(shards)
    log(f"custom head: {len(data.ids)} utterances, {int(data.frames.sum())} frames, dim {dim}")
    cfg = TrainConfig(head=head_spec, max_minutes=minutes, max_epochs=epochs, seed=seed)
    train_head(data, list(vocab.symbols), cache_root / "run", cfg, dim, None, log)
    export_model(cache_root / "run" / "last.pt", out, StreamingDefaults(), backbone_spec=spec,
                 symbols=list(vocab.symbols), dim=dim)
    log(f"saved {out}")
    return out
