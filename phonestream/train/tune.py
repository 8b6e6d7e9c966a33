"""Fine-tune the Whisper encoder's top layers under a trained head (``phonestream train tune``).

The head of a model folder stays as it is; the encoder's top ``top`` transformer layers and its final
LayerNorm learn, through the head's CTC loss, to give better states for the windows the streamer cuts:
every utterance is augmented (:func:`.states.augmented`), cut into the windows of one streaming setting
by the project's own streamer (:func:`.states.stream_windows`), every window encoded by
:class:`.encoder.WhisperEncoder` (the layers below the tuned ones without a graph), the head applied to
each window's kept frames exactly as in streaming, and the kept frames stitched into the utterance's
CTC input. Settings are drawn per utterance: 15% whole utterances, 40% the model folder's own presets
(its default twice as often as each other preset), the rest the 64-window training mix
(:data:`.states.TRAIN_CONFIGS`).

The loss is CTC on the recipe's labels (``ctc``, weight 1) plus, with ``distill``, the distance from the
starting folder's own offline encoder states of each augmented utterance to the streamed windows' states:
a target without labels that teaches the windows to hear what the whole utterance hears (``ctc=0``: that
alone).

A folder whose encoder is tuned already (the shipped model's) is tuned further from its weights; ``top``
must then cover the layers it has tuned.

A run lives in WORK/runs/RUN: ``tune.pt`` (the tuned variables, the optimiser, the step) is written every
100 steps and at the end, and the same command resumes it. Each step's random draws are seeded by the
step, so a resumed run draws what an uninterrupted one would. The result is a model folder: the head
folder's files plus ``encoder.safetensors``, which the Whisper backbone writes into a copy of the pinned
encoder when it loads (:func:`phonestream.models.whisper.tuned_encoder_path`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.base import umask_mode
from ..models.whisper import ENCODER_WEIGHTS_FILE, SAMPLE_RATE, WhisperBackbone, default_encoder_path, log_mel
from .states import OFFLINE_FRACTION, TRAIN_CONFIGS, Item, augmented, stream_windows

#: Share of utterances streamed through the model folder's own presets (the rest: offline and the mix).
PRESET_FRACTION = 0.4
CHECKPOINT = "tune.pt"


@dataclass
class TuneConfig:
    top: int = 1  #: transformer layers tuned, from the top (plus the final LayerNorm)
    lr: float = 1e-4  #: peak learning rate (AdamW, 30-step warm-up, cosine decay to 0 over the run)
    utterances_per_step: int = 8
    passes: int = 1  #: passes over the items
    seed: int = 0
    threads: int = 2
    #: weight of the distance from the starting folder's own offline encoder states (the whole augmented
    #: utterance, run as inference runs it) to the streamed windows' states, on the frames the head reads:
    #: it teaches the windows to give what the whole utterance gives, a target without labels that stays
    #: the pinned model's own. States, not posteriors: CTC posteriors are peaky, and a spike one frame early
    #: costs the KL as much as a wrong phoneme (a first run on the posteriors' KL made it rise).
    distill: float = 0.0
    ctc: float = 1.0  #: weight of the CTC loss on the recipe's labels (0 with distill > 0: consistency alone)


def window_draws(folder_streaming: dict) -> list[tuple[int, int, int]]:
    """The presets of a model folder's ``streaming`` config, its default listed twice."""
    default = (folder_streaming["chunk_ms"], folder_streaming["left_ms"], folder_streaming["right_ms"])
    presets = [tuple(v) for v in folder_streaming.get("presets", {}).values()]
    return [default, default, *presets]


def draw_window(rng: np.random.Generator, presets: list[tuple[int, int, int]]) -> tuple[int, int, int] | None:
    u = rng.random()
    if u < OFFLINE_FRACTION:
        return None
    if u < OFFLINE_FRACTION + PRESET_FRACTION:
        return presets[rng.integers(len(presets))]
    return TRAIN_CONFIGS[rng.integers(len(TRAIN_CONFIGS))]


def window_states(encoder, windows: list[np.ndarray], frozen: int, tail: int, spread: float = 1.25,
                  batch: int = 32) -> list[torch.Tensor]:
    """Encoder states ``[frames, dim]`` of each window, with ``tail`` zero samples appended before the
    log-mel and their states dropped (the backbone's silent tail). Windows are sorted by length and
    padded into passes of up to ``batch`` whose longest is at most ``spread`` times the shortest (the
    streamer's first windows of an utterance all differ in length); padding changes no state
    (:meth:`.encoder.WhisperEncoder.forward`)."""
    mels = [log_mel(np.concatenate([w, np.zeros(tail, np.float32)]) if tail else w) for w in windows]
    out: list[torch.Tensor | None] = [None] * len(windows)
    order = sorted(range(len(windows)), key=lambda i: mels[i].shape[1])
    while order:
        first = mels[order[0]].shape[1]
        n = 1
        while n < min(batch, len(order)) and mels[order[n]].shape[1] <= spread * first:
            n += 1
        members, order = order[:n], order[n:]
        longest = mels[members[-1]].shape[1]
        x = np.zeros((n, mels[members[0]].shape[0], longest), np.float32)
        for j, i in enumerate(members):
            x[j, :, : mels[i].shape[1]] = mels[i]
        lengths = torch.tensor([mels[i].shape[1] for i in members])
        states = encoder(torch.from_numpy(x), frozen=frozen, lengths=lengths)
        for j, i in enumerate(members):
            out[i] = states[j, : (len(windows[i]) // 160 + 1) // 2]
    return out  # type: ignore[return-value]


def state_distance(cut: list, states: list[torch.Tensor], offline: list[torch.Tensor], radius: int) -> torch.Tensor:
    """Mean squared distance between each window's states and the offline states of the same frames, over the
    frames the head reads for the window's kept ones (``radius`` either side), relative to the offline
    states' variance: 0 where a window hears what the whole utterance hears, about 2 for unrelated states."""
    total, count, used = 0.0, 0, 0
    for wins, whole in zip(cut, offline):
        scale = whole.var().clamp(min=1e-6)
        for (_, first, k0, k1), st in zip(wins, states[used : used + len(wins)]):
            lo, hi = max(0, k0 - first - radius), min(len(st), k1 - first + radius, len(whole) - first)
            if hi > lo:
                total = total + ((st[lo:hi] - whole[first + lo : first + hi]) ** 2).mean(-1).sum() / scale
                count += hi - lo
        used += len(wins)
    return total / max(1, count)  # type: ignore[return-value]


def streamed_logits(head, windows, states: list[torch.Tensor], radius: int) -> torch.Tensor:
    """The head's logits of one utterance's kept frames, each window's segment seeing zeros beyond the
    window's edges exactly as the streamer's head does (``windows``: :func:`.states.stream_windows`)."""
    from .trainer import masked_forward

    segs = [(k0 - first, k1 - first) for _, first, k0, k1 in windows]
    length = max(b - a for a, b in segs) + 2 * radius
    x = torch.zeros(len(segs), length, states[0].shape[1])
    mask = torch.zeros(len(segs), length)
    for i, ((a, b), st) in enumerate(zip(segs, states)):
        lo, hi = max(0, a - radius), min(len(st), b + radius)
        x[i, lo - a + radius : hi - a + radius] = st[lo:hi]
        mask[i, lo - a + radius : hi - a + radius] = 1.0
    logits = masked_forward(head, x, mask)
    return torch.cat([logits[i, radius : radius + b - a] for i, (a, b) in enumerate(segs)])


def tune_encoder(items: list[Item], head_folder: Path, run: Path, cfg: TuneConfig,
                 log: Callable[[str], None] = print) -> Path:
    """Tune the encoder under ``head_folder``'s head on ``items`` (resuming ``run``); returns the checkpoint."""
    from .encoder import WhisperEncoder
    from .evaluate import encoder_weights, load_exported_head
    from .phones import SYMBOLS
    from .trainer import head_radius

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    from .cli import TrainError

    head, encoder_name, tail_ms = load_exported_head(head_folder)
    meta = json.loads((head_folder / "phonestream.json").read_text())
    for p in head.parameters():
        p.requires_grad = False
    radius = head_radius(head)
    ct2 = _folder_encoder(head_folder, encoder_name)  # one line for a corrupt or mismatched weights file
    tuned_ids: set[int] = set()  # layers the folder's encoder has tuned already: the run goes on from them
    if (weights := encoder_weights(head_folder)) is not None:
        from safetensors import safe_open

        with safe_open(str(weights), "np") as f:
            tuned_ids = {int(m.group(1)) for name in f.keys() if (m := re.match(r"encoder/layer_(\d+)/", name))}
    encoder = WhisperEncoder.from_ct2(ct2)
    already = len(encoder.layers) - min(tuned_ids) if tuned_ids else 0
    if not 1 <= cfg.top <= len(encoder.layers) or not items:
        raise TrainError(f"Whisper {encoder_name} has {len(encoder.layers)} layers; --top {cfg.top} cannot be tuned"
                         if items else "no utterances to tune on")
    if cfg.top < already:
        raise TrainError(f"{head_folder}: its encoder's top {already} layers are tuned already; --top must be at "
                         f"least {already} (or tune from a folder with a frozen encoder)")
    params = encoder.tunable(cfg.top)
    frozen = len(encoder.layers) - cfg.top
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    if cfg.ctc <= 0 and cfg.distill <= 0:
        raise TrainError("tune needs a loss: a CTC weight above 0, --distill above 0, or both")
    teacher = None
    if cfg.distill > 0:
        from ..models.backbone import load_backbone

        # the folder's encoder as it was before any step, in int8 as inference runs it
        teacher = load_backbone(meta["backbone"], base=head_folder, threads=1)
    # the streamer cuts windows by a backbone's frames: the teacher's, else a pinned one (same geometry)
    windows_of = teacher if teacher is not None else WhisperBackbone(threads=1, encoder=encoder_name)
    presets = window_draws(meta["streaming"])
    vocab_index = {s: i for i, s in enumerate(SYMBOLS)}
    order = np.concatenate([np.random.default_rng([cfg.seed, p]).permutation(len(items)) for p in range(cfg.passes)])
    total = len(order) // cfg.utterances_per_step
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / CHECKPOINT
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        saved = {**asdict(TuneConfig()), **state["config"]}  # a run saved before a setting existed had its default
        if saved != asdict(cfg) or state["head_folder"] != str(head_folder):
            raise TrainError(f"{run} was tuned with other settings ({state['config']}, head {state['head_folder']}); "
                             "give another --run")
        encoder.load_state_dict(state["encoder"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        log(f"resuming {run.name} at step {step}/{total}")

    def save() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"encoder": encoder.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "config": asdict(cfg), "head_folder": str(head_folder), "encoder_name": encoder_name}, tmp)
        os.replace(tmp, ckpt)

    t0, audio_s, losses = time.time(), 0.0, []
    while step < total:
        rng = np.random.default_rng([cfg.seed, 1 + step])
        batch = [items[i] for i in order[step * cfg.utterances_per_step : (step + 1) * cfg.utterances_per_step]]
        cut, targets, taught = [], [], []
        for it, audio in augmented(batch, SAMPLE_RATE, rng):
            if len(audio) < 1600:
                continue
            cut.append(stream_windows(windows_of, audio, draw_window(rng, presets)))
            targets.append([vocab_index[p] for p in it.phones.split()])
            if teacher is not None:
                taught.append(torch.from_numpy(teacher.encode_batch([audio])[0]))
            audio_s += len(audio) / SAMPLE_RATE
        # all of the step's windows in one call: windows of every utterance share padded passes
        states = window_states(encoder, [w[0] for wins in cut for w in wins], frozen, tail_ms * SAMPLE_RATE // 1000)
        if cut:
            loss = torch.zeros(())
            if cfg.ctc > 0:  # skipped at 0, where it adds nothing: --unlabelled items have no targets
                seqs, used = [], 0
                for wins in cut:
                    seqs.append(streamed_logits(head, wins, states[used : used + len(wins)], radius).log_softmax(-1))
                    used += len(wins)
                longest = max(len(s) for s in seqs)
                lp = torch.stack([F.pad(s, (0, 0, 0, longest - len(s))) for s in seqs]).transpose(0, 1)
                loss = cfg.ctc * F.ctc_loss(lp, torch.tensor(sum(targets, []), dtype=torch.long),
                                            torch.tensor([len(s) for s in seqs]),
                                            torch.tensor([len(t) for t in targets]), blank=0, zero_infinity=True)
            if teacher is not None:
                loss = loss + cfg.distill * state_distance(cut, states, taught, radius)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / total))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(loss.item())
        step += 1
        if step % 20 == 0 or step == total:
            took = time.time() - t0
            log(f"step {step}/{total}  loss {np.mean(losses[-20:]) if losses else float('nan'):.3f}  "
                f"{took / 60:.1f} min  {audio_s / 3600:.2f} h of audio ({audio_s / max(took, 1e-9):.1f}x real time)")
        if step % 100 == 0 or step == total:
            save()
    if not ckpt.exists():
        save()
    return ckpt


def weighted_sum(first: dict[str, np.ndarray], second: dict[str, np.ndarray],
                 weight: float) -> dict[str, np.ndarray]:
    """``weight * first + (1 - weight) * second`` per variable of ``second``, in float32, stored as float16
    (as tuned files are): WiSE-FT between 0 and 1, an extrapolation along the line outside."""
    return {name: (weight * first[name].astype(np.float32) + (1 - weight) * v.astype(np.float32)).astype(np.float16)
            for name, v in second.items()}


def write_tuned_folder(base: Path, meta: dict, variables: dict[str, np.ndarray], out: Path) -> Path:
    """A model folder ``out``: ``base``'s files with ``variables`` as its ``encoder.safetensors``, named in
    the backbone config of ``meta`` (``base``'s ``phonestream.json``, its training record as the caller
    updated it)."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if f.is_file() and f.name not in ("phonestream.json", ENCODER_WEIGHTS_FILE):
            shutil.copyfile(f, out / f.name)
    save_file(variables, str(out / ENCODER_WEIGHTS_FILE))
    umask_mode(out / ENCODER_WEIGHTS_FILE)  # safetensors writes 0600; a model folder is meant to be shared
    meta = {**meta, "backbone": {**meta["backbone"], "weights": ENCODER_WEIGHTS_FILE}}
    (out / "phonestream.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def export_tuned(ckpt: Path, out: Path, init_weight: float = 0.0) -> Path:
    """A model folder: the tuned run's head folder's files, with ``encoder.safetensors`` (the tuned
    variables) named in its backbone config.

    ``init_weight`` > 0 writes each tuned variable as ``init_weight`` times the starting folder's own (its
    tuned file over the pinned encoder) plus the rest times the run's: weight-space ensembling (WiSE-FT,
    Wortsman et al. 2022), which keeps more of what the starting encoder heard well than the run alone."""
    from .encoder import tuned_variables

    state = torch.load(ckpt, weights_only=False)
    head_folder = Path(state["head_folder"])
    variables = tuned_variables(state["encoder"], state["config"]["top"])
    if init_weight > 0:
        start = _start_variables(head_folder, state["encoder_name"], state["config"]["top"])
        variables = weighted_sum(start, variables, init_weight)
    meta = json.loads((head_folder / "phonestream.json").read_text())
    earlier = meta.get("training", {}).get("encoder_tuned")  # a folder tuned before: the run went on from it
    meta["training"] = {**meta.get("training", {}), "encoder_tuned": {**state["config"], "steps": state["step"],
                                                                      **({"init_weight": init_weight}
                                                                         if init_weight > 0 else {}),
                                                                      **({"from": earlier} if earlier else {})}}
    return write_tuned_folder(head_folder, meta, variables, out)


def _folder_encoder(folder: Path, encoder_name: str):
    """A model folder's encoder as a CTranslate2 model: its tuned file over the pinned ``encoder_name``, or
    the pinned one where it has none."""
    from ..models.ct2_file import read_model
    from ..models.whisper import tuned_model
    from .evaluate import encoder_weights

    src = default_encoder_path(encoder_name)
    weights = encoder_weights(folder)
    return tuned_model(weights, src) if weights is not None else read_model(Path(src) / "model.bin")


def _start_variables(head_folder: Path, encoder_name: str, top: int) -> dict[str, np.ndarray]:
    """The variables a run tuned as they were before its first step: ``head_folder``'s encoder (Whisper
    ``encoder_name``, as the run's checkpoint records it), top ``top`` layers and the final LayerNorm."""
    from .encoder import WhisperEncoder, tuned_variables

    return tuned_variables(WhisperEncoder.from_ct2(_folder_encoder(head_folder, encoder_name)).state_dict(), top)
