"""Train a CTC head on cached streaming-window states (see :mod:`.states`), resumable from checkpoints.

The head sees each window's states exactly as in the streamer: the margin frames around each window's
kept frames are present where the window had them and zero (masked) where it did not, and the
head's convolutions are masked the same way their zero padding works at a window's edge.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models import heads
from ..models.torch_heads import ConvHead, build_head, head_spec


@dataclass
class States:
    """All cached segments of one or more shards, in memory."""

    states: np.ndarray  # float16 [N, dim]
    seg_start: np.ndarray
    seg_len: np.ndarray
    seg_lo: np.ndarray
    seg_hi: np.ndarray
    seg_kept: np.ndarray
    utt_segs: list[np.ndarray]  # segment indices per utterance, in order
    ids: list[str]
    phones: list[str]
    config: list[str]
    margin: int
    teacher: np.ndarray | None = None  # float16 [frames, vocab]: a teacher's offline log posteriors
    teacher_start: np.ndarray | None = None  # per utterance, its first row in ``teacher``
    teacher_name: str | None = None

    @property
    def frames(self) -> np.ndarray:
        return np.array([int(self.seg_kept[s].sum()) for s in self.utt_segs])


def load_states(paths: list[Path], teacher: bool = False) -> States:
    """The shards' segments in memory; with ``teacher``, their teacher posteriors too (every shard must
    hold them, from one teacher: ``train cache --teacher``)."""
    parts = [np.load(p) for p in paths]
    margin = int(parts[0]["margin"])
    names = {str(p["teacher_name"]) if "teacher" in p else None for p in parts}
    if teacher and (None in names or len(names) > 1):
        from .cli import TrainError

        plain = next((path.name for path, p in zip(paths, parts) if "teacher" not in p), None)
        raise TrainError(f"--distill needs every shard cached with one --teacher; {plain} has none" if plain else
                         f"--distill needs one teacher, the shards hold {', '.join(sorted(names))}")
    taught, teacher_len = [], []
    offs_state = 0
    offs_seg = 0
    acc = {k: [] for k in ("states", "seg_start", "seg_len", "seg_lo", "seg_hi", "seg_kept")}
    utt_segs, ids, phones, config = [], [], [], []
    for p in parts:
        assert int(p["margin"]) == margin
        st = p["states"]
        acc["states"].append(st)
        acc["seg_start"].append(p["seg_start"] + offs_state)
        for k in ("seg_len", "seg_lo", "seg_hi", "seg_kept"):
            acc[k].append(p[k])
        seg_utt = p["seg_utt"]
        n_utt = len(p["ids"])
        order = np.argsort(seg_utt, kind="stable")
        bounds = np.searchsorted(seg_utt[order], np.arange(n_utt + 1))
        for u in range(n_utt):
            utt_segs.append(order[bounds[u] : bounds[u + 1]] + offs_seg)
        ids += [str(x) for x in p["ids"]]
        phones += [str(x) for x in p["phones"]]
        config += [str(x) for x in p["config"]]
        if teacher:
            taught.append(p["teacher"])
            teacher_len.append(p["teacher_len"])
        offs_state += len(st)
        offs_seg += len(seg_utt)
    cat = {k: np.concatenate(v) for k, v in acc.items()}
    data = States(cat["states"], cat["seg_start"].astype(np.int64), cat["seg_len"], cat["seg_lo"], cat["seg_hi"],
                  cat["seg_kept"], utt_segs, ids, phones, config, margin)
    if teacher:
        lens = np.concatenate(teacher_len)
        data.teacher, data.teacher_name = np.concatenate(taught), names.pop()
        data.teacher_start = np.concatenate([[0], np.cumsum(lens)[:-1]])
    return data


def head_radius(head: nn.Module) -> int:
    """Frames the head reads either side of an output frame."""
    return heads.head_radius(head_spec(head))


def masked_forward(head: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Head logits for padded window segments, with zero padding where the window ended ([S, L, V])."""
    if isinstance(head, ConvHead):
        m = mask[:, None, :]
        h = (head.norm(x) * mask[..., None]).transpose(1, 2)
        for mod in head.convs:
            h = mod(h)
            if isinstance(mod, nn.Conv1d):
                h = h * m
        return head.proj(h.transpose(1, 2))
    return head(x)


def teacher_batch(data: States, utts: list[int], lengths: torch.Tensor) -> torch.Tensor:
    """The teacher's log posteriors of a batch's utterances (``lengths``: their frames, as
    :func:`make_batch` gives them), [B, max length, vocab], zeros past each end."""
    out = np.zeros((len(utts), int(lengths.max()), data.teacher.shape[1]), np.float32)
    for b, (u, n) in enumerate(zip(utts, lengths.tolist())):
        out[b, :n] = data.teacher[data.teacher_start[u] : data.teacher_start[u] + n]
    return torch.from_numpy(out)


def distill_loss(logits: torch.Tensor, teacher_lp: torch.Tensor, lengths: torch.Tensor,
                 target_lengths: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) summed over each utterance's frames, divided by its target length and
    averaged over the batch: the scale of ``CTCLoss(reduction="mean")``, so that weight 1 weighs both alike."""
    lp = torch.log_softmax(logits, -1)
    kl = (teacher_lp.exp() * (teacher_lp - lp)).sum(-1)  # [B, T]
    valid = torch.arange(kl.shape[1])[None, :] < lengths[:, None]
    return ((kl * valid).sum(1) / target_lengths.clamp(min=1)).mean()


def make_batch(data: States, utts: list[int], vocab_index: dict[str, int], radius: int | None = None):
    """Tensors for one batch of utterances: segments, masks, kept-frame gather index, targets.

    Segments are cropped to ``radius`` frames around their kept frames (the head's receptive radius;
    the cached margin when None): frames further out cannot change the kept outputs.
    """
    segs = np.concatenate([data.utt_segs[u] for u in utts])
    m = data.margin if radius is None else min(radius, data.margin)
    cut = data.margin - m
    lmax = int(data.seg_len[segs].max()) - 2 * cut
    dim = data.states.shape[1]
    x = np.zeros((len(segs), lmax, dim), np.float32)
    mask = np.zeros((len(segs), lmax), np.float32)
    for i, s in enumerate(segs):
        a, n = data.seg_start[s] + cut, data.seg_len[s] - 2 * cut
        x[i, :n] = data.states[a : a + n]
        mask[i, max(0, data.seg_lo[s] - cut) : min(n, data.seg_hi[s] - cut)] = 1.0
    gathers, lengths = [], []
    i = 0
    for u in utts:
        idx = []
        for s in data.utt_segs[u]:
            idx.append(i * lmax + m + np.arange(data.seg_kept[s]))
            i += 1
        idx = np.concatenate(idx)
        gathers.append(idx)
        lengths.append(len(idx))
    tmax = max(lengths)
    gather = np.zeros((len(utts), tmax), np.int64)
    for b, g in enumerate(gathers):
        gather[b, : len(g)] = g
    targets = [[vocab_index[p] for p in data.phones[u].split()] for u in utts]
    tl = np.array([len(t) for t in targets])
    return (torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(gather), torch.tensor(lengths),
            torch.from_numpy(np.concatenate(targets)), torch.from_numpy(tl))


def batch_logits(head, x, mask, gather):
    logits = masked_forward(head, x, mask)  # [S, L, V]
    flat = logits.reshape(-1, logits.shape[-1])
    return flat[gather]  # [B, T, V]


@dataclass
class TrainConfig:
    head: dict = field(default_factory=lambda: {"type": "conv", "hidden": 256, "kernel": 5, "layers": 2})
    lr: float = 2e-3
    weight_decay: float = 1e-2
    batch_frames: int = 8000
    max_minutes: float = 20.0
    max_epochs: int = 30
    seed: int = 0
    threads: int = 1
    eval_every: int = 100  # steps between evaluations; 0: at the end of every epoch
    warmup: int = 30
    encoder: str = "tiny.en"  # the Whisper encoder whose states the head reads (models.whisper.ENCODERS)
    tail_ms: int = 0  # ... and the silent tail appended to its windows (models.whisper)
    init: str | None = None  # a checkpoint (.pt) or model folder whose head starts the run (fine-tuning)
    distill: float = 0.0  # weight of the KL to the cached teacher's offline posteriors (0: CTC only)
    #: fine-tuned encoder variables (``train tune``'s encoder.safetensors) the states came through, and their
    #: sha256: ``export`` ships that file beside the head, and refuses one that changed since
    encoder_weights: str | None = None
    encoder_weights_sha256: str | None = None


def load_init(path: Path) -> tuple[dict[str, torch.Tensor], dict, str]:
    """(head weights, head spec, encoder name) of a run's checkpoint (.pt) or of a model folder
    (``train export``'s, or the shipped default model), to start a fine-tune from."""
    if path.is_dir():
        from .evaluate import load_exported_head

        head, encoder, _tail = load_exported_head(path)  # a head may be fine-tuned onto another tail's states
        return head.state_dict(), head_spec(head), encoder
    saved = torch.load(path, weights_only=False)
    return saved["head"], saved["config"]["head"], saved["config"].get("encoder", "tiny.en")


def _batches(data: States, frames: np.ndarray, batch_frames: int, rng: np.random.Generator) -> list[list[int]]:
    """Batches of utterances whose padded segment tensor holds about ``batch_frames`` frames.

    Utterances are ordered by their longest segment (whole-utterance windows apart from streamed ones,
    chunk sizes together), then by length with jitter, so little is padded.
    """
    seg_max = np.array([int(data.seg_len[s].max()) for s in data.utt_segs])
    n_segs = np.array([len(s) for s in data.utt_segs])
    order = np.lexsort((frames + rng.uniform(0, 40, len(frames)), seg_max))
    batches, cur, cur_segs, cur_max = [], [], 0, 0
    for u in order:
        new_max = max(cur_max, int(seg_max[u]))
        if cur and (cur_segs + n_segs[u]) * new_max > batch_frames:
            batches.append(cur)
            cur, cur_segs, new_max = [], 0, int(seg_max[u])
        cur.append(int(u))
        cur_segs += int(n_segs[u])
        cur_max = new_max
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def train_head(data: States, symbols: list[str], out_dir: Path, cfg: TrainConfig, dim: int,
               evaluate_fn=None, log=print, on_step=None) -> nn.Module:
    """Train (or resume) a head; checkpoints to ``out_dir/ckpt.pt``, best-by-eval to ``out_dir/best.pt``.

    ``on_step(state, loss, steps_per_epoch)``, when given, is called after every optimiser step (a
    progress display); ``state`` holds ``step``, ``epoch``, ``elapsed`` and ``history`` (evaluations).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    vocab_index = {s: i for i, s in enumerate(symbols)}
    head = build_head(cfg.head, dim, len(symbols))
    if cfg.distill and data.teacher is None:
        raise ValueError("distill > 0 needs states loaded with their teacher posteriors (load_states(teacher=True))")
    if head_radius(head) > data.margin:
        raise ValueError(f"head receptive radius {head_radius(head)} exceeds cached margin {data.margin}")
    radius = head_radius(head)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    frames = data.frames
    rng = np.random.default_rng(cfg.seed)
    n_batches = len(_batches(data, frames, cfg.batch_frames, rng))
    total_steps = n_batches * cfg.max_epochs
    state = {"step": 0, "epoch": 0, "elapsed": 0.0, "best": None, "history": []}
    ckpt = out_dir / "ckpt.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        head.load_state_dict(saved["head"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        log(f"resumed from step {state['step']} (epoch {state['epoch']}, {state['elapsed'] / 60:.1f} min)")
    elif cfg.init:  # fine-tuning: the weights only; optimiser, schedule and batches start afresh
        weights, spec, encoder = load_init(Path(cfg.init))
        if spec != cfg.head or encoder != cfg.encoder:
            raise ValueError(f"--init {cfg.init} holds a {spec} head on {encoder}, not this run's {cfg.head} "
                             f"on {cfg.encoder}")
        head.load_state_dict(weights)
        log(f"started from the head in {cfg.init}")
    (out_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    def lr_at(step):
        warm = cfg.warmup
        if step < warm:
            return cfg.lr * (step + 1) / warm
        # cosine decay over whichever budget (epochs or minutes) runs out first
        progress = max(step / max(total_steps, 1), (time.time() - start) / (cfg.max_minutes * 60))
        return cfg.lr * max(0.03, 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def save(path):
        torch.save({"head": head.state_dict(), "opt": opt.state_dict(), "state": state, "config": asdict(cfg)},
                   str(path) + ".tmp")
        Path(str(path) + ".tmp").rename(path)

    def evaluate_now():
        head.eval()
        score = evaluate_fn(head)
        head.train()
        state["history"].append({"step": state["step"], "epoch": state["epoch"], **score})
        log(f"eval step {state['step']}: {score}")
        if state["best"] is None or score["score"] < state["best"]["score"]:
            state["best"] = {"step": state["step"], **score}
            torch.save({"head": head.state_dict(), "config": asdict(cfg), "score": score}, out_dir / "best.pt")

    start = time.time() - state["elapsed"]
    done = False
    while state["epoch"] < cfg.max_epochs and not done:
        erng = np.random.default_rng(cfg.seed * 1000 + state["epoch"])
        batches = _batches(data, frames, cfg.batch_frames, erng)
        skip = state["step"] - state["epoch"] * n_batches  # resume mid-epoch
        head.train()
        losses = []
        for bi, utts in enumerate(batches):
            if bi < skip:
                continue
            x, mask, gather, lengths, targets, tl = make_batch(data, utts, vocab_index, radius)
            for g in opt.param_groups:
                g["lr"] = lr_at(state["step"])
            logits = batch_logits(head, x, mask, gather)
            lp = torch.log_softmax(logits, -1).transpose(0, 1)
            loss = ctc(lp, targets, lengths, tl)
            if cfg.distill:
                loss = loss + cfg.distill * distill_loss(logits, teacher_batch(data, utts, lengths), lengths, tl)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            opt.step()
            losses.append(loss.item())
            state["step"] += 1
            state["elapsed"] = time.time() - start
            if on_step is not None:
                on_step(state, losses[-1], n_batches)
            if state["step"] % 50 == 0:
                log(f"step {state['step']} epoch {state['epoch']} loss {np.mean(losses[-50:]):.3f} "
                    f"lr {lr_at(state['step']):.2e} {state['elapsed'] / 60:.1f} min")
            if evaluate_fn is not None and cfg.eval_every and state["step"] % cfg.eval_every == 0:
                evaluate_now()
            if state["step"] % 100 == 0:
                save(ckpt)
            if state["elapsed"] > cfg.max_minutes * 60:
                done = True
                break
        else:
            state["epoch"] += 1
            if evaluate_fn is not None and not cfg.eval_every and state["epoch"] < cfg.max_epochs:
                evaluate_now()  # per epoch; the last one is the final evaluation below
        save(ckpt)
    head.eval()
    if evaluate_fn is not None:
        score = evaluate_fn(head)
        state["history"].append({"step": state["step"], "epoch": state["epoch"], **score})
        log(f"final eval step {state['step']}: {score}")
        if state["best"] is None or score["score"] < state["best"]["score"]:
            state["best"] = {"step": state["step"], **score}
            torch.save({"head": head.state_dict(), "config": asdict(cfg), "score": score}, out_dir / "best.pt")
        save(ckpt)
    torch.save({"head": head.state_dict(), "config": asdict(cfg)}, out_dir / "last.pt")
    return head
