"""Manifests: one reader for eval, check-eval, lm build and the recipe; the client's config options."""

from __future__ import annotations

import pytest

from phonestream.check_eval import read_rows as check_rows
from phonestream.client import stream_options
from phonestream.lm import excluded_sentences, read_sentences
from phonestream.manifest import ManifestError, Where, column_texts, read_manifest, read_rows

TSV = "id\twav\ttext\tphones\nu1\ta/1.wav\tHello, world\tHH AH L OW\nu2\tb.flac\t\t\nu3\tc.wav\t\"Quoted\" it's\tK W\n"


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text(TSV, encoding="utf-8")
    return path


def test_rows_resolve_audio_and_keep_every_cell(manifest):
    rows = list(read_rows(manifest))
    assert [r.id for r in rows] == ["u1", "u2", "u3"]
    assert rows[0].audio == manifest.parent / "a" / "1.wav" and rows[0].fields["text"] == "Hello, world"
    assert rows[2].fields["text"] == '"Quoted" it\'s'  # cells as written: no quoting rules
    assert list(read_rows(manifest, audio=False))[0].audio is None


def test_where_keeps_matching_rows_and_negated_ones(manifest):
    assert [r.id for r in read_rows(manifest, where=[Where.parse("id=[13]$")])] == ["u1", "u3"]
    assert [r.id for r in read_rows(manifest, where=[Where.parse("id!=[13]$")])] == ["u2"]
    assert str(Where.parse("id!=x")) == "id!=x"
    for bad, message in (("nothing", "COLUMN=REGEX"), ("=x", "COLUMN=REGEX"), ("id=[", "bad regular expression")):
        with pytest.raises(ManifestError, match=message):
            Where.parse(bad)


def test_missing_file_and_columns_are_one_line_errors(manifest, tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        list(read_rows(tmp_path / "none.tsv"))
    with pytest.raises(ManifestError, match="no 'speaker' column.*columns: id, wav, text, phones"):
        list(read_rows(manifest, ["speaker"]))
    with pytest.raises(ManifestError, match="--where: .* no 'speaker' column"):
        list(read_rows(manifest, where=[Where.parse("speaker=x")]))
    no_audio = tmp_path / "t.tsv"
    no_audio.write_text("text\nhi there\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="no 'audio' or 'wav' column"):
        list(read_rows(no_audio))
    assert column_texts([no_audio]) == ["hi there"]  # text alone needs no audio column


def test_labelled_items_skip_rows_without_phones(manifest):
    items, skipped = read_manifest(manifest)
    assert [i.id for i in items] == ["u1", "u3"] and skipped == 1 and items[0].phones == ["HH", "AH", "L", "OW"]
    assert [i.id for i in read_manifest(manifest, limit=1)[0]] == ["u1"]
    unlabelled, _ = read_manifest(manifest, None)
    assert [i.phones for i in unlabelled] == [[], [], []]
    with pytest.raises(ManifestError, match="no row of .* matches --where id=zzz"):
        read_manifest(manifest, where=Where.parse("id=zzz"))


def test_check_eval_and_lm_read_the_same_texts(manifest, tmp_path):
    assert [(r.id, r.text) for r in check_rows(manifest)] == [("u1", "Hello, world"), ("u3", '"Quoted" it\'s')]
    assert [r.id for r in check_rows(manifest, where=[Where.parse("id=3")])] == ["u3"]
    assert excluded_sentences([manifest]) == {"hello world", "quoted it's"}
    text = tmp_path / "s.txt"
    text.write_text("  one line \n\nanother\n", encoding="utf-8")
    assert read_sentences([text]) == ["one line", "another"]


def test_client_stream_options():
    assert stream_options(320, None, 160, ["partials=false", "decoder=greedy", "endpoint={\"rule2\": 1}"]) == {
        "chunk_ms": 320, "right_ms": 160, "partials": False, "decoder": "greedy", "endpoint": {"rule2": 1}}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        stream_options(items=["novalue"])
