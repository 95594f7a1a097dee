"""distill: CALD training engine.

taps        per-layer hidden states (forward hooks) and layer maps
losses      layer_distill_loss, logits_distill_loss
guides      unguided / target / trajectory / waypoint / hybrid (registry ``GUIDES``)
snapshots   teacher snapshots (waypoints), written atomically
checkpoint  AtomicCheckpointer, RNGState
brain       DistillBrain (speechbrain.Brain) and ModelOutput
progress    DistillBrain's progress bars (every loss term in the training one)
sb_compat   what the package takes from SpeechBrain beyond its public API, checked against it
"""

from speechbrain_cald.distill.brain import DistillBrain, DistillConfig, DistillPredictions, ModelOutput
from speechbrain_cald.distill.checkpoint import AtomicCheckpointer, RNGState, make_atomic
from speechbrain_cald.distill.guides import (
    GUIDES,
    Guide,
    HybridGuide,
    TargetGuide,
    TrajectoryGuide,
    UnguidedGuide,
    WaypointGuide,
    select_guide,
)
from speechbrain_cald.distill.losses import layer_distill_loss, logits_distill_loss
from speechbrain_cald.distill.snapshots import list_snapshots, save_snapshot
from speechbrain_cald.distill.taps import (
    LayerTaps,
    every_nth_layer_map,
    find_layers,
    identity_layer_map,
    lengths_to_mask,
)

__all__ = [
    "AtomicCheckpointer",
    "DistillBrain",
    "DistillConfig",
    "DistillPredictions",
    "GUIDES",
    "Guide",
    "HybridGuide",
    "LayerTaps",
    "ModelOutput",
    "RNGState",
    "TargetGuide",
    "TrajectoryGuide",
    "UnguidedGuide",
    "WaypointGuide",
    "every_nth_layer_map",
    "find_layers",
    "identity_layer_map",
    "layer_distill_loss",
    "lengths_to_mask",
    "list_snapshots",
    "logits_distill_loss",
    "make_atomic",
    "save_snapshot",
    "select_guide",
]
