r"""Running any PyTorch network for measurements: its features, logits, mixtures and layers.

The geometry of Fisher, Meng & Papyan (ICLR 2024) lives at the input of the classifier head.
:class:`NetworkProbe` reads it from any ``torch.nn.Module`` with forward hooks, so no method
or base class of ufm is needed:

* the **head** is a linear module (``nn.Linear``, or ufm's own
  :class:`ufm.nets.models.LinearClassifier`): given as a module or as its name in
  ``model.named_modules()``, or found by one hooked forward pass as the last linear module the
  forward calls (:func:`find_head`); its input is the feature :math:`h`, its output the logits
  :math:`z = Wh + b`;
* **mixing** happens at the input, or at the output of the module named ``mix_at`` (manifold
  mixup, Verma et al. 2019): the clean samples run up to that module (a hook stops the
  forward there), their outputs are mixed, and a second forward replaces that module's
  output by the mixture, so the rest of the network, skip connections included, runs as in
  training;
* **layers** for the layer-wise linearity (Chaudhry et al. 2022) are modules whose outputs
  a hook records.

Everything runs in eval mode (each module's own mode restored afterwards, so BatchNorm uses
and never updates its running statistics) and without gradients, in chunks of at most about
``batch_size`` network evaluations, on the model's device; inputs may be numpy arrays or
tensors anywhere, and are moved chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from .forward import batches, eval_mode
from .models import LinearClassifier

__all__ = ["HEAD_TYPES", "NetworkProbe", "as_inputs", "as_labels", "find_head", "model_dtype"]

HEAD_TYPES = (nn.Linear, LinearClassifier)
"""Modules that can be the classifier head: linear maps z = W h + b with ``weight`` (K, d)."""


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the output it needs is recorded."""


def as_inputs(name: str, values, dtype: torch.dtype) -> torch.Tensor:
    """``values`` (numpy array or tensor, any device) as a CPU tensor; floating inputs in the
    network's floating ``dtype`` (so float64 numpy data meet a float32 network)."""
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    tensor = tensor.detach().cpu()
    if tensor.ndim < 1 or len(tensor) == 0:
        raise ValueError(f"{name} must hold at least one sample (N, ...), got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor


def as_labels(name: str, values, num_samples: int, num_classes: int) -> torch.Tensor:
    """Class labels (N,) as an int64 CPU tensor, each in [0, K), one per sample."""
    labels = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    labels = labels.detach().cpu()
    if labels.ndim != 1 or len(labels) != num_samples:
        raise ValueError(
            f"{name} must be one label per sample, shape ({num_samples},), got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):
        raise ValueError(f"{name} must hold integer class labels")
    labels = labels.to(torch.int64)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{name} holds class {low if low < 0 else high}, outside [0, {num_classes - 1}] "
            f"(K = {num_classes}, the rows of the head's weight)"
        )
    return labels


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, HEAD_TYPES)]


def _module_named(model: nn.Module, name: str, what: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        candidates = _linear_names(model) if what == "head" else list(modules)[1:]
        shown = ", ".join(map(repr, candidates[:12])) + (", ..." if len(candidates) > 12 else "")
        raise ValueError(f"the model has no module named {name!r} for {what}; it has {shown}")
    return modules[name]


def _traced_calls(model: nn.Module, example: torch.Tensor) -> tuple[list, object]:
    """One forward pass on ``example``: ([(name, module, output)] of every call of a linear
    module, in call order; the model's output)."""
    names = {module: name for name, module in model.named_modules()}
    calls = []

    def record(module, args, output):
        calls.append((names.get(module, "?"), module, output))

    handles = [
        module.register_forward_hook(record)
        for module in model.modules()
        if isinstance(module, HEAD_TYPES)
    ]
    try:
        with eval_mode(model), torch.no_grad():
            output = model(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls, output


def find_head(
    model: nn.Module, example: torch.Tensor, head: nn.Module | str | None = None
) -> tuple[nn.Module, str]:
    """The classifier head of ``model`` and its name (module docstring).

    ``head`` given (a module of ``model`` or a name in ``model.named_modules()``): it must be
    a linear module (:data:`HEAD_TYPES`) that the forward pass on ``example`` calls exactly
    once. Not given: the last linear module the forward calls, which must be called once and
    produce the model's output (the same tensor, or one of the same shape when no other linear
    output has it). Otherwise a ValueError names the candidates and asks for ``head=``.
    """
    names = {module: name for name, module in model.named_modules()}
    if isinstance(head, str):
        head = _module_named(model, head, "head")
    if head is not None and head not in names:
        raise ValueError(
            f"head must be a module of the model (or its name); {type(head).__name__} is not "
            f"among its modules"
        )
    if head is not None and not isinstance(head, HEAD_TYPES):
        raise ValueError(
            f"the head {names[head]!r} is a {type(head).__name__}; it must be a linear map z = "
            "W h + b: nn.Linear or ufm.nets.LinearClassifier"
        )
    calls, output = _traced_calls(model, example)
    called = [name for name, _, _ in calls]
    if not calls:
        raise ValueError(
            f"the model's forward calls no nn.Linear: it has no linear head to measure "
            f"({type(model).__name__}; linear modules: {_linear_names(model) or 'none'})"
        )
    if head is None:
        name, head, head_output = calls[-1]
        if not isinstance(output, torch.Tensor):
            raise ValueError(
                f"the model returns a {type(output).__name__}, not a tensor of logits; pass "
                f"head= one of the linear modules it calls: {', '.join(map(repr, dict.fromkeys(called)))}"
            )
        same_shape = [n for n, _, out in calls if isinstance(out, torch.Tensor)
                      and out.shape == output.shape]  # fmt: skip
        if head_output is not output and (len(same_shape) != 1 or same_shape[0] != name):
            raise ValueError(
                f"cannot tell which linear module is the classifier head: the last one called, "
                f"{name!r}, does not produce the model's output; pass head= one of "
                f"{', '.join(map(repr, dict.fromkeys(called)))}"
            )
    name = names[head]
    count = called.count(name)
    if count != 1:
        raise ValueError(
            f"the head {name!r} is called {count} times in one forward pass; the features "
            "must be the input of one call: pass head= a module called once"
            if count
            else f"the head {name!r} is not called by the model's forward pass; linear "
            f"modules it calls: {', '.join(map(repr, dict.fromkeys(called)))}"
        )
    return head, name


class NetworkProbe:
    """Features, logits, mixtures and layer outputs of ``model`` (module docstring).

    Parameters
    ----------
    model : any ``torch.nn.Module``; it stays where it is (device, dtype, modes).
    example : a few inputs (n, ...) for the hooked forward that finds the head.
    head : the head module or its name; None finds it (:func:`find_head`).
    mix_at : name of the module whose output is mixed; "" mixes the inputs.
    layers : names of the modules whose outputs :meth:`layer_outputs` returns.
    batch_size : at most about this many network evaluations at once.
    """

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        head: nn.Module | str | None = None,
        mix_at: str = "",
        layers: Sequence[str] = (),
        batch_size: int = 2048,
    ) -> None:
        self.model = model
        self.device = _model_device(model)
        self.dtype = model_dtype(model)
        example = example.to(self.device)
        self.head, self.head_name = find_head(model, example, head)
        self.mix_at = mix_at
        self.mix_module = _module_named(model, mix_at, "mix_at") if mix_at else None
        self.layers = tuple(layers)
        self.layer_modules = [_module_named(model, name, "layers") for name in self.layers]
        self.batch_size = batch_size
        if self.mix_module is not None:
            self._check_called_once(self.mix_module, mix_at, example)
            self._check_mixing_reaches_everything(example)

    @property
    def weight(self) -> torch.Tensor:
        """The head's weight W (K, d), float64 on the CPU."""
        return self.head.weight.detach().to("cpu", torch.float64)

    @property
    def bias(self) -> torch.Tensor | None:
        """The head's bias b (K,), float64 on the CPU, or None."""
        bias = self.head.bias
        return None if bias is None else bias.detach().to("cpu", torch.float64)

    @property
    def num_classes(self) -> int:
        return int(self.head.weight.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.head.weight.shape[1])

    def _check_called_once(self, module: nn.Module, name: str, example: torch.Tensor) -> None:
        calls = []
        handle = module.register_forward_hook(lambda _, __, output: calls.append(output))
        try:
            with self.running():
                self.model(example)
        finally:
            handle.remove()
        if len(calls) != 1:
            raise ValueError(
                f"mix_at={name!r} is called {len(calls)} times in one forward pass; mixing needs "
                "a module called exactly once"
            )
        if not isinstance(calls[0], torch.Tensor):
            raise ValueError(
                f"mix_at={name!r} returns a {type(calls[0]).__name__}; mixing needs a module "
                "that returns one tensor"
            )

    def _check_mixing_reaches_everything(self, example: torch.Tensor) -> None:
        """Refuse a ``mix_at`` module around which the input also flows (a skip connection
        past it): mixing there with lam = 0 must give the clean features of the second input."""
        if len(example) < 2:
            return
        mixed, _ = self.mixtures(example, np.array([[0, 1]]), np.array([[0.0, 1.0]]))
        with self.running():
            clean, _ = self._forward(example[1:2])
        clean = clean.to("cpu", mixed.dtype).reshape(-1)
        gap = float(torch.linalg.vector_norm(mixed.reshape(-1) - clean))
        if gap > 1e-3 * (float(torch.linalg.vector_norm(clean)) + 1e-12):
            raise ValueError(
                f"mixing at mix_at={self.mix_at!r} with lam = 0 does not give the clean "
                "features of the second input: the input also reaches later layers past that "
                "module (a skip connection around it?); mix at a module whose output carries "
                "everything forward, such as a whole residual block"
            )

    @contextmanager
    def running(self) -> Iterator[None]:
        """Eval mode (modes restored afterwards) and no gradients."""
        with eval_mode(self.model), torch.no_grad():
            yield

    def _forward(self, x: torch.Tensor, replace: torch.Tensor | None = None):
        """(features, logits) of ``x``; with ``replace``, the output of ``mix_at`` is that."""
        captured = {}

        def read_head(module, args, kwargs, output):
            features = args[0] if args else next(iter(kwargs.values()))
            captured["features"], captured["logits"] = features, output

        handles = [self.head.register_forward_hook(read_head, with_kwargs=True)]
        if replace is not None:
            handles.append(self.mix_module.register_forward_hook(lambda *_: replace))
        try:
            self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return captured["features"], captured["logits"]

    def _mix_input(self, x: torch.Tensor) -> torch.Tensor:
        """The output of ``mix_at`` for ``x`` (the forward stops there)."""
        captured = {}

        def stop(module, args, output):
            captured["output"] = output
            raise _Stop

        handle = self.mix_module.register_forward_hook(stop)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured["output"]

    def clean(self, x: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """(rows, features, logits) of the inputs ``x`` batch by batch, in eval mode without
        gradients (the caller's loop body runs under them too)."""
        with self.running():
            for rows in batches(len(x), self.batch_size):
                yield rows, *self._forward(x[rows].to(self.device))

    def mixtures(
        self, x: torch.Tensor, members: np.ndarray, weights: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Features (P, G, d) and logits (P, G, K), on the CPU in the network's dtype, of
        the mixtures :math:`\sum_k y_{gk} x_{i_{pk}}` (at the input, or of the outputs of
        ``mix_at``) for ``members`` (P, m) sample indices and ``weights`` (G, m)."""
        members = np.asarray(members)
        P, m = members.shape
        G = len(weights)
        chunk = max(1, self.batch_size // (G + m))
        features, logits = [], []
        with self.running():
            for start in range(0, P, chunk):
                rows = torch.as_tensor(members[start : start + chunk].reshape(-1))
                clean = x[rows].to(self.device)
                hidden = clean if self.mix_module is None else self._mix_input(clean)
                hidden = hidden.reshape(-1, m, *hidden.shape[1:])
                w = torch.as_tensor(weights, dtype=hidden.dtype, device=hidden.device)
                mixed = torch.einsum("gk,pk...->pg...", w, hidden).reshape(-1, *hidden.shape[2:])
                if self.mix_module is None:
                    h, z = self._forward(mixed)
                else:
                    first = clean.reshape(-1, m, *clean.shape[1:])[:, 0]
                    repeated = first.repeat_interleave(G, dim=0)
                    h, z = self._forward(repeated, replace=mixed)
                n = len(hidden)
                # numpy and the float64 comparison take float32 or float64 (not bfloat16)
                wide = h.dtype if h.dtype in (torch.float32, torch.float64) else torch.float32
                features.append(h.reshape(n, G, -1).to("cpu", wide))
                logits.append(z.reshape(n, G, -1).to("cpu", wide))
        return torch.cat(features), torch.cat(logits)

    def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the ``layers`` modules for the inputs ``x`` (one forward pass), each
        flattened to (n, -1), in the order of ``layers``."""
        captured: dict[int, torch.Tensor] = {}

        def recorder(k: int):
            def record(module, args, output):
                if not isinstance(output, torch.Tensor):
                    raise ValueError(  # noqa: TRY004  (a user's argument: ValueError)
                        f"layer {self.layers[k]!r} returns a {type(output).__name__}; the "
                        "linearity needs modules that return one tensor"
                    )
                captured[k] = output

            return record

        handles = [m.register_forward_hook(recorder(k)) for k, m in enumerate(self.layer_modules)]
        try:
            self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return [captured[k].reshape(len(x), -1) for k in range(len(self.layers))]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter or buffer (the default dtype if
    none): the dtype floating inputs are given."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()
