"""Class names read from model folders, resolved only through allow-lists.

A model folder is data that people download and share; the names it holds
(``hparams.json`` ``class`` and ``{"__class__": ...}`` arguments,
``config.json`` ``architectures``, ``cald_conversion.json`` /
``cald_sharing.json`` ``teacher_class`` and ``mixer``) never import a module or
call an object of the folder's choosing. They resolve from

- transformers' own model classes (``BertModel``, or the dotted name a student
  records, ``transformers.models.bert.modeling_bert.BertModel``);
- the model classes registered families list (``Family.model_classes``, e.g.
  SpeechBrain's ``TransformerASR``): code registers them, a folder cannot;
- for constructor arguments, the activation classes of
  :data:`ARGUMENT_MODULES`;
- for mixers, the registry ``nnet.MIXERS`` and the classes the caller passes.

Anything else is an :class:`UnknownClassError` naming the file and key.
"""

from __future__ import annotations

import importlib
from typing import Iterable, Optional, Tuple, Union

from torch import nn

from speechbrain_cald.convert.families import FAMILIES
from speechbrain_cald.convert.mixers import mixer_reference
from speechbrain_cald.nnet import MIXERS

__all__ = ["ARGUMENT_MODULES", "UnknownClassError", "model_class", "caller_class", "argument_class", "recorded_mixer"]

# Modules whose nn.Module classes a constructor argument may name (SpeechBrain's
# TransformerASR takes activation classes: ``activation``, ``conformer_activation``...).
ARGUMENT_MODULES = ("torch.nn.modules.activation", "speechbrain.nnet.activations")


class UnknownClassError(ValueError):
    """A model folder names a class outside the allow-lists; nothing was imported."""


def _split(name: str) -> Tuple[str, str]:
    module, _, attr = name.replace(":", ".").rpartition(".")
    return module, attr


def _transformers_class(name: str) -> Optional[type]:
    """transformers' own model (or Auto) class called ``name``, bare or fully dotted; else None."""
    module, attr = _split(name)
    if (module and not module.startswith("transformers.")) or not attr.isidentifier() or attr.startswith("_"):
        return None
    import transformers

    try:
        obj = getattr(transformers, attr, None)  # transformers imports its own module lazily
    except (ImportError, RuntimeError):
        return None
    if not isinstance(obj, type):
        return None
    is_model = issubclass(obj, transformers.PreTrainedModel) or obj.__module__.startswith("transformers.models.auto.")
    if not is_model or (module and f"{obj.__module__}.{obj.__qualname__}" != name):
        return None
    return obj


def _registered_model_classes() -> Tuple[str, ...]:
    return tuple(sorted({name for family in FAMILIES.values() for name in family.model_classes}))


def model_class(name: object, where: str) -> type:
    """The model class ``name`` read from a model folder (transformers' own, or a family's ``model_classes``).

    Arguments
    ---------
    name : str
        E.g. ``"BertModel"``, ``"transformers.models.bert.modeling_bert.BertModel"`` or
        ``"speechbrain.lobes.models.transformer.TransformerASR.TransformerASR"``.
    where : str
        The file and key it was read from, for the error (``"<dir>/hparams.json: key 'class'"``).

    Returns
    -------
    type
        The class.

    Raises
    ------
    UnknownClassError
        ``name`` is neither; no module was imported for it.

    Example
    -------
    >>> model_class("BertModel", "config.json: key 'architectures'").__name__
    'BertModel'
    >>> model_class("subprocess.Popen", "hparams.json: key 'class'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_cald.convert.class_names.UnknownClassError: hparams.json: key 'class': 'subprocess.Popen' is not...
    """
    if isinstance(name, str):
        if name in _registered_model_classes():
            module, attr = _split(name)
            return getattr(importlib.import_module(module), attr)
        found = _transformers_class(name)
        if found is not None:
            return found
    raise UnknownClassError(
        f"{where}: {name!r} is not a model class this toolkit loads: expected one of transformers' model "
        f"classes (e.g. 'BertModel' or 'transformers.models.bert.modeling_bert.BertModel') or one a "
        f"registered family lists in model_classes {list(_registered_model_classes())}. A model folder is "
        "data: names in it never import other code (docs/security.md); a family of your own lists its "
        "classes in Family(model_classes=...)"
    )


def caller_class(name: str, where: str) -> type:
    """A model class the caller names (an argument of its own code, CLI or YAML), not a folder.

    transformers' model classes by bare or dotted name, as :func:`model_class`;
    any other ``"module.Class"`` / ``"module:Class"`` is imported, since the
    caller chose it (as ``--mixer module:Class`` is).

    Arguments
    ---------
    name : str
        The class name.
    where : str
        The argument, for the error.

    Returns
    -------
    type
        The class.

    Example
    -------
    >>> caller_class("torch.nn.Linear", "model_class").__name__
    'Linear'
    """
    found = _transformers_class(name)
    if found is not None:
        return found
    module, attr = _split(name)
    if not module:
        raise UnknownClassError(
            f"{where}: unknown transformers class '{name}': expected a transformers model class "
            "(e.g. 'Wav2Vec2ForCTC') or a 'module.Class' to import"
        )
    return getattr(importlib.import_module(module), attr)


def argument_class(name: object, where: str) -> type:
    """A class passed to a model's constructor (``{"__class__": name}`` in ``hparams.json``).

    Arguments
    ---------
    name : str
        ``"module.Class"`` with ``module`` one of :data:`ARGUMENT_MODULES`.
    where : str
        The file and key, for the error.

    Returns
    -------
    type
        The ``nn.Module`` class.

    Example
    -------
    >>> argument_class("torch.nn.modules.activation.GELU", "hparams.json: key 'kwargs.activation'")
    <class 'torch.nn.modules.activation.GELU'>
    """
    if isinstance(name, str):
        module, attr = _split(name)
        if module in ARGUMENT_MODULES and attr.isidentifier() and not attr.startswith("_"):
            obj = getattr(importlib.import_module(module), attr, None)
            if isinstance(obj, type) and issubclass(obj, nn.Module):
                return obj
    raise UnknownClassError(
        f"{where}: {name!r} is not a class a model folder may name as an argument: expected an nn.Module "
        f"class of {list(ARGUMENT_MODULES)} (e.g. 'torch.nn.modules.activation.GELU'). A model folder is "
        "data: names in it never import other code (docs/security.md)"
    )


def recorded_mixer(name: object, where: str, mixer_classes: Iterable[type] = ()) -> Union[str, type]:
    """The mixer a saved student records: a registry name, or one of the caller's ``mixer_classes``.

    Arguments
    ---------
    name : str
        ``cald_conversion.json``'s ``mixer``: a ``MIXERS`` name, or the
        ``"module:Class"`` reference a custom mixer was saved under.
    where : str
        The file and key, for the error.
    mixer_classes : iterable of type
        Custom mixer classes the caller imported itself and allows.

    Returns
    -------
    str or type
        The registry name, or the class (for ``resolve_mixer``).

    Example
    -------
    >>> recorded_mixer("bimamba2", "cald_conversion.json: key 'mixer'")
    'bimamba2'
    """
    if isinstance(name, str) and name in MIXERS:
        return name
    allowed = {mixer_reference(cls): cls for cls in mixer_classes}
    if isinstance(name, str) and name in allowed:
        return allowed[name]
    raise UnknownClassError(
        f"{where}: {name!r} is not a registered mixer (expected one of {sorted(MIXERS)}) nor one of the "
        f"mixer classes passed by the caller ({sorted(allowed)}). A model folder is data: names in it never "
        "import other code (docs/security.md); for a custom mixer, import its class and pass "
        "load_student(folder, mixer_classes=[TheClass])"
    )
