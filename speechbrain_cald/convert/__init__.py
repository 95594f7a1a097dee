"""Model surgery: turn a pretrained transformer into a linear-time student.

``to_linear_time(model, mixer="bimamba2", init="default", **mixer_options)``
replaces each self-attention found by the model's ``Family`` entry
(``FAMILIES``) with a mixer from ``speechbrain_cald.nnet``; ``save_student`` /
``load_student`` write and rebuild students; ``to_shared(model, scheme=
"recursive" | "residual")`` builds parameter-sharing students; ``new_parameters(student)`` lists the
weights the conversion created; ``load_teacher`` loads a teacher
from a local directory. ``python -m speechbrain_cald.convert TEACHER STUDENT``
does it from the shell.
"""

from speechbrain_cald.convert.families import (
    FAMILIES,
    Family,
    Projection,
    UnsupportedModelError,
    find_family,
    register_family,
)
from speechbrain_cald.convert.io import load_student, load_teacher, save_speechbrain_model, save_student
from speechbrain_cald.convert.linear_time import count_parameters, to_linear_time
from speechbrain_cald.convert.new_params import new_parameters
from speechbrain_cald.convert.share import shared_student, to_shared

__all__ = [
    "FAMILIES",
    "Family",
    "Projection",
    "UnsupportedModelError",
    "count_parameters",
    "find_family",
    "load_student",
    "load_teacher",
    "new_parameters",
    "register_family",
    "save_speechbrain_model",
    "save_student",
    "shared_student",
    "to_linear_time",
    "to_shared",
]
