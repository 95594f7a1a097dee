"""End to end on a tiny SpeechBrain transformer with CTC, the way a recipe runs it.

The hparams come from a YAML that ``!include:``s ``hparams/guides/all.yaml`` and
picks the guide with an override (as ``--guide=...`` does); the teacher is a
2-layer SpeechBrain ``TransformerEncoder``; the student is a copy whose
self-attentions are a per-frame linear map with SpeechBrain's attention call.
Stage 2 (teacher fine-tuning with snapshots) runs first; each guide then runs
two short epochs, and its epoch summaries are read back from the log.
An interrupted and resumed run is compared with an uninterrupted one.
"""

import copy
import logging
import pathlib
import re

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from torch import nn

from speechbrain_cald.distill import DistillBrain, ModelOutput, list_snapshots
from speechbrain_cald.distill.taps import lengths_to_mask
from speechbrain_cald.tasks import ctc_greedy_transcripts, ctc_objective

REPO = pathlib.Path(__file__).resolve().parents[2]
FEATS, D, VOCAB = 6, 16, 6

HPARAMS = f"""
output_folder: !PLACEHOLDER
snapshot_dir: !ref <output_folder>/snapshots
guide: unguided
guides: !include:{REPO}/hparams/guides/all.yaml
    snapshot_dir: !ref <snapshot_dir>
    teacher_lr: 0.05
    switch_step: 3
    switch_fraction: null
alpha_layer: 15.0
alpha_logits: 1.0
tap_layers: encoder.layers
snapshot_interval: 0
number_of_epochs: 2
epoch_counter: !new:speechbrain.utils.epoch_loop.EpochCounter
    limit: !ref <number_of_epochs>
dropout: 0.1
model: !new:torch.nn.ModuleDict
    modules:
        inp: !new:torch.nn.Linear [{FEATS}, {D}]
        encoder: !new:speechbrain.lobes.models.transformer.Transformer.TransformerEncoder
            num_layers: 2
            nhead: 2
            d_ffn: 32
            d_model: {D}
            dropout: !ref <dropout>
        head: !new:torch.nn.Linear [{D}, {VOCAB}]
opt_class: !name:torch.optim.Adam
    lr: 0.01
checkpointer: !new:speechbrain.utils.checkpoints.Checkpointer
    checkpoints_dir: !ref <output_folder>/save
    recoverables:
        counter: !ref <epoch_counter>
"""


class TrivialMixer(nn.Module):
    """A stand-in for a linear-time mixer with SpeechBrain's attention call."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, query, key, value, attn_mask=None, key_padding_mask=None, pos_embs=None):
        out = self.lin(query)
        if key_padding_mask is not None:
            out = out.masked_fill(key_padding_mask[..., None], 0.0)
        return out, None


def convert(teacher):
    student = copy.deepcopy(teacher)
    for layer in student["encoder"].layers:
        layer.self_att = TrivialMixer(D)
    return student


class CTCBrain(DistillBrain):
    """What a recipe writes: run the model, the CTC loss, a token error rate."""

    def run_model(self, model, batch, stage):
        x, rel = batch.feats
        lengths = torch.round(rel * x.shape[1]).long()
        pad = ~lengths_to_mask(lengths, x.shape[1])
        h, _ = model["encoder"](model["inp"](x), src_key_padding_mask=pad)
        return ModelOutput(model["head"](h), lengths)

    def task_loss(self, output, batch, stage):
        tokens, rel = batch.tokens
        return ctc_objective(output.logits, output.lengths, tokens, torch.round(rel * tokens.shape[1]).long())

    def reset_metrics(self, stage):
        self.errors, self.words = 0, 0

    def update_metrics(self, output, batch, stage):
        tokens, rel = batch.tokens
        for hyp, ref, n in zip(
            ctc_greedy_transcripts(output.logits, output.lengths),
            tokens.tolist(),
            torch.round(rel * tokens.shape[1]).long().tolist(),
        ):
            self.errors += sum(a != b for a, b in zip(hyp, ref[:n])) + abs(len(hyp) - n)
            self.words += n

    def stage_metrics(self, stage):
        return {"TER": 100.0 * self.errors / max(self.words, 1)}


def dataset(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        frames = int(torch.randint(8, 13, (1,), generator=g))
        tokens = torch.randint(1, VOCAB, (int(torch.randint(2, 4, (1,), generator=g)),), generator=g)
        items.append({"id": str(i), "feats": torch.randn(frames, FEATS, generator=g), "tokens": tokens})
    return items


LOADER = {"batch_size": 2, "collate_fn": PaddedBatch}


def run(out_dir, guide, teacher_state=None, extra=None, kill=None, snapshot_interval=0, overrides=None):
    """Build everything from the YAML (seed 0) and fit; ``kill(brain)`` may raise."""
    torch.manual_seed(0)
    overrides = {
        "output_folder": str(out_dir),
        "guide": guide,
        "snapshot_interval": snapshot_interval,
        **(overrides or {}),
    }
    hp = load_hyperpyyaml(HPARAMS, overrides)
    teacher = hp["model"]
    if teacher_state is not None:
        teacher.load_state_dict(teacher_state)
    modules = {"model": teacher} if guide == "unguided" else {"model": convert(teacher), "teacher": teacher}
    hp["checkpointer"].add_recoverable("model", modules["model"])
    for name, obj in (extra or {}).items():
        hp["checkpointer"].add_recoverable(name, obj)
    brain = CTCBrain(
        modules=modules,
        opt_class=hp["opt_class"],
        hparams=hp,
        run_opts={"noprogressbar": True, "ckpt_interval_steps": 1},
        checkpointer=hp["checkpointer"],
    )
    brain.kill = kill
    brain.on_fit_batch_end = lambda *a: brain.kill and brain.kill(brain)
    brain.fit(hp["epoch_counter"], dataset(), dataset(2, seed=1), train_loader_kwargs=dict(LOADER), valid_loader_kwargs=dict(LOADER))
    return brain


SUMMARY = re.compile(r"epoch (\d) \| step (\d+) \| train (.*) \| lr \S+ \| valid (.*) \| teacher (.*)")


@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
    """Teacher fine-tuning (unguided, snapshots every 2 steps): 2 epochs of 3 steps."""
    out = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    pretrained = {k: v.clone() for k, v in load_hyperpyyaml(HPARAMS, {"output_folder": str(out)})["model"].state_dict().items()}
    brain = run(out, "unguided", snapshot_interval=2)
    finetuned = {k: v.detach().clone() for k, v in brain.modules.model.state_dict().items()}
    return {"dir": out, "pretrained": pretrained, "finetuned": finetuned}


# guide -> (teacher weights to start from, loss terms of epoch 1, of epoch 2, teacher of epoch 1, of epoch 2)
CASES = {
    "unguided": (None, {"task"}, {"task"}, "none", "none"),
    "target": ("finetuned", {"task", "layer", "logits"}, {"task", "layer", "logits"}, "target", "target"),
    "trajectory": (
        "pretrained",
        {"task", "layer", "logits", "teacher_task"},
        {"task", "layer", "logits", "teacher_task"},
        "trajectory (3 teacher updates",
        "trajectory (6 teacher updates",
    ),
    "waypoint": (
        "pretrained",
        {"task", "layer", "logits"},
        {"task", "layer", "logits"},
        "waypoint step_00000004",  # steps 2-3 use the snapshot of step 4
        "waypoint step_00000006",  # steps 4-5 use step 6's, the last
    ),
    # switch_step 3: epoch 1 (steps 0-2) distils, epoch 2 (3-5) keeps the logits term only (speech reference).
    "hybrid": ("finetuned", {"task", "layer", "logits"}, {"task", "logits"}, "target (hybrid", "target without the layer term (hybrid"),
}


def test_stage2_writes_snapshots(stage2):
    assert [s for s, _ in list_snapshots(stage2["dir"] / "snapshots")] == [2, 4, 6]


@pytest.mark.parametrize("guide", list(CASES))
def test_each_guide_from_its_yaml_fragment(guide, stage2, tmp_path, caplog):
    start, terms1, terms2, teacher1, teacher2 = CASES[guide]
    caplog.set_level(logging.INFO)
    teacher_state = stage2[start] if start else None
    if guide == "unguided":  # the student of an unguided run starts from the pretrained model
        teacher_state = stage2["pretrained"]
    out = tmp_path / "run"
    brain = _waypoint_run(out, stage2) if guide == "waypoint" else run(out, guide, teacher_state)
    summaries = [SUMMARY.search(r.getMessage()) for r in caplog.records]
    summaries = [m for m in summaries if m]
    assert [m.group(1) for m in summaries] == ["1", "2"]
    for m, terms, teacher in zip(summaries, (terms1, terms2), (teacher1, teacher2)):
        logged = {kv.split()[0] for kv in m.group(3).split(", ")}
        assert logged == {"loss"} | terms
        assert "TER" in m.group(4)
        assert m.group(5).startswith(teacher)
    assert brain.optimizer_step == 6
    brain.evaluate(dataset(2, seed=1), min_key="TER", test_loader_kwargs=dict(LOADER))
    assert any(r.getMessage().startswith("test | loss") and "TER" in r.getMessage() for r in caplog.records)
    if guide == "waypoint":
        switches = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waypoint guide: from")]
        assert [s.split("student step ")[1].split(" ")[0] for s in switches] == ["0", "2", "4"]


def _waypoint_run(out, stage2, **kwargs):
    """The waypoint guide reads the snapshots of stage 2."""
    overrides = {"snapshot_dir": str(stage2["dir"] / "snapshots")}
    return run(out, "waypoint", stage2["pretrained"], overrides=overrides, **kwargs)


@register_checkpoint_hooks
class SaveKiller:
    """Recoverable that dies (like a killed process) on its ``armed``-th save."""

    def __init__(self, armed=None):
        self.armed, self.saves = armed, 0

    @mark_as_saver
    def _save(self, path):
        self.saves += 1
        if self.saves == self.armed:
            raise KeyboardInterrupt("killed while saving a checkpoint")
        torch.save(self.saves, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        self.saves = torch.load(path)


class Killed(Exception):
    pass


def _kill_after_batch(k):
    def kill(brain):
        if brain.optimizer_step == k:
            raise Killed(f"killed after step {k}")

    return kill


def _state(brain):
    state = {
        "student": {k: v.clone() for k, v in brain.modules.model.state_dict().items()},
        "teacher": {k: v.clone() for k, v in brain.modules.teacher.state_dict().items()},
        "student_opt": brain.optimizer.state_dict()["state"],
        "steps": brain.optimizer_step,
        "guide": {k: v for k, v in brain.guide.state_dict().items() if k not in ("teacher", "optimizer")},
    }
    if brain.guide.name == "trajectory":
        state["teacher_opt"] = brain.guide.optimizer.state_dict()["state"]
    return state


def _equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


# Checkpoints: one per step (intra-epoch) and one per epoch; epoch 1 is steps 1-3.
KILLS = {
    "after step 4 (resume from the end-of-epoch checkpoint)": dict(kill=_kill_after_batch(4), resume=3),
    "after step 5 (resume from the intra-epoch checkpoint of step 4)": dict(kill=_kill_after_batch(5), resume=4),
    # Saves: steps 1-3, end of epoch 1, step 4, step 5 -> the 6th is step 5's.
    "while saving step 5 (resume from step 4)": dict(killer=6, resume=4),
}


@pytest.mark.parametrize("where", list(KILLS))
def test_interrupted_and_resumed_run_ends_where_an_uninterrupted_one_does(stage2, tmp_path, where):
    """Trajectory guide (teacher weights, optimizer, dropout RNG all in play)."""
    start = stage2["pretrained"]
    whole = run(tmp_path / "whole", "trajectory", start, extra={"killer": SaveKiller()})
    out = tmp_path / "resumed"
    how = KILLS[where]
    with pytest.raises((Killed, KeyboardInterrupt)):
        run(out, "trajectory", start, extra={"killer": SaveKiller(how.get("killer"))}, kill=how.get("kill"))
    if "killer" in how:  # the half-written checkpoint is there, hidden
        assert any(p.name.startswith(".tmp-CKPT") for p in (out / "save").iterdir())
    # Drop everything and rebuild from the YAML and the checkpoint folder.
    steps_run = []
    resumed = run(
        out, "trajectory", start, extra={"killer": SaveKiller()}, kill=lambda b: steps_run.append(b.optimizer_step)
    )
    assert steps_run == list(range(how["resume"] + 1, 7)), "did not resume from the expected checkpoint"
    a, b = _state(whole), _state(resumed)
    assert a["steps"] == b["steps"] == 6
    assert a["guide"]["teacher_updates"] == 6
    for key in a:
        assert _equal(a[key], b[key]), f"{key} differs after resuming ({where})"
    # A sanity check that the comparison can fail: the run did move the weights.
    assert not _equal(a["student"], convert_state(start))


def convert_state(teacher_state):
    torch.manual_seed(0)
    hp = load_hyperpyyaml(HPARAMS, {"output_folder": "/tmp/unused"})
    hp["model"].load_state_dict(teacher_state)
    return convert(hp["model"]).state_dict()


@pytest.mark.parametrize("guide", ["waypoint", "hybrid"])
def test_resume_keeps_waypoint_and_hybrid_state(stage2, tmp_path, guide):
    """Killed after step 4 (hybrid: past its switch at step 3; waypoint: on snapshot 6)."""
    kwargs = {"extra": {"killer": SaveKiller()}}
    if guide == "waypoint":
        go = lambda out, **kw: _waypoint_run(out, stage2, **kwargs, **kw)  # noqa: E731
    else:
        go = lambda out, **kw: run(out, guide, stage2["finetuned"], **kwargs, **kw)  # noqa: E731
    whole = go(tmp_path / "whole")
    with pytest.raises(Killed):
        go(tmp_path / "resumed", kill=_kill_after_batch(5))
    steps_run = []
    resumed = go(tmp_path / "resumed", kill=lambda b: steps_run.append(b.optimizer_step))
    assert steps_run == [5, 6]
    a, b = _state(whole), _state(resumed)
    for key in a:
        assert _equal(a[key], b[key]), f"{key} differs after resuming"
    expected = {"waypoint": {"name": "waypoint", "loaded_step": 6}, "hybrid": {"name": "hybrid", "switch_step": 3, "switched": True}}
    assert b["guide"] == expected[guide]
