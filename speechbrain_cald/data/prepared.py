"""Skip a corpus preparation whose outputs already match its options (SpeechBrain's ``skip_prep`` habit).

A preparation function calls ``if already_prepared(folder, name, options, outputs): return`` first
and ``mark_prepared(folder, name, options)`` last; the options (corpus path, splits, ...) are kept in
``<folder>/<name>_options.json``, so a run with other options prepares again.

Example
-------
>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> opts = {"splits": ["dev-clean"]}
>>> already_prepared(d, "librispeech", opts, [os.path.join(d, "dev-clean.csv")])
False
>>> _ = open(os.path.join(d, "dev-clean.csv"), "w").write("ID\\n")
>>> mark_prepared(d, "librispeech", opts)
>>> already_prepared(d, "librispeech", opts, [os.path.join(d, "dev-clean.csv")])
True
>>> already_prepared(d, "librispeech", {"splits": ["test-clean"]}, [os.path.join(d, "dev-clean.csv")])
False
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping
from speechbrain_cald.files import atomic_write

__all__ = ["already_prepared", "mark_prepared"]


def _record(folder: str, name: str) -> str:
    return os.path.join(folder, f"{name}_options.json")


def already_prepared(folder: str, name: str, options: Mapping[str, Any], outputs: Iterable[str]) -> bool:
    """True when every output exists and the recorded options equal ``options`` (JSON-compared)."""
    path = _record(folder, name)
    if not os.path.exists(path) or not all(os.path.exists(o) for o in outputs):
        return False
    with open(path, encoding="utf-8") as f:
        recorded = json.load(f)
    return recorded == json.loads(json.dumps(dict(options)))


def mark_prepared(folder: str, name: str, options: Mapping[str, Any]) -> None:
    """Record the options the outputs in ``folder`` were made with (atomically)."""
    os.makedirs(folder, exist_ok=True)
    path = _record(folder, name)
    with atomic_write(path) as f:
        json.dump(dict(options), f, indent=1, sort_keys=True)
