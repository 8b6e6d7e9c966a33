"""``phonestream train``: fit a CTC head on your own frozen encoder, or run the default model's recipe.

``phonestream train custom`` fits a phoneme head on a frozen Hugging Face encoder from a vocabulary file and
a labelled manifest (:mod:`.custom`). The other commands are the default model's recipe, stage by stage
(:mod:`.pipeline`): ``data``, ``cache``, ``fit``, ``eval``, ``export``, or ``all`` of them in order, and
``tune``, which fine-tunes the encoder's top layers under a trained head (:mod:`.tune`).
``python -m phonestream.train`` is the same command.

Every bad argument is one line (``phonestream: error: ...``) and exit code 2, like the rest of phonestream;
working folders default to the current folder, and ``export`` never writes into the installed package
unless ``--out`` names it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..models.base import LATENCY_PRESETS
from ..models.whisper import ENCODERS

#: Where caches, checkpoints and logs go when --work is not given: under the current folder.
DEFAULT_WORK = Path("phonestream-work")
#: The model folder ``train custom`` writes when --out is not given.
DEFAULT_CUSTOM_OUT = Path("phonestream-head")
STAGES = ("all", "data", "cache", "fit", "eval", "export", "tune")


class TrainError(ValueError):
    """A training set-up that cannot work (one-line message for the user)."""


def parse_head(kind: str) -> dict[str, Any]:
    """``linear``, ``conv`` (256 hidden, kernel 5, 2 layers) or ``conv-HIDDEN-KERNEL-LAYERS`` -> head spec.

    Raises:
        TrainError: any other text, non-positive sizes or an even kernel.
    """
    if kind == "linear":
        return {"type": "linear"}
    if kind == "conv":
        return {"type": "conv", "hidden": 256, "kernel": 5, "layers": 2}
    m = re.fullmatch(r"conv-(\d+)-(\d+)-(\d+)", kind)
    if not m:
        raise TrainError(f"unknown head {kind!r}: use linear, conv or conv-HIDDEN-KERNEL-LAYERS (e.g. conv-256-5-1)")
    hidden, kernel, layers = (int(g) for g in m.groups())
    if min(hidden, kernel, layers) < 1 or kernel % 2 == 0:
        raise TrainError(f"head {kind!r}: sizes must be positive and the kernel odd")
    return {"type": "conv", "hidden": hidden, "kernel": kernel, "layers": layers}


def parse_round_copies(text: str) -> dict[int, int]:
    """``"1=3,4=2"`` -> ``{1: 3, 4: 2}``: augmented passes to cache of each named synthesis round.

    Raises:
        TrainError: a part that is not ROUND=N with both at least 1.
    """
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)\s*=\s*(\d+)", part)
        if not m or min(int(m[1]), int(m[2])) < 1:
            raise TrainError(f"round copies {part!r}: use ROUND=N with both at least 1 (e.g. 1=3)")
        out[int(m[1])] = int(m[2])
    return out


def parse_windows(text: str) -> list[tuple[int, int, int]]:
    """``"balanced,160-1280-160"`` -> ``[(240, 1920, 320), (160, 1280, 160)]``: streaming windows (chunk,
    left, right ms) to cache, each CHUNK-LEFT-RIGHT or a preset of the default model (low, balanced,
    accurate).

    Raises:
        TrainError: a part that is neither, a chunk that is not a positive multiple of 20 ms (one encoder
        frame), or a context that is negative or not a multiple of 20 ms.
    """
    from .__main__ import WINDOWS

    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part in LATENCY_PRESETS:
            out.append(tuple(WINDOWS.preset(part)))
            continue
        m = re.fullmatch(r"(\d+)-(\d+)-(\d+)", part)
        if not m or int(m[1]) < 20 or any(int(v) % 20 for v in m.groups()):
            raise TrainError(f"window {part!r}: use CHUNK-LEFT-RIGHT in ms, multiples of 20 with a chunk of at "
                             "least 20 (e.g. 240-1920-320), or low, balanced, accurate")
        out.append((int(m[1]), int(m[2]), int(m[3])))
    if not out:
        raise TrainError("--windows names no window")
    return out


class CheckedText(click.ParamType):
    """Text checked by a parser that raises :class:`TrainError` (the value stays the text, so the recipe's
    own parser reads it again)."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name, self._parse = name, parse

    def convert(self, value: Any, param, ctx) -> str:
        try:
            self._parse(str(value))
        except TrainError as err:
            self.fail(str(err), param, ctx)
        return str(value)


HEAD_TYPE = CheckedText("linear|conv|conv-H-K-L", parse_head)
ROUND_COPIES = CheckedText("ROUND=N[,ROUND=N]", parse_round_copies)
WINDOW_LIST = CheckedText("C-L-R|PRESET[,...]", parse_windows)


class RunName(click.ParamType):
    """A run's folder name under WORK/runs: one plain name, not a path."""

    name = "name"

    def convert(self, value: Any, param, ctx) -> str:
        text = str(value)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", text):
            self.fail(f"{text!r} is not a run name (letters, digits, '.', '_', '+', '-'; no folders)", param, ctx)
        return text


class InitSource(click.ParamType):
    """What a fine-tune starts from: a run's name (its last checkpoint) or a model folder."""

    name = "run|folder"

    def convert(self, value: Any, param, ctx) -> str:
        text = str(value)
        if (Path(text).expanduser() / "phonestream.json").is_file():
            return str(Path(text).expanduser())
        if "/" in text or text.startswith("~"):
            self.fail(f"{text} is not a model folder (no phonestream.json)", param, ctx)
        return RunName().convert(text, param, ctx)


class WorkDir(click.ParamType):
    """A working folder: not empty text, not an existing file."""

    name = "folder"

    def convert(self, value: Any, param, ctx) -> Path:
        if isinstance(value, Path):
            return value
        text = str(value)
        if not text.strip():
            self.fail("is empty: give a folder (it is created if needed)", param, ctx)
        path = Path(text).expanduser()
        if path.exists() and not path.is_dir():
            self.fail(f"{text} is a file, not a folder", param, ctx)
        return path


class TrainGroup(click.Group):
    """Turns click's usage errors into phonestream's one line (``phonestream: error: ...``, exit 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            where = (err.ctx or ctx).command_path
            click.echo(f"phonestream: error: {err.format_message()} ({where} --help)", err=True)
            ctx.exit(2)


def _one_line_errors(func: Callable) -> Callable:
    from ..audio import AudioError
    from ..manifest import ManifestError
    from ..models.base import ModelError

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ManifestError, ModelError, AudioError, ValueError, OSError) as err:  # TrainError too
            click.echo(f"phonestream: error: {err}", err=True)
            raise click.exceptions.Exit(2) from None

    return wrapper


@click.group(cls=TrainGroup, context_settings={"help_option_names": ["-h", "--help"]})
def train() -> None:
    """Fit a CTC phoneme head on your own frozen encoder (custom), or run the default model's recipe
    (data, cache, fit, eval, export, all)."""


# -- your own encoder -------------------------------------------------------------------------------


@train.command()
@click.option("--backbone", required=True,
              help="Your frozen encoder: a Hugging Face folder or hub id (Wav2Vec2Model, HubertModel, WavLMModel...).")
@click.option("--vocab", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Phoneme symbols, one per line (<blank> is added first if absent).")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training TSV with a header: audio (or wav) and phones columns; audio paths relative to it.")
@click.option("--dev", "dev_manifest", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Held-out TSV in the same form: its PER is printed after every epoch.")
@click.option("--out", default=DEFAULT_CUSTOM_OUT, show_default=True, type=click.Path(path_type=Path),
              help="The model folder to write; use it with -m OUT.")
@click.option("--work", default=DEFAULT_WORK, show_default=True, type=WorkDir(),
              help="Folder for the cached encoder states and the checkpoints.")
@click.option("--head-type", default="linear", show_default=True, type=HEAD_TYPE,
              help="linear, conv (256 hidden, kernel 5, 2 layers) or conv-HIDDEN-KERNEL-LAYERS.")
@click.option("--phones-column", default="phones", show_default=True, help="The manifests' phones column.")
@click.option("--epochs", default=None, type=click.IntRange(1),
              help="Passes over the data (default: 40, more on a small set so that training makes at least "
                   "400 updates).")
@click.option("--minutes", default=10.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Time budget: training stops at the end of --epochs or after this long.")
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Peak learning rate (AdamW, warm-up then cosine decay).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="Torch threads for training.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Processes computing the encoder states (each loads the encoder).")
@click.option("--augment/--no-augment", default=False, show_default=True,
              help="Perturb the training audio (speed, noise, reverberation) before encoding it.")
@click.option("--checkpoint", default="auto", show_default=True, type=click.Choice(["auto", "last", "best"]),
              help="What to export: the last epoch, or the one with the lowest dev PER (auto: best with --dev).")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming the checkpoint left in --work.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; the log lines only.")
@click.option("--head", "head_alias", default=None, hidden=True, type=HEAD_TYPE,
              help="The old name of --head-type (kept for existing scripts).")
@_one_line_errors
def custom(backbone: str, vocab: Path, manifest: Path, dev_manifest: Path | None, out: Path, work: Path,
           head_type: str, phones_column: str, epochs: int | None, minutes: float, lr: float, seed: int, threads: int,
           workers: int, augment: bool, checkpoint: str, fresh: bool, quiet: bool, head_alias: str | None) -> None:
    """Fit a CTC phoneme head on your own frozen encoder and write a model folder.

    The encoder's states are computed through phonestream's streamer (the windows it will see when
    streaming) and cached under WORK; the head is trained on them with a progress bar showing the
    loss (and the dev PER after every epoch with --dev), checkpointing as it goes: run the same
    command again to resume. The result streams with `phonestream stream FILE -m OUT`.
    """
    from .custom import fit_custom

    with _progress(quiet) as (log, on_step):
        fit_custom(backbone, vocab, manifest, out, work, parse_head(head_alias or head_type), minutes=minutes,
                   seed=seed, epochs=epochs, lr=lr, threads=threads, workers=workers, dev_manifest=dev_manifest,
                   augment_audio=augment, fresh=fresh, phones_column=phones_column, checkpoint=checkpoint,
                   log=log, on_step=on_step)


class _progress:
    """A rich progress bar (steps, epoch, loss, dev PER) and a log that prints above it."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.task = None

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True, highlight=False)
        if not self.quiet:
            self.bar = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
            self.bar.start()

        def log(message: str) -> None:
            console.print(message, markup=False, highlight=False)

        def on_step(state: dict, loss: float, steps_per_epoch: int, total_epochs: int) -> None:
            history = [h for h in state.get("history", []) if "score" in h]
            info = f"epoch {state['epoch'] + 1}/{total_epochs}  loss {loss:.3f}"
            if history:
                info += f"  dev PER {history[-1]['score']:.1f}%"
            if self.bar is None:
                return
            total = steps_per_epoch * total_epochs
            if self.task is None:
                self.task = self.bar.add_task("train", total=total, info=info)
            self.bar.update(self.task, completed=min(state["step"], total), total=total, info=info)

        return log, on_step

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- the default model's recipe ----------------------------------------------------------------------


def _recipe_options(func: Callable) -> Callable:
    """The recipe's options, the same for every stage (each stage reads the ones it needs)."""
    options = [
        click.option("--work", default=DEFAULT_WORK, show_default=True, type=WorkDir(),
                     help="Working folder for audio, caches, runs."),
        click.option("--run", default="conv-256-5-1-2copies-s0", show_default=True, type=RunName(),
                     help="Name of the training run (a folder under WORK/runs)."),
        click.option("--encoder", default="tiny.en", show_default=True, type=click.Choice(list(ENCODERS)),
                     help="cache/fit: the frozen Whisper encoder (eval/export read it from the checkpoint)."),
        click.option("--tail-ms", default=0, show_default=True, type=click.IntRange(0, 5000),
                     help="cache/fit: ms of digital silence appended to every encoder window, as Whisper pads its "
                          "input (eval/export read it from the checkpoint; the exported model runs with it)."),
        click.option("--head", default="conv-256-5-1", show_default=True, type=HEAD_TYPE,
                     help="fit: linear, conv (256 hidden, kernel 5, 2 layers) or conv-HIDDEN-KERNEL-LAYERS."),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--init", default=None, type=InitSource(),
                     help="fit: start from this run's last checkpoint, or from a model folder's head (e.g. "
                          "phonestream/default_model; same head and encoder): fine-tuning, with a fresh optimiser "
                          "and schedule. tune: the model folder whose head stays fixed and whose encoder, pinned "
                          "or tuned already, the run starts from (default: the shipped model)."),
        click.option("--top", default=1, show_default=True, type=click.IntRange(1),
                     help="tune: encoder layers to fine-tune, from the top (with the final LayerNorm)."),
        click.option("--passes", default=1, show_default=True, type=click.IntRange(1),
                     help="tune: passes over the training items."),
        click.option("--init-weight", default=0.0, show_default=True, type=click.FloatRange(0, 1, max_open=True),
                     help="tune: weight of --init's own encoder variables in the exported ones, averaged "
                          "variable by variable with the run's (weight-space ensembling, WiSE-FT); changes "
                          "the export only, so the same finished run can be exported again with another."),
        click.option("--teacher", default=None, type=click.Path(file_okay=False, exists=True, path_type=Path),
                     help="cache: a model folder whose head's offline posteriors of each augmented utterance are "
                          "stored beside the streamed states, for fit --distill."),
        click.option("--distill", default=0.0, show_default=True, type=click.FloatRange(0),
                     help="fit: weight of the KL between the cached teacher's offline posteriors and the head's "
                          "streamed ones, added to the CTC loss (needs a cache made with --teacher). tune: weight "
                          "of the distance from --init's own offline encoder states of each augmented utterance "
                          "to the streamed windows' states (no cache)."),
        click.option("--encoder-weights", default=None,
                     type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="cache/fit: a fine-tuned encoder's variables (the encoder.safetensors train tune writes, "
                          "e.g. phonestream/default_model's) instead of the pinned encoder: the head learns the "
                          "states that encoder gives, and export ships the file beside it."),
        click.option("--ctc-weight", default=1.0, show_default=True, type=click.FloatRange(0),
                     help="tune: weight of the CTC loss on the recipe's labels (0 with --distill: the offline "
                          "states alone, no labels)."),
        click.option("--minutes", default=12.0, show_default=True, type=click.FloatRange(0, min_open=True),
                     help="fit: training time budget."),
        click.option("--epochs", default=40, show_default=True, type=click.IntRange(1)),
        click.option("--lr", default=None, type=click.FloatRange(0, min_open=True),
                     help="Peak learning rate (default: fit 3e-3, tune 1e-4)."),
        click.option("--rounds", default=1, show_default=True, type=click.IntRange(0),
                     help="data/cache: synthesis rounds to make (pipeline.ROUNDS; the shipped model used 4). "
                          "tune: rounds to tune on (0: no synthetic speech, for --unlabelled audio alone)."),
        click.option("--unlabelled", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="tune: a manifest of audio without phonemes (id and audio columns) added to the items; "
                          "the label-free --distill target alone can learn from it, so it needs --ctc-weight 0. "
                          "Repeatable."),
        click.option("--copies", default=2, show_default=True, type=click.IntRange(1),
                     help="cache: augmented passes over the training audio."),
        click.option("--fsdd-copies", default=None, type=click.IntRange(1),
                     help="cache: augmented passes over the FSDD training takes, the only real speech "
                          "(default: --copies); more keeps its share when the synthetic rounds grow."),
        click.option("--round-copies", default=None, type=ROUND_COPIES,
                     help="cache: augmented passes over the named synthesis rounds (default: --copies); "
                          "keeps a round's share when later rounds grow."),
        click.option("--windows", default=None, type=WINDOW_LIST,
                     help="cache: stream every utterance through one of these windows (CHUNK-LEFT-RIGHT ms, or "
                          "low, balanced, accurate) instead of the 64-window mix with 15% whole utterances; "
                          "the shards are named after them and add to the mix's."),
        click.option("--workers", default=2, show_default=True, type=click.IntRange(1)),
        click.option("--threads", default=2, show_default=True, type=click.IntRange(1),
                     help="fit: torch threads for training."),
        click.option("--full", is_flag=True, help="eval: all of fraser_arctic, not 150 utterances."),
        click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path),
                     help="export: the model folder to write (default: WORK/export/RUN; the shipped model is "
                          "only replaced when --out names it)."),
        click.option("--checkpoint", default="last", show_default=True, type=click.Choice(["last", "best"]),
                     help="eval/export: the run's last checkpoint (no selection), or the one that scored best "
                          "on the development sets while training."),
        click.option("--check-threshold", default=None, type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help="export: the pronunciation check's word-score threshold calibrated for this head "
                          "(phonestream check-eval), written into phonestream.json."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_DETAILS = {
    "all": "Each stage skips the work whose output already exists, so an interrupted run resumes.",
    "data": "espeak-ng, flite, festival, Piper and (rounds 3-5) Kokoro voices (scripts/install-train-deps.sh); "
            "--rounds, --workers.",
    "cache": "Augmented, streamed Whisper encoder states of WORK/synth and the FSDD training takes into "
             "WORK/cache (WORK/cache-tuned<sha> with --encoder-weights); --copies, --fsdd-copies, --round-copies, "
             "--rounds, --windows, --teacher, --encoder-weights, --workers.",
    "fit": "Trains WORK/runs/RUN (resumed if it exists), choosing checkpoints on held-out synthetic speech and "
           "FSDD takes 45-49; --head, --minutes, --epochs, --lr, --threads, --seed, --init, --distill, "
           "--encoder-weights.",
    "eval": "fraser_arctic (150 utterances, --full: all) and the FSDD test split at several window settings; "
            "--checkpoint.",
    "export": "Writes --out (default WORK/export/RUN: the shipped model is only replaced when --out names "
              "phonestream/default_model); --checkpoint, --check-threshold.",
    "tune": "Fine-tunes the Whisper encoder's top --top layers under --init's head (kept fixed) on WORK/synth "
            "(--rounds; 0: none), the FSDD takes (--fsdd-copies, default 1) and any --unlabelled audio, every "
            "utterance streamed through the folder's presets, the training mix or whole; resumes WORK/runs/RUN, "
            "then writes --out (default WORK/export/RUN) with encoder.safetensors; --lr, --passes, --seed, "
            "--threads, --distill, --ctc-weight, --init-weight, --unlabelled.",
}


def _stage_command(stage: str, summary: str) -> None:
    @train.command(name=stage, help=summary + "\n\n" + _DETAILS[stage], short_help=summary)
    @_recipe_options
    @_one_line_errors
    def command(**options: Any) -> None:
        code = run_recipe(stage, options)
        if code:
            raise click.exceptions.Exit(code)


def run_recipe(stage: str, options: dict[str, Any]) -> int:
    """Run a recipe stage with checked options (the recipe's own parser in :mod:`.__main__` runs it).

    ``export`` (and ``all``) without ``out`` write WORK/export/RUN, never the installed default model."""
    from .__main__ import recipe as recipe_main

    if stage in ("eval", "export"):
        ckpt = Path(options["work"]) / "runs" / options["run"] / f"{options['checkpoint']}.pt"
        if not ckpt.is_file():
            raise TrainError(f"no checkpoint {ckpt}: train the run first (phonestream train fit --work "
                             f"{options['work']} --run {options['run']})")
    if options.get("rounds") == 0 and stage != "tune":
        raise TrainError(f"--rounds 0 is for tune only: {stage} needs at least one synthesis round")
    if options.get("unlabelled") and stage != "tune":
        raise TrainError("--unlabelled is for tune only")
    extra = [r for r in parse_round_copies(options.get("round_copies") or "") if r > options["rounds"]]
    if extra and stage in ("all", "cache"):
        raise TrainError(f"--round-copies names round {extra[0]}, but --rounds {options['rounds']} caches rounds "
                         f"1-{options['rounds']} only")
    if options.get("out") is None and stage in ("all", "export", "tune"):
        options = {**options, "out": Path(options["work"]) / "export" / options["run"]}
    argv = [stage]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, tuple):
            for one in value:
                argv += [flag, str(one)]
        elif value is not None:
            argv += [flag, str(value)]
    return recipe_main(argv)


for _stage, _summary in (
    ("all", "The default model's recipe: data, cache, fit, export."),
    ("data", "Synthesise labelled speech into WORK/synth."),
    ("cache", "Cache streamed encoder states for training."),
    ("fit", "Train the head on the cached states."),
    ("eval", "Score a run's head on the real-speech sets."),
    ("export", "Write a run's head as a model folder."),
    ("tune", "Fine-tune the encoder's top layers under a head."),
):
    _stage_command(_stage, _summary)
