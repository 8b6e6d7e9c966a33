"""Model loading: Hugging Face CTC folders, backbone + head, and every way a model can be wrong."""

import json

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from phonestream.models import ModelError, load_model
from phonestream.models.backbone import read_vocab_file

from .conftest import save_ctc


def test_hf_ctc_folder(tiny_model_dir, speechlike):
    model = load_model(str(tiny_model_dir))
    assert model.vocab.symbols[model.vocab.blank_id] == "<pad>"
    assert model.vocab.symbols.index("|") in model.vocab.skip_ids
    assert model.frame_stride == 320 and model.sample_rate == 16000
    lp = model.log_probs(speechlike)
    assert lp.shape == (model.num_frames(len(speechlike)), 6)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1, atol=1e-4)


def test_batch_equals_single(tiny_group_norm_dir, speechlike):
    model = load_model(str(tiny_group_norm_dir))
    windows = [speechlike[:8000], speechlike[8000:16000], speechlike[:12000]]
    batch = model.log_probs_batch(windows)
    for w, b in zip(windows, batch):
        np.testing.assert_allclose(model.log_probs(w), b, atol=1e-5)


def test_phoneme_tokenizer_nested_vocab(tmp_path):
    folder = save_ctc(tmp_path / "m", vocab=("<pad>", "<s>", "</s>", "<unk>", "a", "b"))
    symbols = ("<pad>", "<s>", "</s>", "<unk>", "a", "b")
    (folder / "vocab.json").write_text(json.dumps({"en-us": {t: i for i, t in enumerate(symbols)}}))
    model = load_model(str(folder))
    assert model.vocab.symbols[4:] == ("a", "b") and {1, 2, 3} <= model.vocab.skip_ids


def test_vocab_head_mismatch(tmp_path):
    folder = save_ctc(tmp_path / "m", head_size=9)
    with pytest.raises(ModelError, match="has 6 symbols but the CTC head has 9 outputs"):
        load_model(str(folder))


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        load_model(str(tmp_path / "nope"))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(str(tmp_path))


def test_encoder_without_ctc_head(tiny_encoder_dir):
    with pytest.raises(ModelError, match="no trained CTC head"):
        load_model(str(tiny_encoder_dir))


def test_non_audio_model_has_no_ctc_head(tmp_path):
    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="no CTC head"):
        load_model(str(tmp_path))


def test_missing_vocab_json(tmp_path):
    folder = save_ctc(tmp_path / "m")
    (folder / "vocab.json").unlink()
    with pytest.raises(ModelError, match="no vocab.json"):
        load_model(str(folder))


def test_backbone_plus_random_head_and_roundtrip(tmp_path, tiny_encoder_dir, speechlike):
    vocab = tmp_path / "phones.txt"
    vocab.write_text("AA\nB\nK\n")
    model = load_model(backbone=str(tiny_encoder_dir), vocab=vocab, head_type="conv")
    assert model.vocab.symbols == ("<blank>", "AA", "B", "K") and model.vocab.blank_id == 0
    lp = model.log_probs(speechlike)
    assert lp.shape == (model.num_frames(len(speechlike)), 4)
    model.save(tmp_path / "saved")
    again = load_model(str(tmp_path / "saved"))
    np.testing.assert_allclose(again.log_probs(speechlike), lp, atol=1e-5)
    # and the saved head loads through --head as well
    third = load_model(backbone=str(tiny_encoder_dir), vocab=tmp_path / "saved" / "vocab.txt",
                       head=tmp_path / "saved" / "head.safetensors", head_type="conv")
    np.testing.assert_allclose(third.log_probs(speechlike), lp, atol=1e-5)


def test_head_weights_for_other_vocab(tmp_path, tiny_encoder_dir):
    (tmp_path / "v3.txt").write_text("AA\nB\n")
    load_model(backbone=str(tiny_encoder_dir), vocab=tmp_path / "v3.txt").save(tmp_path / "s")
    (tmp_path / "v5.txt").write_text("AA\nB\nK\nS\n")
    with pytest.raises(ModelError, match="3 outputs but the vocabulary has 5 symbols"):
        load_model(backbone=str(tiny_encoder_dir), vocab=tmp_path / "v5.txt", head=tmp_path / "s" / "head.safetensors")


@pytest.mark.parametrize("text, message", [("", "holds no symbols"), ("\n  \n", "holds no symbols"),
                                           ("AA\nB\nAA\n", "lists AA more than once")])
def test_bad_vocab_files(tmp_path, text, message):
    (tmp_path / "v.txt").write_text(text)
    with pytest.raises(ModelError, match=message):
        read_vocab_file(tmp_path / "v.txt")


def test_backbone_needs_vocab(tiny_encoder_dir):
    with pytest.raises(ModelError, match="needs both --backbone and --vocab"):
        load_model(backbone=str(tiny_encoder_dir))


def test_cuda_without_gpu(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        load_model(str(tiny_model_dir), device="cuda")
