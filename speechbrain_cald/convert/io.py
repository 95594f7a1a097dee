"""Save and load students; load teachers from local directories only.

Directory layouts
-----------------
transformers families (``Family.save_format == "hf"``)::

    config.json                         ``config.save_pretrained`` (+ generation_config.json)
    model.safetensors                   the student's state_dict, shared tensors once
    cald_conversion.json                family, mixer, options, init, teacher class

SpeechBrain ``TransformerASR`` (``"speechbrain"``)::

    hparams.json                        {"class": "module.Class", "kwargs": {...}}
    model.ckpt                          torch.save(state_dict)
    cald_conversion.json                (students only)

Older versions saved a SpeechBrain student without constructor hparams as
``model.pt``, a pickled module: loading it would run code from the file, so
:func:`load_student` refuses it (docs/security.md says how to convert one).

A SpeechBrain teacher directory is the same without ``cald_conversion.json``
(write one with :func:`save_speechbrain_model`). Classes inside ``kwargs``
(e.g. ``activation``) are stored as ``{"__class__": "module.Class"}``. Loading
resolves every class name only through allow-lists (``convert/class_names.py``:
transformers' model classes, the families' ``model_classes``, activation
classes) and reads weights with ``weights_only=True``: a model folder is data,
never code (docs/security.md). Every file
is written to a temporary name and moved into place with ``os.replace``, so an
interrupted save never leaves a half-written file under the final name.

``load_student`` never needs the teacher's weights: it builds the teacher's
architecture from the saved config / hparams, repeats the recorded conversion on
it and loads the student's state_dict.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

from speechbrain_cald.convert import class_names
from speechbrain_cald.convert.families import FAMILIES
from speechbrain_cald.convert.linear_time import convert_in_place
from speechbrain_cald.pretrained import local_source
from speechbrain_cald.safe_load import UnsafeFileError, load_weights_only
from speechbrain_cald.files import atomic_target

__all__ = [
    "CONVERSION_FILE",
    "save_student",
    "load_student",
    "load_teacher",
    "load_pretrained",
    "check_model_kind",
    "model_kind",
    "save_speechbrain_model",
    "build_speechbrain_model",
]

CONVERSION_FILE = "cald_conversion.json"
HPARAMS_FILE = "hparams.json"
SB_WEIGHTS_FILE = "model.ckpt"
SB_PICKLE_FILE = "model.pt"
HF_WEIGHTS_FILE = "model.safetensors"


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _write_atomic(path: Path, write) -> None:
    with atomic_target(str(path)) as tmp:
        write(Path(tmp))


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")

    _write_atomic(path, write)


def _encode(value: Any) -> Any:
    if isinstance(value, type):
        return {"__class__": _class_path(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any, where: Union[str, os.PathLike], key: str = "") -> Any:
    """``value`` read from ``where`` at ``key``, with ``{"__class__": name}`` resolved (allow-listed)."""
    if isinstance(value, dict):
        if set(value) == {"__class__"}:
            return class_names.argument_class(value["__class__"], f"{where}: key '{key}'")
        return {k: _decode(v, where, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


# ---------------------------------------------------------------- SpeechBrain
def build_speechbrain_model(hparams: Dict[str, Any], where: Union[str, os.PathLike] = HPARAMS_FILE) -> nn.Module:
    """Instantiate ``hparams["class"](**hparams["kwargs"])`` (classes in kwargs decoded).

    Arguments
    ---------
    hparams : dict
        ``{"class": "module.Class", "kwargs": {...}}`` as in ``hparams.json``; the
        class must be one a registered family lists in ``model_classes`` and
        classes inside ``kwargs`` activation classes (``convert/class_names.py``).
    where : path-like
        The file ``hparams`` was read from, for errors.

    Returns
    -------
    nn.Module
        The model, with freshly initialised weights.
    """
    if not isinstance(hparams, dict) or "class" not in hparams or "kwargs" not in hparams:
        found = sorted(hparams) if isinstance(hparams, dict) else type(hparams).__name__
        raise KeyError(f"{where}: expected keys 'class' and 'kwargs', found {found}")
    cls = class_names.model_class(hparams["class"], f"{where}: key 'class'")
    if not isinstance(hparams["kwargs"], dict):
        raise TypeError(f"{where}: key 'kwargs': expected an object of constructor arguments")
    return cls(**_decode(hparams["kwargs"], where, "kwargs"))


def speechbrain_hparams(model: nn.Module, hparams: Optional[Dict[str, Any]], who: str) -> Dict[str, Any]:
    """The constructor arguments a SpeechBrain model is saved with: ``hparams``, else those ``load_teacher`` recorded.

    Raises
    ------
    ValueError
        Neither is there (``who`` names the caller): the module is never pickled instead.
    """
    hparams = hparams if hparams is not None else getattr(model, "cald_hparams", None)
    if hparams is None:
        raise ValueError(
            f"{who}: a SpeechBrain {type(model).__name__} needs its constructor "
            "arguments, hparams={...} (recorded automatically when the teacher came from load_teacher); "
            "the module is not pickled, since loading a pickle runs code from the folder (docs/security.md)"
        )
    return hparams


def write_speechbrain_hparams(model: nn.Module, directory: Path, hparams: Dict[str, Any]) -> None:
    """``hparams.json``: the class and constructor arguments of a SpeechBrain model (classes as values by name)."""
    if "class" not in hparams or "kwargs" not in hparams:
        hparams = {"class": _class_path(type(model)), "kwargs": hparams}
    _write_json(directory / HPARAMS_FILE, _encode(hparams))


def save_speechbrain_model(model: nn.Module, directory: Union[str, os.PathLike], hparams: Dict[str, Any]) -> Path:
    """Write a SpeechBrain model as ``hparams.json`` + ``model.ckpt`` (a teacher directory).

    Arguments
    ---------
    model : nn.Module
        e.g. a ``TransformerASR``.
    directory : path
        Created if missing.
    hparams : dict
        The constructor keyword arguments (``{"d_model": 64, ...}``) or
        ``{"class": ..., "kwargs": {...}}``; classes as values are allowed.

    Returns
    -------
    pathlib.Path
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_speechbrain_hparams(model, directory, hparams)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _write_atomic(directory / SB_WEIGHTS_FILE, lambda tmp: torch.save(state, tmp))
    return directory


def _load_speechbrain(directory: Path, map_location="cpu") -> nn.Module:
    with open(directory / HPARAMS_FILE) as f:
        hparams = json.load(f)
    model = build_speechbrain_model(hparams, directory / HPARAMS_FILE)
    state = load_weights_only(directory / SB_WEIGHTS_FILE, map_location=map_location)
    model.load_state_dict(state, strict=True)
    model.cald_hparams = _decode(hparams, directory / HPARAMS_FILE)
    return model


# ---------------------------------------------------------------- transformers
# What a model reads (transformers' ``main_input_name``) says what kind of model it is.
MODEL_KINDS = {"input_ids": "text", "input_values": "speech", "input_features": "speech"}


def _hf_class(directory: Path, config, model_class=None) -> type:
    import transformers

    if model_class is not None and not isinstance(model_class, str):
        return model_class
    if model_class is not None:  # named by the caller (code, CLI, YAML), not by the folder
        return class_names.caller_class(model_class, "load_teacher: argument model_class")
    architectures = getattr(config, "architectures", None) or []
    if not architectures:
        return transformers.AutoModel
    return class_names.model_class(architectures[0], f"{directory / 'config.json'}: key 'architectures'")


def _refuse_student(directory: Path, what: str) -> None:
    if (directory / CONVERSION_FILE).is_file():
        raise ValueError(
            f"{directory} holds a converted student ({CONVERSION_FILE}), not a {what}: converting it again "
            "would drop its mixers and re-initialise attention at random. Convert its teacher, or load the "
            "student with speechbrain_cald.convert.load_student"
        )


def model_kind(config) -> Optional[str]:
    """``"text"`` or ``"speech"``: what the model of a transformers ``config`` reads (None: not known).

    Example
    -------
    >>> from transformers import BertConfig, WhisperConfig
    >>> model_kind(BertConfig()), model_kind(WhisperConfig())
    ('text', 'speech')
    """
    from transformers import MODEL_MAPPING

    try:
        base = MODEL_MAPPING[type(config)]
    except (KeyError, ValueError):
        return None
    return MODEL_KINDS.get(getattr(base, "main_input_name", None))


def check_model_kind(config, kind: str, expected: str, where: Union[str, os.PathLike]) -> None:
    """Refuse a model that reads another kind of input than the recipe feeds it.

    Arguments
    ---------
    config : transformers.PretrainedConfig
        The folder's config.
    kind : str
        ``"text"`` or ``"speech"``.
    expected : str
        The families the caller takes, for the error (``"a text encoder (bert, roberta)"``).
    where : path-like
        The ``config.json`` read, for the error.

    Example
    -------
    >>> from transformers import Wav2Vec2Config
    >>> check_model_kind(Wav2Vec2Config(), "text", "a text encoder (bert, roberta)", "m/config.json")
    Traceback (most recent call last):
    ...
    ValueError: m/config.json: a speech model (model_type 'wav2vec2', it reads input_values), expected a text model: a text encoder (bert, roberta)
    """
    found = model_kind(config)
    if found is not None and found != kind:
        from transformers import MODEL_MAPPING

        reads = MODEL_MAPPING[type(config)].main_input_name
        raise ValueError(
            f"{where}: a {found} model (model_type '{config.model_type}', it reads {reads}), "
            f"expected a {kind} model: {expected}"
        )


def load_pretrained(
    source: Union[str, os.PathLike],
    model_class: Optional[Union[str, type]] = None,
    what: str = "teacher",
    kind: Optional[str] = None,
    expected: str = "",
    config=None,
    **from_pretrained_kwargs: Any,
) -> nn.Module:
    """``from_pretrained`` from a local transformers folder, refused unless its weights fit its config.

    The one loader of pretrained transformers folders (``load_teacher``, the
    speech encoder, the text classifier, Whisper): a converted student, a
    model of the wrong kind (speech for a text recipe and the reverse),
    pickled weights, and weights that leave the encoder layers at random
    (another model's checkpoint under this config) are errors naming the
    folder and the missing weights.

    Arguments
    ---------
    source : path
        A folder written by ``save_pretrained``.
    model_class : str or type, optional
        transformers class (``"Wav2Vec2ForCTC"``, ``AutoModelForSequenceClassification``);
        default ``config.architectures[0]``.
    what : str
        What is loaded, for errors (``"teacher"``, ``"speech encoder"``).
    kind : str, optional
        ``"text"`` or ``"speech"``: refuse a model that reads the other.
    expected : str
        The families the caller takes, for that error.
    config : transformers.PretrainedConfig, optional
        The folder's config, changed by the caller (task head size, dropouts).
    **from_pretrained_kwargs
        Passed to ``from_pretrained``.

    Returns
    -------
    transformers.PreTrainedModel
    """
    import transformers

    directory = local_source(source, what)
    _refuse_student(directory, what)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{what} directory {directory}: expected config.json and weights (saved with save_pretrained), "
            f"found {sorted(p.name for p in directory.iterdir())}"
        )
    if config is not None:  # the caller's changes (head size, dropouts) go with the weights
        from_pretrained_kwargs["config"] = config
    else:
        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    if kind is not None:
        check_model_kind(config, kind, expected, directory / "config.json")
    cls = _hf_class(directory, config, model_class)
    try:
        model, info = cls.from_pretrained(
            directory, local_files_only=True, output_loading_info=True, **from_pretrained_kwargs
        )
    except pickle.UnpicklingError as error:  # transformers reads .bin weights with weights_only=True
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise UnsafeFileError(
            f"{directory}: refused the weights file(s) {pickled}: they hold Python objects other than "
            "tensors, and unpickling them could run any code (docs/security.md)"
        ) from error
    _check_teacher_weights(model, info, directory, what)
    return model


def load_teacher(
    source: Union[str, os.PathLike], model_class: Optional[Union[str, type]] = None, map_location: str = "cpu", **kwargs: Any
) -> nn.Module:
    """Load a pretrained teacher from a LOCAL directory (never from a model hub).

    Arguments
    ---------
    source : path
        A transformers directory (``config.json`` + weights, from
        ``save_pretrained``) or a SpeechBrain directory (``hparams.json`` +
        ``model.ckpt``, from :func:`save_speechbrain_model`).
    model_class : str or type, optional
        transformers class to load (e.g. ``"Wav2Vec2ForCTC"``); default
        ``config.architectures[0]``.
    map_location : str
        Device for SpeechBrain weights.
    **kwargs
        For a transformers teacher, :func:`load_pretrained`'s ``kind`` /
        ``expected`` (refuse a model of the other kind, ``"text"`` or
        ``"speech"``) and ``from_pretrained``'s arguments (e.g.
        ``attn_implementation="eager"``).

    Returns
    -------
    nn.Module
        The teacher, in eval mode.

    Example
    -------
    >>> load_teacher("facebook/wav2vec2-base")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_cald.pretrained.OfflineSourceError: teacher source 'facebook/wav2vec2-base' looks like a model-hub id...
    """
    directory = local_source(source, "teacher")
    _refuse_student(directory, "teacher")
    if (directory / "config.json").is_file():
        model = load_pretrained(directory, model_class, "teacher", **kwargs)
    elif (directory / HPARAMS_FILE).is_file():
        model = _load_speechbrain(directory, map_location)
    else:
        raise FileNotFoundError(
            f"teacher directory {directory}: expected config.json (transformers, saved with "
            f"save_pretrained) or {HPARAMS_FILE} + {SB_WEIGHTS_FILE} (SpeechBrain, saved with "
            f"save_speechbrain_model), found {sorted(p.name for p in directory.iterdir())}"
        )
    return model.eval()


def _layers_prefix(model: nn.Module) -> Optional[str]:
    """The dotted name of the family's encoder layers inside ``model`` (None: no family)."""
    from speechbrain_cald.convert.families import find_family

    try:
        layers = find_family(model).layers(model)
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
    return next((name for name, module in model.named_modules() if module is layers), None)


def _check_teacher_weights(model: nn.Module, info: Dict[str, Any], directory: Path, what: str = "teacher") -> None:
    """Refuse weights that do not belong to the config (transformers would initialise them at random).

    A task head missing from a pretrained checkpoint is normal (it is trained);
    a missing weight of the encoder layers, which the student keeps, is not.
    Without a known family, more than half of the parameters missing is refused.
    """
    missing = list(info.get("missing_keys") or [])
    if not missing:
        return
    prefix = _layers_prefix(model)
    if prefix is not None:
        bad = [k for k in missing if k.startswith(prefix + ".")]
    else:
        sizes = dict(model.state_dict().items())
        share = sum(sizes[k].numel() for k in missing if k in sizes) / max(sum(v.numel() for v in sizes.values()), 1)
        bad = missing if share > 0.5 else []
    if not bad:
        return
    unexpected = list(info.get("unexpected_keys") or [])
    hint = f"; the file holds {len(unexpected)} weights this config does not use, e.g. {unexpected[:3]}" if unexpected else ""
    raise ValueError(
        f"{what} {directory}: the weights do not fit config.json ({type(model).__name__}): {len(bad)} weights of "
        f"its encoder layers are missing from the checkpoint, e.g. {bad[:3]}{hint}. transformers would initialise "
        "them at random; check that config.json and the weights come from the same model"
    )


# ---------------------------------------------------------------- students
def save_student(
    model: nn.Module, directory: Union[str, os.PathLike], hparams: Optional[Dict[str, Any]] = None
) -> Path:
    """Save a converted student so :func:`load_student` rebuilds it in any process.

    Arguments
    ---------
    model : nn.Module
        A student from ``to_linear_time`` (it carries ``cald_conversion``).
    directory : path
        Created if missing.
    hparams : dict, optional
        SpeechBrain models only, and required for them: the constructor keyword
        arguments (recorded automatically when the teacher came from
        :func:`load_teacher`). The directory then holds ``hparams.json`` +
        ``model.ckpt`` (a state_dict). No module is pickled: a pickle is code
        that would run when the folder is loaded (docs/security.md).

    Returns
    -------
    pathlib.Path
        The directory.
    """
    conversion = getattr(model, "cald_conversion", None)
    if conversion is None:
        raise ValueError(
            f"{type(model).__name__} has no cald_conversion record: save_student expects a "
            "student made by speechbrain_cald.convert.to_linear_time"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    family = FAMILIES[conversion["family"]]
    if family.save_format == "hf":
        _save_hf(model, directory)
    elif family.save_format == "speechbrain":
        save_speechbrain_model(model, directory, speechbrain_hparams(model, hparams, f"save_student({directory})"))
    else:
        raise ValueError(f"family '{family.name}': unknown save_format '{family.save_format}'")
    _write_json(directory / CONVERSION_FILE, conversion)
    return directory


def _unique_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The state_dict with every shared tensor (tied embeddings, Linformer
    ``share="layer"``) under its first name only; loading re-ties them."""
    state: Dict[str, torch.Tensor] = {}
    seen = set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        state[name] = tensor.detach().cpu().contiguous()
    return state


def _save_hf(model: nn.Module, directory: Path) -> None:
    """config (``config.save_pretrained``) + the student's exact state_dict as safetensors.

    The weights are not written by ``model.save_pretrained``: in transformers 5
    it renames keys for some families (GPT-NeoX ``lm_head`` -> ``embed_out``) and
    refuses tensors shared between mixers, while the student must come back with
    exactly its own keys.
    """
    from safetensors.torch import save_file

    model.config.save_pretrained(directory)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and getattr(model, "can_generate", lambda: False)():
        generation_config.save_pretrained(directory)
    state = _unique_state(model)
    _write_atomic(directory / HF_WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))


def _load_tied_tolerant(model: nn.Module, state: Dict[str, torch.Tensor], where: Path) -> None:
    """``load_state_dict`` where keys of tensors shared with a loaded key (saved
    once) may be missing, but nothing else."""
    result = model.load_state_dict(state, strict=False)
    names_by_param: Dict[int, list] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names_by_param.setdefault(id(p), []).append(name)
    untied = [
        k
        for k in result.missing_keys
        if not any(
            other in state
            for names in names_by_param.values()
            if k in names
            for other in names
        )
    ]
    if untied or result.unexpected_keys:
        raise RuntimeError(
            f"{where}: state_dict does not fit the rebuilt student: missing {untied[:8]}, "
            f"unexpected {result.unexpected_keys[:8]}"
        )


def _load_safetensors(directory: Path, device: str) -> Dict[str, torch.Tensor]:
    """The weights file (or shards listed in an index)."""
    from safetensors.torch import load_file

    index = directory / f"{HF_WEIGHTS_FILE}.index.json"
    if index.is_file():
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    elif (directory / HF_WEIGHTS_FILE).is_file():
        shards = [HF_WEIGHTS_FILE]
    else:
        raise FileNotFoundError(
            f"{directory}: expected {HF_WEIGHTS_FILE} (or its .index.json) written by save_student"
        )
    state: Dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(directory / shard, device=device))
    return state


def load_student(
    directory: Union[str, os.PathLike], map_location: str = "cpu", mixer_classes: Sequence[type] = ()
) -> nn.Module:
    """Rebuild a student saved by :func:`save_student` (no teacher weights needed).

    Nothing in the folder runs as code: class names resolve only through
    allow-lists and weights load with ``weights_only=True`` (docs/security.md).

    Arguments
    ---------
    directory : path
        Local directory holding ``cald_conversion.json`` and the weights.
    map_location : str
        Device to load onto.
    mixer_classes : sequence of type
        Custom mixer classes (not in the registry) the folder may name as its
        ``mixer``; the caller imports them, the folder never does.

    Returns
    -------
    nn.Module
        The student in eval mode, with ``cald_conversion``.
    """
    directory = local_source(directory, "student")
    path = directory / CONVERSION_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: expected a student directory written by "
            "speechbrain_cald.convert.save_student"
        )
    with open(path) as f:
        conversion = json.load(f)
    if conversion.get("family") not in FAMILIES:
        raise KeyError(
            f"{path}: family '{conversion.get('family')}' is not registered in this process "
            f"(known: {sorted(FAMILIES)}); import the module that calls register_family first"
        )
    family = FAMILIES[conversion["family"]]
    mixer = class_names.recorded_mixer(conversion.get("mixer"), f"{path}: key 'mixer'", mixer_classes)
    if family.save_format == "hf":
        import transformers

        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
        model = class_names.model_class(conversion.get("teacher_class"), f"{path}: key 'teacher_class'")(config)
        convert_in_place(
            model,
            mixer,
            "default",  # weights are loaded next; skip attention init
            conversion["family"],
            conversion["teacher_class"],
            conversion["mixer_options"],
        )
        state = _load_safetensors(directory, str(map_location))
        _load_tied_tolerant(model, state, directory)
    elif not (directory / HPARAMS_FILE).is_file() and (directory / SB_PICKLE_FILE).is_file():
        raise ValueError(
            f"{directory / SB_PICKLE_FILE}: a pickled module (how older versions saved a SpeechBrain student "
            f"without hparams) is not loaded: unpickling it would run code from the file. If you wrote it "
            "yourself, convert it once as docs/security.md shows (torch.load(..., weights_only=False) in your "
            "own code, then save_student(model, new_folder, hparams={...}))"
        )
    else:
        with open(directory / HPARAMS_FILE) as f:
            hparams = json.load(f)
        model = build_speechbrain_model(hparams, directory / HPARAMS_FILE)
        convert_in_place(
            model,
            mixer,
            "default",
            conversion["family"],
            conversion["teacher_class"],
            conversion["mixer_options"],
        )
        state = load_weights_only(directory / SB_WEIGHTS_FILE, map_location=map_location)
        model.load_state_dict(state, strict=True)
        model.cald_hparams = _decode(hparams, directory / HPARAMS_FILE)
    model.cald_conversion = conversion
    return model.to(map_location).eval()
