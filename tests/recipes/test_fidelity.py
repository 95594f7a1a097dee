"""The papers' defaults, pinned through the YAMLs and the code (docs/fidelity.md).

Each pin reads the value a user gets (a YAML as built, or a code default) and the
value the paper or its reference code uses; ``docs/fidelity.md`` must state the
same. Corpus recipes are pinned as soon as their YAML exists.
"""

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from float_tolerance import NETWORK, assert_close
from hyperpyyaml import load_hyperpyyaml

from speechbrain_cald.distill import DistillConfig, HybridGuide, TrajectoryGuide, WaypointGuide
from speechbrain_cald.distill.losses import LAYER_LOSS_DEFAULTS, layer_distill_loss, logits_distill_loss
from speechbrain_cald.distill.objectives import CALDObjective, MiniALBERTObjective
from speechbrain_cald.nnet.sharing import BottleneckAdapter

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "fidelity.md").read_text()
MINI = ROOT / "recipes" / "mini" / "ASR" / "hparams"


class _Raw(yaml.SafeLoader):
    """Reads a recipe YAML without building it: tags are dropped, their nodes kept."""


def _any_tag(loader, suffix, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_Raw.add_multi_constructor("!", _any_tag)


def raw(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_Raw)


def built_guides(**options) -> dict:
    """hparams/guides/all.yaml as a recipe includes it, with ``options`` in the include node."""
    host = "guides: !include:" + str(ROOT / "hparams" / "guides" / "all.yaml")
    if options:
        host += "\n" + "\n".join(f"    {k}: {v}" for k, v in options.items())
    return load_hyperpyyaml(host)["guides"]


def in_doc(*snippets):
    for snippet in snippets:
        assert snippet in DOC, f"docs/fidelity.md does not state {snippet!r}"


# ---------------------------------------------------------------- CALD losses
def test_layer_term_is_the_speech_references():
    """LN on both states, MSE averaged over features, per valid frame, mean over layers."""
    assert LAYER_LOSS_DEFAULTS == {"layer_norm": True, "feature_reduction": "mean", "layer_reduction": "mean"}
    assert inspect.signature(layer_distill_loss).parameters["feature_reduction"].default == "mean"
    cfg = DistillConfig.from_hparams({})
    assert isinstance(cfg.distill_objective, CALDObjective)
    assert (cfg.alpha_layer, cfg.alpha_logits, cfg.temperature) == (15.0, 0.0, 2.0)
    assert cfg.distill_objective.layer_loss == LAYER_LOSS_DEFAULTS
    assert inspect.signature(logits_distill_loss).parameters["temperature"].default == 2.0
    in_doc("`layer_norm: True`, `feature_reduction: mean`, `layer_reduction: mean`", "`temperature: 2`",
           "`alpha_layer: 15`")


# ---------------------------------------------------------------- CALD guides
def test_trajectory_defaults_are_the_references():
    guide = built_guides()["trajectory"]
    assert isinstance(guide, TrajectoryGuide)
    assert guide.teacher_update_cycle == 1 and guide.teacher_lr_scheduler == "student"
    opt = guide.teacher_opt_class([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == pytest.approx(3e-5) and opt.defaults["weight_decay"] == 0.0
    assert [guide.teacher_learns(t) for t in range(4)] == [True] * 4
    assert [TrajectoryGuide(teacher_update_cycle=3).teacher_learns(t) for t in range(6)] == [False, False, True] * 2
    in_doc("`teacher_lr: 0.00003`", "`teacher_weight_decay: 0.0`", "`teacher_lr_scheduler: student`",
           "`(t + 1) % teacher_update_cycle == 0`")


def test_waypoint_and_hybrid_defaults_are_the_references():
    guides = built_guides(snapshot_dir="/nowhere")
    assert isinstance(guides["waypoint"], WaypointGuide) and guides["waypoint"].schedule == "teacher_steps"
    hybrid = guides["hybrid"]
    assert isinstance(hybrid, HybridGuide)
    assert hybrid.switch_fraction == pytest.approx(40 / 90, abs=1e-3) and hybrid.drop == "layer"
    fragment = (ROOT / "hparams" / "guides" / "hybrid.yaml").read_text()
    for fraction in ("0.444", "0.333", "0.556"):  # TED-LIUM 40k, SLURP 30k, VoxCeleb1 50k of 90k
        assert fraction in fragment
        in_doc(fraction)
    in_doc('`schedule="teacher_steps"`', '`schedule="spread"`', '`drop="layer"`')


# ---------------------------------------------------------------- mini recipe
@pytest.mark.parametrize("name", ["mini_mamba", "mini_linformer", "mini_residual"])
def test_mini_cald_students_use_the_papers_asr_weights(name):
    hp = raw(MINI / f"{name}.yaml")
    assert float(hp["alpha_layer"]) == 15.0 and float(hp["alpha_logits"]) == 0.0
    assert "distill_objective" not in hp and "layer_loss" not in hp  # the speech reference's layer term


@pytest.mark.parametrize("name", ["mini_mamba", "mini_linformer", "mini_residual", "mini_recursive"])
def test_mini_guides_use_the_papers_asr_switch_and_the_spread_waypoints(name):
    guides = raw(MINI / f"{name}.yaml")["guides"]
    teacher = raw(MINI / "mini_teacher.yaml")
    assert float(guides["switch_fraction"]) == pytest.approx(0.444)
    assert guides["waypoint_schedule"] == "spread"  # students run fewer steps than the teacher
    assert float(guides["teacher_lr"]) == float(teacher["lr"])  # the reference README: the Std. run's lr
    assert "hybrid_drop" not in guides and "teacher_weight_decay" not in guides  # the reference's defaults
    in_doc("`teacher_lr: 0.0015`")


def test_mini_recursive_student_is_minialberts():
    hp = raw(MINI / "mini_recursive.yaml")
    objective = hp["distill_objective"]
    assert {k: float(v) for k, v in objective.items() if k.startswith(("alpha", "temp"))} == {
        "alpha_attention": 3.0, "alpha_hidden": 3.0, "alpha_output": 5.0, "temperature": 1.0,
    }
    assert (objective["key_reduction"], objective["layer_reduction"]) == ("mean", "sum")
    defaults = MiniALBERTObjective()
    assert defaults.scaled({"layer": 1, "logits": 1}) == {"attention": 3.0, "hidden": 3.0, "logits": 5.0}
    assert (defaults.temperature, defaults.key_reduction, defaults.layer_reduction) == (1.0, "mean", "sum")
    model = hp["model"]
    assert int(model["adapter_dim"]) == 48 and model["adapter_norm"] is True and model["adapter"] == "bottleneck"
    assert hp["shared_init"] == "average"
    in_doc("`adapter_dim: 48`", "`adapter_norm: True`", "`MiniALBERTObjective(alpha_attention=3, alpha_hidden=3, alpha_output=5, temperature=1)`")


def test_minialbert_adapter_is_layernorm_of_x_plus_bottleneck():
    torch.manual_seed(0)
    adapter = BottleneckAdapter(16, bottleneck=4)
    torch.nn.init.normal_(adapter.up.weight)
    x = torch.randn(3, 16)
    expected = torch.nn.functional.layer_norm(
        x + adapter.up(torch.nn.functional.gelu(adapter.down(x))), (16,), adapter.norm.weight, adapter.norm.bias,
        adapter.norm.eps,
    )
    assert_close(adapter(x), expected, factor=NETWORK)  # same operations, maybe fused differently


def test_every_yaml_weight_is_sourced():
    """A recipe YAML that sets a distillation weight says where it comes from in a comment."""
    for path in sorted(ROOT.glob("recipes/**/hparams/*.yaml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith(("alpha_layer:", "alpha_logits:")):
                context = " ".join(lines[max(0, i - 4): i + 1])
                assert any(w in context for w in ("CALD", "paper", "reference")), f"{path}:{i + 1}: {line} has no source"


# ---------------------------------------------------------------- corpus recipes
# YAML -> the CALD paper's values for its task (speech README / LM README).
CORPUS_PINS = {
    "recipes/TEDLIUM/ASR/hparams/tedlium_mamba.yaml": {"alpha_layer": 15.0, "alpha_logits": 1.0, "temperature": 2.0,
                                                       "switch_fraction": 0.444},
    "recipes/SLURP/SLU/hparams/slurp_mamba.yaml": {"alpha_layer": 15.0, "alpha_logits": 0.0, "switch_fraction": 0.333},
    "recipes/VoxCeleb1/SpeakerID/hparams/voxceleb1_mamba.yaml": {"alpha_layer": 30.0, "alpha_logits": 0.0,
                                                                 "switch_fraction": 0.556},
    "recipes/Pile/LM/hparams/pile_mamba.yaml": {"alpha_layer": 15.0, "alpha_logits": 0.0},
}


@pytest.mark.parametrize("path", sorted(CORPUS_PINS))
def test_corpus_recipe_uses_its_tasks_weights(path):
    if not (ROOT / path).exists():
        pytest.skip(f"{path} is not in this tree yet")
    hp = raw(ROOT / path)
    for key, value in CORPUS_PINS[path].items():
        found = hp.get("guides", {}).get(key) if key == "switch_fraction" else hp.get(key)
        assert found is not None and float(found) == pytest.approx(value, abs=1e-3), f"{path}: {key} = {found}, paper {value}"


# ---------------------------------------------------------------- task-loss scale (speech classification)
def _reference_speech_classification_loss(logits, labels, label_lengths, student, teacher, frames, alpha):
    """The CALD speech reference's loss of one batch (no accumulation), as the optimizer sees it.

    ``speech/models/model.py: compute_loss`` with ``loss_normalize_type='sample'``,
    ``ctc_weight=0`` and one classifier head: ``n_samples`` is the batch's label
    characters (l. 162-170), the layer term (``layer_distill_loss``, l. 123-148,
    the states masked then layer-normed, squared error averaged over features,
    summed over frames, averaged over layers) is scaled by ``n_samples /
    total_output_samples`` (l. 199-207), the cross-entropy summed (l. 226-233);
    ``speech/train.py`` then divides the gradient by ``n_samples`` (l. 322-325).
    """
    n_samples = label_lengths.sum()
    mask = frames.unsqueeze(-1).float()
    per_layer = []
    for t, s in zip(teacher, student):
        t, s = torch.layer_norm(t * mask, [t.shape[-1]]), torch.layer_norm(s * mask, [s.shape[-1]])
        per_layer.append(torch.nn.functional.mse_loss(t, s, reduction="none").mean(-1).sum())
    layer = torch.stack(per_layer).mean() * n_samples / frames.sum()
    classifier = torch.nn.functional.cross_entropy(logits, labels, reduction="none").sum()
    return (classifier + alpha * layer) / n_samples


def test_per_character_task_loss_is_the_speech_references():
    """Ours (per-character cross-entropy + alpha x per-frame layer term) = the reference's loss on a batch."""
    from speechbrain_cald.tasks.classification import cross_entropy_per_character

    torch.manual_seed(0)
    lengths = torch.tensor([7, 4, 6])
    frames = torch.arange(7)[None, :] < lengths[:, None]
    student = [torch.randn(3, 7, 16) for _ in range(4)]
    teacher = [torch.randn(3, 7, 16) for _ in range(4)]
    logits, labels = torch.randn(3, 5), torch.tensor([0, 3, 1])
    characters = torch.tensor([31.0, 42.0, 27.0])  # transcript lengths (SLURP)
    for alpha in (15.0, 30.0):
        ours = cross_entropy_per_character(logits, labels, characters) + alpha * layer_distill_loss(
            student, teacher, frames
        )
        reference = _reference_speech_classification_loss(
            logits, labels, characters, student, teacher, frames, alpha
        )
        assert_close(ours, reference, factor=NETWORK)
    # the per-utterance mean weighs the task (mean characters per utterance) times more
    mean = torch.nn.functional.cross_entropy(logits, labels)
    assert_close(cross_entropy_per_character(logits, labels, characters) * characters.mean(), mean, factor=NETWORK)


@pytest.mark.parametrize("corpus, column", [("SLURP/SLU/hparams/slurp", "transcript"),
                                            ("VoxCeleb1/SpeakerID/hparams/voxceleb1", 3)])
@pytest.mark.parametrize("kind", ["teacher", "mamba", "linformer"])
def test_speech_classification_recipes_scale_the_task_loss_as_the_reference(corpus, column, kind):
    hp = raw(ROOT / "recipes" / f"{corpus}_{kind}.yaml")
    assert hp["task_loss_per"] == "character" and hp["loss_characters"] == column
    in_doc("`task_loss_per: character`", "`loss_characters: transcript`", "`loss_characters: 3`")


def test_utterance_dataset_counts_the_loss_characters(tmp_path):
    from speechbrain_cald.data.labels import build_label_encoder
    from speechbrain_cald.tasks.utterance import utterance_dataset

    manifest = tmp_path / "train.csv"
    manifest.write_text(
        "ID,duration,wav,label,transcript\n"
        "a,1.0,$data_root/a.wav,x,wake me up at nine\n"
        "b,1.0,$data_root/b.wav,y,olly quiet\n"
    )
    encoder = build_label_encoder(["x", "y"])
    for characters, expected in (("transcript", [18.0, 10.0]), (3, [3.0, 3.0])):
        dataset = utterance_dataset([str(manifest)], str(tmp_path), encoder, characters=characters)
        dataset.set_output_keys(["characters"])  # the audio is not read
        assert [float(dataset[i]["characters"][0]) for i in range(2)] == expected
    with pytest.raises(KeyError, match="no column 'text'"):
        utterance_dataset([str(manifest)], str(tmp_path), encoder, characters="text")


# ---------------------------------------------------------------- regularisation
SPEECH = [f"recipes/{corpus}_{kind}.yaml" for corpus in ("LibriSpeech/ASR/hparams/librispeech", "TEDLIUM/ASR/hparams/tedlium",
                                                          "SLURP/SLU/hparams/slurp", "VoxCeleb1/SpeakerID/hparams/voxceleb1")
          for kind in ("teacher", "mamba", "linformer")]
TEXT = [f"recipes/{corpus}_{kind}.yaml" for corpus in ("GLUE/TextClassification/hparams/glue",
                                                       "IMDB/TextClassification/hparams/imdb")
        for kind in ("teacher", "mamba", "linformer")]
# speech/hyperparams.py l. 34-38 (given to from_pretrained in speech/models/build.py l. 132-136)
SPEECH_REGULARISATION = {"feat_proj_dropout": 0.2, "hidden_dropout": 0.2, "activation_dropout": 0.2,
                         "mask_time_prob": 0.1}


def _config_overrides(node):
    """Every ``config_overrides`` mapping of a raw YAML."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "config_overrides":
                yield value
            else:
                yield from _config_overrides(value)


@pytest.mark.parametrize("path", SPEECH)
def test_speech_recipes_regularise_as_the_reference(path):
    hp = raw(ROOT / path)
    for key, value in SPEECH_REGULARISATION.items():
        assert float(hp[key]) == value, f"{path}: {key} = {hp[key]}, reference {value}"
    overrides = list(_config_overrides(hp))
    assert overrides, path
    for found in overrides:  # the teacher's and the student's encoder alike
        for key in SPEECH_REGULARISATION:
            assert found.get(key) == f"<{key}>", f"{path}: config_overrides.{key} = {found.get(key)}"
        assert found["layerdrop"] in (0.0, "<layerdrop>")
    assert float(hp.get("final_dropout", hp.get("head_dropout"))) == 0.0  # reference final_dropout 0
    assert hp["no_weight_decay"] == ["layer_norm"] and float(hp["max_grad_norm"]) == 1.0
    if "teacher" in path.rsplit("/", 1)[-1]:
        assert "teacher_train_mode" not in hp
    else:
        assert hp["teacher_train_mode"] is True
    in_doc("`no_weight_decay: [layer_norm]`", "`teacher_train_mode: True`", "`mask_time_prob: 0.1`",
           "`feat_proj_dropout`, `hidden_dropout`, `activation_dropout` 0.2")


@pytest.mark.parametrize("path", TEXT)
def test_text_recipes_decay_and_clip_as_the_reference(path):
    hp = raw(ROOT / path)
    assert hp["no_weight_decay"] == ["LayerNorm"]
    assert hp["max_grad_norm"] == float("inf")  # no clipping, student and trajectory teacher
    in_doc("`no_weight_decay: [LayerNorm]`", "`max_grad_norm: .inf`")


# ---------------------------------------------------------------- schedules
def _reference_speech_lr(step):
    """``speech/models/model.py: learning_rate_schedule`` (l. 97-116) x max_lr, with
    ``speech/hyperparams.py`` l. 40-49 (warm-up 5k, no plateau, min_lr 0, final 1.5e-6,
    decay 75k, exp); ``step`` is the reference's ``global_step``, the steps already taken."""
    import math

    warmup, plateau, max_lr, min_lr, final_lr, decay = 5000, 0, 3e-4, 0.0, 1.5e-6, 75000
    if step < warmup:
        return (max_lr - min_lr) * (step / warmup) + min_lr
    if step <= warmup + plateau:
        return max_lr
    if step < warmup + plateau + decay:
        factor = -math.log(final_lr / max_lr) / decay
        return max_lr * math.exp(-(step - warmup - plateau) * factor)
    return final_lr


SPEECH_STEPS = [0, 1, 2500, 4999, 5000, 5001, 20000, 42500, 79999, 80000, 80001, 89999, 90000]


@pytest.mark.parametrize("path", SPEECH)
def test_speech_schedule_is_the_references(path):
    from speechbrain_cald.distill.schedules import WarmupExpDecayLR

    hp = raw(ROOT / path)
    node = hp.get("lr_annealing", hp.get("lr_schedule"))
    lr, warmup = float(hp["lr"]), int(hp["n_warmup_steps"])
    assert (lr, warmup) == (3e-4, 5000)
    if "lr_final" in hp:  # LibriSpeech, TED-LIUM
        assert node == {"lr": "<lr>", "final_lr": "<lr_final>", "warmup_steps": "<n_warmup_steps>",
                        "decay_steps": "<lr_decay_steps>"}
        final_lr, decay = float(hp["lr_final"]), int(hp["lr_decay_steps"])
    else:  # SLURP, VoxCeleb1: decay_steps is where the decay ends
        assert node == {"lr": "<lr>", "final_lr": "<lr> * <final_lr_ratio>", "warmup_steps": "<n_warmup_steps>",
                        "decay_steps": "<decay_steps> - <n_warmup_steps>"}
        final_lr, decay = lr * float(hp["final_lr_ratio"]), int(hp["decay_steps"]) - warmup
    schedule = WarmupExpDecayLR(lr=lr, final_lr=final_lr, warmup_steps=warmup, decay_steps=decay)
    for step in SPEECH_STEPS:
        assert schedule.value(step) == pytest.approx(_reference_speech_lr(step), rel=1e-9, abs=1e-15), step
    assert int(hp["optimizer_step_limit"]) == 90000 and schedule.value(90000) == pytest.approx(1.5e-6)
    in_doc("`WarmupExpDecayLR`")


@pytest.mark.parametrize("corpus", ["LibriSpeech/ASR/hparams/librispeech", "TEDLIUM/ASR/hparams/tedlium",
                                    "SLURP/SLU/hparams/slurp", "VoxCeleb1/SpeakerID/hparams/voxceleb1"])
def test_speech_teachers_keep_a_waypoint_every_10k_steps(corpus):
    hp = raw(ROOT / "recipes" / f"{corpus}_teacher.yaml")
    assert int(hp["snapshot_interval"]) == 10000  # speech/hyperparams.py l. 92: teacher_snapshot_cycle
    in_doc("`snapshot_interval: 10000`")


@pytest.mark.parametrize("kind", ["teacher", "mamba"])
def test_lm_decay_steps_are_the_references(kind):
    hp = raw(ROOT / "recipes" / "Pile" / "LM" / "hparams" / f"pile_{kind}.yaml")
    assert int(hp["lr_decay_steps"]) == 12000  # lm/README.md l. 23, 0.5% of the Pile
    assert "--lr_decay_steps=12000 / 24000 / 24000" in (ROOT / "recipes" / "Pile" / "LM" / "README.md").read_text()
    in_doc("`lr_decay_steps: 12000`")
