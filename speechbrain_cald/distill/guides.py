"""Guiding strategies of CALD: which teacher the student distils from, and when.

One class per strategy, registry ``GUIDES`` (name -> class). A guide is a
small configuration object built from a YAML fragment in ``hparams/guides/``;
it is bound to the teacher module at run time by ``DistillBrain`` (YAML
``!include:`` does not keep object identity, so fragments never hold modules).

"Step" below is the student's optimizer step counter ``t`` (the number of
optimizer updates done before the current batch; with gradient accumulation,
all micro-batches of one update share it).

=========== ====================================== ================ ==================
name        teacher at step t                       teacher starts   student starts
=========== ====================================== ================ ==================
unguided    none (task loss only)                   -                pretrained
target      fine-tuned transformer, frozen          fine-tuned       fine-tuned
trajectory  copy of the pretrained transformer,     pretrained       pretrained
            fine-tuned jointly (own AdamW, own
            peak lr, the student's lr schedule),
            updated when ``(t + 1) %
            teacher_update_cycle == 0`` on the same
            batch; the student distils its states
            from before that update
waypoint    ``schedule="teacher_steps"``: the       snapshots        pretrained
            snapshot with the smallest step > t
            (the last one once t is past the end);
            ``"spread"``: the snapshots spread
            evenly over the student's planned steps
hybrid      target until the switch step, then      fine-tuned       fine-tuned
            the layer term off (the logits term,
            where the task has one, stays)
=========== ====================================== ================ ==================

Sources (CALD reference code, idiap/linearize-distill-pretrained-transformers):
trajectory = ``nlp/run_glue_linformer_joint_distill.py``; waypoint ``teacher_steps``
= ``speech/train_distill.py`` (``find_current_teacher``), ``spread`` =
``nlp/run_glue_linformer_snapshot_distill.py``; hybrid = the speech README
("set alpha_layer_distill_loss=0 and continue"), ``drop="all"`` = the NLP
recipes' ``--max_distill_steps``. ``docs/fidelity.md`` lists every element.

``teacher_init`` and ``student_init`` give the two right-hand columns to the
recipe, which builds the modules.

Each guide's state (waypoint in use, hybrid switch, trajectory teacher weights
with its optimizer and scheduler) goes into SpeechBrain checkpoints through
``_save`` / ``_load`` hooks.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pathlib
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from torch import nn

from speechbrain_cald.distill.snapshots import list_snapshots
from speechbrain_cald.distill.taps import unwrap
from speechbrain_cald.safe_load import load_weights_only

__all__ = [
    "GUIDES",
    "Guide",
    "HybridGuide",
    "StudentScheduleCopy",
    "TargetGuide",
    "TrajectoryGuide",
    "UnguidedGuide",
    "WaypointGuide",
    "select_guide",
]

logger = logging.getLogger(__name__)


@register_checkpoint_hooks
class Guide:
    """Base class: decides whether and from which teacher the student distils.

    Subclasses override the ``teacher_*`` methods and ``state_dict`` /
    ``load_state_dict``; the checkpoint hooks here save that state.

    Example
    -------
    >>> g = TargetGuide()
    >>> g.bind(nn.Linear(2, 2))
    >>> g.teacher_active(0), g.teacher_learns(0), g.describe(0)
    (True, False, 'target')
    """

    name = "base"
    needs_teacher = True
    teacher_init: Optional[str] = "finetuned"
    student_init = "finetuned"
    trains_teacher = False

    def __init__(self):
        self.teacher: Optional[nn.Module] = None
        self.total_steps: Optional[int] = None

    def bind(self, teacher: Optional[nn.Module]) -> None:
        """Attach the teacher module (``modules['teacher']``) before training.

        Freezes it unless the guide trains it.
        """
        if self.needs_teacher and teacher is None:
            raise KeyError(
                f"guide '{self.name}' needs a teacher: pass modules['teacher'] "
                "(the model built from the teacher's weights) to DistillBrain"
            )
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(self.trains_teacher)

    def on_fit_start(self, total_steps: Optional[int]) -> None:
        """Learn the planned number of optimizer steps (None if unknown)."""
        self.total_steps = total_steps

    def teacher_active(self, step: int) -> bool:
        """Whether the student distils (and the teacher runs) at ``step``."""
        return self.needs_teacher

    def teacher_learns(self, step: int) -> bool:
        """Whether the teacher is trained on the batch of ``step``."""
        return False

    def term_scales(self, step: int) -> Dict[str, float]:
        """Scale of each group of distillation terms at ``step`` (multiplies the alphas).

        Groups: ``"layer"`` (the intermediate terms: CALD's layer loss,
        MiniALBERT's attention and hidden terms) and ``"logits"`` (the output
        KD). Default: both on while the teacher is active, both off otherwise.
        """
        on = 1.0 if self.teacher_active(step) else 0.0
        return {"layer": on, "logits": on}

    def prepare_teacher(self, step: int) -> None:
        """Put the right weights in the teacher before its forward pass at ``step``."""

    def make_optimizer(
        self, student_scheduler: Optional[Callable] = None, student_lr: Optional[float] = None
    ) -> Optional[torch.optim.Optimizer]:
        """The teacher's optimizer, if the guide trains the teacher (given the student's lr schedule)."""
        return None

    def after_teacher_step(self) -> None:
        """Called after each optimizer step of the teacher."""

    def describe(self, step: int) -> str:
        """Which teacher is active at ``step``, in a few words for the logs."""
        return self.name if self.teacher_active(step) else "none"

    def state_dict(self) -> Dict:
        """The guide's own state, for checkpoints."""
        return {"name": self.name}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore ``state_dict()``."""
        if state.get("name") != self.name:
            raise ValueError(
                f"checkpoint holds the state of guide '{state.get('name')}', "
                f"but this run uses guide '{self.name}'"
            )

    @mark_as_saver
    def _save(self, path: pathlib.Path) -> None:
        torch.save(self.state_dict(), path)

    @mark_as_loader
    def _load(self, path: pathlib.Path, end_of_epoch: bool) -> None:
        del end_of_epoch
        self.load_state_dict(load_weights_only(path))


class UnguidedGuide(Guide):
    """No teacher: task loss only (also the mode of teacher fine-tuning).

    Example
    -------
    >>> g = UnguidedGuide(); g.bind(None)
    >>> g.teacher_active(0), g.describe(0)
    (False, 'none')
    """

    name = "unguided"
    needs_teacher = False
    teacher_init = None
    student_init = "pretrained"

    def bind(self, teacher: Optional[nn.Module]) -> None:
        """A teacher passed anyway is kept frozen and never run."""
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)


class TargetGuide(Guide):
    """The transformer already fine-tuned on the task, frozen.

    Example
    -------
    >>> g = TargetGuide(); lin = nn.Linear(2, 2); g.bind(lin)
    >>> lin.weight.requires_grad
    False
    """

    name = "target"


class HybridGuide(Guide):
    """Target guidance, then the layer term off after a switch step.

    As the CALD speech reference (README: "set alpha_layer_distill_loss=0 and
    continue training after 40k/30k/50k steps"): after the switch the layer
    term is dropped and the logits term is kept where the task has one
    (TED-LIUM ASR: ``alpha_logits`` 1; the teacher keeps running for it).
    ``drop="all"`` ends all distillation instead (the NLP reference's
    ``--max_distill_steps``; its recipes have no logits term, so both agree there).

    Arguments
    ---------
    switch_step : int, optional
        The first optimizer step after the switch.
    switch_fraction : float, optional
        Or the switch as a fraction of the planned optimizer steps (CALD:
        TED-LIUM 40k of 90k = 0.444, SLURP 30k = 0.333, VoxCeleb1 50k =
        0.556, LM 40%); needs the total known at ``on_fit_start``. Used only
        when ``switch_step`` is null.
    drop : {"layer", "all"}
        What the switch turns off.

    Example
    -------
    >>> g = HybridGuide(switch_fraction=0.5); g.bind(nn.Linear(2, 2)); g.on_fit_start(10)
    >>> [g.term_scales(t)["layer"] for t in (0, 4, 5, 9)]
    [1.0, 1.0, 0.0, 0.0]
    >>> g.term_scales(7)["logits"], g.describe(7)
    (1.0, 'target without the layer term (hybrid, from step 5)')
    >>> g = HybridGuide(switch_step=5, drop="all"); g.bind(nn.Linear(2, 2)); g.on_fit_start(None)
    >>> g.teacher_active(7), g.describe(7)
    (False, 'none (hybrid switched off distillation at step 5)')
    """

    name = "hybrid"
    DROPS = ("layer", "all")

    def __init__(self, switch_step: Optional[int] = None, switch_fraction: Optional[float] = None, drop: str = "layer"):
        super().__init__()
        if drop not in self.DROPS:
            raise ValueError(f"HybridGuide: drop should be one of {self.DROPS}, found {drop!r}")
        # Checked in on_fit_start, not here: recipes build every guide of
        # hparams/guides/all.yaml, and an unused one must not stop the run.
        self.switch_step = switch_step
        self.switch_fraction = switch_fraction
        self.drop = drop
        self.switched = False

    def on_fit_start(self, total_steps: Optional[int]) -> None:
        """Check the options; resolve ``switch_fraction`` against the planned steps."""
        super().on_fit_start(total_steps)
        if self.switch_step is None and self.switch_fraction is None:
            raise ValueError(
                "HybridGuide: give switch_step (an optimizer step) or switch_fraction "
                "(of the planned steps); both are null"
            )
        if self.switch_step is not None:  # an explicit step wins over the fraction
            return
        if self.switch_fraction is not None:
            if not 0.0 <= self.switch_fraction <= 1.0:
                raise ValueError(
                    f"HybridGuide: switch_fraction should be in [0, 1], found {self.switch_fraction}"
                )
            if total_steps is None:
                raise ValueError(
                    "HybridGuide: switch_fraction needs the planned number of optimizer steps, "
                    "which is unknown here (set hparams `total_steps`, or use switch_step)"
                )
            self.switch_step = int(math.floor(self.switch_fraction * total_steps))

    def before_switch(self, step: int) -> bool:
        """Whether ``step`` comes before the switch (logs the switch once)."""
        if self.switch_step is None:
            raise RuntimeError("HybridGuide: on_fit_start was not called, the switch step is unknown")
        before = step < self.switch_step
        if not before and not self.switched:
            self.switched = True
            what = "the layer term" if self.drop == "layer" else "distillation"
            logger.info("hybrid guide: %s off from step %d on", what, self.switch_step)
        return before

    def teacher_active(self, step: int) -> bool:
        """Before the switch; after it too when only the layer term is dropped (the logits term may need it)."""
        return self.before_switch(step) or self.drop == "layer"

    def term_scales(self, step: int) -> Dict[str, float]:
        """Both terms before the switch; after it the logits term only (``drop="layer"``) or none."""
        before = self.before_switch(step)
        return {"layer": float(before), "logits": float(before or self.drop == "layer")}

    def describe(self, step: int) -> str:
        """Say when the switch happened once it has."""
        if self.before_switch(step):
            return f"target (hybrid, until step {self.switch_step})"
        if self.drop == "layer":
            return f"target without the layer term (hybrid, from step {self.switch_step})"
        return f"none (hybrid switched off distillation at step {self.switch_step})"

    def state_dict(self) -> Dict:
        """Switch step and whether it has been passed."""
        return {"name": self.name, "switch_step": self.switch_step, "switched": self.switched}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore the switch; a different resolved switch step is an error."""
        super().load_state_dict(state)
        if self.switch_step is not None and state["switch_step"] != self.switch_step:
            raise ValueError(
                f"HybridGuide: checkpoint switches at step {state['switch_step']}, "
                f"this run at step {self.switch_step} (did the planned steps change?)"
            )
        self.switch_step = state["switch_step"]
        self.switched = state["switched"]


class WaypointGuide(Guide):
    """Teacher = a snapshot of the teacher's fine-tuning, moving forward with the student.

    Two rules for which snapshot is the teacher at student step ``t``; both
    ignore a step-0 snapshot (the starting weights, never a waypoint):

    ``schedule="teacher_steps"`` (the CALD speech reference)
        The snapshot with the smallest step ``> t``, the last one once ``t``
        is past the end. It assumes the student runs as many steps as the
        teacher's fine-tuning did.
    ``schedule="spread"`` (the CALD NLP reference)
        The ``n`` snapshots spread evenly over the student's planned steps
        ``S``: waypoint ``min(floor(t n / S), n - 1)`` (0-based, in step
        order). Use it when the student runs a different number of steps
        than the teacher did; needs ``S`` at ``on_fit_start``.

    The teacher's weights are reloaded, and the switch logged, when the
    waypoint changes.

    Arguments
    ---------
    snapshot_dir : str or os.PathLike
        Where teacher fine-tuning wrote ``step_<n>.ckpt`` snapshots
        (``snapshot_interval`` of ``DistillBrain``).
    schedule : {"teacher_steps", "spread"}
        The rule above.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_cald.distill.snapshots import save_snapshot
    >>> d = tempfile.mkdtemp()
    >>> teacher = nn.Linear(2, 2)
    >>> for s in (0, 2, 4): _ = save_snapshot(teacher, d, s)
    >>> g = WaypointGuide(d); g.bind(teacher)
    >>> [g.waypoint_for(t) for t in range(6)]
    [2, 2, 4, 4, 4, 4]
    >>> g = WaypointGuide(d, schedule="spread"); g.bind(teacher); g.on_fit_start(10)
    >>> [g.waypoint_for(t) for t in (0, 4, 5, 9)]
    [2, 2, 4, 4]
    """

    name = "waypoint"
    teacher_init = "snapshots"
    student_init = "pretrained"
    SCHEDULES = ("teacher_steps", "spread")

    def __init__(self, snapshot_dir: Optional[Union[str, os.PathLike]] = None, schedule: str = "teacher_steps"):
        super().__init__()
        if schedule not in self.SCHEDULES:
            raise ValueError(f"WaypointGuide: schedule should be one of {self.SCHEDULES}, found {schedule!r}")
        self.snapshot_dir = snapshot_dir
        self.schedule = schedule
        self._snapshots: Optional[List[Tuple[int, pathlib.Path]]] = None
        self.loaded_step: Optional[int] = None

    def on_fit_start(self, total_steps: Optional[int]) -> None:
        """``spread`` needs the planned number of student steps."""
        super().on_fit_start(total_steps)
        if self.schedule == "spread" and not total_steps:
            raise ValueError(
                "WaypointGuide: schedule 'spread' needs the planned number of optimizer steps, "
                "which is unknown here (set hparams `total_steps`, or use schedule 'teacher_steps')"
            )

    @property
    def snapshots(self) -> List[Tuple[int, pathlib.Path]]:
        """``[(step, path), ...]`` of the waypoints in ``snapshot_dir`` (steps > 0), read once."""
        if self._snapshots is None:
            if self.snapshot_dir is None:
                raise ValueError(
                    "WaypointGuide: snapshot_dir is not set (the folder of teacher snapshots "
                    "written by teacher fine-tuning)"
                )
            found = list_snapshots(self.snapshot_dir)
            self._snapshots = [(step, path) for step, path in found if step > 0]
            if not self._snapshots:
                raise FileNotFoundError(
                    f"WaypointGuide: no snapshot after step 0 in '{self.snapshot_dir}' "
                    f"(found {[step for step, _ in found]}): set the teacher run's snapshot_interval"
                )
        return self._snapshots

    def waypoint_for(self, step: int) -> int:
        """The snapshot step used as teacher at student step ``step``."""
        steps = [snap_step for snap_step, _ in self.snapshots]
        if self.schedule == "spread":
            if not self.total_steps:
                raise RuntimeError("WaypointGuide: on_fit_start was not called, the planned steps are unknown")
            return steps[min(step * len(steps) // self.total_steps, len(steps) - 1)]
        return next((s for s in steps if s > step), steps[-1])

    def prepare_teacher(self, step: int) -> None:
        """Load the waypoint of ``step`` into the teacher when it changes (and say so)."""
        wanted = self.waypoint_for(step)
        if wanted != self.loaded_step:
            path = dict(self.snapshots)[wanted]
            state = load_weights_only(path)
            unwrap(self.teacher).load_state_dict(state)
            index = [s for s, _ in self.snapshots].index(wanted) + 1
            logger.info(
                "waypoint guide: from student step %d the teacher is %s (waypoint %d of %d, teacher step %d)",
                step, path.name, index, len(self.snapshots), wanted,
            )
            self.loaded_step = wanted

    def describe(self, step: int) -> str:
        """The snapshot in use."""
        return f"waypoint step_{self.waypoint_for(step):08d}"

    def state_dict(self) -> Dict:
        """The snapshot in use."""
        return {"name": self.name, "loaded_step": self.loaded_step}

    def load_state_dict(self, state: Mapping) -> None:
        """The next ``prepare_teacher`` reloads the snapshot weights from disk."""
        super().load_state_dict(state)
        self.loaded_step = None


class StudentScheduleCopy:
    """The student's learning-rate schedule, applied to the teacher's own peak lr.

    The CALD reference builds the trajectory teacher's scheduler as the
    student's (same type, warm-up and total steps) over the teacher's
    optimizer, and steps it at each teacher update. Here the student's
    scheduler (a SpeechBrain step scheduler, called as ``scheduler(optimizer)``
    after each step) is copied before training; at each teacher update the
    copy is stepped on a probe optimizer that starts at the student's lr, and
    the teacher's lr becomes ``teacher_lr * probe_lr / student_lr``: the same
    multiplier, at the teacher's own update count.

    Arguments
    ---------
    student_scheduler : callable
        The student's scheduler, not yet stepped (it is deep-copied).
    student_lr : float
        The lr the student's optimizer was built with.
    optimizer : torch.optim.Optimizer
        The teacher's optimizer (its lr at construction is ``teacher_lr``).

    Example
    -------
    >>> from speechbrain.nnet.schedulers import NoamScheduler
    >>> student_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    >>> sched = NoamScheduler(lr_initial=1e-3, n_warmup_steps=2)
    >>> teacher_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=3e-5)
    >>> follow = StudentScheduleCopy(sched, 1e-3, teacher_opt)
    >>> for _ in range(3):
    ...     _ = sched(student_opt); follow.step()
    ...     print(round(teacher_opt.param_groups[0]["lr"] / student_opt.param_groups[0]["lr"], 6))
    0.03
    0.03
    0.03
    """

    def __init__(self, student_scheduler: Callable, student_lr: float, optimizer: torch.optim.Optimizer):
        if not callable(student_scheduler):
            raise TypeError(
                "trajectory teacher_lr_scheduler 'student' needs the student's hparams `lr_scheduler` "
                f"(a SpeechBrain step scheduler called as scheduler(optimizer)), found {type(student_scheduler).__name__}"
            )
        self._template = copy.deepcopy(student_scheduler)
        self.student_lr = float(student_lr)
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.steps = 0
        self._restart()

    def _restart(self) -> None:
        self.shadow = copy.deepcopy(self._template)
        self.probe = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=self.student_lr)

    def step(self) -> None:
        """One teacher update happened: move the teacher's lr along the student's schedule."""
        self.shadow(self.probe)
        self.steps += 1
        factor = self.probe.param_groups[0]["lr"] / self.student_lr
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def state_dict(self) -> Dict:
        """The number of teacher updates (the schedule is a function of it)."""
        return {"steps": self.steps}

    def load_state_dict(self, state: Mapping) -> None:
        """Replay the schedule up to the saved number of updates."""
        self._restart()
        self.steps = 0
        for _ in range(int(state["steps"])):
            self.step()


class TrajectoryGuide(Guide):
    """A copy of the pretrained transformer fine-tuned jointly with the student.

    As the CALD reference (``nlp/run_glue_linformer_joint_distill.py``): the
    teacher runs on the same batch as the student; on update steps
    (``(t + 1) % teacher_update_cycle == 0``, the reference's
    ``((step // accumulation) + 1) % teacher_update_cycle``) its own task loss
    is back-propagated and its optimizer steps together with the student's;
    the student distils the teacher's states from before that update. The
    teacher has its own AdamW (lr ``teacher_lr``, 3e-5 by default there,
    weight decay 0 as the reference's default) and the student's warm-up and
    decay schedule, stepped once per teacher update (so with
    ``teacher_update_cycle`` > 1 it runs that many times slower, as there).

    Arguments
    ---------
    teacher_opt_class : callable
        ``params -> optimizer`` (YAML: ``!name:torch.optim.AdamW`` with ``lr``).
    teacher_update_cycle : int
        ``T_u``: the teacher is updated every ``T_u`` student steps.
    teacher_lr_scheduler : "student" or callable or None
        ``"student"`` (the reference): the student's ``lr_scheduler`` scaled to
        the teacher's lr (:class:`StudentScheduleCopy`); a callable
        ``optimizer -> torch.optim.lr_scheduler.LRScheduler``; or None for a
        constant lr. Stepped after every teacher update.

    Example
    -------
    >>> import functools
    >>> g = TrajectoryGuide(functools.partial(torch.optim.SGD, lr=0.1), teacher_update_cycle=2,
    ...                     teacher_lr_scheduler=None)
    >>> lin = nn.Linear(2, 2); g.bind(lin); opt = g.make_optimizer()
    >>> lin.weight.requires_grad, [g.teacher_learns(t) for t in range(4)]
    (True, [False, True, False, True])
    """

    name = "trajectory"
    trains_teacher = True
    teacher_init = "pretrained"
    student_init = "pretrained"

    def __init__(
        self,
        teacher_opt_class: Optional[Callable] = None,
        teacher_update_cycle: int = 1,
        teacher_lr_scheduler: Union[str, Callable, None] = "student",
    ):
        super().__init__()
        if teacher_update_cycle < 1:
            raise ValueError(f"teacher_update_cycle should be >= 1, found {teacher_update_cycle}")
        if isinstance(teacher_lr_scheduler, str) and teacher_lr_scheduler != "student":
            raise ValueError(
                f"TrajectoryGuide: teacher_lr_scheduler should be 'student', a callable or null, "
                f"found {teacher_lr_scheduler!r}"
            )
        self.teacher_opt_class = teacher_opt_class
        self.teacher_update_cycle = int(teacher_update_cycle)
        self.teacher_lr_scheduler = teacher_lr_scheduler
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler = None
        self.teacher_updates = 0

    def make_optimizer(
        self, student_scheduler: Optional[Callable] = None, student_lr: Optional[float] = None
    ) -> torch.optim.Optimizer:
        """Build the teacher's optimizer (and scheduler) over its parameters.

        ``student_scheduler`` / ``student_lr``: the student's scheduler (not yet
        stepped) and optimizer lr, for ``teacher_lr_scheduler="student"``.
        """
        if self.teacher_opt_class is None:
            raise ValueError("TrajectoryGuide: teacher_opt_class is not set (e.g. !name:torch.optim.AdamW)")
        params = [p for p in unwrap(self.teacher).parameters() if p.requires_grad]
        self.optimizer = self.teacher_opt_class(params)
        if self.teacher_lr_scheduler == "student":
            # a student without a scheduler keeps a constant lr: so does the teacher
            if student_scheduler is not None:
                self.scheduler = StudentScheduleCopy(student_scheduler, student_lr, self.optimizer)
        elif self.teacher_lr_scheduler is not None:
            self.scheduler = self.teacher_lr_scheduler(self.optimizer)
        return self.optimizer

    def teacher_learns(self, step: int) -> bool:
        """On steps with ``(step + 1) % teacher_update_cycle == 0``."""
        return (step + 1) % self.teacher_update_cycle == 0

    def after_teacher_step(self) -> None:
        """Count the update and step the teacher's scheduler."""
        self.teacher_updates += 1
        if self.scheduler is not None:
            self.scheduler.step()

    def describe(self, step: int) -> str:
        """Teacher updates so far and its learning rate."""
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else float("nan")
        return f"trajectory ({self.teacher_updates} teacher updates, teacher lr {lr:.3g})"

    def state_dict(self) -> Dict:
        """Teacher weights, optimizer, scheduler and update count."""
        return {
            "name": self.name,
            "teacher": unwrap(self.teacher).state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "teacher_updates": self.teacher_updates,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore teacher weights, optimizer and scheduler."""
        super().load_state_dict(state)
        unwrap(self.teacher).load_state_dict(state["teacher"])
        if state["optimizer"] is not None:
            if self.optimizer is None:
                raise RuntimeError("TrajectoryGuide: load the checkpoint after make_optimizer()")
            self.optimizer.load_state_dict(state["optimizer"])
        if state["scheduler"] is not None and self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.teacher_updates = state["teacher_updates"]


GUIDES: Dict[str, type] = {
    cls.name: cls for cls in (UnguidedGuide, TargetGuide, TrajectoryGuide, WaypointGuide, HybridGuide)
}


def select_guide(guide: Union[str, Guide, None], guides: Optional[Mapping] = None) -> Guide:
    """The guide a run uses, from the hparams keys ``guide`` and ``guides``.

    Arguments
    ---------
    guide : str or Guide or None
        A guide object (``guide: !include:.../target.yaml``), or a name of
        ``GUIDES`` (``guide: target`` or ``--guide=target``); None means
        ``unguided``.
    guides : mapping, optional
        Name -> guide object, the included fragments; a name found here is
        taken from it, otherwise the class of ``GUIDES`` is built with its
        defaults.

    Returns
    -------
    Guide

    Example
    -------
    >>> select_guide("hybrid", {"hybrid": HybridGuide(switch_step=3)}).switch_step
    3
    >>> type(select_guide("target")).__name__
    'TargetGuide'
    >>> select_guide("targett")
    Traceback (most recent call last):
    ...
    KeyError: "guide 'targett' is unknown: expected one of ['unguided', 'target', 'trajectory', 'waypoint', 'hybrid']"
    """
    if guide is None:
        guide = "unguided"
    if isinstance(guide, Guide):
        return guide
    if not isinstance(guide, str):
        raise TypeError(f"hparams `guide` should be a guide name or a Guide, found {type(guide).__name__}")
    if guide not in GUIDES:
        raise KeyError(f"guide '{guide}' is unknown: expected one of {list(GUIDES)}")
    if guides is not None and guide in guides:
        chosen = guides[guide]
        if not isinstance(chosen, GUIDES[guide]):
            raise TypeError(
                f"hparams `guides[{guide}]` should be a {GUIDES[guide].__name__} (its fragment "
                f"hparams/guides/{guide}.yaml), found {type(chosen).__name__}"
            )
        return chosen
    return GUIDES[guide]()
