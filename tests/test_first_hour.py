"""What a new user hits in the first hour: pipes, help texts, mistyped paths, checkpoints saved by current
transformers, the phoneme key (issue 13)."""

from __future__ import annotations

import subprocess
import sys

import soundfile as sf

from .conftest import SAMPLES


def phonestream(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phonestream", *map(str, args)], capture_output=True, timeout=300,
                          **kwargs)


def test_stream_into_a_closed_pipe_ends_quietly(tiny_model_dir):
    audio = sf.read(SAMPLES / "LJ001-0001.flac", dtype="int16")[0]
    proc = subprocess.Popen([sys.executable, "-m", "phonestream", "stream", "-", "--rate", "22050", "-m",
                             str(tiny_model_dir), "--chunk-ms", "320", "--left-ms", "320", "--right-ms", "160"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(audio[: 22050 * 3].tobytes())
    proc.stdin.flush()
    lines = [proc.stdout.readline() for _ in range(3)]  # like `| head -3`
    proc.stdout.close()
    try:
        proc.stdin.write(audio[22050 * 3 :].tobytes())  # more phonemes: written into the closed pipe
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it stopped reading once its output was gone
    assert proc.wait(timeout=120) == 0
    assert lines[0].split()[:3] == [b"start_s", b"end_s", b"phoneme"]
    assert proc.stderr.read().decode().strip() == ""


def _save_with_processor(folder, tmp_path, rate: int, normalize: bool, how: str):
    """A tiny wav2vec2 CTC checkpoint whose feature extractor is saved ``how``: by the processor
    (``processor_config.json``, current transformers) or by the feature extractor alone
    (``preprocessor_config.json``)."""
    import json

    from .conftest import VOCAB, hf, tiny_config

    hf()  # skips without the [hf] extra
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

    Wav2Vec2ForCTC(tiny_config()).save_pretrained(folder)
    vocab = tmp_path / f"vocab-{how}.json"
    vocab.write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=rate, do_normalize=normalize)
    if how == "processor":
        tokenizer = Wav2Vec2CTCTokenizer(str(vocab), pad_token="<pad>", unk_token="<pad>")
        Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    else:
        extractor.save_pretrained(folder)
        (folder / "vocab.json").write_text(vocab.read_text())
    return folder


def test_feature_extractor_settings_are_read_both_ways(tmp_path):
    import numpy as np

    from phonestream.models import load_model

    from .conftest import hf

    torch, _ = hf()

    for how, written in (("processor", "processor_config.json"), ("extractor", "preprocessor_config.json")):
        folder = _save_with_processor(tmp_path / how, tmp_path, 8000, False, how)
        other = ({"processor_config.json", "preprocessor_config.json"} - {written}).pop()
        assert (folder / written).is_file() and not (folder / other).exists()
        model = load_model(str(folder))
        assert (model.sample_rate, model.do_normalize) == (8000, False), how
        window = np.random.default_rng(0).normal(0.3, 0.2, 8000).astype(np.float32)  # not zero-mean
        with torch.inference_mode():
            expected = torch.log_softmax(model.model(torch.from_numpy(window)[None]).logits, -1)[0].numpy()
        np.testing.assert_allclose(model.log_probs_batch([window])[0], expected, atol=1e-5)  # not normalised
        encoder = load_model(backbone=str(folder), vocab=_phones(tmp_path))
        assert encoder.sample_rate == 8000, how
    # the other way round: normalised at 16 kHz, as the extractor says
    folder = _save_with_processor(tmp_path / "norm", tmp_path, 16000, True, "processor")
    model = load_model(str(folder))
    assert (model.sample_rate, model.do_normalize) == (16000, True)


def test_stream_runs_at_the_checkpoints_rate(tmp_path, wav_file):
    import json

    folder = _save_with_processor(tmp_path / "m8k", tmp_path, 8000, False, "processor")
    proc = phonestream("transcribe", wav_file, "-m", folder, "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    summary = json.loads(proc.stdout.decode().splitlines()[-1])
    assert summary["audio_s"] == 3.0 and "ForCTC" in summary["model"]


def test_unreadable_feature_extractor_is_one_line(tmp_path):
    folder = _save_with_processor(tmp_path / "bad", tmp_path, 8000, False, "extractor")
    (folder / "preprocessor_config.json").write_text("{not json")
    proc = phonestream("transcribe", SAMPLES / "LJ001-0002.flac", "-m", folder)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and "feature extractor" in err, err


def _phones(tmp_path):
    path = tmp_path / "phones.txt"
    path.write_text("AA\nB\nK\n")
    return path


def test_mistyped_local_paths_are_not_sent_to_the_hub(tmp_path, monkeypatch):
    import pytest

    from phonestream.models import ModelError, load_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "models").mkdir()
    for name in ("./nope", "../nope", "/no/such/model", "~/no-such-model-here", "a/b/c", "models/typo",
                 "models\\typo", "my model/"):
        with pytest.raises(ModelError, match=r"^no such model folder: "):
            load_model(name)
    # shaped like a hub id and not a folder here: says it tried the hub and how to give a folder (without the
    # [hf] extra, that the hub needs it)
    from phonestream.models.base import has_torch

    hub = r"looked up on the Hugging Face hub.*give its path, e\.g\. \./someone/m" if has_torch() else r"pip install"
    with pytest.raises(ModelError, match=hub):
        load_model("someone/m")


def test_tilde_folder_is_found(tmp_path, monkeypatch, tiny_model_dir):
    from phonestream.models import load_model

    (tmp_path / "mymodel").symlink_to(tiny_model_dir)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_model("~/mymodel").sample_rate == 16000


def test_mistyped_path_on_the_command_line(tmp_path):
    (tmp_path / "models").mkdir()
    proc = phonestream("transcribe", SAMPLES / "LJ001-0002.flac", "-m", "models/nonexistent", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.decode() == "phonestream: error: no such model folder: " \
        "models/nonexistent\n"


def _fake_sounddevice(monkeypatch, devices: bool):
    import types

    import numpy as np

    class FakeInputStream:  # a card that is unplugged (Ctrl-C) before it delivers anything
        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, frames):
            raise KeyboardInterrupt

    def query_devices(device, kind):
        if not devices:
            raise ValueError("No input device matching None")
        return {"default_samplerate": 16000.0}

    fake = types.SimpleNamespace(PortAudioError=OSError, InputStream=FakeInputStream, query_devices=query_devices)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    return np


def test_mic_checks_for_a_sound_device_before_loading_the_model(monkeypatch, capsys):
    import pytest

    from phonestream.cli import main

    _fake_sounddevice(monkeypatch, devices=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["mic", "-m", "/no/such/model/folder"])  # the model would fail too, but the device is checked first
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "phonestream: error: no microphone found: No input device matching None\n"


def test_mic_json_prints_no_empty_partial(monkeypatch, capsys, tiny_model_dir):
    import json

    import pytest

    from phonestream.cli import main

    _fake_sounddevice(monkeypatch, devices=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["mic", "-m", str(tiny_model_dir), "--json"])
    assert exit_info.value.code in (0, None)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["type"] for e in events] == ["summary"], events


def test_small_things(tmp_path, tiny_model_dir, tiny_encoder_dir):
    import io
    import os
    import stat

    import pytest

    from phonestream.audio import AudioError, decode_audio
    from phonestream.models import load_model
    from phonestream.models.hf import count_text

    assert load_model(str(tiny_model_dir)).description.endswith("k parameters)")
    assert [count_text(n) for n in (812, 57_300, 94_400_000, 999_999)] == ["812", "57.3k", "94.4M", "1.0M"]
    # a saved head is readable by others, like any file the user writes (umask 022 here)
    old = os.umask(0o022)
    try:
        phones = tmp_path / "phones.txt"
        phones.write_text("AA\nB\n")
        load_model(backbone=str(tiny_encoder_dir), vocab=phones).save(tmp_path / "saved")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "saved" / "head.safetensors").stat().st_mode) == 0o644
    # an unreadable upload names itself, not a Python object
    with pytest.raises(AudioError) as err:
        decode_audio(io.BytesIO(b"not audio" * 50), 16000, name="upload")
    assert "<_io" not in str(err.value) and "upload" in str(err.value)


def test_loadtest_without_a_server_is_one_clear_line():
    proc = phonestream("loadtest", "--url", "ws://127.0.0.1:9/ws", "--streams", "1", "--seconds", "1")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1 and "no phonestream server answers" in err, err
    assert "urlopen" not in err


def test_transcribe_help_lists_only_what_applies():
    shown = phonestream("transcribe", "--help").stdout.decode()
    assert "--decoder" in shown and "--model" in shown
    for flag in ("--chunk-ms", "--left-ms", "--right-ms", "--endpoint", "--silence-db", "--max-utterance"):
        assert flag not in shown, flag
    assert "--chunk-ms" in phonestream("stream", "--help").stdout.decode()


def test_phonemes_key_lists_every_symbol_with_ipa_and_an_example():
    import json

    from phonestream.phones import ARPABET, ARPABET_TO_IPA

    key = json.loads(phonestream("phonemes", "--json").stdout.decode())
    assert [k["arpabet"] for k in key] == ARPABET
    for k in key:
        assert k["ipa"] == ARPABET_TO_IPA[k["arpabet"]] and k["arpabet"] in k["example_arpabet"].split()
        assert k["ipa"] in k["example_ipa"].split() and k["example"].isalpha()
    table = phonestream("phonemes").stdout.decode()
    assert "seizure" in table and "ʒ" in table
    assert "phonestream phonemes" in phonestream("--help").stdout.decode()


def test_ipa_converts_the_summary_strings(tiny_model_dir):
    import json

    ipa = {"ɑ", "b", "k", "s"}  # the tiny model's AA B K S
    for args in (["stream", SAMPLES / "LJ001-0002.flac", "--chunk-ms", "320", "--left-ms", "320", "--right-ms",
                  "160"], ["transcribe", SAMPLES / "LJ001-0002.flac"]):
        proc = phonestream(*args, "-m", tiny_model_dir, "--ipa", "--json")
        summary = json.loads(proc.stdout.decode().splitlines()[-1])
        keys = [k for k in ("phoneme_string", "offline_string") if k in summary]
        assert keys and all(summary[k] and set(summary[k].split()) <= ipa for k in keys), summary


def test_readme_first_screen_explains_the_first_command():
    """The README's first screen shows what the first command prints and decodes it for someone who has
    never seen ARPAbet; what it shows must be what the command prints (up to a phoneme or two, should
    the model be retrained) and the test command must be the one .ci/run runs."""
    import json
    import re
    from pathlib import Path

    from rapidfuzz.distance import Levenshtein

    from phonestream.phones import ARPABET, to_ipa

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    first_screen = "\n".join(readme.splitlines()[:45])
    commands = re.findall(r"```sh\n(.*?)\n```", first_screen)
    assert commands[0].endswith("phonestream stream phonestream/samples/LJ001-0001.flac")
    assert commands[1] == (root / ".ci" / "run").read_text().strip().splitlines()[-1]
    shown = re.search(r"```\n +\d+\.\d+ ([A-Z ]+)\n +printing +in +the", first_screen).group(1).split()
    assert set(shown) <= set(ARPABET)
    for word in ("ARPAbet", "phonestream phonemes", "--ipa", "confidence", "provisional"):
        assert word in first_screen, word
    ipa = re.search(r"`--ipa` prints IPA instead \(`([^`]+)`\)", first_screen).group(1)
    assert ipa == " ".join(to_ipa(p) for p in shown[:7])
    out = phonestream("stream", root / "phonestream/samples/LJ001-0001.flac", "--json").stdout.decode()
    printed = [e["phoneme"] for e in map(json.loads, out.splitlines()) if e["type"] == "phoneme"]
    assert Levenshtein.distance(shown, printed[: len(shown)]) <= 2, (shown, printed[: len(shown)])
