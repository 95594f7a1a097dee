"""The shared wav2vec2-family encoder: loading from a local folder, padding, normalisation, masking, conversion."""

import numpy as np
import pytest
import torch
from transformers import BertConfig, Wav2Vec2FeatureExtractor

from speechbrain_cald.convert import to_linear_time
from speechbrain_cald.distill.taps import find_layers
from speechbrain_cald.lobes.hf_speech import CTCLogProbs, CTCModel, HFSpeechEncoder, normalize_waveforms, sample_mask
from speechbrain_cald.pretrained import OfflineSourceError
from speechbrain_cald.testing.speech import save_tiny_speech_model
from float_tolerance import NETWORK, REDUCTION, assert_close

FAMILIES = [("wav2vec2", "group"), ("wav2vec2", "layer"), ("hubert", "group"), ("wavlm", "group"),
            ("wav2vec2-conformer", "layer")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {f"{t}-{n}": save_tiny_speech_model(str(root / f"{t}-{n}"), t, feat_extract_norm=n) for t, n in FAMILIES}


def test_normalisation_matches_the_wav2vec2_feature_extractor():
    g = torch.Generator().manual_seed(0)
    raw = [np.random.default_rng(i).normal(0.3, 2.0, n).astype(np.float32) for i, n in enumerate([1000, 640])]
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    ref = fe(raw, sampling_rate=16000, padding=True, return_tensors="pt")
    wavs = torch.zeros(2, 1000)
    wavs[0], wavs[1, :640] = torch.from_numpy(raw[0]), torch.from_numpy(raw[1])
    wavs[1, 640:] = torch.randn(360, generator=g)  # whatever sits in the padding must not matter
    ours = normalize_waveforms(wavs, sample_mask(torch.tensor([1.0, 0.64]), 1000))
    assert_close(ours, ref["input_values"], factor=REDUCTION)  # mean / variance summed in another order


@pytest.mark.parametrize("name", [f"{t}-{n}" for t, n in FAMILIES])
def test_padded_batch_gives_each_utterance_its_own_output(folders, name):
    model = CTCModel(HFSpeechEncoder(folders[name]), n_tokens=7).eval()
    wavs = torch.randn(2, 8000)
    with torch.no_grad():
        logits, lengths = model(wavs, torch.tensor([1.0, 0.55]))
        alone, alone_len = model(wavs[1:, :4400])
    assert lengths.tolist() == [24, alone_len.item()]
    assert_close(logits[1, :lengths[1]], alone[0], factor=NETWORK)  # batched vs alone, whole model
    assert torch.all(logits[1, lengths[1]:] == model.ctc_lin.bias)  # padded frames: hidden 0


def test_sizes_come_from_the_config_and_the_feature_encoder_is_frozen(tmp_path):
    folder = save_tiny_speech_model(str(tmp_path / "w"), "wav2vec2", hidden_size=48, layers=3)
    model = CTCModel(HFSpeechEncoder(folder), n_tokens=5)
    assert model.ctc_lin.in_features == 48 and len(model.encoder.model.encoder.layers) == 3
    logits, lengths = model(torch.randn(2, 4000), torch.tensor([1.0, 0.8]))
    logits.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.model.feature_extractor.parameters())
    assert model.encoder.model.encoder.layers[0].attention.q_proj.weight.grad is not None


def test_spec_augment_masks_in_training_only(folders):
    enc = HFSpeechEncoder(folders["wav2vec2-group"], config_overrides={
        "mask_time_prob": 0.5, "mask_time_length": 2, "hidden_dropout": 0.0, "attention_dropout": 0.0,
        "activation_dropout": 0.0, "feat_proj_dropout": 0.0, "layerdrop": 0.0})
    x = torch.randn(1, 8000)
    enc.eval()
    with torch.no_grad():
        a, b = enc(x)[0], enc(x)[0]
        enc.train()
        c = enc(x)[0]
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_errors_name_what_is_wrong(folders, tmp_path):
    with pytest.raises(OfflineSourceError, match="hub id"):
        HFSpeechEncoder("facebook/wav2vec2-base")
    with pytest.raises(KeyError, match="mask_tim_prob"):
        HFSpeechEncoder(folders["hubert-group"], config_overrides={"mask_tim_prob": 0.1})
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bert' model"):
        HFSpeechEncoder(str(tmp_path))


@pytest.mark.parametrize("mixer", ["bimamba2", "linformer"])
def test_the_ctc_model_converts_and_keeps_every_other_weight(folders, mixer):
    teacher = CTCModel(HFSpeechEncoder(folders["wavlm-group"]), n_tokens=6).eval()
    options = {"max_len": 100, "k": 8, "too_long": "interpolate"} if mixer == "linformer" else {}
    student = to_linear_time(teacher, mixer=mixer, **options).eval()
    t_state, s_state = teacher.state_dict(), student.state_dict()
    kept = [k for k in t_state if k in s_state]
    assert "ctc_lin.weight" in kept and all(torch.equal(t_state[k], s_state[k]) for k in kept)
    assert len(find_layers(student)) == 2
    wavs = torch.randn(2, 8000)
    with torch.no_grad():
        log_probs = CTCLogProbs(student)(wavs, torch.tensor([1.0, 0.5]))
        alone = CTCLogProbs(student)(wavs[1:, :4000])
    assert log_probs.shape == (2, 24, 6)
    assert_close(log_probs[1, :alone.shape[1]], alone[0], factor=NETWORK)
