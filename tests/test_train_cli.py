"""`phonestream train`: fitting a head on your own encoder honours every flag, shows progress, resumes;
bad arguments are one line and exit 2; export never overwrites the shipped model unless told to."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from phonestream.cli import main
from phonestream.models import DEFAULT_MODEL_DIR, load_model

PHONES = ["P R IH N T IH NG", "IH N DH AH", "OW N L IY", "S EH N S", "W IH DH", "W IH CH"]


@pytest.fixture()
def data(tmp_path, speechlike) -> Path:
    """Five 0.6 s training clips, one dev clip, a vocabulary; manifests use a 'ph' phones column."""
    rows = []
    for i, ph in enumerate(PHONES):
        sf.write(tmp_path / f"c{i}.wav", speechlike[i * 8000 : i * 8000 + 9600], 16000)
        rows.append(f"c{i}\tc{i}.wav\t{ph}\n")
    (tmp_path / "train.tsv").write_text("id\taudio\tph\n" + "".join(rows[:5]))
    (tmp_path / "dev.tsv").write_text("id\taudio\tph\n" + rows[5])
    (tmp_path / "vocab.txt").write_text("\n".join(sorted({p for ph in PHONES for p in ph.split()})) + "\n")
    return tmp_path


def train(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)], catch_exceptions=False)


def run_dir(work: Path, out_name: str) -> Path:
    (run,) = (work / out_name).glob("run-*")
    return run


def state(run: Path) -> dict:
    return torch.load(run / "ckpt.pt", weights_only=False)["state"]


def test_custom_honours_every_flag_then_resumes_and_starts_fresh(data, tiny_encoder_dir):
    work, out = data / "w", data / "mine"
    common = ["custom", "--backbone", tiny_encoder_dir, "--vocab", data / "vocab.txt", "--manifest",
              data / "train.tsv", "--dev", data / "dev.tsv", "--phones-column", "ph", "--work", work, "--out", out,
              "--head-type", "conv-16-3-1", "--lr", "0.01", "--seed", "3", "--threads", "1", "--workers", "2",
              "--minutes", "5", "--checkpoint", "last"]
    r = train(*common, "--epochs", "3", "-q")
    assert r.exit_code == 0, r.output
    run = run_dir(work, "mine")
    cfg = json.loads((run / "train_config.json").read_text())
    assert (cfg["lr"], cfg["seed"], cfg["threads"], cfg["max_epochs"], cfg["max_minutes"]) == (0.01, 3, 1, 3, 5.0)
    assert cfg["head"] == {"type": "conv", "hidden": 16, "kernel": 3, "layers": 1}
    shards = sorted(p.name for p in (work / "mine").glob("states-*/cache/*.npz"))
    assert shards == ["train-copy0-part0of2.npz", "train-copy0-part1of2.npz"]  # --workers 2
    s = state(run)
    assert s["epoch"] == 3 and [h["epoch"] for h in s["history"]] == [1, 2, 3]  # dev PER after every epoch
    assert all(0 <= h["score"] for h in s["history"]) and r.output.count("eval step") == 3
    meta = json.loads((out / "phonestream.json").read_text())
    assert meta["training"]["checkpoint"] == "last.pt" and meta["head"]["type"] == "conv"
    model = load_model(str(out))
    assert model.vocab.symbols[0] == "<blank>" and len(model.vocab) == 16
    assert np.isfinite(model.log_probs(sf.read(data / "c0.wav", dtype="float32")[0])).all()

    # the same command again, one more epoch: resumes from the checkpoint, with a progress bar and the loss
    r = train(*common, "--epochs", "4")
    assert r.exit_code == 0 and "resumed from step" in r.output and "loss" in r.output, r.output
    assert state(run)["epoch"] == 4 and state(run)["step"] == s["step"] + s["step"] // 3

    # --fresh starts over; --checkpoint best (the default with --dev) exports the best-scoring epoch
    common[common.index("last")] = "best"
    r = train(*common, "--epochs", "1", "--fresh", "-q")
    assert r.exit_code == 0 and "removed the checkpoint" in r.output, r.output
    assert state(run)["epoch"] == 1
    assert json.loads((out / "phonestream.json").read_text())["training"]["checkpoint"] == "best.pt"


def test_custom_defaults_live_under_the_current_folder_and_the_time_budget_stops_it(data, tiny_encoder_dir,
                                                                                    monkeypatch):
    monkeypatch.chdir(data)
    r = train("custom", "--backbone", tiny_encoder_dir, "--vocab", "vocab.txt", "--manifest", "train.tsv",
              "--phones-column", "ph", "--minutes", "0.0002", "--epochs", "100000", "-q")
    assert r.exit_code == 0, r.output
    assert (data / "phonestream-head" / "phonestream.json").is_file()
    s = state(run_dir(data / "phonestream-work", "phonestream-head"))
    assert 1 <= s["step"] < 100000 and s["elapsed"] > 0.0002 * 60  # stopped by --minutes, not --epochs


def test_custom_small_set_trains_long_enough_to_emit_phonemes(data, tiny_encoder_dir):
    """Without --epochs a 5-row set gets enough updates (at least 400) for the head to say something."""
    from phonestream.train.custom import MIN_STEPS

    out = data / "small"
    r = train("custom", "--backbone", tiny_encoder_dir, "--vocab", data / "vocab.txt", "--manifest",
              data / "train.tsv", "--phones-column", "ph", "--work", data / "w2", "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert state(run_dir(data / "w2", "small"))["step"] >= MIN_STEPS
    model = load_model(str(out))
    audio = sf.read(data / "c0.wav", dtype="float32")[0]
    assert (model.log_probs(audio).argmax(-1) != model.vocab.blank_id).any()


BAD = [
    (["fit", "--head", "conv-x"], "--head"),
    (["fit", "--head", "conv-256-4-1"], "kernel odd"),
    (["fit", "--head", "transformer"], "unknown head"),
    (["fit", "--minutes", "-1"], "--minutes"),
    (["fit", "--minutes", "soon"], "--minutes"),
    (["fit", "--run", "../elsewhere"], "--run"),
    (["fit", "--run", ""], "--run"),
    (["fit", "--work", ""], "--work"),
    (["cache", "--copies", "0"], "--copies"),
    (["cache", "--round-copies", "1=0"], "ROUND=N"),
    (["cache", "--round-copies", "1:3"], "ROUND=N"),
    (["cache", "--rounds", "2", "--round-copies", "3=2"], "caches rounds 1-2 only"),
    (["export", "--checkpoint", "middle"], "--checkpoint"),
    (["export", "--run", "never-trained"], "no checkpoint"),
    (["fit", "--init", "never-trained"], "no checkpoint"),
    (["fit", "--init", "../elsewhere"], "--init"),
    (["fit", "--distill", "-1"], "--distill"),
    (["fit", "--tail-ms", "-20"], "--tail-ms"),
    (["fit", "--work", "no-such-work", "--tail-ms", "300"], "train cache --work no-such-work --tail-ms 300 first"),
    (["cache", "--teacher", "no-such-folder"], "--teacher"),
    (["cache", "--teacher", "tests", "--work", "no-such-work"], "not a model folder"),
    (["cache", "--windows", "250-1920-320"], "--windows"),
    (["cache", "--windows", "quick"], "--windows"),
    (["tune", "--work", "no-such-work"], "train data --work no-such-work first"),
    (["tune", "--top", "0"], "--top"),
    (["tune", "--passes", "0"], "--passes"),
    (["tune", "--init", "../elsewhere"], "--init"),
    (["tune", "--work", "no-such-work", "--rounds", "0", "--unlabelled", "pyproject.toml"],
     "has no phonemes for the CTC loss: give --ctc-weight 0 and --distill"),
    (["tune", "--unlabelled", "no-such-manifest.tsv"], "--unlabelled"),
    (["cache", "--rounds", "0"], "--rounds 0 is for tune only"),
    (["fit", "--unlabelled", "pyproject.toml"], "--unlabelled is for tune only"),
    (["fitt"], "No such command"),
    (["custom", "--vocab", "nope.txt"], "--vocab"),
    (["custom", "--head-type", "big", "--backbone", "x"], "--head-type"),
    (["custom", "--epochs", "0"], "--epochs"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_are_one_line_and_exit_2(args, needle, tmp_path):
    r = CliRunner().invoke(main, ["train", *args])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("phonestream: error: "), r.stderr
    assert needle in lines[0] and "Traceback" not in r.output
    assert not Path("no-such-work").exists()  # a stage refused on its arguments makes no work folder


def test_custom_set_up_errors_are_one_line(data, tiny_encoder_dir):
    (data / "odd.tsv").write_text("audio\tph\nc0.wav\tP ZZ\n")
    cases = [
        (["--manifest", data / "odd.tsv"], "phones not in"),
        (["--manifest", data / "train.tsv", "--phones-column", "phones"], "no 'phones' column"),
        (["--manifest", data / "train.tsv", "--out", DEFAULT_MODEL_DIR], "shipped default model"),
    ]
    for extra, needle in cases:
        r = CliRunner().invoke(main, ["train", "custom", "--backbone", str(tiny_encoder_dir), "--vocab",
                                      str(data / "vocab.txt"), "--phones-column", "ph",
                                      *map(str, extra)])
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], (extra, r.stderr)


def _shipped() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(DEFAULT_MODEL_DIR.iterdir())
            if p.is_file()}


def test_export_without_out_never_touches_the_shipped_model(tmp_path):
    from phonestream.models.torch_heads import build_head
    from phonestream.train.phones import SYMBOLS

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    head = build_head({"type": "linear"}, 384, len(SYMBOLS))
    torch.save({"head": head.state_dict(), "config": {"head": {"type": "linear"}}}, run / "last.pt")
    before = _shipped()
    r = CliRunner().invoke(main, ["train", "export", "--work", str(tmp_path), "--run", "r1"])
    assert r.exit_code == 0, r.output
    assert _shipped() == before
    assert (tmp_path / "export" / "r1" / "phonestream.json").is_file()
    assert load_model(str(tmp_path / "export" / "r1")).vocab.symbols == tuple(SYMBOLS)
    assert load_model(str(tmp_path / "export" / "r1")).check_threshold is None  # none calibrated: none written


def test_export_writes_the_check_threshold_and_the_check_uses_it(tmp_path):
    """MODEL_CARD's reproduce section exports the shipped model with --check-threshold: the folder carries
    the threshold calibrated for its head, the check reads it, and an explicit one still wins."""
    from phonestream import Recognizer
    from phonestream.check import DEFAULT_THRESHOLD
    from phonestream.models.torch_heads import build_head
    from phonestream.train.phones import SYMBOLS

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    head = build_head({"type": "linear"}, 384, len(SYMBOLS))
    torch.save({"head": head.state_dict(), "config": {"head": {"type": "linear"}}}, run / "last.pt")
    base = ["train", "export", "--work", str(tmp_path), "--run", "r1", "--out", str(tmp_path / "m")]
    assert CliRunner().invoke(main, base + ["--check-threshold", "1.5"]).exit_code == 2
    r = CliRunner().invoke(main, base + ["--check-threshold", "0.123"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m" / "phonestream.json").read_text())["check"] == {"threshold": 0.123}
    rec = Recognizer(load_model(str(tmp_path / "m")))
    assert rec.check("yes").checker.threshold == 0.123 != DEFAULT_THRESHOLD
    assert rec.check("yes", threshold=0.3).checker.threshold == 0.3
    assert load_model(None).check_threshold == DEFAULT_THRESHOLD  # the shipped model carries its own


@pytest.mark.parametrize("value", ['"high"', "0", "1.2", "true", '[0.1]'])
def test_a_bad_check_threshold_in_a_model_folder_is_one_line(tmp_path, value, wav_file):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    meta = json.loads((folder / "phonestream.json").read_text())
    (folder / "phonestream.json").write_text(json.dumps({**meta, "check": {"threshold": json.loads(value)}}))
    r = CliRunner().invoke(main, ["transcribe", str(wav_file), "-m", str(folder)])
    assert r.exit_code == 2 and "the check threshold must be a number between 0 and 1" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_check_entry_that_is_not_an_object_is_one_line_and_a_bad_one_is_never_written(tmp_path, wav_file):
    import shutil

    from phonestream.models import ModelError
    from phonestream.models.backbone import save_model_folder

    folder = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    meta = json.loads((folder / "phonestream.json").read_text())
    (folder / "phonestream.json").write_text(json.dumps({**meta, "check": 0.07}))
    r = CliRunner().invoke(main, ["transcribe", str(wav_file), "-m", str(folder)])
    assert r.exit_code == 2 and '"check" must be an object' in r.output
    model = load_model(None)
    with pytest.raises(ModelError, match="between 0 and 1"):
        save_model_folder(tmp_path / "new", {}, model.head, model.vocab, model.streaming_defaults, check_threshold=2)
    assert not (tmp_path / "new").exists()  # refused before anything was written


def test_recipe_stages_pass_every_option_to_the_recipe(monkeypatch, tmp_path):
    """The recipe's stages keep their options: each reaches the recipe's own parser as given, and export
    gets WORK/export/RUN when --out is left out."""
    import phonestream.train.__main__ as recipe

    seen = []
    monkeypatch.setattr(recipe, "recipe", lambda argv: seen.append(argv) or 0)
    (tmp_path / "runs" / "r2").mkdir(parents=True)
    (tmp_path / "runs" / "r2" / "best.pt").write_bytes(b"")  # eval/export check that it exists
    args = ["--work", str(tmp_path), "--run", "r2", "--head", "conv-64-3-1", "--seed", "4", "--minutes", "2.5",
            "--epochs", "7", "--lr", "0.001", "--rounds", "2", "--copies", "3",
            "--round-copies", "1=4,2=1", "--workers", "1", "--threads", "1", "--full", "--checkpoint", "best",
            "--windows", "balanced,160-1280-160", "--init", "r2", "--teacher", str(tmp_path), "--distill", "0.5",
            "--top", "2", "--passes", "3"]
    for stage in ("data", "cache", "fit", "eval", "export", "all", "tune"):
        r = CliRunner().invoke(main, ["train", stage, *args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    parser_view = {}
    for argv in seen:
        it = iter(argv[1:])
        parser_view[argv[0]] = {a: (True if a == "--full" else next(it)) for a in it}
    for stage, got in parser_view.items():
        assert got["--head"] == "conv-64-3-1" and got["--minutes"] == "2.5" and got["--epochs"] == "7", stage
        assert got["--lr"] == "0.001" and got["--rounds"] == "2" and got["--copies"] == "3" and got["--full"]
        assert got["--round-copies"] == "1=4,2=1" and got["--windows"] == "balanced,160-1280-160", stage
        assert got["--init"] == "r2" and got["--teacher"] == str(tmp_path) and got["--distill"] == "0.5", stage
        assert got["--checkpoint"] == "best" and got["--seed"] == "4" and got["--threads"] == "1"
        assert got["--top"] == "2" and got["--passes"] == "3", stage
    assert parser_view["export"]["--out"] == str(tmp_path / "export" / "r2") == parser_view["all"]["--out"]
    assert parser_view["tune"]["--out"] == str(tmp_path / "export" / "r2")
    assert "--out" not in parser_view["fit"]


def test_readme_walkthrough_names_only_real_flags():
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Your own encoder", 1)[1].split("\n## ", 1)[0]
    shown = set(re.findall(r"(--[a-z][a-z-]+)", section))
    help_text = CliRunner().invoke(main, ["train", "custom", "--help"], terminal_width=200).output
    assert {"--backbone", "--vocab", "--manifest", "--dev", "--out", "--epochs", "--fresh"} <= shown
    assert {f for f in shown if f not in help_text} == set()


def test_python_m_phonestream_train_is_the_same_command():
    import subprocess
    import sys

    help_text = subprocess.run([sys.executable, "-m", "phonestream.train", "--help"], capture_output=True,
                               timeout=120).stdout.decode()
    assert help_text.startswith("Usage: python -m phonestream.train") and "custom" in help_text
    proc = subprocess.run([sys.executable, "-m", "phonestream.train", "fit", "--minutes", "-3"], capture_output=True,
                          timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1 and err.startswith("phonestream: error: "), err


def test_fit_init_from_a_folder_this_recipe_cannot_train_is_one_line(tmp_path):
    """``fit --init DIR`` with a model folder whose head is on another encoder (a Hugging Face one) fails
    before any stage runs, in one line, as ``cache --teacher`` does with it."""
    import json

    folder = tmp_path / "hf-head"
    folder.mkdir()
    meta = {"backbone": {"type": "hf-encoder"}, "head": {"type": "linear"}}
    (folder / "phonestream.json").write_text(json.dumps(meta))
    for args in (["fit", "--init", str(folder)], ["cache", "--teacher", str(folder)]):
        r = CliRunner().invoke(main, ["train", *args, "--work", str(tmp_path / "work")])
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and "reads hf-encoder states" in lines[0], r.stderr
        assert not (tmp_path / "work").exists()  # refused before the work folder was touched
