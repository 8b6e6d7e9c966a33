"""Phoneme n-gram LMs: Kneser-Ney estimation, ARPA round trip, dictionary lookup, the build command."""

import math

import pytest
from click.testing import CliRunner

from phonestream.cli import main
from phonestream.lm import LMError, NgramLM, build_kneser_ney, find_lm_next_to, load_dictionary, sentence_phones

SENTS = [["K", "AE", "T"], ["K", "AA", "T"], ["B", "AE", "T"], ["T", "AE", "K"], ["K", "AE", "T", "S"]] * 3


def test_kneser_ney_distributions_sum_to_one():
    lm = build_kneser_ney(SENTS, order=3, vocab=["K", "AE", "T", "AA", "B", "S", "Z"])
    words = [*lm.symbols, "</s>"]
    for hist in [(), ("<s>",), ("K",), ("<s>", "K"), ("K", "AE"), ("AE", "T"), ("Z", "Z")]:
        assert sum(10 ** lm.log10_prob(hist, w) for w in words) == pytest.approx(1.0, abs=1e-4)
    assert lm.log10_prob(("K",), "Z") > -99  # an unseen symbol of the inventory still has a probability
    assert lm.sentence_log10(["K", "AE", "T"]) > lm.sentence_log10(["T", "K", "AE"])


@pytest.mark.parametrize("name", ["lm.arpa", "lm.arpa.gz"])
def test_arpa_round_trip(tmp_path, name):
    lm = build_kneser_ney(SENTS, order=3)
    lm.write_arpa(tmp_path / name)
    back = NgramLM.read_arpa(tmp_path / name)
    assert back.order == 3 and back.table.keys() == lm.table.keys()
    for gram, (p, bo) in lm.table.items():
        assert back.table[gram][0] == pytest.approx(p, abs=1e-5)
        assert (bo is None) == (back.table[gram][1] is None)
    assert find_lm_next_to(tmp_path) == tmp_path / name
    text = (tmp_path / "lm.arpa").read_text() if name == "lm.arpa" else ""
    if text:
        assert text.lstrip().startswith("\\data\\") and "ngram 3=" in text and text.rstrip().endswith("\\end\\")


def test_bad_arpa_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.arpa"
    bad.write_text("hello\n")
    with pytest.raises(LMError, match="not an ARPA"):
        NgramLM.read_arpa(bad)
    with pytest.raises(LMError, match="not found"):
        NgramLM.read_arpa(tmp_path / "missing.arpa")


def write_dict(tmp_path):
    path = tmp_path / "tiny.dict"
    path.write_text("cat K AE1 T\ncat(2) K AA1 T\ntack T AE1 K\nbat B AE1 T\n")
    return path


def test_dictionary_lookup_strips_stress_and_keeps_first_pronunciation(tmp_path):
    d = load_dictionary(str(write_dict(tmp_path)))
    assert sentence_phones("Cat, bat!", d) == ["K", "AE", "T", "B", "AE", "T"]
    assert sentence_phones("cat dog", d) is None


def test_lm_build_command_excludes_evaluation_text(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("cat bat\ntack cat\nbat tack cat\n")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("id\taudio\ttext\nu1\ta.flac\tTack cat.\n")
    out = tmp_path / "out.arpa"
    result = CliRunner().invoke(main, ["lm", "build", str(out), "--text", str(text), "--dict",
                                       str(write_dict(tmp_path)), "--order", "2", "--exclude-manifest", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "sentences 2" in result.output and "excluded 1" in result.output
    lm = NgramLM.read_arpa(out)
    assert lm.order == 2 and ("T", "K") not in lm.table  # "tack cat" only occurred in the excluded line...
    assert math.isfinite(lm.log_prob(["<s>"], "K"))


def test_default_dictionary_is_the_cmu_one():
    d = load_dictionary()
    assert d["cat"] == ["K", "AE", "T"] and len(d) > 100_000


def test_lm_text_and_the_check_split_words_by_one_rule():
    from phonestream.check import expected_words
    from phonestream.lm import sentence_phones, word_key, words

    assert words("Don\u2019t, 2 cats!") == ["Don\u2019t", "2", "cats"] and word_key("Don\u2019t") == "don't"
    d = {"don't": ["D", "OW", "N", "T"], "cats": ["K", "AE", "T", "S"]}
    assert sentence_phones("Don\u2019t cats.", d) == ["D", "OW", "N", "T", "K", "AE", "T", "S"]
    assert sentence_phones("Don't 2 cats", d) is None  # a number in digits is a missing word, not a gap
    assert [w.text for w in expected_words("Don\u2019t, cats!")] == words("Don\u2019t, cats!") == ["Don\u2019t", "cats"]
