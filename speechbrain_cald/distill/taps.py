"""Taps: the per-layer hidden states of a model, collected by forward hooks.

A tap sits on every layer of an ``nn.ModuleList`` (the encoder layers of a
teacher or student) and keeps each layer's output, i.e. the hidden state after
the layer's FFN, as CALD distils it. With ``include_input=True`` it also keeps
the input of the first layer first: for BERT / RoBERTa the embedding output,
``hidden_states[0]`` of transformers' ``output_hidden_states``, which the CALD
GLUE reference distils with the 12 layer outputs (13 states for RoBERTa-base). Family knowledge (where the layers are)
comes from ``speechbrain_cald.convert`` when a family matches the model, or is
given explicitly (a ``ModuleList`` or a dotted path such as
``"encoder.layers"``), so taps work on any stack of layers.

The layer map pairs the student's steps with the teacher's layers: student
step ``i`` is compared with teacher layer ``layer_map[i]``. The default is the
identity; recursive students (MiniALBERT) use ``every_nth_layer_map``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

__all__ = [
    "LayerTaps",
    "every_nth_layer_map",
    "find_layers",
    "identity_layer_map",
    "lengths_to_mask",
    "tapped_layers",
    "unwrap",
]


def unwrap(module: nn.Module) -> nn.Module:
    """Return the module inside a DDP / DataParallel wrapper (or the module itself).

    Example
    -------
    >>> lin = nn.Linear(2, 2)
    >>> unwrap(nn.DataParallel(lin)) is lin
    True
    """
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return module.module if isinstance(module, wrappers) else module


def lengths_to_mask(lengths: Optional[torch.Tensor], max_len: int, batch: int = 1) -> torch.Tensor:
    """Boolean mask ``(B, T)``, True on valid frames, from absolute lengths ``(B,)``.

    Arguments
    ---------
    lengths : torch.Tensor or None
        Valid frames per sequence ``(B,)`` (absolute counts); ``None`` means
        every sequence is ``max_len`` long.
    max_len : int
        ``T``, the padded length.
    batch : int
        ``B`` when ``lengths`` is None.

    Returns
    -------
    torch.Tensor
        ``mask (B, T)`` of dtype bool.

    Example
    -------
    >>> lengths_to_mask(torch.tensor([2, 3]), 4)
    tensor([[ True,  True, False, False],
            [ True,  True,  True, False]])
    """
    if lengths is None:
        return torch.ones(batch, max_len, dtype=torch.bool)
    lengths = lengths.long()
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def identity_layer_map(num_layers: int) -> List[int]:
    """Student step ``i`` <-> teacher layer ``i``.

    Example
    -------
    >>> identity_layer_map(3)
    [0, 1, 2]
    """
    return list(range(num_layers))


def every_nth_layer_map(num_student_steps: int, num_teacher_layers: int) -> List[int]:
    """Student step ``i`` <-> teacher layer ``n (i + 1) - 1`` with ``n = L_teacher / L_student``.

    MiniALBERT's "every 2nd": 6 recursion steps against 12 teacher layers give
    teacher layers 2, 4, ..., 12 (1-based), i.e. indices 1, 3, ..., 11.

    Example
    -------
    >>> every_nth_layer_map(6, 12)
    [1, 3, 5, 7, 9, 11]
    """
    if num_student_steps <= 0 or num_teacher_layers % num_student_steps != 0:
        raise ValueError(
            f"every_nth_layer_map: teacher layers ({num_teacher_layers}) must be a "
            f"positive multiple of student steps ({num_student_steps})"
        )
    n = num_teacher_layers // num_student_steps
    return [n * (i + 1) - 1 for i in range(num_student_steps)]


def find_layers(model: nn.Module, path: Optional[str] = None) -> nn.ModuleList:
    """The layers of ``model`` that taps hook.

    Arguments
    ---------
    model : nn.Module
        The model (DDP / DataParallel wrappers are looked through).
    path : str, optional
        Dotted path of the ``ModuleList`` inside ``model`` (e.g.
        ``"encoder.layers"``). Without it, the first family of
        ``speechbrain_cald.convert.families.FAMILIES`` whose ``matches(model)``
        is true gives ``layers(model)``.

    Returns
    -------
    nn.ModuleList

    Example
    -------
    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> net.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    >>> len(find_layers(net, "layers"))
    2
    """
    model = unwrap(model)
    if path is not None:
        try:
            layers = model.get_submodule(path)
        except AttributeError as err:
            raise AttributeError(
                f"tap layers: '{path}' is not a submodule of {type(model).__name__} ({err})"
            ) from None
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(
                f"tap layers: '{path}' of {type(model).__name__} should be an nn.ModuleList, "
                f"found {type(layers).__name__}"
            )
        return layers
    try:
        from speechbrain_cald.convert.families import FAMILIES
    except ImportError:
        FAMILIES = {}
    for family in FAMILIES.values():
        if family.matches(model):
            return family.layers(model)
    raise LookupError(
        f"tap layers: no family in speechbrain_cald.convert.families.FAMILIES matches "
        f"{type(model).__name__}; give the layers' dotted path (hparams key `tap_layers`, "
        "e.g. 'encoder.layers') or an nn.ModuleList"
    )


def tapped_layers(layers: Sequence[nn.Module], skip_last: int = 0) -> List[nn.Module]:
    """The layers whose outputs are distilled: all but the last ``skip_last``.

    The CALD LM reference skips the last layer's output (``distill_skip_last
    1``: its state there is taken after GPT-NeoX's final layer norm, which the
    LM head reads), as it skips the embedding; the speech reference skips
    neither (hparams ``tap_skip_last``, default 0).

    Example
    -------
    >>> layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    >>> len(tapped_layers(layers)), len(tapped_layers(layers, skip_last=1))
    (3, 2)
    """
    layers = list(layers)
    if not 0 <= skip_last < len(layers):
        raise ValueError(
            f"tap_skip_last = {skip_last} must lie in [0, {len(layers) - 1}] for a model of {len(layers)} layers"
        )
    return layers[: len(layers) - skip_last]


class LayerTaps:
    """Forward hooks that keep every layer's output of one model.

    After a forward pass of the model, ``states`` holds one ``(B, T, D)``
    tensor per layer, in layer order (a recursive model that runs a shared
    layer several times gives one state per call, in call order). A layer that
    returns a tuple (SpeechBrain, HF) contributes its first element, or element
    ``output_index`` (1: the attention maps ``(B, H, T, T)`` that SpeechBrain's
    encoder layers return, and HF layers with ``output_attentions=True``; a
    layer without them, e.g. a linear-time one, gives None).

    Arguments
    ---------
    layers : nn.ModuleList or sequence of nn.Module
        The layers to tap.
    detach : bool
        Keep detached states (teachers) instead of graph-connected ones.
    active : bool
        Record from the start; with False, only inside ``with taps.recording():``
        (how ``DistillBrain`` uses them, so that other forward passes of the
        same model, or a second Brain over it, leave these taps alone).
    output_index : int
        Which element of a tuple output to keep (0: the hidden state).
    include_input : bool
        Also keep the input of the first layer, as the first state (so a model
        of L layers gives L + 1 states): the hidden state the first layer is
        called on (its first positional argument, else its ``hidden_states``
        keyword, else its first tensor keyword argument), recorded when the
        first layer is called while no state is kept yet, i.e. once per forward
        pass when the states are taken after each pass (a recursive model calling
        one shared layer N times gives its input and N outputs).

    Example
    -------
    >>> layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
    >>> taps = LayerTaps(layers)
    >>> x = torch.randn(2, 3, 4)
    >>> for layer in layers:
    ...     x = layer(x)
    >>> [tuple(s.shape) for s in taps.states]
    [(2, 3, 4), (2, 3, 4)]
    >>> torch.equal(taps.states[-1], x)
    True
    >>> taps.clear(); taps.states
    []
    >>> quiet = LayerTaps(layers, active=False)
    >>> _ = layers[0](x); quiet.states
    []
    >>> with quiet.recording():
    ...     _ = layers[0](x)
    >>> len(quiet.states), quiet.active
    (1, False)
    >>> taps.remove(); quiet.remove()
    >>> pair = nn.ModuleList([nn.Identity()])
    >>> second = LayerTaps(pair, output_index=1)
    >>> _ = pair[0]((x, None)); second.states
    [None]
    >>> with_input = LayerTaps(layers, include_input=True)
    >>> y = layers[1](layers[0](x))
    >>> len(with_input.states), torch.equal(with_input.states[0], x)
    (3, True)
    >>> with_input.remove()
    """

    def __init__(
        self,
        layers: Union[nn.ModuleList, Sequence[nn.Module]],
        detach: bool = False,
        active: bool = True,
        output_index: int = 0,
        include_input: bool = False,
    ):
        self.layers = list(layers)
        self.detach = detach
        self.active = active
        self.output_index = output_index
        self.include_input = include_input
        self.states: List[torch.Tensor] = []
        self._handles = []
        if include_input and self.layers:
            self._handles.append(self.layers[0].register_forward_pre_hook(self._keep_input, with_kwargs=True))
        self._handles += [layer.register_forward_hook(self._keep) for layer in self.layers]

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the layers' outputs inside the block only."""
        previous, self.active = self.active, True
        try:
            yield
        finally:
            self.active = previous

    def _keep_input(self, module: nn.Module, args, kwargs) -> None:
        if not self.active or self.states:
            return
        state = _hidden_input(module, args, kwargs)
        self.states.append(state.detach() if self.detach else state)

    def _keep(self, module: nn.Module, inputs, output) -> None:
        if not self.active:
            return
        if isinstance(output, (tuple, list)):
            state = output[self.output_index] if len(output) > self.output_index else None
        else:
            state = output if self.output_index == 0 else None
        self.states.append(state.detach() if self.detach and state is not None else state)

    def clear(self) -> None:
        """Forget the states of the last forward pass."""
        self.states = []

    def take(self) -> List[torch.Tensor]:
        """Return the states of the last forward pass and forget them."""
        states, self.states = self.states, []
        return states

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.states = []


def _hidden_input(module: nn.Module, args, kwargs) -> torch.Tensor:
    """The hidden state a layer is called on: first positional argument, else
    ``hidden_states=``, else the first tensor keyword argument."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return kwargs["hidden_states"]
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(
        f"taps (include_input): {type(module).__name__} was called without a tensor argument; "
        "cannot tell which input is the hidden state"
    )
