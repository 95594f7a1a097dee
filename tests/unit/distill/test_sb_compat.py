"""The boundary with SpeechBrain: what sb_compat relies on is still there, and nothing else reaches past it.

When SpeechBrain changes under the package (an upgrade), the first two tests fail and name
the functions to read again; the rest pin the helpers and that DistillBrain uses SpeechBrain's
fit loop through its public hooks only.
"""

import ast
import inspect
import tempfile
from pathlib import Path

import speechbrain
import torch
from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_cald.distill import brain, checkpoint, run_safety, sb_compat
from speechbrain_cald.distill.checkpoint import AtomicCheckpointer, make_atomic

PACKAGE = Path(sb_compat.__file__).resolve().parents[1]


def test_the_installed_speechbrain_is_the_reviewed_series():
    installed = ".".join(speechbrain.__version__.split(".")[:2])
    assert installed == sb_compat.SPEECHBRAIN_SERIES, (
        f"speechbrain {speechbrain.__version__} is installed, sb_compat was reviewed against "
        f"{sb_compat.SPEECHBRAIN_SERIES}.x: read what REVIEWED lists, then update SPEECHBRAIN_SERIES"
    )


def test_what_the_package_relies_on_in_speechbrain_is_unchanged():
    changed = sb_compat.changed_sources()
    assert not changed, (
        "SpeechBrain changed under speechbrain_cald/distill/sb_compat.py; read each again, fix what relies on "
        "it, then update its digest in REVIEWED:\n  " + "\n  ".join(changed)
    )


def test_a_checkpointer_has_exactly_the_state_that_rebuild_shares(tmp_path):
    assert sorted(vars(Checkpointer(tmp_path))) == sorted(sb_compat.CHECKPOINTER_STATE)


def test_make_atomic_returns_a_new_atomic_checkpointer_sharing_the_plain_ones_state(tmp_path):
    plain = Checkpointer(tmp_path, {"lin": torch.nn.Linear(2, 2)})
    atomic = make_atomic(plain)
    assert type(plain) is Checkpointer and type(atomic) is AtomicCheckpointer
    atomic.add_recoverable("late", torch.nn.Linear(1, 1))  # as Brain.__init__ adds its counters
    assert "late" in plain.recoverables
    saved = atomic.save_checkpoint()
    assert sorted(p.name for p in saved.path.iterdir()) == ["CKPT.yaml", "late.ckpt", "lin.ckpt"]
    atomic.recover_if_possible()
    assert atomic.custom_load_hooks is plain.custom_load_hooks  # loading restores the shared hooks in place
    assert make_atomic(atomic) is atomic


def test_checkpoint_folders_and_meta_are_speechbrains():
    ckpt = Checkpointer(tempfile.mkdtemp())
    path = sb_compat.new_checkpoint_dir(ckpt)
    assert path.parent == ckpt.checkpoints_dir and path.name.startswith("CKPT+") and not path.exists()
    path.mkdir()
    meta = sb_compat.write_checkpoint_meta(ckpt, path / "CKPT.yaml", {"step": 3}, end_of_epoch=False)
    assert meta["step"] == 3 and meta["end-of-epoch"] is False
    assert [c.meta["step"] for c in ckpt.find_checkpoints()] == [3]


def _private_speechbrain_uses(module) -> list:
    """Attribute names starting with one underscore read off anything but ``self``/``cls``, and
    ``super()._x`` calls, in a module: where it reaches into another object's privates."""
    found = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and getattr(owner.func, "id", "") == "super":
                found.append(f"super().{node.attr}")
            elif isinstance(owner, ast.Name) and owner.id == "checkpointer":
                found.append(f"checkpointer.{node.attr}")
    return found


def test_only_sb_compat_reaches_into_speechbrain_privates():
    for module in (brain, checkpoint, run_safety):
        assert _private_speechbrain_uses(module) == [], module.__name__
    source = "\n".join(inspect.getsource(m) for m in (brain, checkpoint, run_safety))
    for private in ("_fit_train", "_optimizer_step_limit_exceeded", "_save_intra_epoch_ckpt",
                    "_should_save_intra_epoch_ckpt", "_train_loader_specifics", "_new_checkpoint_dirpath",
                    "_custom_checkpoint_dirpath", "_save_checkpoint_metafile", "__class__ ="):
        assert private not in source, private
    assert "self._new_checkpoint_dirpath" in inspect.getsource(Checkpointer)  # what sb_compat wraps exists


def test_distill_brain_defines_none_of_speechbrains_private_loop_methods():
    own = {name for cls in brain.DistillBrain.__mro__ if cls.__module__.startswith("speechbrain_cald")
           for name in vars(cls)}
    private_sb = {name for name in vars(speechbrain.core.Brain) if name.startswith("_") and not name.startswith("__")}
    assert own & private_sb == set()
