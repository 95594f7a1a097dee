"""Whisper ASR for ``DistillBrain``: the data pipeline, the decoder's loss, greedy decoding, the task entry.

A Whisper recipe's ``train.py`` calls :func:`train_whisper`. The model is a
transformers ``WhisperForConditionalGeneration`` (the teacher, read from a
local folder) or its converted student (every encoder self-attention replaced,
the decoder as it was). Each batch holds 30-second log-mel windows
``features (B, n_mels, 3000)`` and token sequences ``prompt + text + <|endoftext|>``;
the task loss is the decoder's next-token cross-entropy on the text tokens
(prompt positions excluded), the taps are the encoder's layers (the family's),
and the decoder's logits carry their own valid lengths for the logits KD.

The tokenizer with its prompt, the log-mel front end and greedy decoding are
``lobes.whisper``'s (``WhisperText``, ``log_mel``, ``greedy_decode``).
"""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.distributed import run_on_main

from speechbrain_cald.convert.io import load_pretrained
from speechbrain_cald.data.audio import speech_datasets
from speechbrain_cald.data.validate import validate_manifests
from speechbrain_cald.distill import DistillBrain, ModelOutput
from speechbrain_cald.distill.mixer_alignment import align_from_hparams
from speechbrain_cald.distill.snapshots import save_snapshot
from speechbrain_cald.distill.taps import unwrap
from speechbrain_cald.distill.weights import build_modules
from speechbrain_cald.experiment import Experiment, export_model
from speechbrain_cald.lobes.whisper import WhisperText, greedy_decode, log_mel
from speechbrain_cald.pretrained import local_source

__all__ = [
    "WhisperBrain",
    "decoder_objective",
    "export_whisper",
    "load_whisper",
    "train_whisper",
    "whisper_datasets",
]

logger = logging.getLogger(__name__)


def load_whisper(pretrained_dir: str):
    """``WhisperForConditionalGeneration`` from a local transformers folder (fp32, eager-free SDPA attention).

    Arguments
    ---------
    pretrained_dir : str
        A folder written by ``save_pretrained`` (or by
        ``python -m speechbrain_cald.pretrained.ctranslate2_whisper``).

    Returns
    -------
    transformers.WhisperForConditionalGeneration
    """
    from transformers import AutoConfig, WhisperForConditionalGeneration

    folder = local_source(pretrained_dir, "Whisper model")
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder}: not a transformers Whisper folder ({err})") from None
    if config.model_type != "whisper":
        raise ValueError(f"{folder / 'config.json'}: a '{config.model_type}' model, expected a Whisper model (family whisper)")
    return load_pretrained(folder, WhisperForConditionalGeneration, "Whisper model", config=config)


def decoder_objective(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Mean next-token cross-entropy over each sequence's text tokens and its ``<|endoftext|>``.

    Arguments
    ---------
    logits : torch.Tensor
        ``(B, L - 1, V)``: the decoder's outputs for inputs ``tokens[:, :-1]``.
    tokens : torch.Tensor
        ``(B, L)`` full sequences (prompt + text + eot), right-padded.
    lengths : torch.Tensor
        ``(B,)`` valid tokens per sequence.
    prompt_len : int
        Prompt tokens (their predictions are not trained: the prompt is given).

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Example
    -------
    >>> logits = torch.zeros(1, 3, 5)
    >>> round(float(decoder_objective(logits, torch.tensor([[0, 1, 2, 3]]), torch.tensor([4]), 1)), 4)  # log 5
    1.6094
    """
    targets = tokens[:, 1:]
    pos = torch.arange(targets.shape[1], device=tokens.device)
    valid = (pos[None] >= prompt_len - 1) & (pos[None] < (lengths.to(tokens.device)[:, None] - 1))
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")
    return (loss * valid).sum() / valid.sum().clamp(min=1)


class WhisperBrain(DistillBrain):
    """Whisper for ``DistillBrain``: the decoder's cross-entropy, the encoder's taps, token-level logits KD."""

    text: Optional[WhisperText] = None  # set by train_whisper

    def prepare_batch(self, batch, stage):
        batch = batch.to(self.device)
        tokens, rel = batch.tokens
        lengths = torch.round(rel * tokens.shape[1]).long()
        return SimpleNamespace(features=batch.features.data, tokens=tokens, token_lengths=lengths, wrd=batch.wrd,
                               id=batch.id)

    def run_model(self, model, batch, stage):
        out = model(input_features=batch.features, decoder_input_ids=batch.tokens[:, :-1])
        # the encoder reads the whole 30 s window (Whisper has no padding mask): every frame counts
        return ModelOutput(out.logits, None, logits_lengths=batch.token_lengths - 1)

    def task_loss(self, output, batch, stage):
        return decoder_objective(output.logits, batch.tokens, batch.token_lengths, len(self.text.prompt))

    def on_fit_start(self):
        super().on_fit_start()  # optimizers built, checkpoint recovered
        if hasattr(self.cfg.lr_scheduler, "plan") and self.planned_steps:
            self.cfg.lr_scheduler.plan(self.planned_steps, self.optimizer)
        if self.cfg.snapshot_interval and self.optimizer_step == 0 and sb.utils.distributed.if_main_process():
            # step 0: the converted model (after the mixer alignment, when the YAML asks for one)
            save_snapshot(unwrap(self.modules.model), self.cfg.snapshot_dir, 0)

    def reset_metrics(self, stage):
        self.token_errors, self.token_count = 0, 0

    def update_metrics(self, output, batch, stage):
        # teacher-forced token accuracy on the text tokens: cheap, and it falls as the student forgets
        pred = output.logits.argmax(-1)
        targets = batch.tokens[:, 1:]
        pos = torch.arange(targets.shape[1], device=targets.device)
        valid = (pos[None] >= len(self.text.prompt) - 1) & (pos[None] < batch.token_lengths[:, None] - 1)
        self.token_errors += int(((pred != targets) & valid).sum())
        self.token_count += int(valid.sum())

    def stage_metrics(self, stage):
        return {"token_error": 100.0 * self.token_errors / max(1, self.token_count)}


def whisper_datasets(hparams: Mapping, text: WhisperText, csv_files: Mapping[str, str]):
    """Datasets with ``features`` (log-mel windows), ``wrd`` and ``tokens`` for ``{name: manifest}``."""
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(str(local_source(hparams["pretrained_dir"])))

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens")
    def text_pipeline(wrd):
        yield wrd
        yield torch.LongTensor(text.encode(wrd))

    data = speech_datasets(csv_files, hparams["data_folder"], 16000, text_pipeline, ["wrd", "tokens"])

    @sb.utils.data_pipeline.takes("sig")
    @sb.utils.data_pipeline.provides("features")
    def features_pipeline(sig):
        return torch.from_numpy(log_mel(extractor, sig.numpy()))

    for dataset in data.values():
        dataset.add_dynamic_item(features_pipeline)
        dataset.set_output_keys(["id", "features", "wrd", "tokens"])
    return data


def train_whisper(exp: Experiment, prepare: Callable[[], Dict[str, str]]) -> str:
    """Prepare (main process), then export the teacher as it is or train the YAML's model; export it.

    Arguments
    ---------
    exp : Experiment
        From ``start_experiment``.
    prepare : callable
        The corpus preparation (skips itself when current); main process only.

    Returns
    -------
    str
        ``<output_folder>/model.ckpt``.
    """
    hparams = exp.hparams
    run_on_main(prepare)
    if hparams.get("prepare_only", False):
        return ""
    out = os.path.join(hparams["output_folder"], "model.ckpt")
    if "teacher" not in hparams and not hparams.get("fine_tune", False):
        # stage 2 without fine-tuning: the teacher is the pretrained model as distributed
        if sb.utils.distributed.if_main_process():
            from speechbrain_cald.files import atomic_write

            with atomic_write(out, "wb") as f:
                torch.save(hparams["model"].state_dict(), f)
            export_whisper(hparams["model"], hparams["pretrained_dir"], os.path.join(hparams["output_folder"], "inference"))
            logger.info("teacher: the pretrained model as distributed -> %s", out)
        return out
    if hparams.get("fine_tune", False):
        raise NotImplementedError("fine_tune: True: this recipe evaluates Whisper as distributed (stage 2 exports it)")
    csvs = {"train": hparams["train_csv"], "valid": hparams["valid_csv"]}
    text = WhisperText(hparams["pretrained_dir"])
    positions = hparams["model"].config.max_target_positions

    def fits_the_decoder(row):
        n = len(text.encode(row["wrd"]))
        if n > positions:
            return f"transcript of {n} tokens (prompt and end included); the decoder holds {positions}: cut the window"
        return None

    validate_manifests(csvs, report_file=os.path.join(hparams["output_folder"], "manifest_problems.txt"),
                       replacements={"data_root": str(hparams["data_folder"])}, sample_rate=16000,
                       duration_column="duration", text_column="wrd", row_checks=[fits_the_decoder])
    data = whisper_datasets(hparams, text, csvs)
    modules = build_modules(hparams)
    loader = sb.dataio.dataloader.make_dataloader(data["train"], **hparams.get("train_dataloader_opts", {}))
    align_from_hparams(hparams, modules, loader, lambda model, batch: model.get_encoder()(batch.features.data))
    if hparams.get("train_windows"):  # CALD's end-to-end steps read the first N windows (the alignment read them all)
        data["train"] = data["train"].filtered_sorted(select_n=int(hparams["train_windows"]))
    brain = WhisperBrain(modules=modules, opt_class=hparams["opt_class"], hparams=hparams,
                         run_opts=exp.run_opts, checkpointer=hparams["checkpointer"])
    brain.text = text
    brain.fit(hparams["epoch_counter"], data["train"], data["valid"],
              train_loader_kwargs=hparams.get("train_dataloader_opts", {}),
              valid_loader_kwargs=hparams.get("valid_dataloader_opts", {}))
    best = export_model(brain, hparams["output_folder"], min_key="token_error")
    if sb.utils.distributed.if_main_process():
        model = hparams["model"]
        model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
        export_whisper(model, hparams["pretrained_dir"], os.path.join(hparams["output_folder"], "inference"))
    return best


_PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.json", "merges.txt", "normalizer.json", "preprocessor_config.json", "generation_config.json")


def export_whisper(model, pretrained_dir: str, folder: str) -> str:
    """``folder``: the model (teacher: ``save_pretrained``; student: ``convert.save_student``) + tokenizer,
    feature extractor and generation config copied from ``pretrained_dir``; written aside, then renamed.

    Loaded by ``lobes.whisper.load_whisper_folder`` and ``inference.WhisperTranscriber``; no code in it.
    """
    import shutil
    import tempfile

    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-inference-", dir=parent)
    try:
        if getattr(model, "cald_conversion", None) is not None:
            from speechbrain_cald.convert import save_student

            save_student(model, tmp)
        else:
            model.save_pretrained(tmp)
        src = str(local_source(pretrained_dir, "Whisper model"))
        for name in _PROCESSOR_FILES:
            if os.path.isfile(os.path.join(src, name)) and not os.path.exists(os.path.join(tmp, name)):
                shutil.copy(os.path.join(src, name), os.path.join(tmp, name))
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def prepare(argv: List[str]) -> Dict[str, str]:
    """Stage 0 from a recipe YAML: call its ``prepare`` (``[hparams.yaml, --key=value, ...]``)."""
    from hyperpyyaml import load_hyperpyyaml

    hparams_file, _, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    if "prepare" not in hparams:
        raise KeyError(f"{hparams_file}: no `prepare` key (the corpus preparation to call)")
    return hparams["prepare"]()


def main(argv: List[str]) -> None:
    """``python -m speechbrain_cald.tasks.whisper_asr prepare hparams.yaml --key=value ...``."""
    if not argv or argv[0] != "prepare":
        raise SystemExit("usage: python -m speechbrain_cald.tasks.whisper_asr prepare hparams.yaml [--key=value ...]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for split, path in prepare(argv[1:]).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
