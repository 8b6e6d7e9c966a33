"""The pronunciation check: alignment and scoring on synthetic posteriors (where what was "said" is
known exactly), on a tiny model end to end, and on the shipped model with the shipped sample."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from phonestream import check as check_module
from phonestream.check import Checker, CheckError, ExpectedWord, expected_words, phone_columns, score_word
from phonestream.events import Word
from phonestream.models.base import Vocabulary
from phonestream.streaming import FrameBlock

from .conftest import fake_sound_card

VOCAB = Vocabulary(("<blank>", "AA", "B", "K", "S", "|"), 0, frozenset({5}))
WORDS = [ExpectedWord(t, (tuple(p.split()),), "cmudict")
         for t, p in (("bob", "B AA B"), ("sock", "S AA K"), ("cob", "K AA B"), ("sob", "S AA B"))]
FRAME_S = 0.02
SAMPLE = Path(__file__).resolve().parent.parent / "phonestream" / "samples" / "LJ001-0001.flac"
TEXT = ("Printing, in the only sense with which we are at present concerned, differs from most if not from all "
        "the arts and crafts represented in the Exhibition")


def said(phones: list[str], gap: int = 3, p: float = 1 - 4e-6) -> np.ndarray:
    """Peaky CTC posteriors of a phoneme sequence: 2 frames per phoneme, ``gap`` blank frames between."""
    def row(sym: str) -> np.ndarray:
        r = np.full(len(VOCAB), np.log((1 - p) / (len(VOCAB) - 1)))
        r[VOCAB.symbols.index(sym)] = np.log(p)
        return r

    rows = [row("<blank>")] * gap
    for ph in phones:
        rows += [row(ph)] * 2 + [row("<blank>")] * gap
    return np.array(rows, np.float32)


def check(log_probs: np.ndarray, block: int = 10, words=WORDS, **options) -> tuple[Checker, list[Word]]:
    """Feed posteriors block by block (received = the block's end), as a stream would."""
    c = Checker(words, VOCAB, FRAME_S, 16000, **options)
    out: list[Word] = []
    for i in range(0, len(log_probs), block):
        part = log_probs[i:i + block]
        out += c.advance(FrameBlock(i, part, part[:0], (i + len(part)) * 320, i + block >= len(log_probs)))
    return c, out


def verdicts(words: list[Word]) -> list[str]:
    return [w.verdict for w in sorted(words, key=lambda w: w.index)]


def test_correct_reading_is_all_ok_each_word_once_in_order():
    c, out = check(said("B AA B S AA K K AA B S AA B".split()))
    assert [w.index for w in out] == [0, 1, 2, 3]
    assert verdicts(out) == ["ok"] * 4
    assert all(w.heard == w.expected for w in out)
    assert c.summary()["ok_share"] == 1.0


def test_verdicts_arrive_while_streaming_soon_after_the_word():
    lp = said("B AA B S AA K K AA B S AA B".split(), gap=6)
    _, out = check(lp, block=5)
    for w in out[:-1]:  # all but the last word get their verdict before the end of the stream
        assert w.committed_at < len(lp) * FRAME_S
        # one block of 5 frames plus the commit margin (3 frames) and one frame
        assert w.committed_at - w.end <= (5 + 3 + 1) * FRAME_S + 1e-9


def test_block_size_does_not_change_the_verdicts():
    lp = said("B AA B S B K K AA B S AA B".split())
    results = [verdicts(check(lp, block=b)[1]) for b in (1, 4, 10, len(lp))]
    assert all(r == results[0] for r in results)


def test_substituted_phoneme_is_flagged_with_what_was_heard():
    c, out = check(said("B AA B S B K K AA B S AA B".split()))  # "sock" said "s b k"
    assert verdicts(out) == ["ok", "mispronounced", "ok", "ok"]
    sock = out[1]
    assert sock.heard == ["S", "B", "K"] and sock.score < c.threshold
    assert [p["heard"] for p in sock.phonemes] == ["S", "B", "K"]
    assert sock.score <= sock.phonemes[1]["score"] < 0.5 < sock.phonemes[0]["score"]


def test_skipped_word_is_missing_and_the_rest_aligns():
    _, out = check(said("B AA B K AA B S AA B".split()))
    assert verdicts(out) == ["ok", "missing", "ok", "ok"]
    assert out[1].start is None and out[1].score is None


def test_inserted_and_repeated_words_are_absorbed_and_reported():
    # "bob [k k s aa] sock sock cob sob": an inserted stretch, then "sock" said twice
    _, out = check(said("B AA B K K S AA S AA K S AA K K AA B S AA B".split()))
    assert verdicts(out) == ["ok"] * 4
    assert sum(len(w.inserted) for w in out) >= 4


def test_stopping_early_leaves_the_rest_missing():
    _, out = check(said("B AA B S AA K".split()))
    assert verdicts(out) == ["ok", "ok", "missing", "missing"]


def test_silence_gives_all_missing():
    _, out = check(said([], gap=40))
    assert verdicts(out) == ["missing"] * 4


def test_score_word_prefers_the_variant_said():
    lp = said("S AA K".split())
    cols = {s: i for i, s in enumerate(["", "AA", "B", "K", "S"])}
    E = np.concatenate([np.logaddexp(lp[:, :1], lp[:, 5:6]), lp[:, 1:5]], axis=1)
    ws = score_word(E, [[cols["S"], cols["AA"], cols["B"]], [cols["S"], cols["AA"], cols["K"]]], [1, 2, 3, 4])
    assert ws.variant == 1 and ws.score > 0.5


def word_frames(phones: str, p: float = 0.9) -> np.ndarray:
    """Posteriors of ``phones`` as score_word sees them: column 0 blank (with the word separator), 1.. phonemes."""
    lp = said(phones.split(), p=p)
    return np.concatenate([np.logaddexp(lp[:, :1], lp[:, 5:6]), lp[:, 1:5]], axis=1)


def test_word_score_counts_every_phoneme_that_is_off():
    cols = {s: i for i, s in enumerate(["", "AA", "B", "K", "S"])}
    sock = [[cols["S"], cols["AA"], cols["K"]]]
    one, two = word_frames("S AA B"), word_frames("B AA B")  # one phoneme of "sock" off, then two
    for E in (one, two):
        plain = score_word(E, sock, [1, 2, 3, 4], rest_weight=0.0)
        assert plain.score == pytest.approx(min(plain.phone_scores))
    weighted_one, weighted_two = (score_word(E, sock, [1, 2, 3, 4], rest_weight=0.25) for E in (one, two))
    # one phoneme off: the other phonemes are fine, so the word scores its lowest phoneme
    assert weighted_one.score == pytest.approx(min(weighted_one.phone_scores), abs=0.02)
    # two off: lower than the lowest phoneme alone
    assert weighted_two.score < min(weighted_two.phone_scores) - 0.01


def test_a_word_several_edits_away_is_not_scored_as_a_near_tie():
    # "K B" said where "AA K" is expected (as "eight", EY T, said for "two", T UW): every one-edit
    # alternative of AA K explains these frames poorly too, so only the frames' own reading shows how far off
    cols = {s: i for i, s in enumerate(["", "AA", "B", "K", "S"])}
    E = word_frames("K B", p=0.99)
    plain = score_word(E, [[cols["AA"], cols["K"]]], [1, 2, 3, 4], free_reading=False)
    free = score_word(E, [[cols["AA"], cols["K"]]], [1, 2, 3, 4])
    assert plain.score > check_module.DEFAULT_THRESHOLD > free.score
    # one edit away: that reading is among the one-edit alternatives already, so nothing changes
    sock = [[cols["S"], cols["AA"], cols["K"]]]
    E1 = word_frames("S AA B")
    assert score_word(E1, sock, [1, 2, 3, 4]).score == score_word(E1, sock, [1, 2, 3, 4], free_reading=False).score


def test_a_phoneme_just_before_a_word_counts_against_it_only_after_a_pause():
    words = WORDS[1:3]  # sock cob

    def scores(lp: np.ndarray) -> tuple[list[float], list[float]]:
        return ([w.score for w in check(lp, words=words)[1]],
                [w.score for w in check(lp, words=words, include_inserted=False)[1]])

    # "K" before the first word: scored with "sock" (as EY before T for "two" said "eight")
    with_k, without = scores(said("K S AA K K AA B".split(), p=0.9))
    assert with_k[0] < without[0]
    # "B" right after "sock": as likely the tail of "sock" as a start of "cob", so not held against "cob"
    with_b, without = scores(said("S AA K B K AA B".split(), p=0.9))
    assert with_b == without
    # the same "B" after a 300 ms pause is scored with "cob"
    pause = said([], gap=15, p=0.9)
    with_b, without = scores(np.concatenate([said("S AA K".split(), p=0.9), pause, said("B K AA B".split(), p=0.9)]))
    assert with_b[1] < without[1] and with_b[0] == without[0]


def test_a_word_does_not_stretch_over_an_inserted_neighbour():
    # "bob [bak] sock cob sob" on soft posteriors: the inserted "b aa k" must not be taken into "sock"'s
    # stretch at the cost of "cob" (a word's blank states pay for frames heard as a phoneme)
    lp = said("B AA B B AA K S AA K K AA B S AA B".split(), p=0.9)
    (_, words_on), (_, words_off) = (check(lp, blank_heard_penalty=pen) for pen in (-2.0, 0.0))
    assert words_on[2].heard == ["K", "AA", "B"] and words_on[2].score > 0.5
    assert words_off[2].heard != ["K", "AA", "B"]  # without the penalty it is dragged down
    assert all(w.score >= v.score - 1e-4 for w, v in zip(words_on, words_off))  # and no word is lower


def test_expected_words_every_variant_and_espeak_for_unknown_words():
    words = expected_words("I read it, Zyxandra!")
    assert [w.text for w in words] == ["I", "read", "it", "Zyxandra"]
    assert {("R", "EH", "D"), ("R", "IY", "D")} <= set(words[1].variants)
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    assert words[3].source == "espeak-ng" and len(words[3].variants[0]) >= 5


@pytest.mark.parametrize("text, message", [("", "empty"), ("   ", "empty"), ("#### !!! ...", "no words"),
                                           ("qzxvw bfrrk", "none of the words")])
def test_bad_text_is_a_clear_error(text, message):
    with pytest.raises(CheckError, match=message):
        expected_words(text)


def test_model_without_a_phoneme_is_a_clear_error():
    with pytest.raises(CheckError, match="no output for phoneme"):
        Checker(expected_words("the"), VOCAB, FRAME_S, 16000)
    assert set(phone_columns(VOCAB)) == {"AA", "B", "K", "S", "AO"}  # AO folds onto AA


def test_tiny_model_end_to_end(tiny_model, speechlike):
    from phonestream import Recognizer

    rec = Recognizer(tiny_model, decoder="greedy")
    stream = rec.check("bob sock")
    events = []
    for i in range(0, len(speechlike), 1600):
        events += stream.accept(speechlike[i:i + 1600])
    events += stream.finish()
    words = [e for e in events if isinstance(e, Word)]
    assert [w.index for w in words] == [0, 1]
    assert all(w.verdict in ("ok", "mispronounced", "missing") for w in words)
    summary = events[-1].to_dict()
    assert summary["type"] == "summary" and summary["check"]["words"] == 2
    json.dumps([e.to_dict() for e in events])


@pytest.fixture(scope="module")
def shipped():
    from phonestream import Recognizer, load_audio, load_model

    if not SAMPLE.exists():
        pytest.skip("sample recording missing")
    return Recognizer(load_model()), load_audio(SAMPLE, 16000)


def run_check(shipped, text: str) -> list[Word]:
    rec, audio = shipped
    stream = rec.check(text)
    events = []
    for i in range(0, len(audio), 320):
        events += stream.accept(audio[i:i + 320])
    events += stream.finish()
    return [e for e in events if isinstance(e, Word)]


def test_shipped_model_own_text_all_words_ok(shipped):
    words = run_check(shipped, TEXT)
    assert len(words) == 27
    assert [w.word for w in words if w.verdict != "ok"] == []


@pytest.mark.parametrize("old, new", [("crafts", "bananas"), ("present", "pleasant"), ("arts", "parts")])
def test_shipped_model_changed_word_is_flagged(shipped, old, new):
    text = TEXT.replace(f" {old} ", f" {new} ")
    words = run_check(shipped, text)
    changed = next(w for w in words if w.word == new)
    assert changed.verdict != "ok"
    others = [w for w in words if w.word != new]
    assert sum(w.verdict != "ok" for w in others) <= 1


def test_cli_check_json_and_bad_input(tmp_path):
    cmd = [sys.executable, "-m", "phonestream", "check", str(SAMPLE)]
    r = subprocess.run(cmd + ["--text", TEXT.replace(" crafts ", " bananas "), "--json"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    words = [e for e in events if e["type"] == "word"]
    assert next(w for w in words if w["word"] == "bananas")["verdict"] != "ok"
    assert events[-1]["type"] == "summary" and events[-1]["check"]["words"] == 27
    for args, message in ((["--text", ""], "empty"), (["--text", "!!! ???"], "no words"),
                          (["--text", "qzxvw"], "none of the words"), ([], "either --text or --text-file")):
        r = subprocess.run(cmd + args, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_word_view_colours_verdicts_and_highlights_the_current_word():
    from phonestream.wordview import STYLES, WordView

    view = WordView(WORDS, json_lines=True)
    _, out = check(said("B AA B S B K".split()), words=WORDS)
    for w in out[:2]:
        view.verdicts[w.index] = w
    text = view.render()
    styles = {text.plain[s.start:s.end]: str(s.style) for s in text.spans}
    assert styles["bob"] == STYLES["ok"] and styles["sock"] == STYLES["mispronounced"]
    assert styles["cob"] == "reverse" and "sob" not in styles  # current word highlighted, the rest plain
    assert "[S B K]" in text.plain
    assert "missing" in view.line(out[3]) and "/K AA B/" in view.line(out[2])


def test_mic_text_checks_a_fake_sound_card(monkeypatch, capsys):
    """``phonestream mic --text``: a fake 16 kHz card plays LJ001-0002 ("in being comparatively modern")
    then Ctrl-C; one word event per expected word, the summary's check entry; a bad text fails first."""
    from phonestream.audio import load_audio
    from phonestream.cli import main

    card = load_audio(SAMPLE.parent / "LJ001-0002.flac", 16000)

    fake_sound_card(monkeypatch, card, 16000)
    with pytest.raises(SystemExit) as exit_info:
        main(["mic", "--json", "--text", "In being comparatively modern."])
    assert exit_info.value.code in (0, None)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    words = [e for e in events if e["type"] == "word"]
    assert [w["word"] for w in words] == ["In", "being", "comparatively", "modern"]
    assert events[-1]["check"]["words"] == 4 and events[-1]["check"]["ok"] >= 3
    with pytest.raises(SystemExit) as exit_info:
        main(["mic", "--text", "   "])
    assert exit_info.value.code == 2 and "empty" in capsys.readouterr().err


def test_long_silence_before_reading_keeps_memory_bounded():
    c = Checker(WORDS, VOCAB, FRAME_S, 16000)
    silence = said([], gap=100)
    for i in range(40):  # 80 s of silence, then the text
        c.advance(FrameBlock(i * 100, silence, silence[:0], (i + 1) * 100 * 320, False))
        assert len(c._E) <= 1600
    lp = said("B AA B S AA K K AA B S AA B".split())
    out = c.advance(FrameBlock(4000, lp, lp[:0], (4000 + len(lp)) * 320, True))
    assert verdicts(out) == ["ok"] * 4 and out[0].start > 80


def test_server_expected_gives_the_same_word_events(shipped):
    """The server's config key ``expected``: the same word events as ``Recognizer.check`` locally; a bad
    text is one error line naming the key."""
    import asyncio

    from phonestream import client as net
    from phonestream.server import App, ServerSettings
    from tests.test_server import _bad_exchange, running_server

    rec, audio = shipped
    text = TEXT.replace(" crafts ", " bananas ")
    local = [(w.index, w.verdict, w.heard, None if w.score is None else round(w.score, 4))
             for w in run_check(shipped, text)]
    with running_server(App(rec, ServerSettings())) as url:
        result = asyncio.run(net.stream_audio(url, lambda rate: net.pieces(audio, 320),
                                              options={"expected": text}))
        words = [e for e in result.events if e["type"] == "word"]
        assert [(w["index"], w["verdict"], w["heard"], w["score"]) for w in words] == local
        assert result.summary["check"]["words"] == 27
        error, code = asyncio.run(_bad_exchange(url, [json.dumps({"type": "config", "expected": "!!! ???"})]))
        assert code == 1008 and error["message"].startswith("bad config: expected: ")


def test_web_page_checks_the_expected_sentence(tmp_path, tiny_model):
    """The page's text box: its sentence goes out as the config's ``expected``; each word is coloured by
    its verdict when the server's word events arrive (chromium, microphone fed from the sample)."""
    import soundfile as sf
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from phonestream import Recognizer
    from phonestream.audio import load_audio
    from phonestream.server import App, ServerSettings
    from phonestream.streaming import StreamConfig
    from tests.test_browser import _browser
    from tests.test_server import running_server

    wav = tmp_path / "speech.wav"
    sf.write(wav, load_audio(SAMPLE, 16000)[: 4 * 16000], 16000, subtype="PCM_16")
    app = App(Recognizer(tiny_model, StreamConfig(320, 640, 160), decoder="greedy"), ServerSettings())
    with running_server(app) as url:
        driver = _browser(tmp_path, wav)
        try:
            driver.get(url.replace("ws://", "http://").replace("/ws", "/"))
            driver.find_element(By.ID, "expected").send_keys("Bob, sock cob!")
            driver.find_element(By.ID, "toggle").click()
            wait = WebDriverWait(driver, 60)
            wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(("streaming", "error")))
            assert not driver.find_element(By.ID, "status").text.startswith("error")
            spans = driver.find_elements(By.CSS_SELECTOR, "#words .word")
            assert len(spans) == 3 and [s.text.split()[0] for s in spans] == ["Bob", "sock", "cob"]
            driver.find_element(By.ID, "toggle").click()  # stop: the tail's verdicts, then the summary
            wait.until(lambda d: d.find_element(By.ID, "summary").text.strip() != "")
            classes = [s.get_attribute("class").split() for s in driver.find_elements(By.CSS_SELECTOR, "#words .word")]
            assert all(len(set(c) & {"ok", "mispronounced", "missing"}) == 1 for c in classes), classes
            assert "words ok:" in driver.find_element(By.ID, "summary").text
        finally:
            driver.quit()
