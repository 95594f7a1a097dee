"""A train.py command line, read the SpeechBrain way, with paths kept as data.

``python train.py hparams.yaml --key=value ...``: SpeechBrain's run options
(``--device``, ``--precision``, ...) and overrides of YAML keys. SpeechBrain
turns the overrides into YAML text by joining the arguments with ``=`` and
splitting them again, then HyperPyYAML parses that text: a value holding
``=`` loses it, and a folder named ``exp #1`` becomes ``exp`` (YAML's
comment), ``a: b`` a syntax error. Here each ``--key=value`` is split at its
first ``=`` only, a later one of the same key wins (as on any command line,
``--teacher_args`` after the recipe's own), and a value that is a path
(it starts with ``/``, ``./``, ``../`` or ``~/``) is written as a quoted YAML
string: YAML only reads such a value as a string anyway, so quoting changes
nothing but the paths it would have cut. Every other value is YAML as before
(``--lr=0.001``, ``--train_splits=[a,b]``). The recipes' run.sh make every path
absolute, so every path they pass is data.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import speechbrain as sb
from speechbrain.utils.run_opts import RunOptions

__all__ = ["is_path", "overrides_yaml", "parse_arguments", "yaml_string"]

# the options SpeechBrain's own parser takes (everything else overrides the YAML)
_RUN_OPTIONS = frozenset(RunOptions().as_dict()) | {"jit_module_keys", "compile_module_keys"}
_PATH_PREFIXES = ("/", "./", "../", "~/")


def is_path(value: str) -> bool:
    """Whether an override value is a path (taken as a string, never parsed as YAML).

    Example
    -------
    >>> is_path("/data/exp #1"), is_path("./ls"), is_path("0.001"), is_path("[a,b]")
    (True, True, False, False)
    """
    return value.startswith(_PATH_PREFIXES)


def yaml_string(text: str) -> str:
    """``text`` as a single-quoted YAML scalar: every character kept (``#``, ``:``, quotes, ``$``).

    Example
    -------
    >>> yaml_string("/data/it's #1: ü")
    "'/data/it''s #1: ü'"
    """
    return "'" + text.replace("'", "''") + "'"


def overrides_yaml(overrides: Dict[str, str]) -> str:
    """HyperPyYAML's override text for ``{key: value as typed}``: paths quoted, the rest YAML.

    Example
    -------
    >>> print(overrides_yaml({"data_folder": "/ls #2", "lr": "0.5", "splits": "[a,b]"}))
    data_folder: '/ls #2'
    lr: 0.5
    splits: [a,b]
    """
    return "\n".join(f"{key}: {yaml_string(value) if is_path(value) else value}" for key, value in overrides.items())


def parse_arguments(argv: List[str]) -> Tuple[str, RunOptions, str]:
    """``sb.parse_arguments`` with every ``--key=value`` override read as typed (see the module docstring).

    Arguments
    ---------
    argv : list of str
        ``[hparams.yaml, --key=value | --run_option ..., ...]`` (``sys.argv[1:]``).

    Returns
    -------
    (hparams_file, run_opts, overrides)
        As ``sb.parse_arguments``: ``overrides`` is YAML text for ``load_hyperpyyaml``.

    Example
    -------
    >>> f, opts, text = parse_arguments(["hp.yaml", "--device=cpu", "--out=/e #1/a=b", "--lr=1", "--lr=2"])
    >>> f, opts["device"], text
    ('hp.yaml', 'cpu', "out: '/e #1/a=b'\\nlr: 2")
    """
    given: Dict[str, str] = {}
    rest = argv[:1]
    for arg in argv[1:]:
        key, sep, value = arg[2:].partition("=")
        if arg.startswith("--") and sep and key not in _RUN_OPTIONS:
            given.pop(key, None)  # a later value wins, and takes the later place
            given[key] = value
        else:
            rest.append(arg)
    hparams_file, run_opts, other = sb.parse_arguments(rest)  # other: overrides given as `--key value`
    text = "\n".join(t for t in (overrides_yaml(given), other) if t)
    return hparams_file, run_opts, text
