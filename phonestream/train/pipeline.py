"""The recipe's stages, each resumable (a stage skips the work whose output already exists).

    data   -> synthesise labelled speech (synth.py) into WORK/synth
    cache  -> augmented, streamed encoder states of synth + FSDD train into WORK/cache (states.py)
    fit    -> train the CTC head on them, scoring real speech as it goes (trainer.py, evaluate.py)
    export -> write the model folder (phonestream.json, head.safetensors, vocab.txt, NOTICE)
"""

from __future__ import annotations

import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from ..models import DEFAULT_MODEL_DIR
from ..models.backbone import HEAD_FILE, MODEL_FILE, VOCAB_FILE, load_backbone, save_model_folder
from ..models.base import StreamingDefaults, Vocabulary
from ..models.torch_heads import build_head, to_inference
from ..models.whisper import BY_CONFIG_KEY as WHISPER_ENCODERS
from ..models.whisper import CONFIG_KEY as WHISPER_KEY
from ..models.whisper import ENCODER_WEIGHTS_FILE, ENCODERS, WhisperBackbone, backbone_config, weights_digest
from .evaluate import SHARED, encoder_weights, load_exported_head
from .phones import SYMBOLS
from .states import OFFLINE_FRACTION, Item, Teacher, cache_shard, read_manifest

FRASER_MANIFEST = SHARED / "fraser_arctic" / "manifest.tsv"  # its sentences are kept out of synthesis
FSDD_ROOT = SHARED / "fsdd"
#: Synthesis rounds: utterances per engine; each round reads new sentences (ids prefixed r1-, r2-...).
ROUNDS = [
    {"espeak": 2200, "flite": 900, "festival": 750, "piper": 1000},
    {"espeak": 1200, "flite": 500, "festival": 400, "piper": 1400},
    {"kokoro": 800},  # about 15% of sentences have a word outside the CMU dictionary and are skipped
    {"kokoro": 2000},  # more Kokoro voices: round 3 moved real speech most per hour of audio
    {"kokoro": 2000},  # round 5, the same again: failed its held-out rule, not in the shipped recipe (MODEL_CARD)
]
NOTICE_DIR = Path(__file__).resolve().parent / "notice"


def log_to(path: Path):
    """A logger printing each line and appending it to ``path``; the folder is made at the first line, so a
    stage that fails on its arguments leaves no work folder behind."""

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(line + "\n")

    return log


# ---- data ------------------------------------------------------------------------------------------


def stage_data(work: Path, rounds: int = len(ROUNDS), exclude: list[Path] | None = None,
               workers: int = 2, seed: int = 0, keep: Callable[[str], bool] | None = None) -> Path:
    """Synthesise the first ``rounds`` rounds into WORK/synth (resumable: done ids are skipped).
    ``keep``, given an utterance id, says whether to make it (default: all); each utterance's voice and
    prosody are drawn for every job first, so a subset is the same audio as in the full set."""
    from .synth import make_jobs, synthesise
    from .text import load_sentences

    sentences = load_sentences(exclude if exclude is not None else [FRASER_MANIFEST], seed=seed)
    jobs, offset = [], 0
    for r, counts in enumerate(ROUNDS[:rounds]):
        jobs += make_jobs(sentences, counts, seed=seed + r, offset=offset, prefix="" if r == 0 else f"r{r + 1}-")
        offset += sum(counts.values())
    if keep is not None:
        jobs = [j for j in jobs if keep(j.uid)]
    return synthesise(jobs, work / "synth", workers=workers)


def synth_round(uid: str) -> int:
    """The synthesis round an utterance id comes from: ``rN-...`` for round N, no prefix for round 1
    (as :func:`stage_data` names them)."""
    head = uid.split("-", 1)[0]
    return int(head[1:]) if head[:1] == "r" and head[1:].isdigit() else 1


def synth_items(work: Path, held_out: bool) -> list[Item]:
    """WORK/synth's utterances held out of training (``held_out``) or trained on, in a fixed order.

    The manifest lists them in the order synthesis finished, which differs between runs (and after a
    resumed one), and augmentation draws follow the item order: the items are sorted by id, so that a
    rerun augments every utterance the same way, then shuffled with a fixed seed, so that the babble
    drawn from earlier items mixes every engine's voices instead of the first engine's in id order."""
    from .evaluate import is_synth_dev

    items = sorted((it for it in read_manifest(work / "synth" / "manifest.tsv") if is_synth_dev(it.uid) == held_out),
                   key=lambda it: it.uid)
    return [items[i] for i in np.random.default_rng(25).permutation(len(items))]


def fsdd_train_items(root: Path = FSDD_ROOT) -> list[Item]:
    from .evaluate import fsdd_items

    return fsdd_items(root, split="train") if (root / "manifest.tsv").exists() else []


def tune_items(work: Path, rounds: int, fsdd_copies: int = 1, unlabelled: Sequence[Path] = ()) -> list[Item]:
    """What ``train tune`` trains on: the synthesis rounds up to ``rounds`` (none for 0; held-out utterances
    left out), the FSDD training takes ``fsdd_copies`` times (each pass augments them anew) and every row of
    the ``unlabelled`` manifests, with no phonemes (for the label-free distillation target alone)."""
    synth = [it for it in synth_items(work, held_out=False) if synth_round(it.uid) <= rounds] if rounds > 0 else []
    audio_only = [it for m in map(Path, unlabelled) for it in read_manifest(m, None, f"unlabelled:{m.parent.name}")]
    for it in audio_only:
        _check_tune_length(it)
    return synth + fsdd_train_items() * fsdd_copies + audio_only


#: the longest utterance tune takes: the whole of it is one encoder window (30 s) after the slowest speed
#: perturbation (0.85x)
MAX_TUNE_S = 25.0


def _check_tune_length(item: Item) -> None:
    from ..audio import AudioError, audio_info
    from .cli import TrainError

    if not Path(item.path).is_file():
        raise TrainError(f"{item.path} ({item.uid}): audio file not found")
    try:
        seconds = audio_info(Path(item.path), name=f"{item.path} ({item.uid})").seconds
    except AudioError as err:
        raise TrainError(str(err)) from None
    if seconds is not None and seconds > MAX_TUNE_S:
        raise TrainError(f"{item.path} ({item.uid}) lasts {seconds:.1f} s; tune encodes each utterance whole, "
                         f"so cut it into pieces of at most {MAX_TUNE_S:.0f} s")


# ---- cache -----------------------------------------------------------------------------------------


def load_teacher(folder: Path, encoder: str, tail_ms: int = 0) -> Teacher:
    """The head of a model folder (``train export``'s, or the shipped default model's) as a distillation
    teacher for heads on ``encoder`` with a ``tail_ms`` silent tail, run as inference runs it; named by its
    folder and a hash of its weights."""
    import hashlib

    from .cli import TrainError

    head, trained_on, tail = load_exported_head(folder)
    if encoder_weights(Path(folder)) is not None:
        raise TrainError(f"--teacher {folder}: its head reads a fine-tuned encoder's states, not the pinned "
                         "encoder's being cached; give a folder with a frozen encoder")
    if trained_on != encoder:
        raise TrainError(f"--teacher {folder}: its head reads {ENCODERS[trained_on].config_key} states, not the "
                         f"{encoder} states being cached")
    if tail != tail_ms:
        raise TrainError(f"--teacher {folder}: its head reads states with a {tail} ms tail, not the {tail_ms} ms "
                         "being cached")
    digest = hashlib.sha256((Path(folder) / HEAD_FILE).read_bytes()).hexdigest()[:12]
    return Teacher(f"{Path(folder).resolve().name}@{digest}", to_inference(head).log_probs)


def _cache_worker(args) -> str:
    backbone_spec, items, out, seed, augment_audio, threads, configs, teacher_dir = args
    spec = dict(backbone_spec)
    if spec.get("type") in WHISPER_ENCODERS:
        spec["threads"] = threads
    else:
        torch.set_num_threads(threads)
    backbone = load_backbone(spec)
    encoder = WHISPER_ENCODERS[spec["type"]].name if spec.get("type") in WHISPER_ENCODERS else ""
    teacher = load_teacher(Path(teacher_dir), encoder, spec.get("tail_ms", 0)) if teacher_dir else None
    # named windows (stage_cache's ``windows``) come without whole-utterance ones
    cache_shard(backbone, items, Path(out), seed=seed, augment_audio=augment_audio, configs=configs,
                offline_fraction=0.0 if configs else OFFLINE_FRACTION, teacher=teacher)
    return out


def check_encoder_weights(path: Path, encoder: str = "tiny.en") -> Path:
    """``--encoder-weights``: the absolute path of a fine-tuned encoder's variables file, checked to load into
    ``encoder`` (one-line :class:`~.cli.TrainError` otherwise), so a cache is not started on a wrong file."""
    from ..models.base import ModelError
    from ..models.whisper import default_encoder_path, tuned_model
    from .cli import TrainError

    path = Path(path).resolve()
    if not path.is_file():
        raise TrainError(f"--encoder-weights {path}: no such file")
    try:
        tuned_model(path, default_encoder_path(encoder))
    except ModelError as err:
        raise TrainError(f"--encoder-weights {path}: {err}") from None
    return path


def trained_encoder_weights(config: dict) -> Path | None:
    """The tuned encoder file a head's training config names (None: the pinned encoder), checked to be the
    file the head was trained on."""
    from .cli import TrainError

    if not config.get("encoder_weights"):
        return None
    path = Path(config["encoder_weights"])
    if not path.is_file() or weights_digest(path) != config.get("encoder_weights_sha256"):
        raise TrainError(f"the head was trained on the encoder variables in {path}, which are missing or have "
                         "changed since (sha256 differs)")
    return path


def cache_folder(work: Path, encoder: str = "tiny.en", kind: str = "cache", tail_ms: int = 0,
                 weights: Path | None = None) -> Path:
    """Where the states of ``encoder`` with a ``tail_ms`` silent tail are kept: WORK/KIND for tiny.en (the
    default encoder) without a tail, else WORK/KIND[-ENCODER][-tailMS]; ``kind`` is ``cache`` (training) or
    ``eval-cache`` (held-out and reported sets). An encoder with fine-tuned ``weights`` (``train tune``)
    adds ``-tuned`` and the first 12 hex digits of the file's sha256."""
    tuned = "" if weights is None else "-tuned" + weights_digest(weights)[:12]
    return work / (kind + ("" if encoder == "tiny.en" else f"-{encoder}") + (f"-tail{tail_ms}" if tail_ms else "")
                   + tuned)


def stage_cache(work: Path, items: list[Item], tag: str, copies: int = 1, workers: int = 2,
                backbone_spec: dict | None = None, augment_audio: bool = True,
                cache: Path | None = None, windows: list[tuple[int, int, int]] | None = None,
                teacher: Path | None = None) -> list[Path]:
    """Cache ``copies`` differently augmented, differently streamed passes over ``items`` into ``cache``
    (default WORK/cache).

    Each utterance's window (chunk, left, right ms) is drawn from :data:`.states.TRAIN_CONFIGS`, 15% of
    them whole-utterance, or, with ``windows``, from those only: such shards are named after the windows
    (``TAG-wC-L-R_...-copyN-...``) and augmented with their own seeds, so they add to the mix's shards.
    ``teacher``: a model folder whose head's offline posteriors are stored beside the states, for
    ``fit --distill`` (the same draws, so the same audio and windows, as without it)."""
    backbone_spec = backbone_spec or {"type": WHISPER_KEY}
    cache = cache or work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    base = 0
    if windows:
        tag += "-w" + "_".join("%d-%d-%d" % tuple(w) for w in windows)
        base = zlib.crc32(tag.encode())  # other augmentation draws than the mix's copies
    jobs, outs = [], []
    for c in range(copies):
        rng = np.random.default_rng([base, 1000 + c] if base else 1000 + c)
        order = rng.permutation(len(items))
        for w in range(workers):
            part = [items[i] for i in order[w::workers]]
            out = cache / f"{tag}-copy{c}-part{w}of{workers}.npz"
            outs.append(out)
            if not out.exists():
                jobs.append((backbone_spec, part, str(out), (base + 7919 * c + w) % 2**32, augment_audio, 1,
                             windows, str(teacher) if teacher else None))
    if jobs:
        with get_context("spawn").Pool(workers) as pool:
            for out in pool.imap_unordered(_cache_worker, jobs):
                print(f"cached {out}", flush=True)
    return outs


# ---- export ----------------------------------------------------------------------------------------


def export_model(head_ckpt: Path, out_dir: Path, streaming: StreamingDefaults,
                 backbone_spec: dict | None = None, symbols: list[str] | None = None,
                 extra_meta: dict | None = None, dim: int = WhisperBackbone.dim,
                 check_threshold: float | None = None) -> Path:
    """Write the loadable model folder from a trained head checkpoint (the backbone, the default
    model's Whisper encoder unless ``backbone_spec`` says otherwise, is named, not loaded: ``dim`` is
    its state size). ``check_threshold``: the pronunciation check's, once calibrated for this head."""
    saved = torch.load(head_ckpt, weights_only=False)
    spec = saved["config"]["head"]
    symbols = symbols or list(SYMBOLS)
    encoder = ENCODERS[saved["config"].get("encoder", "tiny.en")]
    tuned = None
    if backbone_spec is None:  # the Whisper encoder (and its tail, its tuned layers) the head was trained on
        backbone_spec, dim = backbone_config(encoder.name, saved["config"].get("tail_ms", 0)), encoder.dim
        if (tuned := trained_encoder_weights(saved["config"])) is not None:
            backbone_spec = {**backbone_spec, "weights": ENCODER_WEIGHTS_FILE}
    head = build_head(spec, dim, len(symbols))
    head.load_state_dict(saved["head"])
    head = head.eval()
    if out_dir.exists():
        for f in (MODEL_FILE, HEAD_FILE, VOCAB_FILE, ENCODER_WEIGHTS_FILE):
            (out_dir / f).unlink(missing_ok=True)
    save_model_folder(out_dir, backbone_spec, to_inference(head), Vocabulary(tuple(symbols), 0), streaming,
                      training=extra_meta, check_threshold=check_threshold)
    if tuned is not None:
        shutil.copyfile(tuned, out_dir / ENCODER_WEIGHTS_FILE)
    if backbone_spec["type"] in WHISPER_ENCODERS and NOTICE_DIR.exists():
        for f in NOTICE_DIR.iterdir():
            shutil.copy(f, out_dir / f.name)
    # the shipped phoneme LM is built from text alone (scripts/build-default-lm.sh), so any head on the
    # default phoneme set decodes with it, as the default model does: a folder without it decodes greedily,
    # and comparing such a head with the default model compared decoders, not heads
    lm = DEFAULT_MODEL_DIR / "lm.arpa.gz"
    if symbols == list(SYMBOLS) and lm.exists() and out_dir.resolve() != DEFAULT_MODEL_DIR.resolve():
        shutil.copy(lm, out_dir / lm.name)
    return out_dir
