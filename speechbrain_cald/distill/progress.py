"""The training and validation progress bars of ``DistillBrain``, with every loss term in the training one.

SpeechBrain's own bars show ``train_loss`` only and are out of reach of a Brain's hooks, so
``DistillBrain.fit`` runs SpeechBrain's loop with ``progressbar=False`` and draws these
instead, from public hooks: a bar opens in ``on_stage_start``, advances per batch
(``fit_batch`` / ``evaluate_batch``) and closes in ``on_stage_end``. They look like
SpeechBrain's: same counts, colours and width, on the main process only.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from tqdm import tqdm

__all__ = ["StageProgress"]


class StageProgress:
    """One bar at a time: a stage's batches, with values shown beside the count.

    Arguments
    ---------
    enabled : bool
        Draw bars at all (False: every call does nothing).
    colours : mapping
        Stage name (``"train"``, ``"valid"``) -> tqdm colour (``Brain.tqdm_barcolor``).

    Example
    -------
    >>> import io
    >>> out = io.StringIO()
    >>> bar = StageProgress(True, {"train": "green"}, file=out)
    >>> bar.start("train", range(3), initial=1)
    >>> bar.advance(train_loss=0.5, task=0.25)
    >>> bar.close()
    >>> "2/3" in out.getvalue() and "task=0.25" in out.getvalue()
    True
    >>> StageProgress(False, {}).start("train", range(3))  # disabled: nothing drawn
    """

    def __init__(self, enabled: bool, colours: Mapping[str, str], file: Any = None):
        self.enabled = enabled
        self.colours = dict(colours)
        self.file = file
        self.bar: Optional[tqdm] = None

    @property
    def active(self) -> bool:
        """Whether a bar is open."""
        return self.bar is not None

    def start(self, stage: str, loader: Any, initial: int = 0) -> None:
        """Open the bar of ``stage`` over ``loader``'s batches, ``initial`` of them done (a resumed epoch)."""
        self.close()
        if not self.enabled:
            return
        try:
            total = len(loader)
        except TypeError:  # an iterable loader of unknown length
            total = None
        self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, colour=self.colours.get(stage),
                        file=self.file)

    def advance(self, **shown: float) -> None:
        """One batch done; ``shown`` (e.g. ``train_loss=..., task=...``) is drawn at tqdm's own pace."""
        if self.bar is None:
            return
        if shown:
            self.bar.set_postfix(**shown, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        """Close the open bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
