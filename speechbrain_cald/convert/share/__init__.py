"""Parameter-sharing students: recursive (MiniALBERT / Relaxed Recursive) and residual.

``to_shared(model, scheme="recursive" | "residual", **options)`` deep-copies a
teacher of any family in ``convert.families.FAMILIES`` (also one already made
linear-time by ``to_linear_time``) and rebuilds its encoder layers:

``recursive``
    The encoder's ``ModuleList`` becomes ``num_steps`` :class:`RecursiveStep`
    modules that all reference ``num_unique`` shared layer objects (step ``i``
    uses unique layer ``i mod num_unique`` with ``tying="cycle"``, or blocks of
    adjacent steps with ``tying="block"``). Step ``i`` stands for teacher layer
    ``m(i)`` (:func:`step_teacher_layers`; 6 steps of a 12-layer teacher map to
    layers 2, 4, ..., 12, as MiniALBERT). Shared-layer init ``average`` (mean of
    the teacher layers the unique layer stands for), ``stepwise`` (evenly spaced
    teacher layers) or ``random``. Per-step adapters: ``bottleneck`` (one
    :class:`~speechbrain_cald.nnet.sharing.BottleneckAdapter` on the input of
    the attention and one on the input of each FFN, through forward pre-hooks
    that exist only while the step runs), ``lora`` (a per-step low-rank delta on
    every 2-D weight of attention and FFN, initialised by truncated SVD of
    teacher minus shared weight, applied with ``torch.func.functional_call`` so
    it works for weights a module reads directly, e.g.
    ``nn.MultiheadAttention.in_proj_weight``), or ``none``.

``residual``
    Layers stay separate modules; every 2-D weight of attention and FFN in each
    group of ``group_size`` adjacent layers becomes ``S_g + A_l B_l + D_l``
    (:class:`~speechbrain_cald.nnet.sharing.ResidualWeight`): ``S_g`` the group
    mean, ``A_l B_l`` the rank-``rank`` truncated SVD of the layer's residual,
    ``D_l`` the wrapped diagonal of what remains. Biases, norms, convolutions
    stay per layer. Exact at full rank.

Which modules hold "attention" and "FFN" in each family is the small registry
``SHARING_SITES`` here (attention itself comes from the family entry). The
student carries ``model.cald_sharing`` (a JSON-able record) so it can be
rebuilt before loading weights (:func:`apply_sharing_record`).

Size honesty: :func:`unique_parameter_count` counts each shared tensor once,
:func:`save_shared_weights` stores each shared tensor once (safetensors refuses
aliases, so duplicates are dropped and their names kept as metadata) and
:func:`size_report` gives unique parameters and bytes on disk. Command line:
``python -m speechbrain_cald.convert.share TEACHER_DIR STUDENT_DIR --scheme residual``.

Modules: ``sites`` (where attention and FFN sit per family), ``transforms`` (the two
schemes, ``to_shared``, ``apply_sharing_record``), ``training`` (which parameters train;
``shared_student`` for YAML), ``weights`` (each shared tensor stored once), ``sizes``
(unique parameters, bytes on disk), ``io`` (a student's folder), ``cli`` (the command).
"""

from speechbrain_cald.convert.share.cli import main
from speechbrain_cald.convert.share.io import SHARED_WEIGHTS_FILE, SHARING_FILE, load_shared_student, save_shared_student
from speechbrain_cald.convert.share.sites import SHARING_SITES, SharingSites
from speechbrain_cald.convert.share.sizes import encoder_parameter_count, size_report, unique_parameter_count
from speechbrain_cald.convert.share.training import adapters_only, shared_student, sharing_trainable_parameters
from speechbrain_cald.convert.share.transforms import SCHEMES, RecursiveStep, apply_sharing_record, step_teacher_layers, to_shared
from speechbrain_cald.convert.share.weights import dedup_state_dict, load_shared_weights, save_shared_weights

__all__ = [
    "SCHEMES",
    "SHARING_SITES",
    "SharingSites",
    "RecursiveStep",
    "to_shared",
    "step_teacher_layers",
    "apply_sharing_record",
    "adapters_only",
    "shared_student",
    "sharing_trainable_parameters",
    "unique_parameter_count",
    "encoder_parameter_count",
    "dedup_state_dict",
    "save_shared_weights",
    "load_shared_weights",
    "size_report",
    "save_shared_student",
    "load_shared_student",
    "SHARING_FILE",
    "SHARED_WEIGHTS_FILE",
    "main",
]
