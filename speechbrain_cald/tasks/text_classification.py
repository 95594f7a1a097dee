"""Sentence(-pair) classification and regression with transformers encoders, in ``DistillBrain``.

What the three text recipes (GLUE, IMDB, mini/Text) share:

- ``load_tokenizer(pretrained_dir)``, ``load_text_classifier(pretrained_dir,
  num_labels)``: the local checkpoint (offline rule: a directory, never a hub
  id) with a classification head (``num_labels`` classes) or a regression head
  (``num_labels=1``, STS-B); YAMLs build teachers with them and students with
  ``speechbrain_cald.convert.to_linear_time`` on top.
- ``TextClassificationBrain``: the ``DistillBrain`` hooks: the model call on a
  ``TextBatch`` (valid tokens are the taps' frames), cross-entropy or MSE,
  and the corpus's metrics computed twice (``text_metrics``), with ``score``
  (their mean) for picking the best checkpoint.
- ``LinearWarmupDecay``: the linear schedule with a warm-up fraction of the
  planned optimizer steps (CALD text setting: 6%), planned when training starts.
- ``train(argv)``: a recipe's whole ``train.py``: preparation (``prepare`` in the
  YAML, through ``run_on_main``), tokenised datasets with the truncation count,
  fit, export of the best checkpoint by ``score``.
- ``prepare(argv)``: stage 0 alone, the YAML's ``prepare`` with the same overrides
  as train.py gets, so both always agree on the manifests::

      python -m speechbrain_cald.tasks.text_classification prepare hparams/glue_teacher.yaml \\
          --data_folder=/data/glue --pretrained_dir=/models/roberta-base --task=sst2 --output_folder=results/sst2/teacher

Hparams keys read besides ``DistillConfig``'s: ``prepare``, ``manifest_folder``,
``tokenizer``, ``model``, ``num_labels``, ``max_length``, ``train_rows``,
``batch_size``, ``group_by_length`` (default False: shuffled batches; True:
``LengthGroupedSampler``, seeded by ``seed``), ``eval_batch_size``, ``num_workers``, ``waypoints``,
``epoch_counter``, ``opt_class``, ``checkpointer``, ``output_folder``, ``mixer_alignment``
(``distill.mixer_alignment``: each new mixer fit to its attention before CALD's first step).
"""

from __future__ import annotations

import math
import sys
from typing import Dict, List, Optional

import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.nnet.schedulers import LinearWarmupScheduler
from speechbrain.utils import checkpoints
from speechbrain.utils.distributed import run_on_main

from speechbrain_cald.convert.io import check_model_kind, load_pretrained
from speechbrain_cald.convert.positions import max_tokens
from speechbrain_cald.data.text_classification_corpus import CorpusInfo, load_corpus_info, read_text_manifest
from speechbrain_cald.data.text_dataset import LengthGroupedSampler, TextBatch, TokenizedText, collate_text
from speechbrain_cald.distill import DistillBrain, ModelOutput
from speechbrain_cald.distill.snapshots import save_snapshot
from speechbrain_cald.distill.taps import unwrap
from speechbrain_cald.distill.mixer_alignment import align_from_hparams
from speechbrain_cald.distill.weights import build_modules
from speechbrain_cald.experiment import export_model, start_experiment
from speechbrain_cald.files import FolderNotWritable, check_writable
from speechbrain_cald.pretrained import local_source
from speechbrain_cald.tasks.classification import classification_objective
from speechbrain_cald.tasks.text_metrics import compute_metrics, task_score

__all__ = [
    "LinearWarmupDecay",
    "TextClassificationBrain",
    "check_max_length",
    "load_text_classifier",
    "load_tokenizer",
    "prepare",
    "text_datasets",
    "train",
]


# what load_text_classifier takes, for the error when a folder holds a speech model
TEXT_ENCODERS = "a text encoder such as BERT or RoBERTa (families bert, roberta, or another transformers text model)"


def load_tokenizer(pretrained_dir: str):
    """The tokenizer saved beside the pretrained model (``AutoTokenizer``, local files only).

    A folder whose ``config.json`` holds a speech model is refused first, naming
    what was expected (the YAMLs build the tokenizer before the model).
    """
    from transformers import AutoConfig, AutoTokenizer

    folder = local_source(pretrained_dir, "tokenizer")
    if (folder / "config.json").is_file():
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        check_model_kind(config, "text", TEXT_ENCODERS, folder / "config.json")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def load_text_classifier(pretrained_dir: str, num_labels: int, **config_overrides):
    """``AutoModelForSequenceClassification`` from a local folder, with a new head.

    Arguments
    ---------
    pretrained_dir : str
        A folder written by ``save_pretrained`` (RoBERTa, BERT, ...; a bare
        encoder such as ``BertModel`` is fine: the head is added).
    num_labels : int
        Classes; 1 makes a regression head (``problem_type="regression"``).
    **config_overrides
        Config attributes to change (e.g. ``hidden_dropout_prob=0.0``).

    Returns
    -------
    transformers.PreTrainedModel
        Called as ``model(input_ids, attention_mask, [token_type_ids]).logits (B, num_labels)``.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    source = local_source(pretrained_dir, "text classifier")
    config = AutoConfig.from_pretrained(str(source), num_labels=int(num_labels), local_files_only=True, **config_overrides)
    if int(num_labels) == 1:
        config.problem_type = "regression"
    return load_pretrained(source, AutoModelForSequenceClassification, "text classifier", "text", TEXT_ENCODERS, config=config)


def check_max_length(max_length: Optional[int], model: torch.nn.Module) -> int:
    """Tokens kept per example: ``max_length`` up to the model's position limit (None: the limit).

    A YAML's ``max_length`` (512 for RoBERTa-base) above what a checkpoint
    learned (e.g. 510 for a RoBERTa config with 512 position rows) is lowered
    to the limit, with a message.
    """
    limit = max_tokens(model)
    if max_length is None:
        return limit
    if int(max_length) > limit:
        print(
            f"max_length {max_length} is more than the {limit} tokens {type(model).__name__} has learned "
            f"positions for: using {limit}"
        )
        return limit
    return int(max_length)


@checkpoints.register_checkpoint_hooks
class LinearWarmupDecay(LinearWarmupScheduler):
    """Linear warm-up over a fraction of the planned steps, then linear decay to 0.

    SpeechBrain's ``LinearWarmupScheduler`` with its step counts set by
    ``plan(total_steps)`` when training starts (the Brain knows the planned
    optimizer steps only then); saved and restored with the checkpoint. As
    transformers' ``get_linear_schedule_with_warmup``: update ``k`` (from 1)
    uses the rate of step ``k - 1``, so the first update has rate 0.

    Arguments
    ---------
    lr : float
        Peak learning rate.
    warmup_fraction : float
        Share of the planned steps spent warming up (CALD / RoBERTa GLUE: 0.06).

    Example
    -------
    >>> sched = LinearWarmupDecay(1.0, 0.25)
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched.plan(8, opt); opt.param_groups[0]["lr"]  # the rate of update 1 (step 0)
    0.0
    >>> [round(sched(opt)[1], 3) for _ in range(7)]  # the rates of updates 2..8
    [0.5, 1.0, 0.833, 0.667, 0.5, 0.333, 0.167]
    """

    def __init__(self, lr: float, warmup_fraction: float = 0.06):
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"LinearWarmupDecay: warmup_fraction should be in [0, 1), found {warmup_fraction}")
        super().__init__(initial_value=lr, num_warmup_steps=0, num_training_steps=0)
        self.warmup_fraction = warmup_fraction

    def plan(self, total_steps: int, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Set the step counts for ``total_steps``; give ``optimizer`` the current step's lr."""
        self.num_training_steps = max(1, int(total_steps))
        self.num_warmup_steps = int(round(self.warmup_fraction * self.num_training_steps))
        if optimizer is not None:
            # the next update's rate (on a resumed run too), not the optimizer's initial lr
            lr = self.calculate_lr(self.current_step)
            for group in optimizer.param_groups:
                group["lr"] = lr


class TextClassificationBrain(DistillBrain):
    """``DistillBrain`` hooks for transformers sequence classifiers on ``TextBatch``es.

    Arguments
    ---------
    *args, **kwargs
        Those of ``DistillBrain`` / ``speechbrain.Brain``.
    corpus : CorpusInfo
        The prepared corpus: labels (None: regression), metrics.
    waypoints : int
        Snapshots of ``model`` evenly spaced over the planned steps (plus step
        0), for the waypoint guide: sets ``snapshot_interval`` when training
        starts; 0 keeps the YAML's ``snapshot_interval``.
    """

    def __init__(self, *args, corpus: CorpusInfo, waypoints: int = 0, **kwargs):
        self.corpus = corpus
        self.waypoints = int(waypoints or 0)
        super().__init__(*args, **kwargs)
        self.predictions: List = []
        self.references: List = []

    def run_model(self, model, batch: TextBatch, stage) -> ModelOutput:
        logits = model(**batch.model_inputs()).logits
        return ModelOutput(logits, batch.lengths)

    def task_loss(self, output: ModelOutput, batch: TextBatch, stage) -> torch.Tensor:
        if self.corpus.regression:
            return F.mse_loss(output.logits.float().squeeze(-1), batch.labels.float())
        return classification_objective(output.logits, batch.labels)

    def reset_metrics(self, stage) -> None:
        self.predictions, self.references = [], []

    def update_metrics(self, output: ModelOutput, batch: TextBatch, stage) -> None:
        self.predictions += predictions(output.logits, self.corpus.regression)
        self.references += batch.labels.tolist()

    def stage_metrics(self, stage) -> Dict[str, float]:
        values = compute_metrics(self.corpus.metrics, self.predictions, self.references)
        score = task_score(values)
        # a NaN (constant regression output) must not win the best-checkpoint choice
        values["score"] = score if not math.isnan(score) else -math.inf
        return values

    def on_fit_start(self):
        super().on_fit_start()  # optimizers built, checkpoint recovered
        if isinstance(self.cfg.lr_scheduler, LinearWarmupDecay) and self.planned_steps:
            self.cfg.lr_scheduler.plan(self.planned_steps, self.optimizer)
        if self.waypoints and self.planned_steps:
            if self.cfg.snapshot_dir is None:
                raise ValueError("hparams: waypoints > 0 needs snapshot_dir (where the snapshots go)")
            self.cfg.snapshot_interval = max(1, self.planned_steps // self.waypoints)
        if self.cfg.snapshot_interval and self.optimizer_step == 0 and sb.utils.distributed.if_main_process():
            # step 0: the pretrained model with its new head, the first waypoint
            save_snapshot(unwrap(self.modules.model), self.cfg.snapshot_dir, 0)


def predictions(logits: torch.Tensor, regression: bool) -> List:
    """Class ids (arg-max) or scores ``(B,)`` as a list.

    Example
    -------
    >>> predictions(torch.tensor([[0.1, 2.0], [3.0, 0.0]]), False), predictions(torch.tensor([[1.5]]), True)
    ([1, 0], [1.5])
    """
    return logits.float().squeeze(-1).tolist() if regression else logits.argmax(-1).tolist()


def text_datasets(
    corpus: CorpusInfo, folder: str, splits, tokenizer, max_length: Optional[int], train_rows: Optional[int] = None
) -> Dict[str, TokenizedText]:
    """Tokenised datasets of ``splits``; prints how many examples were truncated.

    Arguments
    ---------
    corpus : CorpusInfo
        The prepared corpus.
    folder : str
        Its manifest folder.
    splits : sequence of str
        Which splits.
    tokenizer : transformers tokenizer
    max_length : int or None
        Tokens kept (None: all).
    train_rows : int, optional
        Keep only the first N rows of the training split (manifests are shuffled
        once at preparation, so these are a random subset).
    """
    out = {}
    for split in splits:
        path = corpus.csv(folder, split)
        rows = read_text_manifest(path)
        if train_rows and split == corpus.train_split:
            rows = rows[: int(train_rows)]
        data = TokenizedText(rows, tokenizer, corpus.labels, max_length, where=path)
        limit = "no limit" if max_length is None else f"{max_length} tokens"
        print(
            f"{corpus.name} {split}: {len(data):,} examples, {data.truncated:,} truncated to {limit} "
            f"(longest {max(data.full_lengths):,} tokens)"
        )
        out[split] = data
    return out


def train(argv: List[str]) -> TextClassificationBrain:
    """A text recipe's ``train.py``: prepare, tokenise, fit (teacher or CALD student), export.

    Arguments
    ---------
    argv : list of str
        ``[hparams.yaml, --key=value, ...]``.

    Returns
    -------
    TextClassificationBrain
        After training; ``<output_folder>/model.ckpt`` holds the best model by ``score``.
    """
    exp = start_experiment(argv)
    hp, run_opts = exp.hparams, exp.run_opts
    run_on_main(hp["prepare"])
    folder = hp["manifest_folder"]
    corpus = load_corpus_info(folder)
    if int(hp["num_labels"]) != corpus.num_labels:
        raise ValueError(
            f"{exp.hparams_file}: num_labels = {hp['num_labels']}, but {corpus.name} in {folder} has "
            f"{corpus.num_labels} output(s) ({corpus.labels or 'a regression score'})"
        )
    max_length = check_max_length(hp.get("max_length"), hp["model"])
    tokenizer = hp["tokenizer"]
    data = text_datasets(
        corpus, folder, [corpus.train_split, corpus.valid_split], tokenizer, max_length, hp.get("train_rows")
    )
    collate = collate_text(tokenizer.pad_token_id)
    workers = hp.get("num_workers", 0)
    train_set = data[corpus.train_split]
    order = dict(shuffle=True)
    if hp.get("group_by_length", False):  # batches of similar lengths: less padding, same examples per epoch
        order = dict(sampler=LengthGroupedSampler(train_set.lengths(), hp["batch_size"], seed=hp.get("seed", 0)))
    modules = build_modules(hp)
    align_from_hparams(  # the YAML's mixer_alignment (ours, not CALD's), on the training batches; padding not counted
        hp, modules, torch.utils.data.DataLoader(train_set, batch_size=hp["batch_size"], collate_fn=collate, **order),
        lambda model, batch: model(**batch.model_inputs()), lambda batch: batch.attention_mask.bool())
    brain = TextClassificationBrain(
        modules=modules,
        opt_class=hp["opt_class"],
        hparams=hp,
        run_opts=run_opts,
        checkpointer=hp["checkpointer"],
        corpus=corpus,
        waypoints=hp.get("waypoints", 0),
    )
    valid_set = data[corpus.valid_split]
    # validation in order of length: batches of similar lengths pad little; the metrics do not depend on the order
    by_length = sorted(range(len(valid_set)), key=valid_set.lengths().__getitem__)
    brain.fit(
        hp["epoch_counter"],
        train_set,
        valid_set,
        train_loader_kwargs=dict(batch_size=hp["batch_size"], collate_fn=collate, num_workers=workers, **order),
        valid_loader_kwargs=dict(
            batch_size=hp["eval_batch_size"], collate_fn=collate, num_workers=workers, sampler=by_length
        ),
    )
    export_model(brain, hp["output_folder"], max_key="score")
    return brain


def prepare(argv: List[str]) -> CorpusInfo:
    """Stage 0 from a recipe YAML: call its ``prepare`` (``[hparams.yaml, --key=value, ...]``)."""
    from hyperpyyaml import load_hyperpyyaml

    hparams_file, _, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    for key in ("prepare", "manifest_folder"):
        if key not in hparams:
            raise KeyError(f"{hparams_file}: a text recipe's YAML needs `{key}`")
    check_writable({"manifest_folder": hparams["manifest_folder"]})
    hparams["prepare"]()
    return load_corpus_info(hparams["manifest_folder"])


def main(argv: List[str]) -> None:
    """``python -m speechbrain_cald.tasks.text_classification {prepare|train} hparams.yaml --key=value ...``."""
    commands = {"prepare": prepare, "train": train}
    if not argv or argv[0] not in commands:
        raise SystemExit(f"usage: python -m speechbrain_cald.tasks.text_classification {{{'|'.join(commands)}}} hparams.yaml [--key=value ...]")
    try:
        commands[argv[0]](argv[1:])
    except FolderNotWritable as err:  # a setting to change, not a bug: the message without a traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
