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
            fine-tuned jointly (own optimizer/lr),
            updated when ``t % teacher_update_cycle
            == 0`` on the same batch, after the
            student has read its states
waypoint    snapshot with the smallest step > t     snapshots        pretrained
            (the last one once t is past the end)
hybrid      target until the switch step, then      fine-tuned       fine-tuned
            no distillation (both alphas 0)
=========== ====================================== ================ ==================

``teacher_init`` and ``student_init`` give the two right-hand columns to the
recipe, which builds the modules.

Each guide's state (waypoint in use, hybrid switch, trajectory teacher weights
with its optimizer and scheduler) goes into SpeechBrain checkpoints through
``_save`` / ``_load`` hooks.
"""

from __future__ import annotations

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

__all__ = [
    "GUIDES",
    "Guide",
    "HybridGuide",
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

    def prepare_teacher(self, step: int) -> None:
        """Put the right weights in the teacher before its forward pass at ``step``."""

    def make_optimizer(self) -> Optional[torch.optim.Optimizer]:
        """The teacher's optimizer, if the guide trains the teacher."""
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
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


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
    """Target guidance, then no distillation after a switch step.

    Arguments
    ---------
    switch_step : int, optional
        The first optimizer step without distillation.
    switch_fraction : float, optional
        Or the switch as a fraction of the planned optimizer steps (CALD: 40k
        of 90k is 0.444); needs the total known at ``on_fit_start``. Used only
        when ``switch_step`` is null.

    Example
    -------
    >>> g = HybridGuide(switch_fraction=0.5); g.bind(nn.Linear(2, 2)); g.on_fit_start(10)
    >>> [g.teacher_active(t) for t in (0, 4, 5, 9)]
    [True, True, False, False]
    >>> g.describe(7)
    'none (hybrid switched off distillation at step 5)'
    """

    name = "hybrid"

    def __init__(self, switch_step: Optional[int] = None, switch_fraction: Optional[float] = None):
        super().__init__()
        # Checked in on_fit_start, not here: recipes build every guide of
        # hparams/guides/all.yaml, and an unused one must not stop the run.
        self.switch_step = switch_step
        self.switch_fraction = switch_fraction
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

    def teacher_active(self, step: int) -> bool:
        """Distil before the switch step only."""
        if self.switch_step is None:
            raise RuntimeError("HybridGuide: on_fit_start was not called, the switch step is unknown")
        active = step < self.switch_step
        if not active and not self.switched:
            self.switched = True
            logger.info("hybrid guide: distillation off from step %d on", self.switch_step)
        return active

    def describe(self, step: int) -> str:
        """Say when the switch happened once it has."""
        if self.teacher_active(step):
            return f"target (hybrid, until step {self.switch_step})"
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
    """Teacher = the earliest snapshot taken after the current step.

    Arguments
    ---------
    snapshot_dir : str or os.PathLike
        Where teacher fine-tuning wrote ``step_<n>.ckpt`` snapshots
        (``snapshot_interval`` of ``DistillBrain``).

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_cald.distill.snapshots import save_snapshot
    >>> d = tempfile.mkdtemp()
    >>> teacher = nn.Linear(2, 2)
    >>> for s in (2, 4): _ = save_snapshot(teacher, d, s)
    >>> g = WaypointGuide(d); g.bind(teacher)
    >>> [g.waypoint_for(t) for t in range(6)]
    [2, 2, 4, 4, 4, 4]
    """

    name = "waypoint"
    teacher_init = "snapshots"
    student_init = "pretrained"

    def __init__(self, snapshot_dir: Optional[Union[str, os.PathLike]] = None):
        super().__init__()
        self.snapshot_dir = snapshot_dir
        self._snapshots: Optional[List[Tuple[int, pathlib.Path]]] = None
        self.loaded_step: Optional[int] = None

    @property
    def snapshots(self) -> List[Tuple[int, pathlib.Path]]:
        """``[(step, path), ...]`` found in ``snapshot_dir``, read once."""
        if self._snapshots is None:
            if self.snapshot_dir is None:
                raise ValueError(
                    "WaypointGuide: snapshot_dir is not set (the folder of teacher snapshots "
                    "written by teacher fine-tuning)"
                )
            self._snapshots = list_snapshots(self.snapshot_dir)
        return self._snapshots

    def waypoint_for(self, step: int) -> int:
        """The snapshot step used as teacher at student step ``step``."""
        for snap_step, _ in self.snapshots:
            if snap_step > step:
                return snap_step
        return self.snapshots[-1][0]

    def prepare_teacher(self, step: int) -> None:
        """Load the waypoint of ``step`` into the teacher when it changes."""
        wanted = self.waypoint_for(step)
        if wanted != self.loaded_step:
            path = dict(self.snapshots)[wanted]
            state = torch.load(path, map_location="cpu", weights_only=True)
            unwrap(self.teacher).load_state_dict(state)
            logger.info("waypoint guide: step %d, teacher <- snapshot %s", step, path.name)
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


class TrajectoryGuide(Guide):
    """A copy of the pretrained transformer fine-tuned jointly with the student.

    The teacher runs on the same batch as the student; the student distils the
    teacher's states from before the teacher's update. On steps with
    ``step % teacher_update_cycle == 0`` the teacher's own task loss is
    back-propagated and its optimizer (own learning rate) steps together with
    the student's.

    Arguments
    ---------
    teacher_opt_class : callable
        ``params -> optimizer`` (YAML: ``!name:torch.optim.AdamW`` with ``lr``).
    teacher_update_cycle : int
        ``T_u``: the teacher is updated every ``T_u`` student steps.
    teacher_lr_scheduler : callable, optional
        ``optimizer -> torch.optim.lr_scheduler.LRScheduler``, stepped after
        every teacher update.

    Example
    -------
    >>> import functools
    >>> g = TrajectoryGuide(functools.partial(torch.optim.SGD, lr=0.1), teacher_update_cycle=2)
    >>> lin = nn.Linear(2, 2); g.bind(lin); opt = g.make_optimizer()
    >>> lin.weight.requires_grad, [g.teacher_learns(t) for t in range(4)]
    (True, [True, False, True, False])
    """

    name = "trajectory"
    trains_teacher = True
    teacher_init = "pretrained"
    student_init = "pretrained"

    def __init__(
        self,
        teacher_opt_class: Optional[Callable] = None,
        teacher_update_cycle: int = 1,
        teacher_lr_scheduler: Optional[Callable] = None,
    ):
        super().__init__()
        if teacher_update_cycle < 1:
            raise ValueError(f"teacher_update_cycle should be >= 1, found {teacher_update_cycle}")
        self.teacher_opt_class = teacher_opt_class
        self.teacher_update_cycle = int(teacher_update_cycle)
        self.teacher_lr_scheduler = teacher_lr_scheduler
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler = None
        self.teacher_updates = 0

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Build the teacher's optimizer (and scheduler) over its parameters."""
        if self.teacher_opt_class is None:
            raise ValueError("TrajectoryGuide: teacher_opt_class is not set (e.g. !name:torch.optim.AdamW)")
        params = [p for p in unwrap(self.teacher).parameters() if p.requires_grad]
        self.optimizer = self.teacher_opt_class(params)
        if self.teacher_lr_scheduler is not None:
            self.scheduler = self.teacher_lr_scheduler(self.optimizer)
        return self.optimizer

    def teacher_learns(self, step: int) -> bool:
        """Every ``teacher_update_cycle`` steps, starting at step 0."""
        return step % self.teacher_update_cycle == 0

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
