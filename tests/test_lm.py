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


def test_pruned_lm_drops_rare_ngrams_and_still_sums_to_one():
    sents = SENTS + [["B", "AA", "K", "S"], ["S", "T", "AA", "B"], ["K", "AE", "T", "S", "AA"]]
    full = build_kneser_ney(sents, order=4, vocab=["K", "AE", "T", "AA", "B", "S", "Z"])
    pruned = build_kneser_ney(sents, order=4, vocab=["K", "AE", "T", "AA", "B", "S", "Z"], prune=1)
    assert build_kneser_ney(sents, order=4, prune=0).table == build_kneser_ney(sents, order=4).table
    counts, kept = full.ngram_counts(), pruned.ngram_counts()
    assert kept[1] == counts[1] and kept[2] == counts[2] and kept[3] < counts[3] and kept[4] < counts[4]
    assert ("B", "AA", "K") not in pruned.table and ("K", "AE", "T") in pruned.table  # seen once; 5 times
    words = [*pruned.symbols, "</s>"]
    hists = [("K", "AE", "T"), ("B", "AA", "K"), ("S", "T", "AA"), ("<s>", "K", "AE"), ("AE", "T"), ("Z", "Z", "Z")]
    for hist in hists:
        assert sum(10 ** pruned.log10_prob(hist, w) for w in words) == pytest.approx(1.0, abs=1e-4)
    # what stays is scored as before (interpolated probabilities of kept n-grams are not changed)
    assert pruned.log10_prob(("K", "AE"), "T") == pytest.approx(full.log10_prob(("K", "AE"), "T"), abs=1e-9)


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


def _dict_lm(lm: NgramLM) -> NgramLM:
    """The same LM held as a plain dictionary (the representation before NgramTable; still used for
    inventories too large to pack)."""
    plain = NgramLM.__new__(NgramLM)
    plain.order, plain.table, plain.symbols, plain._digits = lm.order, dict(lm.table.items()), lm.symbols, {}
    return plain


def test_packed_table_scores_exactly_as_the_dictionary_did(tmp_path):
    """The n-grams live in sorted arrays (NgramTable); one history's scores for every symbol come from
    one search per back-off order (row_log_prob, what the beam search calls). Both must equal the
    word-by-word back-off over a dictionary, bit for bit, including symbols the LM does not know."""
    import numpy as np

    from phonestream.lm import NgramTable

    lm = build_kneser_ney(SENTS, order=4, vocab=["K", "AE", "T", "AA", "B", "S", "Z"])
    assert isinstance(lm.table, NgramTable)
    plain = _dict_lm(lm)
    names = (*lm.symbols, "</s>", "NOT-IN-LM")
    for hist in [(), ("<s>",), ("<s>", "K"), ("K", "AE", "T"), ("AE", "T", "S", "K", "AE"), ("Z", "Z"),
                 ("K", "NOT-IN-LM"), ("NOT-IN-LM",)]:
        row = lm.row_log_prob(hist, names)
        assert row.tolist() == [plain.log_prob(hist, w) for w in names] == [lm.log_prob(hist, w) for w in names]
    assert lm.ngram_counts() == plain.ngram_counts()
    lm.write_arpa(tmp_path / "lm.arpa")
    back = NgramLM.read_arpa(tmp_path / "lm.arpa")
    assert isinstance(back.table, NgramTable) and back.symbols == lm.symbols
    np.testing.assert_allclose(back.row_log_prob(("K", "AE"), names), lm.row_log_prob(("K", "AE"), names), atol=1e-5)


def test_arpa_with_a_symbol_missing_from_its_unigrams_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-1.0\tA\t-0.5\n-1.0\tB\n\n"
                   "\\2-grams:\n-0.3\tA C\n\n\\end\\\n")
    with pytest.raises(LMError, match="'C' of a 2-gram is not among the 1-grams"):
        NgramLM.read_arpa(bad)


def test_load_lm_keeps_the_parsed_table_in_the_cache_folder(tmp_path, monkeypatch):
    """A large ARPA file takes seconds to parse, so load_lm keeps the parsed arrays in the cache folder,
    named by the file's sha256: the next process loads those, and an edited file is parsed afresh."""
    import phonestream.lm as lm_module

    monkeypatch.setenv("PHONESTREAM_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "lm.arpa.gz"
    build_kneser_ney(SENTS, order=3).write_arpa(path)
    first = lm_module._load_cached(path)
    cached = list((tmp_path / "cache" / "lm").glob("*.npz"))
    assert len(cached) == 1
    parses, parse = [], NgramLM.read_arpa
    monkeypatch.setattr(NgramLM, "read_arpa", classmethod(lambda cls, p: parses.append(p) or parse(p)))
    again = lm_module._load_cached(path)  # from the cache: no parse
    assert not parses and again.order == 3 and list(again.table.items()) == list(first.table.items())
    build_kneser_ney(SENTS[:4], order=2).write_arpa(path)  # edited: another digest, parsed afresh
    lm_module._load_cached(path)
    assert parses == [path]
    for damaged in (tmp_path / "cache" / "lm").glob("*.npz"):  # a damaged cache file is parsed around
        damaged.write_bytes(b"PK\x03\x04 not a zip")
    assert lm_module._load_cached(path).order == 2 and parses == [path, path]
