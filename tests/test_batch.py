"""phonestream batch: folder and manifest input, resume, error rows, workers, and the same events as streaming."""

from __future__ import annotations

import json
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from phonestream.audio import load_audio, pieces
from phonestream.batch import (
    BatchError,
    BatchItem,
    JobOptions,
    RecognizerSpec,
    _rows,
    done_paths,
    list_inputs,
    transcribe_file,
    transcribe_many,
)
from phonestream.cli import main

from .conftest import SAMPLES

GREEDY = RecognizerSpec(recognizer_options={"decoder": "greedy"})
# Fields of a summary that are measured times, not results
TIMED = {"compute_s", "rtf", "chunk_compute_ms", "emission_delay_wall_s", "offline_rtf"}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """A folder of real speech: three good files (one stereo, one in a subfolder), a corrupt one, an
    empty one, and a text file that is not audio."""
    root = tmp_path_factory.mktemp("recordings")
    audio = load_audio(SAMPLES / "LJ001-0001.flac", 16000)
    (root / "sub").mkdir()
    sf.write(root / "a.wav", audio[: 2 * 16000], 16000)
    sf.write(root / "sub" / "b.flac", audio[2 * 16000: 4 * 16000], 16000)
    sf.write(root / "stereo.wav", np.stack([audio[:24000], audio[8000:32000]], axis=1), 22050)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt this is not a wave file")
    (root / "empty.flac").write_bytes(b"")
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def recognizer():
    return GREEDY.build()


def local_row(recognizer, path: Path) -> dict:
    """What streaming the file in this process gives: the events of `phonestream stream FILE --json`."""
    sr = recognizer.model.sample_rate
    stream = recognizer.stream()
    events = []
    for piece in pieces(load_audio(path, sr), sr * 20 // 1000):
        events += stream.accept(piece)
    events += stream.finish()
    return {"summary": events[-1].to_dict(), "events": [e.to_dict() for e in events[:-1]]}


def untimed(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMED}


def read_rows(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({r["path"] for r in rows}) == len(rows), "a file was written twice"
    return {Path(r["path"]).name: r for r in rows}


def test_folder_input_is_searched_recursively_for_audio(recordings):
    items = list_inputs(recordings)
    assert [i.id for i in items] == ["a.wav", "corrupt.wav", "empty.flac", "stereo.wav", "sub/b.flac"]
    assert items[-1].path == recordings / "sub" / "b.flac"
    assert [i.id for i in list_inputs(recordings, limit=2)] == ["a.wav", "corrupt.wav"]


def test_manifest_input_reads_evals_format_without_phones(recordings, tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"id\taudio\tspeaker\nfirst\t{recordings}/a.wav\tx\nsecond\t{recordings}/sub/b.flac\ty\n")
    items = list_inputs(manifest)
    assert items == [BatchItem("first", recordings / "a.wav"), BatchItem("second", recordings / "sub" / "b.flac")]
    from phonestream.manifest import Where

    assert [i.id for i in list_inputs(manifest, [Where.parse("speaker=y")])] == ["second"]
    with pytest.raises(BatchError, match="no rows in .* match --where speaker=z"):
        list_inputs(manifest, [Where.parse("speaker=z")])


@pytest.mark.parametrize("bad, message", [("missing", "input not found"), ("empty_dir", "no audio files"),
                                          ("no_audio_column", "no 'audio' or 'wav' column")])
def test_bad_input_is_one_clear_error(tmp_path, bad, message):
    path = tmp_path / bad
    if bad == "empty_dir":
        path.mkdir()
    elif bad == "no_audio_column":
        path.write_text("id\tfile\nx\ty.wav\n")
    with pytest.raises(BatchError, match=message):
        list_inputs(path)


def test_streamed_rows_equal_the_local_stream_and_bad_files_are_error_rows(recordings, recognizer, tmp_path):
    out = tmp_path / "out.jsonl"
    report = transcribe_many(list_inputs(recordings), out, GREEDY, JobOptions(events=True), workers=1)
    assert (report.total, report.done, report.errors, report.skipped, report.workers) == (5, 5, 2, 0, 1)
    rows = read_rows(out)
    assert rows["corrupt.wav"]["error"].startswith(f"cannot decode audio file {recordings / 'corrupt.wav'}")
    assert rows["empty.flac"]["error"] == f"audio file is empty: {recordings / 'empty.flac'}"
    for name in ("a.wav", "b.flac", "stereo.wav"):
        path = Path(rows[name]["path"])
        local = local_row(recognizer, path)
        assert rows[name]["events"] == local["events"]
        assert untimed(rows[name]["summary"]) == untimed(local["summary"])
        assert any(e["type"] == "phoneme" for e in rows[name]["events"])
    assert report.audio_s == pytest.approx(2 + 2 + 24000 / 22050, abs=0.01)


def test_two_workers_equal_one_and_offline_equals_transcribe(recordings, recognizer, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    items = [i for i in list_inputs(recordings) if i.id != "empty.flac"]
    transcribe_many(items, one, GREEDY, JobOptions(offline=True, events=True), workers=1)
    report = transcribe_many(items, two, GREEDY, JobOptions(offline=True, events=True), workers=2)
    assert report.workers == 2 and report.done == 4
    a, b = read_rows(one), read_rows(two)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].get("events") == b[name].get("events")
        assert a[name].get("error") == b[name].get("error")
        if "summary" in a[name]:
            assert untimed(a[name]["summary"]) == untimed(b[name]["summary"])
            assert a[name]["summary"]["mode"] == "offline"
    offline = recognizer.transcribe(load_audio(recordings / "a.wav", 16000))
    assert a["a.wav"]["events"] == [p.to_dict() for p in offline]


def test_resume_skips_done_files_and_drops_a_cut_off_last_line(recordings, tmp_path):
    out = tmp_path / "out.jsonl"
    items = list_inputs(recordings)
    first = transcribe_file(GREEDY.build(), items[0])
    kept = json.dumps(first) + "\n"
    out.write_text(kept + '{"id":"corrupt.wav","path":"' + str(items[1].path) + '","err')  # a killed run
    assert done_paths(out) == {str(items[0].path)}
    assert out.read_text() == kept  # the cut-off line is gone
    report = transcribe_many(items, out, GREEDY, workers=1)
    assert (report.skipped, report.done) == (1, 4)
    lines = out.read_text().splitlines()
    assert lines[0] == kept.strip() and len(lines) == 5
    assert set(read_rows(out)) == {"a.wav", "corrupt.wav", "empty.flac", "stereo.wav", "b.flac"}
    assert transcribe_many(items, out, GREEDY, workers=1).done == 0  # all there: nothing to do


def test_an_output_that_is_not_ours_is_refused(tmp_path):
    out = tmp_path / "notes.jsonl"
    out.write_text("hello\n")
    with pytest.raises(BatchError, match="line 1 .* is not a batch result"):
        done_paths(out)


def test_a_model_that_does_not_load_stops_before_any_file(recordings, tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(BatchError, match="the model did not load: no such model folder"):
        transcribe_many(list_inputs(recordings), out, RecognizerSpec("./no/such/model"), workers=1)
    assert not out.exists() or out.read_text() == ""


class FakePool:
    """Calls decided by the test: ``killer`` breaks the whole pool (every running call fails, as with a
    process pool); ``slow`` finishes only when run alone after a restart; the others at once."""

    died = (BrokenProcessPool,)
    breaks_all = True
    workers = 2

    def __init__(self) -> None:
        self.restarts, self.running = 0, []

    def submit(self, item, options):
        future: Future = Future()
        self.running = [(f, i) for f, i in self.running if not f.done()] + [(future, item)]
        if item.id == "killer":
            for f, _ in self.running:
                f.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        elif item.id != "slow" or (self.restarts and len(self.running) == 1):
            future.set_result({"id": item.id, "path": str(item.path), "summary": {}})
        return future

    def restart(self) -> None:
        self.restarts += 1


def test_a_worker_that_dies_costs_only_its_file_an_error_row():
    items = [BatchItem(name, Path(name)) for name in ("ok1", "slow", "killer", "ok2")]
    pool = FakePool()
    rows = list(_rows(pool, items, JobOptions()))
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == ["killer", "ok1", "ok2", "slow"] and len(rows) == 4
    assert by_id["killer"]["error"] == "the worker process died on this file"
    assert all("error" not in by_id[k] for k in ("ok1", "ok2", "slow"))
    assert pool.restarts == 2  # the first death (killer and slow suspects), then killer alone


def test_cli_batch_manifest_with_events_matches_stream_json(recordings, tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"id\taudio\nfirst\t{recordings}/a.wav\nbroken\t{recordings}/corrupt.wav\n")
    out = tmp_path / "out.jsonl"
    runner = CliRunner()
    result = runner.invoke(main, ["batch", str(manifest), "--out", str(out), "--events", "-j", "1",
                                  "--decoder", "greedy", "--latency", "low"])
    assert result.exit_code == 0, result.output
    assert "files/min" in result.output
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "cannot decode" in rows["broken"]["error"]
    streamed = runner.invoke(main, ["stream", str(recordings / "a.wav"), "--json", "--decoder", "greedy",
                                    "--latency", "low", "--no-compare-offline"])
    assert streamed.exit_code == 0, streamed.output
    events = [json.loads(line) for line in streamed.output.splitlines() if line.startswith("{")]
    assert rows["first"]["events"] == events[:-1]
    assert untimed(rows["first"]["summary"]) == untimed(events[-1])
    assert rows["first"]["summary"]["chunk_ms"] == 160


def test_cli_batch_bad_arguments_are_one_line_and_exit_2(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["batch", str(tmp_path / "nothing"), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("phonestream: error: input not found")
    result = runner.invoke(main, ["batch", str(tmp_path), "--out", "o", "--offline", "--compare-offline"])
    assert result.exit_code == 2 and "does not go with --offline" in result.output
    (tmp_path / "x.wav").write_bytes(b"")
    result = runner.invoke(main, ["batch", str(tmp_path), "--out", str(tmp_path / "no" / "o.jsonl")])
    assert result.exit_code == 2 and result.output.strip() == f"phonestream: error: --out {tmp_path}/no/o.jsonl: " \
        f"no folder {tmp_path}/no"
