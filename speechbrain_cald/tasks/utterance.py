"""Utterance classification from speech: what the SLURP and VoxCeleb1 recipes share.

A recipe's ``train.py`` hands its corpus preparation and split names to
:func:`fit_utterance_classifier`, which

0. prepares the corpus on the main process (skipped when its manifests are current);
1. writes the label encoder of the training manifests (``label_encoder_file``)
   and gives the model (and a teacher) one output per label;
2. builds the datasets: training utterances as random fixed-length crops when
   the YAML sets ``train_crop_seconds`` (VoxCeleb1), whole utterances
   otherwise and always for validation;
3. trains with :class:`UtteranceBrain` (``DistillBrain`` hooks: cross-entropy,
   accuracy and macro-F1 on the validation set) under the YAML's guide;
4. exports the best model by validation accuracy as ``<output_folder>/model.ckpt``
   with its ``label_encoder.txt``.

YAML keys read here (besides ``DistillBrain``'s and SpeechBrain's run
options): ``model`` (an ``UtteranceClassifier``), optionally ``teacher``,
``label_encoder_file``, ``data_folder``, ``output_folder``, ``sample_rate``,
``train_crop_seconds`` (null: whole utterances), ``train_sampler`` (a
``!name:`` batch sampler taking the dataset and ``length_func``; without one,
``train_dataloader_opts`` batch the data), ``train_dataloader_opts``,
``valid_dataloader_opts``, ``opt_class``, ``checkpointer``, ``epoch_counter``,
``teacher_folder`` (students: its label encoder must be the same),
``task_loss_per`` (``utterance``: the mean cross-entropy over utterances, the
default; ``character``: the CALD speech reference's sum over the batch's
characters, :func:`cross_entropy_per_character`) with ``loss_characters`` (a
manifest column whose characters count, e.g. SLURP's ``transcript``, or a fixed
count per utterance, e.g. 3 for VoxCeleb1's dummy label ``'123'``).
"""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import speechbrain as sb
import torch
from speechbrain.dataio.dataio import load_data_csv
from speechbrain.utils.distributed import ddp_barrier, if_main_process, run_on_main

from speechbrain_cald.data.audio import audio_info, read_audio
from speechbrain_cald.data.labels import load_label_encoder, write_label_encoder
from speechbrain_cald.data.validate import validate_manifests
from speechbrain_cald.distill import DistillBrain, ModelOutput
from speechbrain_cald.distill.snapshots import save_snapshot
from speechbrain_cald.distill.taps import unwrap
from speechbrain_cald.distill.weights import build_modules
from speechbrain_cald.experiment import export_model
from speechbrain_cald.tasks.classification import classification_objective, cross_entropy_per_character
from speechbrain_cald.tasks.classification_metrics import ClassificationScores

__all__ = ["TASK_LOSS_PER", "UtteranceBrain", "fit_utterance_classifier", "known_label", "utterance_dataset"]

TASK_LOSS_PER = ("utterance", "character")


def known_label(encoder, where: str, column: str = "label"):
    """A ``validate_manifests`` row check: the row's label is one of the label encoder's.

    Example
    -------
    >>> from speechbrain_cald.data.labels import build_label_encoder
    >>> check = known_label(build_label_encoder(["a", "b"]), "enc.txt")
    >>> check({"label": "a"}) is None, check({"label": "c"})
    (True, "label 'c' is not one of the 2 labels of enc.txt (the training split's)")
    """

    def check(row):
        label = row.get(column)
        if label not in encoder.lab2ind:
            return f"{column} '{label}' is not one of the {len(encoder)} labels of {where} (the training split's)"
        return None

    return check


def utterance_dataset(
    csv_files: Sequence[str],
    data_root: str,
    label_encoder,
    sample_rate: int = 16000,
    crop_seconds: Optional[float] = None,
    characters: Union[str, int, None] = None,
) -> sb.dataio.dataset.DynamicItemDataset:
    """One SpeechBrain dataset over the manifests ``csv_files``: ``id``, ``sig``, ``label_id`` (, ``characters``).

    Arguments
    ---------
    csv_files : sequence of str
        Manifests with ``ID, duration, wav, label`` (``$data_root`` paths);
        several are joined (SLURP's real + synthetic training data).
    data_root : str
        What ``$data_root`` stands for.
    label_encoder : CategoricalEncoder
        Label -> class id.
    sample_rate : int
        Every file must have this rate.
    crop_seconds : float, optional
        Each item is a random ``crop_seconds`` window of the utterance (a new
        one at every read; whole utterances when shorter); None: whole utterances.
    characters : str or int, optional
        Adds ``characters``, each utterance's count for the per-character task
        loss: the length of this manifest column (e.g. ``transcript``), or this
        fixed number; None: no such item.

    Returns
    -------
    DynamicItemDataset
    """
    data: Dict[str, dict] = {}
    for path in csv_files:
        for uid, row in load_data_csv(path, replacements={"data_root": str(data_root)}).items():
            if uid in data:
                raise ValueError(f"utterance ID '{uid}' of {path} occurs in another manifest of the same dataset too")
            for key in ("wav", "label", "duration"):
                if key not in row:
                    raise KeyError(f"manifest {path}: no column '{key}' (found {sorted(row)})")
            data[uid] = row
    dataset = sb.dataio.dataset.DynamicItemDataset(data)

    if crop_seconds:
        crop = int(round(float(crop_seconds) * sample_rate))

        @sb.utils.data_pipeline.takes("wav")
        @sb.utils.data_pipeline.provides("sig")
        def audio_pipeline(wav):
            total = audio_info(wav).frames  # the header's exact length (the manifest's duration is rounded)
            if total <= crop:
                return read_audio(wav, sample_rate=sample_rate)
            start = int(torch.randint(0, total - crop + 1, (1,)))
            return read_audio(wav, start=start / sample_rate, stop=(start + crop) / sample_rate, sample_rate=sample_rate)

    else:

        @sb.utils.data_pipeline.takes("wav")
        @sb.utils.data_pipeline.provides("sig")
        def audio_pipeline(wav):
            return read_audio(wav, sample_rate=sample_rate)

    @sb.utils.data_pipeline.takes("label")
    @sb.utils.data_pipeline.provides("label_id")
    def label_pipeline(label):
        return torch.LongTensor([label_encoder.encode_label(label)])

    dataset.add_dynamic_item(audio_pipeline)
    dataset.add_dynamic_item(label_pipeline)
    keys = ["id", "sig", "label_id"]
    if characters is not None:
        dataset.add_dynamic_item(_characters_pipeline(characters, data, csv_files))
        keys.append("characters")
    dataset.set_output_keys(keys)
    return dataset


def _characters_pipeline(characters: Union[str, int], data: Mapping[str, dict], csv_files: Sequence[str]):
    """The dynamic item ``characters``: the length of a manifest column, or a fixed count."""
    if isinstance(characters, bool) or not isinstance(characters, (str, int)):
        raise TypeError(f"loss_characters: expected a manifest column name or a whole number, found {characters!r}")
    if isinstance(characters, int):
        if characters < 1:
            raise ValueError(f"loss_characters: a fixed count should be >= 1, found {characters}")

        @sb.utils.data_pipeline.takes("id")
        @sb.utils.data_pipeline.provides("characters")
        def fixed(uid):
            return torch.tensor([float(characters)])

        return fixed
    for uid, row in data.items():
        if characters not in row:
            raise KeyError(
                f"loss_characters: no column '{characters}' in the manifests {list(csv_files)} "
                f"(utterance {uid} has {sorted(row)})"
            )
        break

    @sb.utils.data_pipeline.takes(characters)
    @sb.utils.data_pipeline.provides("characters")
    def column(text):
        return torch.tensor([float(len(text))])

    return column


class UtteranceBrain(DistillBrain):
    """``DistillBrain`` hooks for utterance classification: cross-entropy, accuracy and macro-F1.

    ``labels`` (class names by id) must be set before validation; metrics are
    computed by ``ClassificationScores`` (cross-checked against SpeechBrain's
    ``ClassificationStats``).
    """

    labels: List[str] = []
    task_loss_per: str = "utterance"  # or "character": the CALD speech reference's normalisation

    def prepare_batch(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        characters = batch.characters.data[:, 0] if self.task_loss_per == "character" else None
        return SimpleNamespace(
            id=batch.id, wavs=wavs, wav_lens=wav_lens, labels=batch.label_id.data[:, 0], characters=characters
        )

    def run_model(self, model, batch, stage):
        logits, lengths = model(batch.wavs, batch.wav_lens)
        return ModelOutput(logits, lengths)

    def task_loss(self, output, batch, stage):
        if self.task_loss_per == "character":
            return cross_entropy_per_character(output.logits, batch.labels, batch.characters)
        return classification_objective(output.logits, batch.labels)

    def reset_metrics(self, stage):
        if stage != sb.Stage.TRAIN:
            self.scores = ClassificationScores(self.labels)

    def update_metrics(self, output, batch, stage):
        self.scores.append(batch.id, output.logits.argmax(-1), batch.labels)

    def stage_metrics(self, stage):
        summary = self.scores.summarize()
        return {"accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"]}

    def on_fit_start(self):
        super().on_fit_start()
        # the step-0 snapshot is the pretrained model with a fresh head: the first waypoint
        if self.cfg.snapshot_interval and self.optimizer_step == 0 and if_main_process():
            save_snapshot(unwrap(self.modules.model), self.cfg.snapshot_dir, 0)


def _check_teacher_labels(hparams: Mapping, encoder) -> None:
    """A student's label set must be its teacher's (the head is copied from it)."""
    folder = hparams.get("teacher_folder")
    if not folder:
        return
    path = os.path.join(folder, "label_encoder.txt")
    if not os.path.exists(path):
        return
    teacher = load_label_encoder(path)
    if teacher.lab2ind != encoder.lab2ind:
        raise ValueError(
            f"the teacher in {folder} was trained on another label set ({len(teacher)} labels in {path}) than "
            f"this run's training data ({len(encoder)} labels in {hparams['label_encoder_file']}): "
            "retrain the teacher on this data (stage 2) or point --teacher_folder at the right one"
        )


def fit_utterance_classifier(
    exp, prepare: Callable[..., Mapping[str, str]], train_splits: Sequence[str], valid_split: str
) -> UtteranceBrain:
    """Preparation, label encoder, heads, datasets, training and export: the body of a classification ``train.py``.

    Arguments
    ---------
    exp : speechbrain_cald.experiment.Experiment
        What ``start_experiment`` returned.
    prepare : callable
        The corpus preparation, ``prepare(skip_prep=False) -> {split: manifest}``:
        run on the main process (it skips itself when current), then again with
        ``skip_prep=True`` for the paths.
    train_splits : sequence of str
        The training splits (their labels make the label set).
    valid_split : str
        The validation split (best checkpoint by its accuracy).

    Returns
    -------
    UtteranceBrain
        After training; ``<output_folder>/model.ckpt`` and ``label_encoder.txt`` are written.
    """
    run_on_main(prepare)
    manifests = prepare(skip_prep=True)  # the paths only
    train_csvs, valid_csv = [manifests[split] for split in train_splits], manifests[valid_split]
    hp = exp.hparams
    label_file = hp["label_encoder_file"]
    run_on_main(write_label_encoder, args=[label_file, list(train_csvs)])
    encoder = load_label_encoder(label_file)
    _check_teacher_labels(hp, encoder)
    n_classes = len(encoder)
    rate = hp.get("sample_rate", 16000)
    validate_manifests(  # every bad row named before anything trains
        list(train_csvs) + [valid_csv],
        replacements={"data_root": hp["data_folder"]},
        sample_rate=rate,
        row_checks=[known_label(encoder, label_file)],
        report_file=os.path.join(hp["output_folder"], "manifest_problems.txt"),
    )
    for key in ("teacher", "model"):
        if key in hp:
            hp[key].set_classes(n_classes)
    print(f"{n_classes} classes (label encoder {label_file})", flush=True)

    per = hp.get("task_loss_per", "utterance")
    if per not in TASK_LOSS_PER:
        raise ValueError(f"hparams `task_loss_per`: expected one of {TASK_LOSS_PER}, found {per!r}")
    characters = hp.get("loss_characters") if per == "character" else None
    if per == "character" and characters is None:
        raise KeyError("hparams `task_loss_per: character` needs `loss_characters` (a manifest column or a count)")
    train_set = utterance_dataset(
        train_csvs, hp["data_folder"], encoder, rate, hp.get("train_crop_seconds"), characters
    )
    valid_set = utterance_dataset([valid_csv], hp["data_folder"], encoder, rate, characters=characters)
    valid_set = valid_set.filtered_sorted(sort_key="duration")
    train_opts = dict(hp.get("train_dataloader_opts") or {})
    if hp.get("train_sampler") is not None:
        train_opts["batch_sampler"] = hp["train_sampler"](train_set, length_func=lambda x: float(x["duration"]))

    brain = UtteranceBrain(
        modules=build_modules(hp),
        opt_class=hp["opt_class"],
        hparams=hp,
        run_opts=exp.run_opts,
        checkpointer=hp["checkpointer"],
    )
    brain.labels = [encoder.ind2lab[i] for i in range(n_classes)]
    brain.task_loss_per = per
    brain.fit(
        hp["epoch_counter"],
        train_set,
        valid_set,
        train_loader_kwargs=train_opts,
        valid_loader_kwargs=hp.get("valid_dataloader_opts") or {},
    )
    export_model(brain, hp["output_folder"], max_key="accuracy")
    if if_main_process():
        shutil.copyfile(label_file, os.path.join(hp["output_folder"], "label_encoder.txt"))
    ddp_barrier()
    return brain
