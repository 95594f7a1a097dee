"""Tiny teacher / student models and a DistillBrain for the distill unit tests."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from speechbrain_cald.distill import DistillBrain, ModelOutput
from speechbrain_cald.distill.taps import lengths_to_mask

FEATS, D, VOCAB = 4, 8, 5


class Block(nn.Module):
    """x + mix(x), then x + ffn(x): a transformer-shaped layer with a swappable mixer."""

    def __init__(self, d=D, dropout=0.1):
        super().__init__()
        self.mixer = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.mixer(x))
        return x + self.drop(self.ffn(x))


class TinyEncoder(nn.Module):
    def __init__(self, layers=2, dropout=0.1):
        super().__init__()
        self.inp = nn.Linear(FEATS, D)
        self.layers = nn.ModuleList([Block(D, dropout) for _ in range(layers)])
        self.head = nn.Linear(D, VOCAB)

    def forward(self, x, lengths):
        mask = lengths_to_mask(lengths, x.shape[1], x.shape[0])[..., None]
        h = self.inp(x) * mask
        for layer in self.layers:
            h = layer(h) * mask  # padded frames stay 0, as the mixers guarantee
        return self.head(h)


def make_student(teacher):
    """The teacher with a different (trivial) mixer: mean over features."""
    student = copy.deepcopy(teacher)
    for layer in student.layers:
        layer.mixer = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D))
    return student


class ToyBrain(DistillBrain):
    """Frame classification: CE over valid frames; records the terms of every step."""

    def run_model(self, model, batch, stage):
        x, lengths, _ = batch
        return ModelOutput(model(x, lengths), lengths)

    def task_loss(self, output, batch, stage):
        _, lengths, y = batch
        mask = lengths_to_mask(lengths, y.shape[1])
        ce = nn.functional.cross_entropy(output.logits.transpose(1, 2), y, reduction="none")
        return (ce * mask).sum() / mask.sum()

    def on_fit_batch_start(self, batch, should_step):
        self._step_at_start = self.optimizer_step
        for callback in self.start_callbacks:
            callback(self)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        for callback in self.end_callbacks:
            callback(self, self._step_at_start)
        self.history.append(
            {
                "step": self._step_at_start,
                "terms": dict(self.last_terms),
                "teacher": self.guide.describe(self._step_at_start),
            }
        )


def make_batches(n=4, batch=2, frames=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.randint(3, frames + 1, (batch,), generator=g)
        lengths[0] = frames
        x = torch.randn(batch, frames, FEATS, generator=g)
        y = torch.randint(0, VOCAB, (batch, frames), generator=g)
        out.append((x, lengths, y))
    return out


def build_brain(guide, teacher=None, student=None, hparams=None, run_opts=None, checkpointer=None):
    torch.manual_seed(0)
    teacher = teacher if teacher is not None else TinyEncoder()
    student = student if student is not None else make_student(teacher)
    modules = {"model": student}
    if guide != "unguided" or teacher is not None:
        modules["teacher"] = teacher
    hp = {"guide": guide, "tap_layers": "layers", "alpha_layer": 2.0, "alpha_logits": 0.5}
    hp.update(hparams or {})
    brain = ToyBrain(
        modules=modules,
        opt_class=lambda p: torch.optim.SGD(p, lr=0.05),
        hparams=hp,
        run_opts={"noprogressbar": True, **(run_opts or {})},
        checkpointer=checkpointer,
    )
    brain.history, brain.start_callbacks, brain.end_callbacks = [], [], []
    return brain


def loader(batches):
    return DataLoader(batches, batch_size=None)


@pytest.fixture
def tiny():
    """Helpers: TinyEncoder, make_student, build_brain, make_batches, loader."""

    class Helpers:
        pass

    h = Helpers()
    h.TinyEncoder, h.make_student, h.build_brain = TinyEncoder, make_student, build_brain
    h.make_batches, h.loader, h.ToyBrain = make_batches, loader, ToyBrain
    return h
