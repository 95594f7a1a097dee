"""Every file the package writes in place goes through ``files.atomic_write`` / ``files.atomic_target``.

A hand-made ``path + ".tmp"`` and ``os.replace`` is the class of bug this pins: a fixed
temporary name is shared by two runs writing the same file (the second's rename then
fails, or one run's half-written file lands), and each site forgets something (the
folder, the clean-up on failure, the permissions). Whole folders moved into place
(a checkpoint, an exported model) are the other pattern, listed here by name.
"""

import ast
import os
import threading
from pathlib import Path

from speechbrain_cald.files import atomic_target, atomic_write

ROOT = Path(__file__).resolve().parents[2] / "speechbrain_cald"
FOLDER_MOVES = {  # a whole folder written beside its place, then renamed: not a file write
    "distill/checkpoint.py",  # a checkpoint's .tmp-CKPT+... folder
    "tasks/whisper_asr.py",  # the exported inference/ folder
}


def _renames(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in {
                ("os", "replace"), ("os", "rename"), ("shutil", "move")}:
                yield node.lineno, f"{owner.id}.{node.func.attr}"


def test_no_module_renames_files_by_hand():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "files.py" or rel in FOLDER_MOVES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{rel}:{line}: {call}" for line, call in _renames(tree)]
    assert not found, "write through speechbrain_cald.files.atomic_write / atomic_target instead:\n" + "\n".join(found)


def test_the_folder_moves_listed_still_exist():
    """An entry of FOLDER_MOVES that no longer renames anything is a stale exemption."""
    for rel in FOLDER_MOVES:
        assert list(_renames(ast.parse((ROOT / rel).read_text(encoding="utf-8")))), rel


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path):
    """Two writers of one file at once (two stage-0 runs into one manifest folder) both succeed."""
    target = tmp_path / "train.csv"
    started, errors = threading.Barrier(2), []

    def write(text):
        try:
            with atomic_write(str(target)) as f:
                started.wait(timeout=10)  # both temporaries open at the same time
                f.write(text)
        except Exception as err:  # pragma: no cover - the failure this test is about
            errors.append(err)

    threads = [threading.Thread(target=write, args=(t,)) for t in ("one\n", "two\n")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert target.read_text() in ("one\n", "two\n")
    assert os.listdir(tmp_path) == ["train.csv"]


def test_a_failed_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.ckpt"
    target.write_text("old")
    try:
        with atomic_target(str(target)) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["model.ckpt"]
