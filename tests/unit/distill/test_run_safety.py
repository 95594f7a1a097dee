"""SafeRunMixin (every DistillBrain): non-finite batches, sampler epochs, checkpoint clean-up, the resume mark.

Issue 16's probes: a NaN loss let the optimizer step (NaN weights) and named no
utterance; the sampler of a recipe's batch_sampler= never got its epoch; killed
runs left .tmp-CKPT folders and superseded checkpoints; train_log.txt mixed
attempts silently.
"""

import logging
import math

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from speechbrain.utils.train_logger import FileTrainLogger
from torch.utils.data import DataLoader

from speechbrain_cald.distill.run_safety import NonFiniteLossError


class Batch(tuple):
    """(x, lengths, y) with SpeechBrain's ``.id``."""

    def __new__(cls, items, ids):
        self = super().__new__(cls, items)
        self.id = ids
        return self


def id_batches(tiny, n, nan_at=(), seed=0):
    out = []
    for i, (x, lengths, y) in enumerate(tiny.make_batches(n, seed=seed)):
        if i in nan_at:
            x = x.clone()
            x[0, 0, 0] = float("nan")
        out.append(Batch((x, lengths, y), [f"utt{i}a", f"utt{i}b"]))
    return out


def loader(batches):
    return DataLoader(batches, batch_size=None, collate_fn=lambda b: b)


def params(brain):
    return {k: v.detach().clone() for k, v in brain.modules.model.state_dict().items()}


def test_a_nan_batch_is_skipped_named_and_never_stepped_on(tiny, caplog):
    caplog.set_level(logging.WARNING)
    def build():  # no dropout: the skipped batch's forward draws no random numbers the next ones miss
        torch.manual_seed(0)
        teacher = tiny.TinyEncoder(dropout=0.0)
        return tiny.build_brain("target", teacher=teacher, student=tiny.make_student(teacher))

    clean = build()
    clean.fit(range(1), loader([b for i, b in enumerate(id_batches(tiny, 4)) if i != 2]))
    brain = build()  # patience 3 (SpeechBrain's default)
    brain.fit(range(1), loader(id_batches(tiny, 4, nan_at=(2,))))
    assert brain.optimizer_step == 3
    after, want = params(brain), params(clean)
    assert all(torch.isfinite(v).all() for v in after.values())
    # the same weights as a run without that batch: it left no trace (same ops on the same batches)
    assert all(torch.equal(after[k], want[k]) for k in want)
    warning = next(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
    assert "utterances utt2a, utt2b" in warning and "non-finite loss" in warning


def test_too_many_nan_batches_stop_naming_each_and_keep_the_checkpoint(tiny, tmp_path):
    counter = EpochCounter(2)
    brain = tiny.build_brain("target", run_opts={"nonfinite_patience": 1},
                             checkpointer=Checkpointer(tmp_path / "save", {"counter": counter}))
    brain.checkpointer.add_recoverable("model", brain.modules.model)
    good = id_batches(tiny, 3)
    epochs = iter([good, id_batches(tiny, 3, nan_at=(0, 2), seed=1)])

    class TwoEpochs(torch.utils.data.IterableDataset):  # epoch 1 clean, epoch 2 with two NaN batches
        def __iter__(self):
            return iter(next(epochs))

    with pytest.raises(NonFiniteLossError) as err:
        brain.fit(counter, loader(TwoEpochs()))
    message = str(err.value)
    assert "2 batches this epoch had a non-finite loss" in message and "--nonfinite_patience=1" in message
    assert "utterances utt0a, utt0b" in message and "utterances utt2a, utt2b" in message
    saved = brain.checkpointer.find_checkpoint()
    assert str(saved.path) in message
    weights = torch.load(saved.path / "model.ckpt")
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_a_non_finite_gradient_is_not_stepped_on(tiny, caplog):
    brain = tiny.build_brain("unguided", hparams={"alpha_layer": 0.0, "alpha_logits": 0.0})
    weight = brain.modules.model.head.weight
    calls = []

    def poison(grad):  # the second batch's gradient overflows, its loss does not
        calls.append(1)
        return grad * float("inf") if len(calls) == 2 else grad

    weight.register_hook(poison)
    before = {}
    brain.start_callbacks.append(lambda b: before.setdefault(len(before), weight.detach().clone()))
    brain.fit(range(1), loader(id_batches(tiny, 3)))
    assert brain.optimizer_step == 2 and torch.isfinite(weight).all()
    assert any("utterances utt1a, utt1b" in r.getMessage() and "non-finite gradient" in r.getMessage()
               for r in caplog.records)


def test_batch_sampler_of_the_recipe_gets_its_epoch(tiny):
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.dataio.sampler import DynamicBatchSampler

    data = {f"u{i}": {"x": [float(i)], "duration": 1.0 + i % 3} for i in range(12)}
    dataset = DynamicItemDataset(data)
    dataset.set_output_keys(["id", "x"])
    sampler = DynamicBatchSampler(dataset, max_batch_length=4, num_buckets=2, shuffle=True,
                                  batch_ordering="random", length_func=lambda d: d["duration"])
    seen = []
    original = sampler.set_epoch
    sampler.set_epoch = lambda epoch: (seen.append(epoch), original(epoch))
    brain = tiny.build_brain("unguided", hparams={"alpha_layer": 0.0, "alpha_logits": 0.0})
    orders = []
    brain.fit_batch = lambda batch: orders.append(tuple(batch.id)) or torch.tensor(0.0)
    brain.fit(EpochCounter(3), dataset, train_loader_kwargs={"batch_sampler": sampler})
    assert seen == [1, 2, 3]
    # the order of an epoch is a function of the epoch alone: a fresh sampler (a resumed run) repeats it
    fresh = DynamicBatchSampler(dataset, max_batch_length=4, num_buckets=2, shuffle=True,
                                batch_ordering="random", length_func=lambda d: d["duration"])
    fresh.set_epoch(2)
    per_epoch = len(orders) // 3
    assert [tuple(f"u{i}" for i in b) for b in fresh] == orders[per_epoch: 2 * per_epoch]


def test_start_removes_killed_saves_and_superseded_checkpoints_and_marks_the_log(tiny, tmp_path, monkeypatch):
    log, save = tmp_path / "train_log.txt", tmp_path / "save"

    def brain_for(epochs):
        counter = EpochCounter(epochs)
        b = tiny.build_brain("unguided", hparams={"alpha_layer": 0.0, "alpha_logits": 0.0, "keep_checkpoints": 1,
                                                  "train_logger": FileTrainLogger(str(log))},
                             run_opts={"ckpt_interval_steps": 1},
                             checkpointer=Checkpointer(save, {"counter": counter}))
        b.checkpointer.add_recoverable("model", b.modules.model)
        return b, counter

    # a run killed at the wrong moments: no deletion ever happened (killed after each save)
    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "delete_checkpoints", lambda self, **kw: None)
        brain, counter = brain_for(2)
        brain.fit(counter, loader(id_batches(tiny, 2)))
    before = brain.checkpointer.list_checkpoints()
    assert len(before) == 6  # 2 intra-epoch + 1 end-of-epoch, twice
    newest = brain.checkpointer.find_checkpoint()
    (save / ".tmp-CKPT+killed").mkdir()
    (save / ".tmp-CKPT+killed" / "model.ckpt").write_text("half written")
    assert log.read_text().count("epoch: ") == 2

    brain, counter = brain_for(3)
    at_start = []
    brain.start_callbacks.append(lambda b: at_start.append([c.path for c in b.checkpointer.list_checkpoints()]))
    brain.fit(counter, loader(id_batches(tiny, 2)))
    assert at_start[0] == [newest.path]  # cleaned before the first batch: the superseded ones are gone
    left = brain.checkpointer.list_checkpoints()
    # epoch 3's end-of-epoch checkpoint alone: the killed run's were superseded (keep_checkpoints 1)
    assert len(left) == 1 and left[0].meta["step"] == 6 and newest.path not in [c.path for c in left]
    assert not list(save.glob(".tmp-*"))
    lines = log.read_text().splitlines()
    assert lines[2].startswith("# ") and f"resumed from checkpoint {newest.path.name} (end of an epoch" in lines[2]
    assert "optimizer step 4" in lines[2] and "come from the interrupted attempt" in lines[2]
    assert lines[3].startswith("epoch: 3")
