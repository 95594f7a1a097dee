"""What the recipes load is checked like what `convert` loads (issue 24, item 4).

Probes: BERT weights under a wav2vec2 config and a converted student given as
`--pretrained_dir` trained from random weights with exit 0 (SLURP, GLUE); a
speech model given to a text recipe (and the reverse) failed late or not at
all. Every loader of a pretrained transformers folder now goes through
`convert.io.load_pretrained`, and a source scan keeps it that way.
"""

import ast
import shutil
from pathlib import Path

import pytest
import torch

import speechbrain_cald
from speechbrain_cald.convert import save_student, to_linear_time
from speechbrain_cald.convert.io import load_pretrained, load_teacher
from speechbrain_cald.lobes.hf_speech import HFSpeechEncoder
from speechbrain_cald.tasks.text_classification import load_text_classifier, load_tokenizer
from speechbrain_cald.tasks.whisper_asr import load_whisper
from speechbrain_cald.testing.speech import save_tiny_speech_model

MAMBA = dict(d_state=8, headdim=8, chunk_size=4)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_text_model):
    from transformers import AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("pretrained")
    speech = Path(save_tiny_speech_model(str(root / "w2v"), "wav2vec2"))
    bert = Path(tiny_text_model("bert"))
    # BERT weights under the wav2vec2 config (and the reverse): a wrong copy, a mixed-up download
    for name, config_from, weights_from in (("bert_under_w2v", speech, bert), ("w2v_under_bert", bert, speech)):
        (root / name).mkdir()
        for f in config_from.iterdir():
            if f.suffix != ".safetensors":
                shutil.copy(f, root / name / f.name)
        shutil.copy(weights_from / "model.safetensors", root / name / "model.safetensors")
    from transformers import AutoModel

    save_student(to_linear_time(AutoModel.from_pretrained(speech), "mamba2", **MAMBA), root / "w2v_student")
    text = AutoModelForSequenceClassification.from_pretrained(bert, num_labels=2)
    save_student(to_linear_time(text, "mamba2", **MAMBA), root / "bert_student")
    return dict(speech=speech, bert=bert, root=root)


def test_a_speech_encoder_refuses_weights_of_another_model(folders):
    with pytest.raises(ValueError) as err:
        HFSpeechEncoder(str(folders["root"] / "bert_under_w2v"))
    message = str(err.value)
    assert f"speech encoder {folders['root'] / 'bert_under_w2v'}: the weights do not fit config.json" in message
    assert "weights of its encoder layers are missing" in message and "encoder.layers.0." in message
    assert "encoder.layer." in message  # the file's own (BERT) names, as a hint


def test_a_text_classifier_refuses_weights_of_another_model(folders):
    with pytest.raises(ValueError, match=r"text classifier .*w2v_under_bert: the weights do not fit config.json"):
        load_text_classifier(str(folders["root"] / "w2v_under_bert"), 2)


@pytest.mark.parametrize("load", [
    lambda d: HFSpeechEncoder(str(d / "w2v_student")),
    lambda d: load_text_classifier(str(d / "bert_student"), 2),
    lambda d: load_teacher(d / "bert_student"),
], ids=["speech", "text", "teacher"])
def test_a_converted_student_is_not_a_pretrained_model(folders, load):
    with pytest.raises(ValueError, match=r"holds a converted student \(cald_conversion.json\), not a .*load_student"):
        load(folders["root"])


def test_a_speech_model_given_to_a_text_recipe_says_a_text_model_was_expected(folders):
    expected = "a speech model (model_type 'wav2vec2', it reads input_values), expected a text model: a text encoder"
    for load in (load_tokenizer, lambda d: load_text_classifier(d, 2)):  # the YAMLs build the tokenizer first
        with pytest.raises(ValueError) as err:
            load(str(folders["speech"]))
        assert str(err.value).startswith(f"{folders['speech'] / 'config.json'}: {expected}")
        assert "BERT or RoBERTa" in str(err.value)
    with pytest.raises(ValueError, match="expected a text model: a causal language model"):
        load_teacher(folders["speech"], "AutoModelForCausalLM", kind="text", expected="a causal language model")


def test_a_text_model_given_to_a_speech_recipe_says_a_speech_model_was_expected(folders):
    with pytest.raises(ValueError, match="'bert' model; expected a wav2vec2-family speech encoder"):
        HFSpeechEncoder(str(folders["bert"]))
    with pytest.raises(ValueError, match=r"config.json: a 'bert' model, expected a Whisper model \(family whisper\)"):
        load_whisper(str(folders["bert"]))
    with pytest.raises(ValueError, match="a text model .*expected a speech model: wav2vec2"):
        load_pretrained(folders["bert"], kind="speech", expected="wav2vec2")


def test_a_fitting_checkpoint_still_loads_without_its_task_head(folders):
    model = load_text_classifier(str(folders["bert"]), 3)  # the head is new, the encoder loaded
    assert model.classifier.out_features == 3
    enc = HFSpeechEncoder(str(folders["speech"]))
    from safetensors.torch import load_file

    saved = load_file(folders["speech"] / "model.safetensors")
    assert torch.equal(enc.model.encoder.layers[0].attention.q_proj.weight, saved["encoder.layers.0.attention.q_proj.weight"])


# What only `load_pretrained` may call: a model's `from_pretrained` anywhere else loads weights unchecked.
_ALLOWED_SUFFIXES = ("Tokenizer", "TokenizerFast", "Config", "FeatureExtractor", "Processor", "GenerationConfig")


def _model_from_pretrained_calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "?")
            if not name.endswith(_ALLOWED_SUFFIXES):
                yield f"{path}:{node.lineno}: {name}.from_pretrained"


def test_only_load_pretrained_calls_a_models_from_pretrained():
    package = Path(speechbrain_cald.__file__).parent
    recipes = package.parent / "recipes"
    allowed = package / "convert" / "io.py"
    files = [p for p in [*package.rglob("*.py"), *recipes.rglob("*.py")] if p != allowed and "testing" not in p.parts]
    found = [call for p in files for call in _model_from_pretrained_calls(p)]
    assert found == [], "load pretrained models with speechbrain_cald.convert.io.load_pretrained:\n" + "\n".join(found)
    assert list(_model_from_pretrained_calls(allowed)), "the scan must see load_pretrained's own call"
