"""Text classification pieces: the planned linear schedule (as transformers'), length limits, loaders."""

import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from speechbrain_cald.tasks.text_classification import (
    LinearWarmupDecay,
    check_max_length,
    load_text_classifier,
    load_tokenizer,
)


def _rates(scheduler_step, optimizer, steps):
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler_step()
    return rates


def test_schedule_equals_transformers_linear_warmup_and_resumes(tmp_path):
    total, lr = 50, 0.1
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    ref = get_linear_schedule_with_warmup(ref_opt, num_warmup_steps=3, num_training_steps=total)
    expected = _rates(ref.step, ref_opt, total)

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    ours = LinearWarmupDecay(lr, warmup_fraction=0.06)  # 6% of 50 = 3 warm-up steps
    ours.plan(total, opt)
    first = _rates(lambda: ours(opt), opt, 20)
    ours.save(tmp_path / "sched.ckpt")
    resumed = LinearWarmupDecay(lr, warmup_fraction=0.06)  # a fresh run, recovered from the checkpoint
    resumed.load(tmp_path / "sched.ckpt")
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    resumed.plan(total, opt2)
    rest = _rates(lambda: resumed(opt2), opt2, total - 20)
    assert first + rest == pytest.approx(expected, abs=1e-12)


def test_warmup_fraction_checked():
    with pytest.raises(ValueError, match="warmup_fraction"):
        LinearWarmupDecay(0.1, warmup_fraction=1.5)


def test_max_length_up_to_the_position_limit(tiny_text_model, capsys):
    model = load_text_classifier(tiny_text_model("roberta"), 3)
    assert check_max_length(None, model) == 64 and check_max_length(32, model) == 32
    assert check_max_length(512, model) == 64
    assert "max_length 512 is more than the 64 tokens RobertaForSequenceClassification has learned" in capsys.readouterr().out


def test_regression_head_and_tokenizer(tiny_text_model):
    folder = tiny_text_model("bert")
    model = load_text_classifier(folder, 1).eval()
    assert model.config.problem_type == "regression"
    tok = load_tokenizer(folder)
    batch = tok(["the cat sat", "a dog"], ["on the mat", "ran"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 1)
    with pytest.raises(FileNotFoundError, match="looks like a model-hub id"):
        load_tokenizer("roberta-base")
