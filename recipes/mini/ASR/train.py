#!/usr/bin/env python3
"""Train a CTC ASR model on the mini corpus: the conformer teacher or a CALD student.

The YAML decides which. ``hparams/mini_teacher.yaml`` trains the transformer
from scratch (``guide: unguided``, no teacher; snapshots kept as waypoints).
A student YAML (``hparams/mini_mamba.yaml``, ...) builds the teacher's
architecture, converts it (``model: !apply:speechbrain_cald.convert.to_linear_time``)
and names a guide; the weights each side starts from are the guide's
``teacher_init`` / ``student_init`` (``speechbrain_cald.distill.weights``). This file is the data
pipeline and the Brain hooks only; ``DistillBrain`` does the rest.

    python train.py hparams/mini_teacher.yaml --data_folder=data --output_folder=results/teacher
    python train.py hparams/mini_mamba.yaml --data_folder=data --teacher_folder=results/teacher \\
        --output_folder=results/mini_mamba_target [--guide=waypoint]
"""

from __future__ import annotations

import json
import os
import sys
import time
from types import SimpleNamespace

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

from speechbrain_cald.data.audio import read_audio
from speechbrain_cald.data.units import load_char_units
from speechbrain_cald.data.validate import validate_manifests
from speechbrain_cald.distill import DistillBrain, ModelOutput
from speechbrain_cald.distill.snapshots import save_snapshot
from speechbrain_cald.distill.weights import build_modules
from speechbrain_cald.experiment import export_model, start_experiment
from speechbrain_cald.tasks import ctc_greedy_transcripts, ctc_objective

class ASRBrain(DistillBrain):
    """CTC ASR hooks for ``DistillBrain``: features, model call, CTC loss, WER."""

    def prepare_batch(self, batch, stage):
        # features once per batch, shared by student and teacher
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        feats = self.hparams.normalize(self.hparams.compute_features(wavs), wav_lens)
        return SimpleNamespace(feats=feats, wav_lens=wav_lens, tokens=batch.tokens, wrd=batch.wrd, id=batch.id)

    def run_model(self, model, batch, stage):
        logits = model(batch.feats, batch.wav_lens)
        return ModelOutput(logits, torch.round(batch.wav_lens * logits.shape[1]).long())

    def task_loss(self, output, batch, stage):
        tokens, tokens_lens = batch.tokens
        return ctc_objective(output.logits, output.lengths, tokens, torch.round(tokens_lens * tokens.shape[1]).long())

    def reset_metrics(self, stage):
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()

    def update_metrics(self, output, batch, stage):
        hyps = transcripts(output.logits, output.lengths, self.units)
        self.wer_metric.append(batch.id, [h.split() for h in hyps], [w.split() for w in batch.wrd])
        self.cer_metric.append(batch.id, [list(h) for h in hyps], [list(w) for w in batch.wrd])

    def stage_metrics(self, stage):
        return {"WER": self.wer_metric.summarize("error_rate"), "CER": self.cer_metric.summarize("error_rate")}

    def on_fit_start(self):
        super().on_fit_start()
        # the step-0 snapshot is this recipe's "pretrained" model (the teacher starts from scratch)
        if self.cfg.snapshot_interval and self.optimizer_step == 0:
            save_snapshot(self.modules.model, self.cfg.snapshot_dir, 0)


def transcripts(logits, lengths, units):
    """Greedy CTC decoding to strings: characters joined, words single-spaced."""
    return [" ".join("".join(units.decode_ndim(h)).split()) for h in ctc_greedy_transcripts(logits, lengths)]


def ctc_log_probs(model, hparams, wavs, wav_lens):
    """Frame log-probabilities ``(B, T', C)`` of ``model`` for ``wavs (B, N)`` (hparams as a namespace)."""
    feats = hparams.normalize(hparams.compute_features(wavs), wav_lens)
    return torch.log_softmax(model(feats, wav_lens), dim=-1)


def validate_data(hparams, csv_files, units=None, progress=True):
    """Check the manifests before anything trains or decodes: one error naming every bad row.

    Audio: exists, opens, ``sample_rate``, mono, not empty, length = ``duration``.
    Transcripts (when ``units`` is given, i.e. for training): not empty, every
    character in the units. An evaluation passes no units: its transcripts are
    only scored, so a character the model never saw is an error of the model.
    """
    validate_manifests(
        csv_files,
        replacements={"data_root": hparams["data_folder"]},
        sample_rate=hparams["sample_rate"],
        text_column="wrd" if units is not None else None,
        text_units=units.lab2ind if units is not None else None,
        text_units_name=hparams.get("units_file", "the units"),
        report_file=os.path.join(hparams["output_folder"], "manifest_problems.txt") if "output_folder" in hparams else None,
        progress=progress,
    )


def dataio_prepare(hparams, units, csv_files, with_tokens=True):
    """SpeechBrain datasets for ``{name: csv}`` with ``sig``, ``wrd`` and (``with_tokens``) ``tokens``.

    ``hparams`` needs ``data_folder`` and ``sample_rate``; ``units`` is only
    used for ``tokens`` (an evaluation needs none).
    """

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_audio(wav, hparams["sample_rate"])

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens")
    def text_pipeline(wrd):
        yield wrd
        yield torch.LongTensor(units.encode_sequence(list(wrd)))

    datasets = {}
    for name, csv in csv_files.items():
        ds = sb.dataio.dataset.DynamicItemDataset.from_csv(csv, replacements={"data_root": hparams["data_folder"]})
        ds.add_dynamic_item(audio_pipeline)
        ds.add_dynamic_item(text_pipeline)
        ds.set_output_keys(["id", "sig", "wrd"] + (["tokens"] if with_tokens else []))
        datasets[name] = ds
    return datasets


def main(argv):
    exp = start_experiment(argv)
    hparams, run_opts = exp.hparams, exp.run_opts

    units = load_char_units(hparams["units_file"])
    units.expect_len(hparams["output_neurons"])  # a clear error if YAML and units disagree
    validate_data(hparams, {"train": hparams["train_csv"], "valid": hparams["valid_csv"]}, units,
                  progress=not run_opts.get("noprogressbar"))
    data = dataio_prepare(hparams, units, {"train": hparams["train_csv"], "valid": hparams["valid_csv"]})
    if hparams.get("train_utts"):  # the first N utterances of the (randomly ordered) training manifest
        data["train"] = data["train"].filtered_sorted(select_n=hparams["train_utts"])
        print(f"training on the first {len(data['train'])} utterances of {hparams['train_csv']} (train_utts)")
    train_sampler = hparams["train_sampler"](data["train"], length_func=lambda x: float(x["duration"]))

    brain = ASRBrain(
        modules=build_modules(hparams),
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.units = units
    t0 = time.time()
    brain.fit(
        hparams["epoch_counter"],
        data["train"],
        data["valid"],
        train_loader_kwargs=dict(batch_sampler=train_sampler, **hparams["train_dataloader_opts"]),
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    write_training_record(brain, hparams, len(data["train"]), time.time() - t0)
    # the best model by valid WER, exported for the next stages and the evaluation
    export_model(brain, hparams["output_folder"], min_key="WER")


def write_training_record(brain, hparams, n_utterances: int, seconds: float) -> None:
    """``<output_folder>/training.json``: what the model saw and how long fit() took (stage 4 reports it)."""
    record = {
        "train_csv": os.path.basename(hparams["train_csv"]),
        "train_utterances": n_utterances,
        "epochs": hparams["epoch_counter"].current,
        "optimizer_steps": brain.optimizer_step,
        "guide": brain.guide.name,
        "fit_seconds": round(seconds, 1),
    }
    if if_main_process():
        with open(os.path.join(hparams["output_folder"], "training.json"), "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
