"""``python -m phonestream.train`` -- the default model's recipe, and head fitting on your own encoder.

The same command as ``phonestream train`` (click, :mod:`.cli`: checked options, one-line errors); the
recipe's stages end up in :func:`recipe` below. ``export`` without ``--out`` writes WORK/export/RUN.

Default model (Whisper tiny.en encoder, frozen), every stage resumable::

    python -m phonestream.train all --work /work/data-work          # data, cache, fit, export
    python -m phonestream.train data --work W                       # synthesise speech (synth.py)
    python -m phonestream.train cache --work W [--copies 2]         # streamed, augmented states
    python -m phonestream.train fit --work W --run conv-256-5-1-s0 --head conv-256-5-1 --minutes 30
    python -m phonestream.train eval --work W --run conv-256-5-1-s0 [--full]
    python -m phonestream.train export --work W --run conv-256-5-1-s0 --out phonestream/default_model

Your own frozen Hugging Face encoder (folder), a vocabulary file and a TSV manifest (``audio``,
``phones`` columns; paths relative to the manifest)::

    python -m phonestream.train custom --backbone ENC_DIR --vocab vocab.txt --manifest train.tsv \
        --out my_model [--head conv|linear] [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..models.base import StreamingDefaults
from ..models.whisper import ENCODERS, backbone_config, weights_digest

DEFAULT_WORK = Path("phonestream-work")  # under the current folder, as in phonestream train
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "default_model"
#: The default model's windows, written into its phonestream.json by ``export``: ``balanced`` 240 ms steps
#: with 320 ms lookahead (worst-case commit delay chunk + lookahead = 560 ms, under issue 8's 0.6 s), and
#: its ``low`` and ``accurate`` presets (chunk, left, right ms). All three were chosen on held-out data
#: (MODEL_CARD, "Windows rechosen").
WINDOWS = StreamingDefaults(240, 1920, 320, low=(160, 1280, 200), accurate=(320, 2560, 640))
DEFAULT_STREAMING, LOW_LATENCY, ACCURATE = (WINDOWS.preset(name) for name in ("balanced", "low", "accurate"))
#: (chunk, left, right) ms scored while training, on development data only (never the reported sets).
EVAL_CONFIGS = [DEFAULT_STREAMING]


def _head_spec(kind: str) -> dict:
    """linear | conv | conv-HIDDEN-KERNEL-LAYERS (checked: :func:`.cli.parse_head`)."""
    from .cli import parse_head

    return parse_head(kind)


def _eval_sets(work: Path, full: bool, configs, encoder: str = "tiny.en", tail_ms: int = 0,
               weights: Path | None = None):
    """The reported real-speech sets (fraser_arctic, FSDD test): for ``eval`` only, never for selection."""
    from ..models.whisper import WhisperBackbone
    from .evaluate import eval_states, fraser_items, fsdd_items
    from .pipeline import cache_folder

    bb = WhisperBackbone(threads=1, encoder=encoder, tail_ms=tail_ms, weights=weights)
    cache = cache_folder(work, encoder, "eval-cache", tail_ms, weights)
    sets = {}
    fr = ("fraser", fraser_items(limit=None)) if full else ("fraser150", fraser_items())
    for name, items in (fr, ("fsddtest", fsdd_items())):
        for cfg in configs:
            sets[(name, cfg)] = eval_states(bb, name, items, cfg, cache)
    return sets


def round_copies(text: str) -> dict[int, int]:
    """ROUND=N[,ROUND=N...] (checked: :func:`.cli.parse_round_copies`)."""
    from .cli import parse_round_copies

    return parse_round_copies(text)


def windows_list(text: str) -> list[tuple[int, int, int]]:
    """W[,W...] (checked: :func:`.cli.parse_windows`)."""
    from .cli import parse_windows

    return parse_windows(text)


def _shards(cache: Path) -> list[Path]:
    """The finished shards in a cache folder (a worker writes ``*.tmp.npz`` first), in name order."""
    return [s for s in sorted(cache.glob("*.npz")) if ".tmp." not in s.name]


def _dev_sets(work: Path, configs, encoder: str = "tiny.en", draws: int = 1, tail_ms: int = 0,
              clean: bool = False, weights: Path | None = None):
    """Development sets scored while training: held-out synthetic utterances (augmented, seeded) and
    held-out FSDD training takes (45-49). Neither is reported; checkpoints are chosen on these only.
    ``draws`` > 1 adds the synthetic set augmented with other seeds, named ``synthdev@D``; ``clean`` gives
    the synthetic set unaugmented instead (``synthclean``: studio-clean speech, as fraser_arctic is);
    ``tail_ms``: the encoder's silent tail (:mod:`phonestream.models.whisper`); ``weights``: its fine-tuned
    variables (``train tune``), if any."""
    from ..models.whisper import WhisperBackbone
    from .evaluate import eval_states, fsdd_items
    from .pipeline import cache_folder, synth_items

    bb = WhisperBackbone(threads=1, encoder=encoder, tail_ms=tail_ms, weights=weights)
    cache = cache_folder(work, encoder, "eval-cache", tail_ms, weights)
    synth = synth_items(work, held_out=True)
    sets = {}
    synth_set = ("synthclean", synth, False) if clean else ("synthdev", synth, True)
    for name, items, aug in (synth_set, ("fsdddev", fsdd_items(split="dev"), False)):
        for draw in range(draws if aug else 1):
            for cfg in configs:
                sets[(f"{name}@{draw}" if draw else name, cfg)] = eval_states(bb, name, items, cfg, cache,
                                                                              augment_audio=aug, draw=draw)
    return sets


def _scorer(sets, symbols):
    from .evaluate import config_name, per

    def score(head):
        out = {f"{n}:{config_name(c)}": round(per(d, head, symbols), 2) for (n, c), d in sets.items()}
        first = next(k for k in out if k.startswith(("fraser", "synthdev")))
        out["score"] = out[first]
        return out

    return score


def main(argv: list[str] | None = None) -> int:
    """``python -m phonestream.train``: runs ``phonestream train`` (:mod:`.cli`), which checks the options
    and hands recipe stages to :func:`recipe`."""
    from .cli import train

    train.main(args=argv, prog_name="python -m phonestream.train")  # exits with the command's status
    return 0


def recipe(argv: list[str] | None = None) -> int:
    """One recipe stage from its command line (as :mod:`.cli` writes it)."""
    p = argparse.ArgumentParser(prog="python -m phonestream.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["all", "data", "cache", "fit", "eval", "export", "custom", "tune"])
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="working folder for audio, caches, runs")
    p.add_argument("--run", default="conv-256-5-1-2copies-s0", help="name of the training run (folder under WORK/runs)")
    p.add_argument("--head", default="conv-256-5-1",
                   help="linear | conv (256 hidden, kernel 5, 2 layers) | conv-HIDDEN-KERNEL-LAYERS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None,
                   help="fit: start from RUN's last checkpoint, or a model folder's head (fine-tuning)")
    p.add_argument("--teacher", type=Path, default=None,
                   help="cache: a model folder whose offline posteriors are stored for fit --distill")
    p.add_argument("--distill", type=float, default=0.0,
                   help="fit: weight of the KL to the cached teacher's offline posteriors (0: CTC only); tune: "
                        "of the distance to the --init folder's own offline encoder states of each utterance")
    p.add_argument("--encoder-weights", type=Path, default=None,
                   help="cache/fit: a fine-tuned encoder's variables (train tune's encoder.safetensors) to run "
                        "instead of the pinned encoder; export ships them beside the head")
    p.add_argument("--ctc-weight", type=float, default=1.0,
                   help="tune: weight of the CTC loss (0 with --distill: the offline states alone)")
    p.add_argument("--minutes", type=float, default=12.0, help="training time budget")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: fit 3e-3, tune 1e-4)")
    p.add_argument("--top", type=int, default=1, help="tune: encoder layers to fine-tune, from the top")
    p.add_argument("--passes", type=int, default=1, help="tune: passes over the training items")
    p.add_argument("--init-weight", type=float, default=0.0,
                   help="tune: weight of --init's own encoder variables averaged into the exported ones (WiSE-FT)")
    p.add_argument("--rounds", type=int, default=1,
                   help="synthesis rounds to make (pipeline.ROUNDS; the shipped model used 4)")
    p.add_argument("--unlabelled", type=Path, action="append", default=[],
                   help="tune: a manifest of audio without phonemes, for --distill alone (repeatable)")
    p.add_argument("--copies", type=int, default=2, help="augmented passes over the training audio to cache")
    p.add_argument("--fsdd-copies", type=int, default=None,
                   help="augmented passes over the FSDD training takes (default: --copies)")
    p.add_argument("--round-copies", type=round_copies, default={},
                   help="ROUND=N[,ROUND=N...]: augmented passes over those synthesis rounds (default: --copies)")
    p.add_argument("--windows", type=windows_list, default=None,
                   help="W[,W...]: cache every utterance through one of these windows (CHUNK-LEFT-RIGHT ms, or "
                   "low, balanced, accurate) instead of the training mix; the shards add to the mix's")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--full", action="store_true", help="evaluate on all of fraser_arctic, not 150 utterances")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--check-threshold", type=float, default=None,
                   help="export: the pronunciation check's threshold for this head, into phonestream.json")
    p.add_argument("--checkpoint", choices=["last", "best"], default="last",
                   help="eval/export: the run's last checkpoint (no selection), or the one that scored best "
                   "on the in-training check (a fraser_arctic subset and FSDD test: selecting on them biases "
                   "their figures)")
    p.add_argument("--encoder", choices=list(ENCODERS), default="tiny.en",
                   help="cache/fit: the Whisper encoder (eval/export read it from the checkpoint)")
    p.add_argument("--tail-ms", type=int, default=0,
                   help="cache/fit: ms of silence appended to every encoder window (eval/export read it from "
                   "the checkpoint)")
    p.add_argument("--backbone", help="custom: Hugging Face encoder folder")
    p.add_argument("--vocab", type=Path, help="custom: vocabulary file, one symbol per line")
    p.add_argument("--manifest", type=Path, help="custom: TSV with audio and phones columns")
    args = p.parse_args(argv)

    from ..models.whisper import WhisperBackbone
    from . import pipeline
    from .phones import SYMBOLS

    work = args.work
    init = None
    if args.init and args.stage in ("all", "fit"):
        folder = Path(args.init)
        init = folder if (folder / "phonestream.json").is_file() else work / "runs" / args.init / "last.pt"
    if init is not None and not init.exists():  # before any stage runs (data and cache take hours)
        from .cli import TrainError

        raise TrainError(f"--init {args.init}: no checkpoint {init} (a finished run in this work folder)")
    if init is not None and init.is_dir():
        from .evaluate import load_exported_head

        load_exported_head(init)  # a folder whose head this recipe cannot train fails now, in one line
    encoder = ENCODERS[args.encoder]
    weights = pipeline.check_encoder_weights(args.encoder_weights, encoder.name) if args.encoder_weights else None
    spec = {**backbone_config(encoder.name, args.tail_ms), **({"weights": str(weights)} if weights else {})}
    cache = pipeline.cache_folder(work, encoder.name, "cache", args.tail_ms, weights)
    if args.stage == "fit" and not _shards(cache):  # before any log is made
        from .cli import TrainError

        flags = "".join(f" --{k} {v}" for k, v in (("encoder", args.encoder), ("tail-ms", args.tail_ms))
                        if v not in ("tiny.en", 0))
        raise TrainError(f"no cached states in {cache}: run phonestream train cache --work {work}{flags} first")
    if args.teacher is not None and args.stage in ("all", "cache"):
        pipeline.load_teacher(args.teacher, args.encoder, args.tail_ms)  # a wrong folder fails now, not in the workers
    log = pipeline.log_to(work / "logs" / f"{args.stage}.log")
    symbols = list(SYMBOLS)
    started = time.monotonic()

    def minutes() -> str:
        return f"{(time.monotonic() - started) / 60:.1f} min"

    if args.stage == "custom":
        from .custom import fit_custom

        if not (args.backbone and args.vocab and args.manifest and args.out):
            raise SystemExit("custom needs --backbone, --vocab, --manifest and --out")
        fit_custom(args.backbone, args.vocab, args.manifest, args.out, work, _head_spec(args.head),
                   minutes=args.minutes, seed=args.seed, epochs=args.epochs, lr=args.lr or 3e-3,
                   threads=args.threads, workers=args.workers, log=log)
        return 0

    if args.stage in ("all", "data"):
        manifest = pipeline.stage_data(work, rounds=args.rounds, workers=args.workers)
        log(f"synthetic manifest: {manifest} ({minutes()} after the command started)")
    if args.stage in ("all", "cache"):
        synth = pipeline.synth_items(work, held_out=False)
        by_round: dict[int, list] = {}
        for it in synth:  # one set of shards per synthesis round, so later rounds add shards
            by_round.setdefault(pipeline.synth_round(it.uid), []).append(it)
        for rnd, items in sorted(by_round.items()):
            if rnd > args.rounds:
                continue
            copies = args.round_copies.get(rnd, args.copies)
            pipeline.stage_cache(work, items, f"synth-r{rnd}", copies=copies, workers=args.workers,
                                 backbone_spec=spec, cache=cache, windows=args.windows, teacher=args.teacher)
        fsdd_copies = args.fsdd_copies or args.copies
        pipeline.stage_cache(work, pipeline.fsdd_train_items(), "fsdd", copies=fsdd_copies, workers=args.workers,
                             backbone_spec=spec, cache=cache, windows=args.windows, teacher=args.teacher)
        log(f"cache folder: {cache} ({minutes()} after the command started)")
    if args.stage in ("all", "fit"):
        from .trainer import TrainConfig, load_states, train_head

        shards = _shards(cache)
        data = load_states(shards, teacher=args.distill > 0)
        hours = int(data.frames.sum()) * WhisperBackbone.frame_stride / WhisperBackbone.sample_rate / 3600
        log(f"training on {len(shards)} shards: {len(data.ids)} utterances, {hours:.2f} h")
        sets = _dev_sets(work, [*EVAL_CONFIGS, None], encoder.name, tail_ms=args.tail_ms, weights=weights)
        cfg = TrainConfig(head=_head_spec(args.head), lr=args.lr or 3e-3, max_minutes=args.minutes,
                          max_epochs=args.epochs, seed=args.seed, threads=args.threads, encoder=encoder.name,
                          tail_ms=args.tail_ms,
                          init=str(init) if init else None, distill=args.distill,
                          encoder_weights=str(weights) if weights else None,
                          encoder_weights_sha256=weights_digest(weights) if weights else None)
        train_head(data, symbols, work / "runs" / args.run, cfg, encoder.dim, _scorer(sets, symbols), log)
    if args.stage == "eval":
        import torch

        from ..models.torch_heads import build_head

        saved = torch.load(work / "runs" / args.run / f"{args.checkpoint}.pt", weights_only=False)
        trained_on = ENCODERS[saved["config"].get("encoder", "tiny.en")]
        head = build_head(saved["config"]["head"], trained_on.dim, len(symbols))
        head.load_state_dict(saved["head"])
        head.eval()
        configs = [DEFAULT_STREAMING, LOW_LATENCY, ACCURATE, (960, 1280, 320), None]
        tuned = pipeline.trained_encoder_weights(saved["config"])
        res = _scorer(_eval_sets(work, args.full, configs, trained_on.name, saved["config"].get("tail_ms", 0),
                                 tuned), symbols)(head)
        log(json.dumps(res))
    if args.stage in ("all", "export"):
        ckpt = work / "runs" / args.run / f"{args.checkpoint}.pt"
        out = args.out or work / "export" / args.run  # never the shipped model unless --out names it
        pipeline.export_model(ckpt, out, WINDOWS, check_threshold=args.check_threshold)
        log(f"exported {ckpt} -> {out}")
    if args.stage == "tune":
        from ..models import DEFAULT_MODEL_DIR
        from .cli import TrainError
        from .tune import TuneConfig, export_tuned, tune_encoder

        folder = Path(args.init or DEFAULT_MODEL_DIR).resolve()
        if args.rounds > 0 and not (work / "synth" / "manifest.tsv").is_file():
            raise TrainError(f"no synthetic speech in {work / 'synth'}: run phonestream train data --work {work} first "
                             "(or --rounds 0 to tune on --unlabelled audio and the FSDD takes alone)")
        if args.unlabelled and args.ctc_weight > 0:
            raise TrainError("--unlabelled audio has no phonemes for the CTC loss: give --ctc-weight 0 and --distill")
        items = pipeline.tune_items(work, args.rounds, args.fsdd_copies or 1, args.unlabelled)
        log(f"tuning the encoder's top {args.top} layer(s) under {folder}'s head on {len(items)} utterances")
        cfg = TuneConfig(top=args.top, lr=args.lr or 1e-4, passes=args.passes, seed=args.seed, threads=args.threads,
                         distill=args.distill, ctc=args.ctc_weight)
        ckpt = tune_encoder(items, folder, work / "runs" / args.run, cfg, log)
        out = args.out or work / "export" / args.run
        export_tuned(ckpt, out, init_weight=args.init_weight)
        log(f"exported {ckpt} -> {out} ({minutes()} after the command started)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
