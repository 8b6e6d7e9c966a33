"""Fit a CTC head on a user's own frozen Hugging Face encoder: the same code path as the default model.

``phonestream train custom`` (:mod:`.cli`) runs :func:`fit_custom`. The encoder's states are computed
through the project's streamer with the same mix of window configurations as the default model (plus
whole-utterance windows) and cached under ``WORK/OUTNAME/states-DIGEST``; the head is trained with
:func:`~phonestream.train.trainer.train_head`, checkpointing to ``WORK/OUTNAME/run-DIGEST`` (run the same
command again to resume; the digest covers the data, encoder, vocabulary and head, so a changed set-up
starts its own run); with a development manifest its PER is measured after every epoch. The result is
saved in the backbone-plus-head form that ``phonestream -m FOLDER`` loads (the encoder referenced by its
path or hub id).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

from ..models import DEFAULT_MODEL_DIR
from ..models.backbone import HF_ENCODER_KEY, MODEL_FILE, load_backbone, read_vocab_file
from ..models.base import StreamingDefaults
from .cli import TrainError
from .states import Item

#: Training makes at least this many updates when --epochs is not given (a 5-row set gets more epochs).
MIN_STEPS = 400
DEFAULT_EPOCHS = 40


def _items(manifest: Path, phones_column: str, known: set[str], vocab_file: Path) -> list[Item]:
    from ..manifest import read_manifest

    rows, _skipped = read_manifest(manifest, phones_column)
    unknown = sorted({p for r in rows for p in r.phones} - known)
    if unknown:
        raise TrainError(f"{manifest}: phones not in {vocab_file}: {' '.join(unknown[:20])}"
                         + (" ..." if len(unknown) > 20 else ""))
    missing = [str(r.audio) for r in rows if not r.audio.is_file()]
    if missing:
        raise TrainError(f"{manifest}: {len(missing)} audio file(s) not found, e.g. {missing[0]}")
    return [Item(r.id, str(r.audio), " ".join(r.phones), "custom") for r in rows]


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:10]


def _dev_scorer(backbone, items: list[Item], cache: Path, symbols: list[str]) -> Callable:
    """PER (no folding: the user's own symbols) of a head on the dev items, decoded greedily over
    whole-utterance windows."""
    from ..metrics import EditCounts, edit_counts
    from .evaluate import decode, eval_states

    data = eval_states(backbone, "dev", items, None, cache)

    def score(head) -> dict:
        total = EditCounts(0, 0, 0, 0)
        for ref, hyp in zip(data.phones, decode(data, head, symbols)):
            total = total + edit_counts(ref.split(), hyp)
        return {"score": round(100.0 * total.rate, 2)}

    return score


def fit_custom(backbone_path: str, vocab_file: Path, manifest: Path, out: Path, work: Path, head_spec: dict,
               minutes: float = 10.0, seed: int = 0, epochs: int | None = None, augment_audio: bool = False,
               workers: int = 1, lr: float = 3e-3, threads: int = 1, dev_manifest: Path | None = None,
               fresh: bool = False, phones_column: str = "phones", checkpoint: str = "auto", log=print,
               on_step: Callable | None = None) -> Path:
    """Fit a head on ``backbone_path``'s states for the labelled ``manifest``; write the model to ``out``.

    Args:
        backbone_path: a Hugging Face encoder folder or hub id.
        vocab_file: phoneme symbols, one per line (``<blank>`` added first if absent).
        manifest, dev_manifest: TSVs with ``audio`` (or ``wav``) and ``phones_column``; the dev set is
            scored after every epoch.
        out: the model folder to write. work: caches and checkpoints.
        head_spec: ``{"type": "linear"}`` or a conv spec (:func:`.cli.parse_head`).
        minutes, epochs: the budget (the first reached ends training; ``epochs`` None: 40, or more so
            that there are at least 400 updates). lr, seed, threads: the optimiser's settings.
        workers: processes computing the states. augment_audio: perturb the audio before encoding.
        fresh: delete this set-up's checkpoint first instead of resuming it.
        checkpoint: ``last``, ``best`` (lowest dev PER) or ``auto`` (best with a dev set, else last).
        log: one-line messages. on_step: ``(state, loss, steps_per_epoch, epochs)`` after every update.

    Raises:
        TrainError: a set-up that cannot work (unknown phones, missing audio, a blank that is not first,
            an output folder that is the shipped model...). ModelError, ManifestError: bad files.
    """
    import os

    import torch
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the encoder-state workers inherit it
    hf_logging.disable_progress_bar()  # one progress bar: ours
    hf_logging.set_verbosity_error()
    from .pipeline import export_model, stage_cache
    from .trainer import TrainConfig, _batches, load_states, train_head

    out, work = Path(out), Path(work)
    if out.resolve() == DEFAULT_MODEL_DIR.resolve():
        raise TrainError(f"--out {out} is the shipped default model; choose another folder")
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MODEL_FILE).exists():
        raise TrainError(f"--out {out} is a folder with other files in it; choose a new or model folder")
    vocab = read_vocab_file(vocab_file)
    if vocab.blank_id != 0:
        raise TrainError(f"{vocab_file}: <blank> must be the first symbol (or left out)")
    symbols = list(vocab.symbols)
    items = _items(Path(manifest), phones_column, set(symbols), Path(vocab_file))
    dev_items = _items(Path(dev_manifest), phones_column, set(symbols), Path(vocab_file)) if dev_manifest else []
    local = Path(backbone_path).expanduser()
    spec = {"type": HF_ENCODER_KEY, "path": str(local.resolve()) if local.exists() else backbone_path}
    backbone = load_backbone(spec)
    data_key = _digest(spec, symbols, [(i.path, i.phones) for i in items], augment_audio)
    base = work / out.name
    cache = base / f"states-{data_key}"
    run = base / f"run-{_digest(data_key, head_spec, seed)}"
    if fresh and run.exists():
        shutil.rmtree(run)
        log(f"--fresh: removed the checkpoint in {run}")

    log(f"encoder states of {len(items)} utterances ({workers} worker{'s' if workers > 1 else ''}) -> {cache}")
    shards = stage_cache(cache, items, "train", copies=1, workers=workers, backbone_spec=spec,
                         augment_audio=augment_audio)
    data = load_states(shards)
    cfg = TrainConfig(head=head_spec, lr=lr, max_minutes=minutes, max_epochs=epochs or DEFAULT_EPOCHS, seed=seed,
                      threads=threads, eval_every=0 if dev_items else 10**9)
    import numpy as np

    steps_per_epoch = len(_batches(data, data.frames, cfg.batch_frames, np.random.default_rng(seed)))
    if epochs is None:
        cfg.max_epochs = max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))
    log(f"training a {head_spec['type']} head: {len(data.ids)} utterances, {int(data.frames.sum())} frames, "
        f"dim {backbone.dim}; {steps_per_epoch} updates per epoch, up to {cfg.max_epochs} epochs or "
        f"{minutes:g} min; checkpoints in {run}")
    scorer = _dev_scorer(backbone, dev_items, base / f"dev-{data_key}", symbols) if dev_items else None
    step = None if on_step is None else (lambda state, loss, n: on_step(state, loss, n, cfg.max_epochs))
    torch.manual_seed(seed)
    try:
        train_head(data, symbols, run, cfg, backbone.dim, scorer, log, on_step=step)
    except RuntimeError as err:  # a checkpoint whose tensors do not fit this head
        raise TrainError(f"the checkpoint in {run} does not fit this set-up ({str(err).splitlines()[0][:120]}); "
                         "--fresh starts over") from None
    best = run / "best.pt"
    use_best = checkpoint == "best" or (checkpoint == "auto" and scorer is not None)
    if checkpoint == "best" and not best.exists():
        raise TrainError("--checkpoint best needs a dev set (--dev) to choose by")
    chosen = best if use_best else run / "last.pt"
    meta = {"manifest": str(manifest), "utterances": len(items), "head": head_spec, "checkpoint": chosen.name}
    saved = torch.load(run / "ckpt.pt", weights_only=False)["state"]
    if saved.get("best"):
        meta["dev_per"] = saved["best"].get("score")
    export_model(chosen, out, StreamingDefaults(), backbone_spec=spec, symbols=symbols, dim=backbone.dim,
                 extra_meta=meta)
    summary = f"saved {out} ({chosen.name}: step {saved['step']}, epoch {saved['epoch']}"
    if "dev_per" in meta:
        summary += f", best dev PER {meta['dev_per']}%"
    log(summary + f"); stream with: phonestream stream FILE -m {out}")
    return out
