"""convert/share/: recursive and residual students built from tiny teachers."""

import copy
import io
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from speechbrain_cald.convert.families import find_family
from speechbrain_cald.convert.share import (
    RecursiveStep,
    SHARING_SITES,
    adapters_only,
    apply_sharing_record,
    load_shared_student,
    load_shared_weights,
    save_shared_student,
    save_shared_weights,
    size_report,
    step_teacher_layers,
    to_shared,
    unique_parameter_count,
)
from speechbrain_cald.nnet.sharing import ResidualWeight
from float_tolerance import LAYER, NETWORK, REDUCTION, assert_close



def _residual_names(module):
    """Weights of ``module`` reparameterised by ResidualWeight (not e.g. weight_norm)."""
    items = module.parametrizations.items()
    return [n for n, plist in items if any(isinstance(p, ResidualWeight) for p in plist)]


# ------------------------------------------------------------------ equivalences
@pytest.mark.parametrize(
    "options",
    [
        dict(adapter="none"),
        dict(adapter="bottleneck", adapter_norm=False),  # up starts at 0: identity
        dict(adapter="lora", lora_rank=4),  # teacher - shared = 0: zero delta
    ],
    ids=["none", "bottleneck", "lora"],
)
def test_recursive_with_one_unique_layer_per_step_equals_teacher(teacher_case, options):
    name, teacher, call = teacher_case
    L = len(find_family(teacher).layers(teacher))
    student = to_shared(teacher, "recursive", num_unique=L, **options).eval()
    with torch.no_grad():
        assert_close(call(student), call(teacher), factor=NETWORK)


def test_residual_full_rank_reproduces_teacher_weights_and_outputs(teacher_case):
    name, teacher, call = teacher_case
    student = to_shared(teacher, "residual", group_size=3, rank=10_000).eval()
    t_params = dict(teacher.named_parameters())
    checked = 0
    for mod_name, module in student.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for p_name in _residual_names(module):
            ref = t_params[f"{mod_name}.{p_name}"]
            assert_close(getattr(module, p_name), ref, factor=LAYER, msg=f"{mod_name}.{p_name}")
            checked += 1
    assert checked > 0
    with torch.no_grad():
        assert_close(call(student), call(teacher), factor=NETWORK)


def _residual_weight_error(teacher, student):
    t_params = dict(teacher.named_parameters())
    err = 0.0
    for mod_name, module in student.named_modules():
        if parametrize.is_parametrized(module):
            for p_name in _residual_names(module):
                err += (getattr(module, p_name) - t_params[f"{mod_name}.{p_name}"]).pow(2).sum().item()
    return err


def test_residual_error_shrinks_as_rank_grows(teachers):
    teacher = teachers["bert"][0]()
    errors = [_residual_weight_error(teacher, to_shared(teacher, "residual", group_size=4, rank=r))
              for r in (0, 2, 4, 8, 16)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-8


def test_recursive_lora_full_rank_gives_each_step_its_teacher_weights(teachers):
    teacher = teachers["bert"][0]()
    student = to_shared(teacher, "recursive", num_unique=1, num_steps=2, adapter="lora", lora_rank=16)
    layers = find_family(teacher).layers(teacher)
    for step, m in zip(student.encoder.layer, student.cald_sharing["layer_map"]):
        for key, delta in zip(step.lora_keys, step.lora):
            effective = step.layer.get_parameter(key) + delta()
            assert_close(effective, layers[m].get_parameter(key), factor=LAYER, msg=str(key))


def _random_adapter(d, seed):
    from speechbrain_cald.nnet.sharing import BottleneckAdapter

    torch.manual_seed(seed)
    ad = BottleneckAdapter(d, 4, norm=True)
    nn.init.normal_(ad.up.weight, std=0.5)
    nn.init.normal_(ad.norm.weight, mean=1.0, std=0.2)
    return ad


def test_bottleneck_adapters_sit_on_attention_and_ffn_inputs_bert(teachers):
    teacher = teachers["bert"][0]()
    call = teachers["bert"][1]
    student = to_shared(teacher, "recursive", num_unique=4, adapter="bottleneck").eval()
    step = student.encoder.layer[2]
    step.adapters[0] = att = _random_adapter(16, 1)
    step.adapters[1] = ffn = _random_adapter(16, 2)
    for k in (0, 1, 3):  # other steps: identity adapters
        for i in range(2):
            student.encoder.layer[k].adapters[i] = nn.Identity()
    # reference written out: BertLayer with adapted inputs of attention.self and intermediate
    ref = copy.deepcopy(teacher)
    layer = ref.encoder.layer[2]
    layer.attention.self.register_forward_pre_hook(
        lambda m, args, kwargs: ((att(args[0]),) + args[1:], kwargs) if args
        else (args, {**kwargs, "hidden_states": att(kwargs["hidden_states"])}),
        with_kwargs=True,
    )
    layer.intermediate.register_forward_pre_hook(lambda m, args: (ffn(args[0]),))
    with torch.no_grad():
        out, expected = call(student), call(ref)
        assert not torch.allclose(expected, call(teacher), atol=1e-3)
        assert_close(out, expected, factor=NETWORK)


def test_bottleneck_adapters_sit_on_attention_and_ffn_inputs_sb_conformer(teachers):
    build, call = teachers["sb_conformer"]
    teacher = build()
    student = to_shared(teacher, "recursive", num_unique=4, adapter="bottleneck").eval()
    step = student.encoder.layers[1]
    assert step.adapter_paths == ["mha_layer", "ffn_module1", "ffn_module2"]
    ads = [_random_adapter(16, s) for s in (3, 4, 5)]
    for k in range(4):
        for i in range(3):
            step_k = student.encoder.layers[k]
            step_k.adapters[i] = ads[i] if k == 1 else nn.Identity()
    ref = copy.deepcopy(teacher)
    layer = ref.encoder.layers[1]
    # q, k and v all see the adapted input
    layer.mha_layer.register_forward_pre_hook(lambda m, args: tuple(ads[0](a) for a in args[:3]) + args[3:])
    layer.ffn_module1.register_forward_pre_hook(lambda m, args: (ads[1](args[0]),))
    layer.ffn_module2.register_forward_pre_hook(lambda m, args: (ads[2](args[0]),))
    with torch.no_grad():
        out, expected = call(student), call(ref)
        assert not torch.allclose(expected, call(teacher), atol=1e-3)
        assert_close(out, expected, factor=NETWORK)


# ------------------------------------------------------------------ structure
def test_recursive_steps_share_one_layer_object_also_after_deepcopy(teachers):
    student = to_shared(teachers["bert"][0](), "recursive", num_unique=2, tying="cycle", adapter_dim=4)
    steps = list(student.encoder.layer)
    assert all(isinstance(s, RecursiveStep) for s in steps)
    assert steps[0].layer is steps[2].layer and steps[1].layer is steps[3].layer
    assert steps[0].layer is not steps[1].layer
    copied = copy.deepcopy(student)
    assert copied.encoder.layer[0].layer is copied.encoder.layer[2].layer
    assert copied.encoder.layer[0].layer is not steps[0].layer


def test_block_tying_and_layer_map(teachers):
    student = to_shared(teachers["bert"][0](), "recursive", num_unique=2, tying="block", adapter="none")
    steps = list(student.encoder.layer)
    assert steps[0].layer is steps[1].layer and steps[2].layer is steps[3].layer
    assert student.cald_sharing["layer_map"] == [0, 1, 2, 3]
    assert step_teacher_layers(3, 12) == [3, 7, 11]


@pytest.mark.parametrize("init", ["average", "stepwise", "random"])
def test_shared_layer_init(init, teachers):
    teacher = teachers["bert"][0]()
    student = to_shared(teacher, "recursive", num_unique=1, adapter="none", init=init)
    shared = student.encoder.layer[0].layer.state_dict()
    layers = [layer.state_dict() for layer in teacher.encoder.layer]
    key = "intermediate.dense.weight"
    expected = {
        "average": torch.stack([l[key] for l in layers]).mean(0),
        "stepwise": layers[0][key],
    }
    if init in expected:
        assert_close(shared[key], expected[init], factor=REDUCTION)
    else:
        assert all(not torch.allclose(shared[key], l[key]) for l in layers)


# ------------------------------------------------------------------ counts
def test_recursive_parameter_count_equals_hand_count(teachers):
    teacher = teachers["bert"][0]()
    d, a = 16, 4
    layer = sum(p.numel() for p in teacher.encoder.layer[0].parameters())
    total = sum(p.numel() for p in teacher.parameters())
    adapter = d * a + a + a * d + d + 2 * d  # down, up, layer norm
    student = to_shared(teacher, "recursive", num_unique=1, num_steps=3, adapter_dim=a)
    # 4 teacher layers -> 1 shared layer + 3 steps x 2 adapters (attention, FFN)
    assert unique_parameter_count(student) == total - 4 * layer + layer + 3 * 2 * adapter
    lora = to_shared(teacher, "recursive", num_unique=2, adapter="lora", lora_rank=2)
    # per step: q, k, v, attention.output.dense (16x16), intermediate (32x16), output (16x32)
    per_step = 4 * 2 * (16 + 16) + 2 * 2 * (32 + 16)
    assert unique_parameter_count(lora) == total - 4 * layer + 2 * layer + 4 * per_step


def test_residual_parameter_count_equals_hand_count(teachers):
    teacher = teachers["bert"][0]()
    total = sum(p.numel() for p in teacher.parameters())
    K, r = 2, 3
    shapes = [(16, 16)] * 4 + [(32, 16), (16, 32)]  # q k v attn-out, intermediate, output
    per_group = sum(o * n + K * (r * (o + n) + max(o, n)) - K * o * n for o, n in shapes)
    student = to_shared(teacher, "residual", group_size=K, rank=r)
    assert unique_parameter_count(student) == total + 2 * per_group
    no_diag = to_shared(teacher, "residual", group_size=K, rank=r, diagonal=False)
    assert unique_parameter_count(no_diag) == total + 2 * per_group - 4 * sum(max(s) for s in shapes)


# ------------------------------------------------------------------ saving
def test_saved_recursive_student_stores_shared_tensors_once(tmp_path, teachers):
    teacher = teachers["bert"][0]()
    student = to_shared(teacher, "recursive", num_unique=1, adapter="none")
    unique_bytes = 4 * unique_parameter_count(student)
    naive_bytes = 4 * sum(p.numel() for p in student.state_dict().values() if p.is_floating_point())
    layer_bytes = 4 * sum(p.numel() for p in student.encoder.layer[0].parameters())
    assert naive_bytes >= unique_bytes + 3 * layer_bytes  # 4 references to one layer
    size = save_shared_weights(student, tmp_path / "w.safetensors")
    buffers = 4 * sum(b.numel() for b in student.buffers())  # position ids etc.
    assert unique_bytes <= size <= unique_bytes + buffers + 64_000
    buf = io.BytesIO()
    torch.save(student.state_dict(), buf)  # torch.save stores tied storages once, too
    assert len(buf.getvalue()) < unique_bytes + buffers + 200_000
    rebuilt = apply_sharing_record(teachers["bert"][0](), student.cald_sharing)
    load_shared_weights(rebuilt, tmp_path / "w.safetensors")
    assert rebuilt.encoder.layer[0].layer is rebuilt.encoder.layer[3].layer
    for (k, v), (k2, v2) in zip(student.state_dict().items(), rebuilt.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


@pytest.mark.parametrize("name", ["bert", "sb_conformer"])
@pytest.mark.parametrize("scheme,options", [("recursive", dict(num_unique=2, adapter="lora", lora_rank=2)),
                                            ("residual", dict(group_size=2, rank=3))])
def test_student_directory_round_trip(tmp_path, name, scheme, options, teachers):
    build, call = teachers[name]
    student = to_shared(build(), scheme, **options).eval()
    save_shared_student(student, tmp_path / "s")
    loaded = load_shared_student(tmp_path / "s")
    assert loaded.cald_sharing == json.loads(json.dumps(student.cald_sharing))
    with torch.no_grad():
        assert torch.equal(call(loaded), call(student))
    assert size_report(loaded) == size_report(student)


def test_size_report_counts_shared_once(teachers):
    student = to_shared(teachers["bert"][0](), "recursive", num_unique=1, adapter="none")
    rep = size_report(student)
    assert rep["unique_parameters"] == unique_parameter_count(student)
    assert rep["parameter_references"] > rep["unique_parameters"]


# ------------------------------------------------------------------ adapter tuning
def _train_steps(model, call, steps=2):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        call(model).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("scheme,options", [
                         ("recursive", dict(num_unique=1, adapter="bottleneck", adapter_dim=4)),
                                            ("recursive", dict(num_unique=2, adapter="lora", lora_rank=2)),
                                            ("residual", dict(group_size=2, rank=2))])
def test_adapters_only_training_changes_only_adapter_weights(scheme, options, teachers):
    build, call = teachers["sb_conformer"]
    student = to_shared(build(), scheme, **options)
    if scheme == "recursive" and options["adapter"] == "bottleneck":
        for step in student.encoder.layers:  # make the adapters matter at step 1
            for ad in step.adapters:
                nn.init.normal_(ad.up.weight, std=0.1)
    trainable = set(adapters_only(student, keep=[r"^custom_src_module\."]))
    assert trainable
    before = {k: v.detach().clone() for k, v in student.named_parameters()}
    _train_steps(student, call)
    changed = {k for k, v in student.named_parameters() if not torch.equal(v, before[k])}
    assert changed and changed <= trainable
    expected_kinds = {"bottleneck": "adapters.", "lora": "lora."}.get(options.get("adapter"), "original")
    assert all(expected_kinds in k or k.startswith("custom_src_module.") for k in trainable)
    assert any(k.startswith("custom_src_module.") for k in changed)  # the kept "head"
    assert any(expected_kinds in k for k in changed)  # the adapters themselves learn


# ------------------------------------------------------------------ linear-time combination
def test_recursive_bimamba2_student_from_linear_time_student(teachers):
    from speechbrain_cald.convert import to_linear_time

    build, call = teachers["sb_conformer"]
    linear = to_linear_time(build(), "bimamba2", d_state=8, expand=1, headdim=8, chunk_size=4).eval()
    same = to_shared(linear, "recursive", num_unique=4, adapter="bottleneck", adapter_norm=False).eval()
    with torch.no_grad():
        assert_close(call(same), call(linear), factor=NETWORK)
    shared = to_shared(linear, "recursive", num_unique=1, num_steps=2, adapter="lora", lora_rank=2)
    assert shared.cald_conversion == linear.cald_conversion
    assert unique_parameter_count(shared) < unique_parameter_count(linear)
    out = call(shared)
    assert out.shape == call(linear).shape and torch.isfinite(out).all()
    # the shared mixer's weights get LoRA deltas too
    assert any("mixer" in k for k in shared.encoder.layers[0].lora_keys)


def test_residual_linear_time_student_full_rank_equals_it(teachers):
    from speechbrain_cald.convert import to_linear_time

    build, call = teachers["bert"]
    linear = to_linear_time(build(), "bimamba2", d_state=8, expand=1, headdim=8, chunk_size=4).eval()
    student = to_shared(linear, "residual", group_size=2, rank=10_000).eval()
    with torch.no_grad():
        assert_close(call(student), call(linear), factor=NETWORK)


# ------------------------------------------------------------------ errors
def test_errors_name_what_was_expected(teachers):
    teacher = teachers["bert"][0]()
    with pytest.raises(ValueError, match="unknown scheme 'albert'.*recursive"):
        to_shared(teacher, "albert")
    with pytest.raises(ValueError, match=r"num_steps must be in \[1, 4\]"):
        to_shared(teacher, "recursive", num_steps=6)
    with pytest.raises(ValueError, match="adapter must be one of"):
        to_shared(teacher, "recursive", adapter="prefix")
    with pytest.raises(ValueError, match="already a parameter-sharing student"):
        to_shared(to_shared(teacher, "residual"), "residual")
    with pytest.raises(Exception, match="(?i)famil"):
        to_shared(nn.Sequential(nn.Linear(2, 2)), "residual")


def test_every_registered_family_has_sharing_sites():
    from speechbrain_cald.convert.families import FAMILIES

    assert set(FAMILIES) <= set(SHARING_SITES)


# ------------------------------------------------------------------ command line
def test_command_line_prints_sizes_and_writes_a_loadable_student(tmp_path, capsys, teachers):
    from speechbrain_cald.convert.io import save_speechbrain_model
    from speechbrain_cald.convert.share import encoder_parameter_count, main

    build, call = teachers["sb_conformer"]
    teacher = build()
    save_speechbrain_model(teacher, tmp_path / "teacher", teacher.cald_hparams)
    assert main([str(tmp_path / "teacher"), str(tmp_path / "student"), "--scheme", "residual",
                 "--group-size", "2", "--rank", "2"]) == 0
    printed = capsys.readouterr().out
    student = load_shared_student(tmp_path / "student")
    for model in (teacher, student):
        assert f"{unique_parameter_count(model):,d}" in printed
        assert f"{encoder_parameter_count(model):,d}" in printed
    expected = to_shared(teacher, "residual", group_size=2, rank=2).eval()
    with torch.no_grad():
        assert_close(call(student), call(expected), factor=NETWORK)
    assert encoder_parameter_count(student) < encoder_parameter_count(teacher)


def test_residual_extra_sites_share_pointwise_convolutions_exactly_at_full_rank(teachers):
    build, call = teachers["sb_conformer"]
    teacher = build()
    plain = to_shared(teacher, "residual", group_size=4, rank=2)
    student = to_shared(teacher, "residual", group_size=4, rank=10_000,
                        extra_sites=["convolution_module"]).eval()
    conv = student.encoder.layers[0].convolution_module
    shared_convs = [m for m in conv.modules() if parametrize.is_parametrized(m)]
    assert any(m.weight.dim() == 3 for m in shared_convs)  # pointwise Conv1d (out, in, 1)
    with torch.no_grad():
        assert_close(call(student), call(teacher), factor=NETWORK)
    smaller = to_shared(teacher, "residual", group_size=4, rank=2, extra_sites=["convolution_module"])
    assert unique_parameter_count(smaller) < unique_parameter_count(plain)
    with pytest.raises(ValueError, match="extra site 'conv' is not a submodule"):
        to_shared(teacher, "residual", extra_sites=["conv"])


def test_yaml_switch_adapters_only():
    from hyperpyyaml import load_hyperpyyaml

    yaml = """
adapters_only: True
teacher: !new:speechbrain.lobes.models.transformer.TransformerASR.TransformerASR
    tgt_vocab: 10
    input_size: 16
    d_model: 16
    nhead: 2
    num_encoder_layers: 4
    num_decoder_layers: 0
    d_ffn: 32
    encoder_module: conformer
    attention_type: RelPosMHAXL
    normalize_before: True
    causal: False
student: !apply:speechbrain_cald.convert.share.shared_student
    teacher: !ref <teacher>
    scheme: recursive
    num_unique: 1
    adapter: bottleneck
    adapter_dim: 4
    adapters_only: !ref <adapters_only>
    keep: ['^custom_src_module\\.']
"""
    frozen = load_hyperpyyaml(yaml)["student"]
    names = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert any(n.startswith("custom_src_module.") for n in names)
    assert names and all(".adapters." in n or n.startswith("custom_src_module.") for n in names)
    assert frozen.cald_sharing["adapters_only"] is True
    full = load_hyperpyyaml(yaml, {"adapters_only": False})["student"]
    assert all(p.requires_grad for p in full.parameters())


# ------------------------------------------------------------------ distillation hooks
def test_engine_taps_and_layer_map_work_on_recursive_students(teachers):
    from speechbrain_cald.distill.losses import layer_distill_loss
    from speechbrain_cald.distill.sharing_losses import hidden_cosine_loss
    from speechbrain_cald.distill.taps import LayerTaps, find_layers

    build, call = teachers["sb_conformer"]
    teacher = build()
    mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    t_taps = LayerTaps(find_layers(teacher), detach=True)
    with torch.no_grad():
        call(teacher)
    same = to_shared(teacher, "recursive", num_unique=4, adapter="none").eval()
    s_taps = LayerTaps(find_layers(same))
    call(same)
    assert len(s_taps.states) == 4
    m = same.cald_sharing["layer_map"]
    assert float(layer_distill_loss(s_taps.states, t_taps.states, mask, m)) < 1e-10
    assert float(hidden_cosine_loss(s_taps.states, t_taps.states, mask, m)) < 1e-6
    small = to_shared(teacher, "recursive", num_unique=1, num_steps=2, adapter="bottleneck", adapter_dim=4)
    taps = LayerTaps(find_layers(small))
    call(small)
    assert len(taps.states) == 2 and small.cald_sharing["layer_map"] == [1, 3]
    loss = layer_distill_loss(taps.states, t_taps.states, mask, small.cald_sharing["layer_map"])
    loss = loss + hidden_cosine_loss(taps.states, t_taps.states, mask, small.cald_sharing["layer_map"])
    loss.backward()
    shared_layer = small.encoder.layers[0].layer
    assert all(p.grad is not None for p in shared_layer.parameters() if p.requires_grad and p.dim() > 1)
    assert small.encoder.layers[1].adapters[0].up.weight.grad.abs().sum() > 0


def test_shared_student_init_from_a_checkpoint(tmp_path, teachers):
    from speechbrain_cald.convert.share import shared_student

    build, call = teachers["sb_conformer"]
    trained, blank = build(), build()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.1 * torch.randn_like(p))
    torch.save(trained.state_dict(), tmp_path / "teacher.ckpt")
    student = shared_student(blank, "residual", group_size=2, rank=10_000,
                             init_from=tmp_path / "teacher.ckpt").eval()
    with torch.no_grad():
        assert_close(call(student), call(trained.eval()), factor=NETWORK)
        assert not torch.allclose(call(blank), call(trained), atol=1e-3)  # blank left as it was
    with pytest.warns(UserWarning, match="does not exist"):
        shared_student(blank, "residual", init_from=tmp_path / "missing.ckpt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "wrong.ckpt")
    with pytest.raises(RuntimeError, match="wrong.ckpt' does not fit"):
        shared_student(blank, "residual", init_from=tmp_path / "wrong.ckpt")
