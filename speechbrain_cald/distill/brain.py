"""``DistillBrain``: joint fine-tuning and layerwise distillation in a SpeechBrain Brain.

One Brain serves both training stages of a recipe:

- teacher fine-tuning (the "Std." baseline): ``guide: unguided``, no teacher
  module, ``snapshot_interval > 0`` to keep the waypoints;
- CALD student training: a guide from ``hparams/guides/`` and a teacher module.

Modules (``modules=`` of the Brain)
-----------------------------------
``model``
    The network being trained: the student, or the transformer itself when
    fine-tuning the teacher. Snapshots save its ``state_dict``.
``teacher``
    The teacher network (needed by every guide but ``unguided``). Its initial
    weights are the recipe's job: see ``Guide.teacher_init``.
anything else
    Trained with ``model`` by the student optimizer (e.g. a normaliser).

Hooks a recipe overrides (task-specific parts)
----------------------------------------------
``run_model(model, batch, stage) -> ModelOutput``  (required)
    Run one network (student or teacher) on the batch. Call the module itself
    (``model(x, ...)``), not its submodules, so that DDP wrapping works.
``task_loss(output, batch, stage) -> Tensor``  (required)
    The task objective of one network's output (used for the teacher too,
    when the trajectory guide trains it).
``prepare_batch(batch, stage) -> batch``
    Work shared by both networks (features, augmentation), done once; what it
    returns is what ``run_model``, ``task_loss`` and ``update_metrics`` get.
``reset_metrics(stage)``, ``update_metrics(output, batch, stage)``,
``stage_metrics(stage) -> dict``
    Validation / test metrics (e.g. WER), logged and stored in checkpoints.

Hparams keys read (defaults in ``DistillConfig``)
-------------------------------------------------
``guide``, ``guides``, ``alpha_layer``, ``alpha_logits``, ``layer_loss``, ``temperature``,
``distill_objective``, ``layer_map``, ``tap_layers``, ``teacher_tap_layers``, ``tap_embeddings``,
``tap_skip_last``,
``teacher_train_mode``,
``snapshot_interval``, ``snapshot_dir``, ``total_steps``, ``lr_scheduler``, ``new_params_lr``, ``no_weight_decay``,
``transfer_steps``, ``keep_checkpoints``, ``checkpoint_min_key``, ``checkpoint_max_key``,
``train_logger``; plus SpeechBrain's own run options
(``grad_accumulation_factor``, ``precision``, ``max_grad_norm``, ...).

A recipe's Brain for CTC on a SpeechBrain ``TransformerASR`` (``modules.model``
a ``ModuleDict`` with ``CNN``, ``Transformer``, ``ctc_lin``; ``normalize`` in
``modules`` too, so it follows train / eval mode)::

    class ASRBrain(DistillBrain):
        def prepare_batch(self, batch, stage):
            batch = batch.to(self.device)
            wavs, wav_lens = batch.sig
            feats = self.modules.normalize(self.hparams.compute_features(wavs), wav_lens)
            return SimpleNamespace(raw=batch, feats=feats, wav_lens=wav_lens)

        def run_model(self, model, b, stage):
            enc = model.Transformer.encode(model.CNN(b.feats), b.wav_lens)
            lengths = torch.round(b.wav_lens * enc.shape[1]).long()
            return ModelOutput(model.ctc_lin(enc), lengths)

        def task_loss(self, out, b, stage):
            tokens, rel = b.raw.tokens
            return ctc_objective(out.logits, out.lengths, tokens,
                                 torch.round(rel * tokens.shape[1]).long())

(calling submodules of a ``ModuleDict`` is fine on one process; under DDP a
trained teacher, i.e. the trajectory guide, needs a module whose ``forward``
runs the whole network.) Layers are found by the convert family registry
(``Transformer.encoder.layers``) or ``tap_layers``.

Teacher mode
------------
The teacher runs in training mode (dropout active) when
``teacher_train_mode: True``, the default, as in the CALD reference code;
``False`` runs it in eval mode (deterministic targets). Either way it runs
under ``no_grad`` unless the trajectory guide trains it on that step.

Loss
----
``task`` plus the distillation objective's weighted terms, each scaled by the
guide at every step (``Guide.term_scales``: the hybrid guide drops the layer
term after its switch). The default objective is CALD's, ``alpha_layer * layer
+ alpha_logits * logits`` (see ``speechbrain_cald.distill.losses`` for the
normalisation); ``distill_objective`` picks another one
(``speechbrain_cald.distill.objectives``: MiniALBERT's attention + hidden +
output terms, which also taps the layers' attention maps). The progress bar
and the epoch summary show each term. A trajectory teacher's own task loss
(``teacher_task``) is back-propagated in the same backward pass (the two
networks share no parameters) but is not part of the student's loss.

SpeechBrain
-----------
DistillBrain runs SpeechBrain's own fit loop and changes it only through
public hooks (``fit_batch``, ``evaluate_batch``, ``optimizers_step``,
``on_fit_start``, ``on_stage_start`` / ``on_stage_end``, ``fit(...,
progressbar=False)`` with bars of its own, ``speechbrain_cald.distill.progress``);
what it needs beyond them is in ``speechbrain_cald.distill.sb_compat``, checked
against the installed SpeechBrain by the test suite.

Steps
-----
Guides, snapshots and the hybrid switch count the student's optimizer steps
(``Brain.optimizer_step``), which SpeechBrain keeps in its checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import speechbrain as sb
import torch
from speechbrain.core import Stage
from speechbrain.dataio.dataloader import LoopedLoader
from speechbrain.utils.distributed import if_main_process
from torch.utils.data import DataLoader

from speechbrain_cald.distill.attention_transfer import AttentionTransfer
from speechbrain_cald.distill.checkpoint import RNGState, make_atomic
from speechbrain_cald.distill.guides import Guide, select_guide
from speechbrain_cald.distill.losses import LAYER_LOSS_DEFAULTS
from speechbrain_cald.distill.objectives import CALDObjective, DistillObjective
from speechbrain_cald.distill.param_groups import build_optimizer, sync_group_lrs
from speechbrain_cald.distill.progress import StageProgress
from speechbrain_cald.distill.run_safety import SafeRunMixin
from speechbrain_cald.distill.schedules import WarmupExpDecayLR
from speechbrain_cald.distill.snapshots import save_snapshot
from speechbrain_cald.distill.taps import LayerTaps, find_layers, lengths_to_mask, tapped_layers, unwrap

__all__ = ["DistillBrain", "DistillConfig", "DistillPredictions", "ModelOutput"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ModelOutput:
    """What ``run_model`` returns for one network.

    Attributes
    ----------
    logits : torch.Tensor
        ``(B, T, V)`` frame logits (CTC, LM) or ``(B, C)`` utterance logits.
        Log-probabilities are fine too (the KD softmax is shift-invariant).
    lengths : torch.Tensor or None
        ``(B,)`` absolute valid frames at the layers (and of frame logits);
        None means all frames are valid.
    states : list of torch.Tensor
        ``(B, T, D)`` per tapped layer; filled in by ``DistillBrain``.
    attentions : list of torch.Tensor
        ``(B, H, T, T)`` per tapped layer, when the objective asks for them.
    extra : dict
        Anything else the task loss or metrics need.
    logits_lengths : torch.Tensor or None
        ``(B,)`` valid positions of frame logits when they differ from the
        layers' frames (a decoder's tokens over an encoder's frames: Whisper);
        None: ``lengths``.

    Example
    -------
    >>> out = ModelOutput(torch.zeros(2, 3, 5), torch.tensor([3, 1]))
    >>> out.mask(3)
    tensor([[ True,  True,  True],
            [ True, False, False]])
    """

    logits: torch.Tensor
    lengths: Optional[torch.Tensor] = None
    states: List[torch.Tensor] = dataclasses.field(default_factory=list)
    attentions: List[Optional[torch.Tensor]] = dataclasses.field(default_factory=list)
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)
    logits_lengths: Optional[torch.Tensor] = None

    def mask(self, max_len: int) -> torch.Tensor:
        """``(B, T)`` bool mask of valid frames for padded length ``max_len``."""
        mask = lengths_to_mask(self.lengths, max_len, self.logits.shape[0])
        return mask.to(self.logits.device)


@dataclasses.dataclass
class DistillPredictions:
    """``compute_forward``'s result: the student's output and the teacher's (or None)."""

    student: ModelOutput
    teacher: Optional[ModelOutput] = None
    teacher_learns: bool = False
    batch: Any = None  # what prepare_batch returned; the task loss sees the same
    scales: Dict[str, float] = dataclasses.field(default_factory=dict)  # the guide's term scales at this step
    transfer: bool = False  # an attention-transfer step: the teacher's attention calls are recorded, no student pass


@dataclasses.dataclass
class DistillConfig:
    """The hparams keys ``DistillBrain`` reads, with their defaults.

    Attributes
    ----------
    guide : str or Guide
        A name of ``GUIDES`` (``--guide=waypoint``) or a guide object.
    guides : dict
        Name -> guide object, from the ``hparams/guides/*.yaml`` fragments.
    alpha_layer, alpha_logits : float
        Weights of the layer loss and the logits KD (CALD: ``alpha_layer`` 15
        for ASR, SLURP and LM, 30 for VoxCeleb1; ``alpha_logits`` 1 for
        TED-LIUM ASR, else 0).
    layer_loss : dict, optional
        Options of ``layer_distill_loss`` (``layer_norm``,
        ``feature_reduction``, ``layer_reduction``); missing keys take
        ``LAYER_LOSS_DEFAULTS``, the CALD speech reference's normalisation.
    temperature : float
        KD temperature (CALD: 2).
    distill_objective : DistillObjective, optional
        Another objective than CALD's (``speechbrain_cald.distill.objectives``,
        e.g. ``MiniALBERTObjective``); then ``alpha_*``, ``temperature`` and
        ``layer_loss`` are not used.
    layer_map : list of int, optional
        Student step i <-> teacher layer ``layer_map[i]`` (default identity).
    tap_layers, teacher_tap_layers : str, optional
        Dotted path of the layers ``ModuleList`` inside ``model`` / ``teacher``
        (default: the convert family registry; teacher defaults to ``tap_layers``).
    tap_embeddings : bool
        Also distil the input of the first tapped layer, as state 0 before the
        layer outputs (``LayerTaps(include_input=True)``): for BERT / RoBERTa
        the embedding output, so RoBERTa-base gives the 13 states the CALD GLUE
        reference distils. False (speech and LM references): layer outputs only.
        A ``layer_map`` then indexes these L + 1 states.
    tap_skip_last : int
        Leave the outputs of the last ``tap_skip_last`` layers out, on both sides
        (``taps.tapped_layers``): the CALD LM reference distils neither the
        embedding nor the last layer's output (``tap_embeddings: False``,
        ``tap_skip_last: 1``). With both options, one selection of states:
        ``[input of layer 0] + outputs of layers 0 .. L - 1 - tap_skip_last``.
    teacher_train_mode : bool
        Run the teacher with dropout active (CALD reference) or in eval mode.
    snapshot_interval : int
        Save ``model`` to ``snapshot_dir`` every this many optimizer steps (0: never),
        and once more at the end of training when the last step is not a multiple
        of it: the fine-tuned model is always the last waypoint.
    snapshot_dir : str, optional
        Where snapshots go.
    total_steps : int, optional
        Planned optimizer steps (default: epochs x batches / accumulation).
    lr_scheduler : callable, optional
        SpeechBrain step scheduler called as ``lr_scheduler(optimizer)`` after
        every student optimizer step (e.g. ``schedules.WarmupExpDecayLR``, whose
        first step's rate ``on_fit_start`` sets too); add
        it to the checkpointer's recoverables in the YAML.
    new_params_lr : float, optional
        Peak learning rate of the parameters the conversion created
        (``convert.new_parameters``: Linformer's projections, a Mamba mixer),
        following the same schedule as the others (``distill/param_groups.py``);
        None (CALD): one rate for all.
    no_weight_decay : list of str, optional
        Names of norm modules whose weights, with every bias of ``model``,
        train without weight decay (``param_groups.excluded_from_weight_decay``):
        ``[layer_norm]`` is the CALD speech reference's rule, ``[LayerNorm]`` its
        GLUE reference's; None: weight decay on every parameter.
    transfer_steps : int
        The first this many optimizer steps fit each new mixer to the teacher
        attention it replaced, on the teacher's own layer inputs
        (``distill/attention_transfer.py``), instead of the task and CALD
        terms; only the mixers get gradients. Needs a guide with a teacher
        (ignored, with a message, by ``unguided``). 0 (CALD): none.
    keep_checkpoints : int
        End-of-epoch checkpoints kept (besides the best ones by key).
    checkpoint_min_key, checkpoint_max_key : str, optional
        Metric (``loss`` or a key of ``stage_metrics``) to keep the best by.
    train_logger : speechbrain.utils.train_logger.TrainLogger, optional
        Also gets the epoch summary.

    Example
    -------
    >>> DistillConfig.from_hparams({"alpha_layer": 15, "unrelated": 1}).alpha_layer
    15.0
    """

    guide: Any = "unguided"
    guides: Optional[Mapping] = None
    alpha_layer: float = 15.0
    alpha_logits: float = 0.0
    layer_loss: Optional[Mapping] = None
    temperature: float = 2.0
    distill_objective: Optional[DistillObjective] = None
    layer_map: Optional[Sequence[int]] = None
    tap_layers: Optional[str] = None
    teacher_tap_layers: Optional[str] = None
    tap_embeddings: bool = False
    tap_skip_last: int = 0
    teacher_train_mode: bool = True
    snapshot_interval: int = 0
    snapshot_dir: Optional[str] = None
    total_steps: Optional[int] = None
    lr_scheduler: Optional[Callable] = None
    new_params_lr: Optional[float] = None
    no_weight_decay: Optional[Sequence[str]] = None
    transfer_steps: int = 0
    keep_checkpoints: int = 1
    checkpoint_min_key: Optional[str] = None
    checkpoint_max_key: Optional[str] = None
    train_logger: Any = None

    @classmethod
    def from_hparams(cls, hparams: Optional[Mapping]) -> "DistillConfig":
        """Pick the known keys from an hparams dict (others are the recipe's)."""
        hparams = hparams or {}
        known = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in hparams.items() if k in known})
        cfg.alpha_layer = float(cfg.alpha_layer)
        cfg.alpha_logits = float(cfg.alpha_logits)
        cfg.transfer_steps = int(cfg.transfer_steps or 0)
        if cfg.transfer_steps < 0:
            raise ValueError(f"hparams `transfer_steps` should be >= 0, found {cfg.transfer_steps}")
        unknown = sorted(set(cfg.layer_loss or {}) - set(LAYER_LOSS_DEFAULTS))
        if unknown:
            raise KeyError(
                f"hparams `layer_loss`: unknown option(s) {unknown}; expected some of {sorted(LAYER_LOSS_DEFAULTS)}"
            )
        cfg.layer_loss = {**LAYER_LOSS_DEFAULTS, **(cfg.layer_loss or {})}
        if cfg.distill_objective is None:
            cfg.distill_objective = CALDObjective(cfg.alpha_layer, cfg.alpha_logits, cfg.temperature, cfg.layer_loss)
        elif not isinstance(cfg.distill_objective, DistillObjective):
            raise TypeError(
                "hparams `distill_objective` should be an objective of speechbrain_cald.distill.objectives "
                f"(e.g. !new:speechbrain_cald.distill.objectives.MiniALBERTObjective), found "
                f"{type(cfg.distill_objective).__name__}"
            )
        if cfg.snapshot_interval and cfg.snapshot_dir is None:
            raise ValueError("hparams: snapshot_interval > 0 needs snapshot_dir (where snapshots go)")
        return cfg


class _RunningTerms:
    """Running means of the loss terms over one epoch."""

    def __init__(self):
        self.sums: Dict[str, float] = {}
        self.counts: Dict[str, int] = {}

    def add(self, terms: Mapping[str, float]) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> Dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


class DistillBrain(SafeRunMixin, sb.Brain):
    """A SpeechBrain Brain for CALD: task loss + layerwise (and logits) distillation.

    Arguments are those of ``speechbrain.Brain``; ``modules`` holds ``model``
    and (for guided runs) ``teacher``. See the module docstring for the hooks
    to override and the hparams keys, and ``run_safety.SafeRunMixin`` for what
    makes runs resumable exactly (sampler epochs), NaN-proof and tidy.

    Example
    -------
    >>> from torch import nn
    >>> class Tiny(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
    ...         self.head = nn.Linear(4, 3)
    ...     def forward(self, x):
    ...         for layer in self.layers:
    ...             x = torch.tanh(layer(x))
    ...         return self.head(x)
    >>> class Brain(DistillBrain):
    ...     def run_model(self, model, batch, stage):
    ...         return ModelOutput(model(batch[0]))
    ...     def task_loss(self, output, batch, stage):
    ...         return nn.functional.cross_entropy(output.logits.transpose(1, 2), batch[1])
    >>> teacher, student = Tiny(), Tiny()
    >>> brain = Brain(
    ...     modules={"model": student, "teacher": teacher},
    ...     opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
    ...     hparams={"guide": "target", "tap_layers": "layers", "alpha_layer": 1.0},
    ...     run_opts={"noprogressbar": True},
    ... )
    >>> data = [(torch.randn(2, 5, 4), torch.randint(0, 3, (2, 5))) for _ in range(3)]
    >>> brain.fit(range(1), DataLoader(data, batch_size=None))
    >>> sorted(brain.last_terms)
    ['layer', 'task']
    >>> teacher.layers[0].weight.requires_grad
    False
    """

    def __init__(self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None):
        self.cfg = DistillConfig.from_hparams(hparams)
        self.guide: Guide = select_guide(self.cfg.guide, self.cfg.guides)
        modules = dict(modules or {})
        if "model" not in modules:
            raise KeyError(
                f"DistillBrain: modules should hold 'model' (the network being trained), found {sorted(modules)}"
            )
        # Bind before Brain.__init__ so the frozen teacher is not counted as trainable.
        self.guide.bind(modules.get("teacher"))
        if checkpointer is not None:
            checkpointer = make_atomic(checkpointer)
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        self.optimizer_step_limit = _step_limit(self.optimizer_step_limit)
        self.rng_state = RNGState()
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("guide", self.guide)
            self.checkpointer.add_recoverable("rng", self.rng_state)
        self.student_taps: Optional[LayerTaps] = None
        self.teacher_taps: Optional[LayerTaps] = None
        self.student_attention_taps: Optional[LayerTaps] = None
        self.teacher_attention_taps: Optional[LayerTaps] = None
        if self.guide.needs_teacher:
            self._make_taps(modules["model"], modules["teacher"])
        self.transfer: Optional[AttentionTransfer] = None
        if self.cfg.transfer_steps:
            if self.guide.needs_teacher:
                self.transfer = AttentionTransfer(unwrap(modules["model"]), unwrap(modules["teacher"]))
            else:
                logger.info("transfer_steps: %d ignored: guide '%s' has no teacher", self.cfg.transfer_steps, self.guide.name)
        self.last_terms: Dict[str, float] = {}
        self.running = _RunningTerms()
        self.stage_summaries: Dict[Stage, Dict[str, float]] = {}
        self.planned_steps: Optional[int] = None
        self._has_valid = False
        self._loaders: Dict[Stage, Any] = {}
        self.progress = StageProgress(False, self.tqdm_barcolor)

    def _make_taps(self, student: torch.nn.Module, teacher: torch.nn.Module) -> None:
        """Hooks on both networks' layers: their outputs, and their attention maps when the objective needs them."""
        skip, with_input = self.cfg.tap_skip_last, bool(self.cfg.tap_embeddings)  # embeddings: the CALD GLUE reference
        student_layers = tapped_layers(find_layers(student, self.cfg.tap_layers), skip)
        teacher_layers = tapped_layers(find_layers(teacher, self.cfg.teacher_tap_layers or self.cfg.tap_layers), skip)
        self.student_taps = LayerTaps(student_layers, active=False, include_input=with_input)
        self.teacher_taps = LayerTaps(teacher_layers, active=False, include_input=with_input)
        if self.cfg.distill_objective.records_attention:
            self.student_attention_taps = LayerTaps(student_layers, active=False, output_index=1)
            self.teacher_attention_taps = LayerTaps(teacher_layers, active=False, output_index=1)
        self._teacher_states = len(teacher_layers) + int(with_input)  # one per layer each forward

    @staticmethod
    def _run_tapped(run, taps: LayerTaps, attention_taps: Optional[LayerTaps]) -> ModelOutput:
        """``run()`` with the taps recording; the output carries their states (and attention maps)."""
        with taps.recording(), (attention_taps.recording() if attention_taps else contextlib.nullcontext()):
            output = run()
        output.states = taps.take()
        if attention_taps is not None:
            output.attentions = attention_taps.take()
        return output

    # ---------------------------------------------------------------- hooks
    def run_model(self, model: torch.nn.Module, batch: Any, stage: Stage) -> ModelOutput:
        """Run one network on the batch (recipe hook; see the module docstring)."""
        raise NotImplementedError(
            f"{type(self).__name__}.run_model(model, batch, stage) -> ModelOutput is not defined: "
            "override it in the recipe's Brain subclass"
        )

    def task_loss(self, output: ModelOutput, batch: Any, stage: Stage) -> torch.Tensor:
        """The task objective of one network's output (recipe hook)."""
        raise NotImplementedError(
            f"{type(self).__name__}.task_loss(output, batch, stage) -> Tensor is not defined: "
            "override it in the recipe's Brain subclass (see speechbrain_cald.tasks)"
        )

    def prepare_batch(self, batch: Any, stage: Stage) -> Any:
        """Shared preprocessing for both networks (default: move the batch to the device)."""
        return batch.to(self.device) if hasattr(batch, "to") else batch

    def reset_metrics(self, stage: Stage) -> None:
        """Start the metrics of a stage (recipe hook)."""

    def update_metrics(self, output: ModelOutput, batch: Any, stage: Stage) -> None:
        """Accumulate metrics for one valid / test batch (recipe hook)."""

    def stage_metrics(self, stage: Stage) -> Dict[str, float]:
        """The metrics of a finished stage, e.g. ``{"WER": 12.3}`` (recipe hook)."""
        return {}

    # -------------------------------------------------------------- forward
    def compute_forward(self, batch, stage):
        """Run the student and, when the guide says so, the teacher on one batch."""
        batch = self.prepare_batch(batch, stage)
        step = self.optimizer_step
        scales = self.guide.term_scales(step) if stage == Stage.TRAIN else {}
        distil = (
            stage == Stage.TRAIN
            and self.guide.teacher_active(step)
            # a teacher nobody reads need not run
            and (self.cfg.distill_objective.weighted(scales) or self.guide.trains_teacher)
        )
        if not distil:
            return DistillPredictions(self.run_model(self.modules.model, batch, stage), batch=batch)
        if self.transfer is not None and step < self.cfg.transfer_steps:
            return self._transfer_forward(batch, stage)
        model = self.modules.model
        student = self._run_tapped(
            lambda: self.run_model(model, batch, stage), self.student_taps, self.student_attention_taps
        )
        self.guide.prepare_teacher(step)
        teacher_module = self.modules.teacher
        teacher_module.train(self.cfg.teacher_train_mode)
        learns = self.guide.teacher_learns(step)
        with torch.set_grad_enabled(learns):
            teacher = self._run_tapped(
                lambda: self.run_model(teacher_module, batch, stage), self.teacher_taps, self.teacher_attention_taps
            )
        if self.cfg.alpha_layer > 0:
            self._check_layer_states(len(student.states), len(teacher.states))
        return DistillPredictions(student, teacher, learns, batch, scales)

    def _transfer_forward(self, batch, stage) -> DistillPredictions:
        """The teacher alone (eval mode: the attention's output without dropout), its attention calls recorded."""
        teacher_module = self.modules.teacher
        teacher_module.eval()
        with torch.no_grad(), self.transfer.recording():
            teacher = self.run_model(teacher_module, batch, stage)
        return DistillPredictions(teacher, batch=batch, transfer=True)

    def _check_layer_states(self, n_student: int, n_teacher: int) -> None:
        """Both networks recorded the states the layer map pairs; a layer that did not run would shift them."""
        expected_student = len(self.cfg.layer_map) if self.cfg.layer_map is not None else self._teacher_states
        if n_teacher == self._teacher_states and n_student == expected_student:
            return
        raise RuntimeError(
            f"layer distillation at step {self.optimizer_step}: the teacher recorded {n_teacher} layer states, "
            f"the student {n_student}, but the student expects {self._teacher_states} teacher states and "
            f"{expected_student} of its own (one per tapped layer"
            + (" plus the embedding output" if self.cfg.tap_embeddings else "")
            + (", one per layer_map entry" if self.cfg.layer_map is not None else "")
            + "): a layer skipped in training mode would pair the wrong states. Likely cause: LayerDrop; "
            "set `layerdrop: 0.0` in the YAML's model configs (teacher and student)"
        )

    def compute_objectives(self, predictions, batch, stage):
        """Sum the task loss and the objective's weighted distillation terms; record each term."""
        student, teacher = predictions.student, predictions.teacher
        batch = predictions.batch  # the prepared batch, as run_model saw it
        if predictions.transfer:  # `student` is the teacher's output here: only its lengths are read
            loss = self.transfer.loss(student.lengths)
            self.last_terms = {"transfer": float(loss.detach())}
            return loss
        task = self.task_loss(student, batch, stage)
        terms = {"task": task}
        total = task
        if teacher is not None:
            distill_terms = self.cfg.distill_objective.terms(student, teacher, predictions.scales, self.cfg.layer_map)
            for name, (weight, value) in distill_terms.items():
                terms[name] = value
                total = total + weight * value
        if stage != Stage.TRAIN:
            self.update_metrics(student, batch, stage)
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        return total

    def teacher_objective(self, predictions, batch) -> Optional[torch.Tensor]:
        """The trajectory teacher's own task loss on this batch, or None."""
        if predictions.teacher is None or not predictions.teacher_learns:
            return None
        loss = self.task_loss(predictions.teacher, predictions.batch, Stage.TRAIN)
        self.last_terms["teacher_task"] = float(loss.detach())
        return loss

    # ------------------------------------------------------------- training
    def fit_batch(self, batch):
        """SpeechBrain's ``fit_batch`` plus the trajectory teacher's loss in the backward."""
        self.rng_state.apply_pending()
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.on_fit_batch_start(batch, should_step)
        self._current_batch = batch  # named by a non-finite gradient's message
        with self.no_sync(not should_step):
            with self.training_ctx:
                outputs = self.compute_forward(batch, Stage.TRAIN)
                loss = self.compute_objectives(outputs, batch, Stage.TRAIN)
                teacher_loss = self.teacher_objective(outputs, batch)
            to_backward = loss if teacher_loss is None else loss + teacher_loss
            scaled = self.scaler.scale(to_backward / self.grad_accumulation_factor)
            if not self.all_finite(scaled):  # never back-propagated, no step (SafeRunMixin)
                self.skip_nonfinite_batch(batch, "non-finite loss")
                return self._shown(loss.detach().cpu())
            scaled.backward()
        if should_step:
            self.optimizers_step()
        self.running.add(self.last_terms)
        self.on_fit_batch_end(batch, outputs, loss, should_step)
        return self._shown(loss.detach().cpu())

    def _shown(self, loss: torch.Tensor) -> torch.Tensor:
        """Advance the training bar: the running loss as SpeechBrain is about to average it, and each term."""
        if self.progress.active:
            self.progress.advance(train_loss=self.update_average(loss, self.avg_train_loss), **self.running.means())
        return loss

    def evaluate_batch(self, batch, stage):
        """SpeechBrain's ``evaluate_batch``; advances the validation bar."""
        loss = super().evaluate_batch(batch, stage)
        if stage == Stage.VALID:
            self.progress.advance()
        return loss

    def init_optimizers(self):
        """The student optimizer over every module but the teacher; the guide's teacher optimizer."""
        params = [
            p
            for name, module in self.modules.items()
            if name != "teacher"
            for p in module.parameters()
            if p.requires_grad
        ]
        self.optimizers_dict = {}
        student_lr = None
        if self.opt_class is not None:
            self.optimizer = build_optimizer(
                self.opt_class, params, unwrap(self.modules["model"]), self.cfg.new_params_lr, self.cfg.no_weight_decay
            )
            student_lr = self.optimizer.param_groups[0]["lr"]  # before any scheduler step
            self.optimizers_dict["model"] = self.optimizer
            if self.checkpointer is not None:
                self.checkpointer.add_recoverable("optimizer", self.optimizer)
        # a trajectory teacher follows the student's lr schedule (scaled to its own lr)
        teacher_opt = self.guide.make_optimizer(self.cfg.lr_scheduler, student_lr)
        if teacher_opt is not None:
            # Saved by the guide's own checkpoint hook, with the teacher weights.
            self.optimizers_dict["teacher"] = teacher_opt
        if not self.optimizers_dict:
            self.optimizers_dict = None

    def freeze_optimizers(self, optimizers):
        """The teacher's optimizer steps only on the guide's update steps."""
        if "teacher" in optimizers and not self.guide.teacher_learns(self.optimizer_step):
            return {k: v for k, v in optimizers.items() if k != "teacher"}
        return optimizers

    def zero_grad(self, set_to_none=False):
        """Zero every optimizer, frozen ones included."""
        for opt in (self.optimizers_dict or {}).values():
            opt.zero_grad(set_to_none=set_to_none)

    def optimizers_step(self):
        """Step, then the teacher's scheduler, the student's scheduler and snapshots."""
        teacher_steps = bool(self.optimizers_dict) and "teacher" in self.freeze_optimizers(
            self.optimizers_dict
        )
        before = self.optimizer_step
        if self.opt_class is not None:
            sync_group_lrs(self.optimizer)  # a scheduler (any hook's) writes one rate into every group
        self._clip_every_group()
        super().optimizers_step()
        if self.optimizer_step == before:  # skipped: a non-finite gradient (SafeRunMixin)
            return
        if teacher_steps:
            self.guide.after_teacher_step()
        if self.cfg.lr_scheduler is not None and self.opt_class is not None:
            self.cfg.lr_scheduler(self.optimizer)
            sync_group_lrs(self.optimizer)
        interval = self.cfg.snapshot_interval
        if interval and self.optimizer_step % interval == 0 and if_main_process():
            save_snapshot(unwrap(self.modules.model), self.cfg.snapshot_dir, self.optimizer_step)

    def _clip_every_group(self) -> None:
        """Clip each stepping optimizer's gradient norm over all its groups, not only ``param_groups[0]``.

        SpeechBrain clips the first group of each optimizer alone; with groups
        (new parameters, no weight decay) that would leave the others unclipped.
        Clipping the still-scaled gradients at ``max_grad_norm x scale`` is
        clipping the unscaled ones at ``max_grad_norm``; SpeechBrain's own clip
        of the first group is then a no-op. An infinite ``max_grad_norm`` clips nothing;
        non-finite gradients are left as they are, for ``SafeRunMixin`` to skip the step.
        """
        if not self.optimizers_dict or not math.isfinite(float(self.max_grad_norm)):
            return
        scale = float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0
        for opt in self.freeze_optimizers(self.optimizers_dict).values():
            grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
            if len(opt.param_groups) < 2 or not grads:
                continue
            total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach()) for g in grads]))
            if torch.isfinite(total):
                torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]],
                                               float(self.max_grad_norm) * scale)

    def fit(
        self,
        epoch_counter,
        train_set,
        valid_set=None,
        progressbar=None,
        train_loader_kwargs={},
        valid_loader_kwargs={},
    ):
        """SpeechBrain's ``fit`` with DistillBrain's progress bars; first works out the planned optimizer steps.

        Arguments are those of ``speechbrain.Brain.fit``. The loaders are made
        here (as SpeechBrain would) so that the sampler epochs and the bars can
        see them; SpeechBrain's own bars are turned off for these.
        """
        if not self.test_only:
            if not isinstance(train_set, (DataLoader, LoopedLoader)):
                train_set = self.make_dataloader(train_set, stage=Stage.TRAIN, **train_loader_kwargs)
            if valid_set is not None and not isinstance(valid_set, (DataLoader, LoopedLoader)):
                valid_set = self.make_dataloader(valid_set, stage=Stage.VALID, ckpt_prefix=None, **valid_loader_kwargs)
        self.planned_steps = self.cfg.total_steps or self._estimate_steps(epoch_counter, train_set)
        self._has_valid = valid_set is not None
        self._loaders = {Stage.TRAIN: train_set, Stage.VALID: valid_set}
        show = (not self.noprogressbar) if progressbar is None else progressbar
        self.progress = StageProgress(bool(show) and if_main_process(), self.tqdm_barcolor)
        try:
            super().fit(
                epoch_counter,
                train_set,
                valid_set,
                progressbar=False,
                train_loader_kwargs=train_loader_kwargs,
                valid_loader_kwargs=valid_loader_kwargs,
            )
        finally:
            self.progress.close()  # a stage that raised leaves its bar open
        interval = self.cfg.snapshot_interval
        if interval and self.optimizer_step % interval and not self.test_only and if_main_process():
            save_snapshot(unwrap(self.modules.model), self.cfg.snapshot_dir, self.optimizer_step)

    def _estimate_steps(self, epoch_counter, train_set) -> Optional[int]:
        """Epochs x batches per epoch / accumulation, when both are known."""
        epochs = getattr(epoch_counter, "limit", None)
        if epochs is None:
            try:
                epochs = len(epoch_counter)
            except TypeError:
                return None
        try:
            batches = len(train_set)
        except TypeError:
            return None
        steps = epochs * (batches // self.grad_accumulation_factor)
        if self.optimizer_step_limit is not None:
            steps = min(steps, self.optimizer_step_limit)
        return steps

    def on_fit_start(self):
        """Give the guide the planned steps, then SpeechBrain's start (DDP, optimizers, recovery).

        A ``WarmupExpDecayLR`` then sets the next step's rate (0 before the first
        step, as the CALD speech reference), which the optimizer's own lr would be otherwise.
        """
        self.guide.on_fit_start(self.planned_steps)
        super().on_fit_start()
        if isinstance(self.cfg.lr_scheduler, WarmupExpDecayLR) and self.opt_class is not None:
            self.cfg.lr_scheduler.apply(self.optimizer)
            sync_group_lrs(self.optimizer)

    # --------------------------------------------------------------- stages
    def on_stage_start(self, stage, epoch=None):
        """Reset the running terms and the recipe's metrics; set the sampler's epoch; open the stage's bar."""
        if stage == Stage.TRAIN:
            self.running = _RunningTerms()
            self.nonfinite_count, self.nonfinite_batches = 0, []
            self.set_sampler_epoch(self._loaders.get(Stage.TRAIN), epoch)  # SafeRunMixin
        if stage in (Stage.TRAIN, Stage.VALID) and self._loaders.get(stage) is not None:
            # a resumed epoch starts at the batch its checkpoint was saved after
            self.progress.start(stage.name.lower(), self._loaders[stage], self.step if stage == Stage.TRAIN else 0)
        self.reset_metrics(stage)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log a one-line summary; checkpoint at the end of each epoch."""
        self.progress.close()
        stats = {"loss": float(stage_loss)}
        if stage == Stage.TRAIN:
            stats.update(self.running.means())
        else:
            stats.update(self.stage_metrics(stage))
        self.stage_summaries[stage] = stats
        epoch_done = stage == Stage.VALID or (stage == Stage.TRAIN and not self._has_valid)
        if stage == Stage.TEST:
            logger.info("test | %s", _fmt(stats))
            if self.cfg.train_logger is not None:
                self.cfg.train_logger.log_stats({"epoch loaded": epoch}, test_stats=stats)
            return
        if not epoch_done:
            return
        train_stats = self.stage_summaries.get(Stage.TRAIN, {})
        valid_stats = self.stage_summaries.get(Stage.VALID, {}) if self._has_valid else {}
        lr = self.optimizer.param_groups[0]["lr"] if self.opt_class is not None else float("nan")
        # The teacher of the epoch's last step (the next step may already use another).
        teacher = self.guide.describe(max(self.optimizer_step - 1, 0))
        logger.info(
            "epoch %s | step %d | train %s | lr %.3g | valid %s | teacher %s",
            epoch,
            self.optimizer_step,
            _fmt(train_stats),
            lr,
            _fmt(valid_stats) or "-",
            teacher,
        )
        if self.cfg.train_logger is not None:
            self.cfg.train_logger.log_stats(
                {"epoch": epoch, "lr": lr, "teacher": teacher},
                train_stats=train_stats,
                valid_stats=valid_stats or None,
            )
        if self.checkpointer is not None:
            # Keys of the valid stats (of the train stats without a valid set), for min/max_key.
            meta = dict(valid_stats or train_stats)
            meta["train_loss"] = train_stats.get("loss", math.nan)
            meta["step"] = self.optimizer_step
            self.checkpointer.save_and_keep_only(
                meta=meta,
                num_to_keep=self.cfg.keep_checkpoints,
                min_keys=[self.cfg.checkpoint_min_key] if self.cfg.checkpoint_min_key else [],
                max_keys=[self.cfg.checkpoint_max_key] if self.cfg.checkpoint_max_key else [],
            )


def _step_limit(value: Any) -> Optional[int]:
    """``optimizer_step_limit`` as an int: SpeechBrain 1.1 parses ``--optimizer_step_limit=N`` as a string.

    Example
    -------
    >>> _step_limit("20"), _step_limit(None), _step_limit(5)
    (20, None, 5)
    """
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"optimizer_step_limit: expected a whole number of optimizer steps, found {value!r}") from None


def _fmt(stats: Mapping[str, float]) -> str:
    """``{"loss": 1.234, "WER": 5.6}`` -> ``"loss 1.23, WER 5.6"``."""
    return ", ".join(f"{k} {v:.3g}" for k, v in stats.items())
