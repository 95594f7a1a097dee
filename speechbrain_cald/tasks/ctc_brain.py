"""The CTC ASR Brain and data pipeline of the wav2vec2-family corpus recipes (LibriSpeech, TED-LIUM).

A recipe's ``train.py`` prepares its corpus, then calls :func:`train_ctc`:
the tokens (stage 1's, or built now when missing, on the main process), the
datasets (``speechbrain_cald.data.audio``), :class:`CTCBrain` over
``DistillBrain`` (teacher fine-tuning or a CALD student, as the YAML's guide
says) and the export of the best checkpoint.

The model is any ``(wavs, wav_lens) -> (logits (B, T, V), lengths (B,))``
module (``lobes.hf_speech.CTCModel``, or a converted student of it), called as
a whole so that DDP wrapping works.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Callable, Dict, Mapping

import speechbrain as sb
import torch
from speechbrain.utils.distributed import run_on_main

from speechbrain_cald.data.audio import speech_datasets
from speechbrain_cald.data.tokens import build_tokens, load_tokens
from speechbrain_cald.data.validate import validate_manifests
from speechbrain_cald.distill import DistillBrain, ModelOutput
from speechbrain_cald.distill.snapshots import save_snapshot
from speechbrain_cald.distill.weights import build_modules
from speechbrain_cald.experiment import Experiment, export_model
from speechbrain_cald.tasks.ctc import ctc_greedy_transcripts, ctc_objective

__all__ = ["CTCBrain", "asr_datasets", "prepare_tokens", "train_ctc", "validate_speech_manifests"]


class CTCBrain(DistillBrain):
    """CTC on raw waveforms for ``DistillBrain``: the model call, the CTC loss, greedy WER / CER on valid sets."""

    tokens = None  # set by train_ctc: CharTokens or PieceTokens

    def prepare_batch(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        return SimpleNamespace(wavs=wavs, wav_lens=wav_lens, tokens=batch.tokens, wrd=batch.wrd, id=batch.id)

    def run_model(self, model, batch, stage):
        logits, lengths = model(batch.wavs, batch.wav_lens)
        return ModelOutput(logits, lengths)

    def task_loss(self, output, batch, stage):
        tokens, rel = batch.tokens
        return ctc_objective(output.logits, output.lengths, tokens, torch.round(rel * tokens.shape[1]).long(),
                             blank_index=self.tokens.blank_index)

    def reset_metrics(self, stage):
        if stage != sb.Stage.TRAIN:
            self.wer_metric = sb.utils.metric_stats.ErrorRateStats()
            self.cer_metric = sb.utils.metric_stats.ErrorRateStats(split_tokens=True)

    def update_metrics(self, output, batch, stage):
        hyps = [self.tokens.decode(seq) for seq in
                ctc_greedy_transcripts(output.logits.detach(), output.lengths, self.tokens.blank_index)]
        self.wer_metric.append(batch.id, [h.split() for h in hyps], [w.split() for w in batch.wrd])
        self.cer_metric.append(batch.id, [list(h) for h in hyps], [list(w) for w in batch.wrd])

    def stage_metrics(self, stage):
        return {"WER": self.wer_metric.summarize("error_rate"), "CER": self.cer_metric.summarize("error_rate")}

    def on_fit_start(self):
        super().on_fit_start()
        # step 0 = the pretrained model (+ its new CTC head): the first waypoint
        if self.cfg.snapshot_interval and self.optimizer_step == 0 and sb.utils.distributed.if_main_process():
            save_snapshot(self.modules.model, self.cfg.snapshot_dir, 0)


def asr_datasets(hparams: Mapping, tokens, csv_files: Mapping[str, str]) -> Dict[str, sb.dataio.dataset.DynamicItemDataset]:
    """Datasets with ``sig``, ``wrd`` and ``tokens`` for ``{name: manifest}`` (``$data_root`` = ``data_folder``)."""

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens")
    def text_pipeline(wrd):
        yield wrd
        yield torch.LongTensor(tokens.encode(wrd))

    return speech_datasets(csv_files, hparams["data_folder"], hparams.get("sample_rate", 16000), text_pipeline,
                           ["wrd", "tokens"])


def _segment_in_order(row: Dict[str, str]):
    if float(row["start"]) >= float(row["stop"]):
        return f"segment: start {row['start']} s is not before stop {row['stop']} s"
    return None


def validate_speech_manifests(manifests: Mapping[str, str], data_root: str, sample_rate: int, tokens=None,
                              report_file: str = None) -> int:
    """Every bad row of the manifests named before any model runs (``data.validate``).

    Files exist, open, decode to the end, have ``sample_rate`` and one channel;
    whole-file rows match their ``duration``; segment rows (``start`` / ``stop``
    in seconds, TED-LIUM) are ordered; transcripts are non-empty and, for
    character tokens, use only the token inventory.
    """
    units = [c for c in tokens.labels if len(c) == 1] if tokens is not None and tokens.kind == "char" else None
    groups: Dict[bool, Dict[str, str]] = {}
    for name, path in manifests.items():  # whole files and segments take different checks
        with open(path, encoding="utf-8") as f:
            groups.setdefault("start" in f.readline().strip().split(","), {})[name] = path
    rows = 0
    for segments, group in sorted(groups.items()):
        rows += validate_manifests(
            group, report_file=report_file, replacements={"data_root": str(data_root)}, sample_rate=sample_rate,
            duration_column=None if segments else "duration", row_checks=[_segment_in_order] if segments else (),
            text_column="wrd", text_units=units, text_units_name=getattr(tokens, "path", None) or "the tokens")
    return rows


def prepare_tokens(hparams: Mapping):
    """Stage 1's tokens in ``hparams["tokens_folder"]`` (built on the main process when missing); checks the head size."""
    run_on_main(build_tokens, kwargs=dict(
        folder=hparams["tokens_folder"], kind=hparams["token_type"], train_csv=hparams["train_csv"],
        vocab_size=hparams.get("vocab_size", 0), alphabet=hparams.get("token_alphabet", "")))
    tokens = load_tokens(hparams["tokens_folder"])
    if len(tokens) != hparams["output_neurons"]:
        raise ValueError(
            f"{hparams['tokens_folder']}: {len(tokens)} {tokens.kind} tokens (blank included), but the YAML's "
            f"output_neurons is {hparams['output_neurons']}: pass --output_neurons={len(tokens)}"
            + (" (and --vocab_size to choose the number of pieces)" if tokens.kind == "unigram" else "")
        )
    return tokens


def train_ctc(exp: Experiment, prepare: Callable[[], None]) -> str:
    """Prepare (main process), build tokens, train the YAML's model with its guide, export the best by valid WER.

    Arguments
    ---------
    exp : Experiment
        From ``start_experiment``.
    prepare : callable
        The corpus preparation (writes the manifests the YAML names; skips
        itself when they match); run on the main process only.

    Returns
    -------
    str
        ``<output_folder>/model.ckpt`` (empty with ``prepare_only: True``:
        preparation and tokens only).
    """
    hparams = exp.hparams
    run_on_main(prepare)
    tokens = prepare_tokens(hparams)
    if hparams.get("prepare_only", False):  # run.sh's stages 0-1: manifests and tokens, no training
        return ""
    validate_speech_manifests({"train": hparams["train_csv"], "valid": hparams["valid_csv"]}, hparams["data_folder"],
                              hparams.get("sample_rate", 16000), tokens,
                              os.path.join(hparams["output_folder"], "manifest_problems.txt"))
    data = asr_datasets(hparams, tokens, {"train": hparams["train_csv"], "valid": hparams["valid_csv"]})
    if hparams.get("sorting", "random") != "random":
        data["train"] = data["train"].filtered_sorted(sort_key="duration", reverse=hparams["sorting"] == "descending")
    train_kwargs = dict(hparams.get("train_dataloader_opts", {}))
    if hparams.get("dynamic_batching", True):
        train_kwargs["batch_sampler"] = hparams["train_sampler"](data["train"], length_func=lambda x: float(x["duration"]))
    brain = CTCBrain(modules=build_modules(hparams), opt_class=hparams["opt_class"], hparams=hparams,
                     run_opts=exp.run_opts, checkpointer=hparams["checkpointer"])
    brain.tokens = tokens
    brain.fit(hparams["epoch_counter"], data["train"], data["valid"], train_loader_kwargs=train_kwargs,
              valid_loader_kwargs=hparams.get("valid_dataloader_opts", {}))
    return export_model(brain, hparams["output_folder"], min_key="WER")

