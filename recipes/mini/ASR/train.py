#!/usr/bin/env python3
"""Train a CTC ASR model on the mini corpus: the conformer teacher or a CALD student.

The YAML decides which: ``hparams/mini_teacher.yaml`` trains the teacher from
scratch (saving waypoint snapshots); ``hparams/mini_mamba.yaml`` and friends
convert the teacher and distil into the student. This file is the data pipeline
and the Brain hooks only.

    python train.py hparams/mini_teacher.yaml --data_folder=data --output_folder=results/teacher
"""

from __future__ import annotations

import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_cald.data.units import load_char_units


class CTCBrain(sb.Brain):
    """CTC training of ``modules.model`` (``CNN`` -> ``Transformer.encode`` -> ``ctc_lin``)."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        log_probs = ctc_log_probs(self.modules.model, self.hparams, wavs, wav_lens)
        return log_probs, wav_lens

    def compute_objectives(self, predictions, batch, stage):
        log_probs, wav_lens = predictions
        tokens, tokens_lens = batch.tokens
        loss = self.hparams.ctc_cost(log_probs, tokens, wav_lens, tokens_lens)
        if stage != sb.Stage.TRAIN:
            hyps = greedy_transcripts(log_probs, wav_lens, self.units)
            refs = [w.split() for w in batch.wrd]
            self.wer_metric.append(batch.id, [h.split() for h in hyps], refs)
            self.cer_metric.append(batch.id, [list(h) for h in hyps], [list(w) for w in batch.wrd])
        return loss

    def on_fit_start(self):
        super().on_fit_start()
        if self.hparams.snapshot_interval and self.optimizer_step == 0:
            save_snapshot(self.modules.model, self.hparams.snapshot_dir, 0)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        if should_step:
            self.hparams.lr_annealing(self.optimizer)
            interval = self.hparams.snapshot_interval
            if interval and self.optimizer_step % interval == 0:
                save_snapshot(self.modules.model, self.hparams.snapshot_dir, self.optimizer_step)

    def on_stage_start(self, stage, epoch=None):
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        stats = {"loss": stage_loss, "WER": self.wer_metric.summarize("error_rate"), "CER": self.cer_metric.summarize("error_rate")}
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "steps": self.optimizer_step},
                train_stats={"loss": self.train_loss},
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={"WER": stats["WER"]}, min_keys=["WER"])


def ctc_log_probs(model, hparams, wavs, wav_lens):
    """Frame log-probabilities ``(B, T', C)`` of ``model`` for ``wavs (B, N)`` (hparams as a namespace)."""
    feats = hparams.normalize(hparams.compute_features(wavs), wav_lens)
    enc = model.Transformer.encode(model.CNN(feats), wav_lens)
    return hparams.log_softmax(model.ctc_lin(enc))


def greedy_transcripts(log_probs, wav_lens, units):
    """Greedy CTC decoding to strings (characters joined, words single-spaced)."""
    hyps = sb.decoders.ctc_greedy_decode(log_probs, wav_lens, blank_id=0)
    return [" ".join("".join(units.decode_ndim(h)).split()) for h in hyps]


def dataio_prepare(hparams, units, csv_files):
    """SpeechBrain datasets for ``{name: csv}`` with ``sig``, ``wrd`` and ``tokens``."""

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

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
        ds.set_output_keys(["id", "sig", "wrd", "tokens"])
        datasets[name] = ds
    return datasets


def save_snapshot(model, snapshot_dir, step):
    """Waypoint snapshot of ``model`` after ``step`` optimizer steps."""
    from speechbrain_cald.distill.snapshots import save_snapshot as _save

    _save(model, snapshot_dir, step)


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as f:
        hparams = load_hyperpyyaml(f, overrides)
    sb.create_experiment_directory(hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides)

    units = load_char_units(hparams["units_file"])
    units.expect_len(hparams["output_neurons"])  # a clear error if YAML and units disagree
    data = dataio_prepare(hparams, units, {"train": hparams["train_csv"], "valid": hparams["valid_csv"]})
    train_sampler = hparams["train_sampler"](data["train"], length_func=lambda x: float(x["duration"]))

    brain = CTCBrain(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts, checkpointer=hparams["checkpointer"])
    brain.units = units
    brain.fit(
        hparams["epoch_counter"],
        data["train"],
        data["valid"],
        train_loader_kwargs=dict(batch_sampler=train_sampler, **hparams["train_dataloader_opts"]),
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    # the best-valid model, exported for the students and the evaluation
    brain.checkpointer.recover_if_possible(min_key="WER")
    export = os.path.join(hparams["output_folder"], "model.ckpt")
    torch.save(brain.modules.model.state_dict(), export + ".tmp")
    os.replace(export + ".tmp", export)
    print(f"best model (valid WER) -> {export}")


if __name__ == "__main__":
    main(sys.argv[1:])
