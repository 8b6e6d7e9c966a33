"""phonestream: live phoneme recognition with wav2vec2-family CTC models.

The pipeline, one module per stage, in the order audio flows:

- :mod:`phonestream.audio`      files, raw PCM, microphone -> mono float32 pieces at the model's rate
- :mod:`phonestream.models`     CTC backends: Hugging Face checkpoints, backbone + head, the default model
- :mod:`phonestream.streaming`  windows of left context + chunk + lookahead, stitched into frames
- :mod:`phonestream.decoding`   incremental greedy CTC and the commit rule
- :mod:`phonestream.events`     committed phonemes, partials, summaries (and their JSON)
- :mod:`phonestream.metrics`    latency, real-time factor, edit distances
- :mod:`phonestream.engine`     Recognizer / Stream: the stages above wired together
- :mod:`phonestream.manifest`   labelled recordings (TSV manifests) for evaluation, LM text and training
- :mod:`phonestream.evaluate`, :mod:`phonestream.bench`  accuracy and speed measurement
- :mod:`phonestream.cli`        the command line, a thin layer over all of this

Quick use::

    from phonestream import Recognizer, load_model, load_audio
    rec = Recognizer(load_model())              # the shipped default model
    stream = rec.stream()
    for event in stream.accept(samples): ...    # mono float32 at rec.model.sample_rate
    for event in stream.finish(): ...           # the tail, then a Summary (offline=True: compared with
                                                # decoding the whole audio at once, if kept: stream(keep_audio=True))
"""

from .audio import AudioError, load_audio
from .engine import Recognizer, Stream
from .events import Partial, Phoneme, Summary
from .models import CTCModel, ModelError, load_model
from .streaming import ConfigError, StreamConfig

__all__ = ["AudioError", "ConfigError", "CTCModel", "ModelError", "Partial", "Phoneme", "Recognizer", "Stream",
           "StreamConfig", "Summary", "load_audio", "load_model"]
