"""Learning-rate schedules stepped by ``DistillBrain`` after every optimizer step.

``WarmupCosineLR``: linear warm-up, then a cosine decay to a floor; the CALD LM
reference's schedule (``--lr_scheduler_type cosine --warmup_ratio 0.03
--min_lr 3e-5 --lr_decay_steps N``). The horizon may be left open
(``total_steps=None``) and fixed when training starts, from the planned number
of optimizer steps (:meth:`WarmupCosineLR.plan`).

``WarmupExpDecayLR``: the CALD speech reference's schedule
(``speech/models/model.py: learning_rate_schedule``, l. 97-116, a ``LambdaLR``
stepped after each optimizer step): 0 at the first step, a linear warm-up to
``lr``, an exponential decay to ``final_lr`` over ``decay_steps`` and
``final_lr`` from then on.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from speechbrain.utils import checkpoints

from speechbrain_cald.safe_load import load_weights_only

__all__ = ["StepSchedule", "WarmupCosineLR", "WarmupExpDecayLR"]


@checkpoints.register_checkpoint_hooks
class StepSchedule:
    """A learning rate per optimizer step: counts the steps, sets the next one's rate, checkpoints its state.

    Subclasses give :meth:`next_value`; :meth:`state` lists what a checkpoint
    keeps (``current_step`` and anything the run fixes, e.g. a planned horizon).
    """

    current_step: int = 0

    def next_value(self) -> float:
        """The learning rate of the next optimizer step."""
        raise NotImplementedError(f"{type(self).__name__}.next_value() is not defined")

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        """Set the learning rate of the next optimizer step (call once before training too)."""
        lr = self.next_value()
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def __call__(self, optimizer: torch.optim.Optimizer) -> None:
        """After an optimizer step: count it and set the rate of the next one."""
        self.current_step += 1
        self.apply(optimizer)

    def state(self) -> dict:
        """What a checkpoint keeps."""
        return {"current_step": self.current_step}

    @checkpoints.mark_as_saver
    def save(self, path):
        torch.save(self.state(), path)

    @checkpoints.mark_as_loader
    def load(self, path, end_of_epoch=False, device=None):
        data = load_weights_only(path)
        for key in self.state():
            setattr(self, key, data[key])


class WarmupCosineLR(StepSchedule):
    """Linear warm-up to ``lr``, cosine decay to ``min_lr`` at ``total_steps``, then ``min_lr``.

    Arguments
    ---------
    lr : float
        Peak learning rate.
    min_lr : float
        The floor reached at ``total_steps``.
    total_steps : int, optional
        Decay horizon in optimizer steps; None until :meth:`plan`.
    warmup_steps : int, optional
        Warm-up length; default ``round(warmup_ratio * total_steps)``.
    warmup_ratio : float
        Warm-up as a fraction of ``total_steps`` (when ``warmup_steps`` is None).

    Example
    -------
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    >>> sched = WarmupCosineLR(lr=1.0, min_lr=0.1, total_steps=10, warmup_steps=2)
    >>> lrs = [sched.apply(opt)]  # before the first step
    >>> for _ in range(11):  # after each step: the rate of the next one
    ...     sched(opt); lrs.append(round(opt.param_groups[0]["lr"], 3))
    >>> lrs
    [0.5, 1.0, 0.966, 0.868, 0.722, 0.55, 0.378, 0.232, 0.134, 0.1, 0.1, 0.1]
    """

    def __init__(
        self,
        lr: float,
        min_lr: float = 0.0,
        total_steps: Optional[int] = None,
        warmup_steps: Optional[int] = None,
        warmup_ratio: float = 0.0,
    ):
        if min_lr > lr:
            raise ValueError(f"WarmupCosineLR: min_lr {min_lr} is above the peak lr {lr}")
        self.lr = float(lr)
        self.min_lr = float(min_lr)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.warmup_ratio = float(warmup_ratio)
        self.current_step = 0

    def plan(self, planned_steps: Optional[int]) -> None:
        """Fix an open horizon to the run's planned optimizer steps."""
        if self.total_steps is None:
            if not planned_steps:
                raise ValueError(
                    "WarmupCosineLR: total_steps is null and the number of steps is unknown; "
                    "set total_steps (e.g. lr_decay_steps) in the YAML"
                )
            self.total_steps = int(planned_steps)

    def value(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (1-based)."""
        if self.total_steps is None:
            raise ValueError("WarmupCosineLR: call plan(planned_steps) or give total_steps before training")
        warmup = self.warmup_steps if self.warmup_steps is not None else round(self.warmup_ratio * self.total_steps)
        if step <= warmup:
            return self.lr * step / max(warmup, 1)
        progress = min(1.0, (step - warmup) / max(self.total_steps - warmup, 1))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def next_value(self) -> float:
        """The rate of the next step: ``value`` counts steps from 1."""
        return self.value(self.current_step + 1)

    def state(self) -> dict:
        """The step count and the horizon (fixed by :meth:`plan` when it was open)."""
        return {"current_step": self.current_step, "total_steps": self.total_steps}


class WarmupExpDecayLR(StepSchedule):
    """Linear warm-up from 0, exponential decay to ``final_lr`` over ``decay_steps``, then ``final_lr``.

    The learning rate of the optimizer step that follows ``s`` steps (the
    reference's ``global_step``) is ``lr * s / warmup_steps`` during the
    warm-up, ``lr * (final_lr / lr) ** ((s - warmup_steps) / decay_steps)``
    during the decay, and ``final_lr`` once ``s >= warmup_steps + decay_steps``.

    Called as ``scheduler(optimizer)`` after every optimizer step (what
    ``DistillBrain`` does with its ``lr_scheduler``); :meth:`apply` sets the
    first step's rate, 0, before training (``DistillBrain.on_fit_start``).

    Arguments
    ---------
    lr : float
        Peak learning rate (reference ``max_lr`` 3e-4).
    final_lr : float
        The rate reached at the end of the decay and held (reference 1.5e-6).
    warmup_steps : int
        Warm-up length (reference 5,000).
    decay_steps : int
        Decay length after the warm-up (reference 75,000).

    Example
    -------
    >>> sched = WarmupExpDecayLR(lr=1.0, final_lr=0.01, warmup_steps=2, decay_steps=2)
    >>> [round(sched.value(s), 3) for s in range(6)]  # the rate of the step after s steps
    [0.0, 0.5, 1.0, 0.1, 0.01, 0.01]
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched.apply(opt), sched(opt), opt.param_groups[0]["lr"]  # before the first step, after it
    (0.0, None, 0.5)
    """

    def __init__(self, lr: float, final_lr: float, warmup_steps: int, decay_steps: int):
        if not 0 < final_lr <= lr:
            raise ValueError(f"WarmupExpDecayLR: expected 0 < final_lr <= lr, found final_lr {final_lr}, lr {lr}")
        if warmup_steps < 0 or decay_steps <= 0:
            raise ValueError(
                f"WarmupExpDecayLR: expected warmup_steps >= 0 and decay_steps > 0, found {warmup_steps}, {decay_steps}"
            )
        self.lr = float(lr)
        self.final_lr = float(final_lr)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.current_step = 0

    def value(self, steps_done: int) -> float:
        """The learning rate of the optimizer step that follows ``steps_done`` steps."""
        if steps_done < self.warmup_steps:
            return self.lr * steps_done / self.warmup_steps
        decayed = steps_done - self.warmup_steps
        if decayed >= self.decay_steps:
            return self.final_lr
        return self.lr * (self.final_lr / self.lr) ** (decayed / self.decay_steps)

    def next_value(self) -> float:
        """The rate of the next step: ``value`` of the steps already taken."""
        return self.value(self.current_step)
