"""Argument checks the models share; each error names the model, the argument and what came."""

from __future__ import annotations

import torch

IMPLS = ("pyattn", "torch")  # a model on pyattn's modules, or the same model on torch's


def describe(x) -> str:
    """A value's dtype and shape (tensors) or type, for error messages."""
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} of shape {tuple(x.shape)}"
    return type(x).__name__


def check_config(model: str, sizes: dict, dropout, impl_arg: str, impl) -> None:
    """``sizes``: name -> value, each a positive int; ``dropout`` a number in [0, 1];
    ``impl`` (argument ``impl_arg``) one of IMPLS."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{model}: {name} must be a positive int, got {value!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"{model}: dropout must be a number in [0, 1], got {dropout!r}")
    if impl not in IMPLS:
        raise ValueError(f"{model}: {impl_arg} must be one of {IMPLS}, got {impl!r}")


def check_decoding(module: torch.nn.Module, where: str) -> None:
    """Decoding runs the model's function without dropout: eval mode is the caller's choice."""
    if module.training:
        raise RuntimeError(f"{where}: the model is in training mode; call model.eval() to decode")


def check_prefix(prefix, where: str) -> None:
    """A language model's decoding prefix: an integer tensor [B, P] with P >= 1."""
    if not isinstance(prefix, torch.Tensor) or prefix.dim() != 2 or prefix.is_floating_point() or prefix.shape[1] == 0:
        raise ValueError(f"{where}: prefix must be an integer tensor [B, P] with P >= 1, got {describe(prefix)}")
