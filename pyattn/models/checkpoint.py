"""Checkpoints of the models' trainers: state_dict + config + vocabulary + optimizer +
step + loss history, resumable; and the loss-curve PNG beside them."""

from __future__ import annotations

import os
from typing import Any, Optional

import torch


def save(path: str, **fields: Any) -> None:
    """Writes ``fields`` (model and optimizer state_dicts, config, vocabularies, step,
    losses) to ``path`` atomically (a half-written file never replaces a good one)."""
    tmp = f"{path}.tmp"
    torch.save(fields, tmp)
    os.replace(tmp, path)


def load(path: str, kind: Optional[str] = None) -> dict:
    """The fields of a checkpoint; ``kind`` ('lm' or 'mt') must match if given."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own files: config and vocab objects
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint: {path!r} does not exist") from None
    except Exception as e:
        raise ValueError(f"checkpoint: {path!r} is not a pyattn.models checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "kind" not in ckpt:
        raise ValueError(f"checkpoint: {path!r} is not a pyattn.models checkpoint")
    if kind is not None and ckpt["kind"] != kind:
        raise ValueError(f"checkpoint: {path!r} holds a {ckpt['kind']} model, expected a {kind} model")
    return ckpt


def check_vocab(ckpt: dict, key: str, itos: list[str], path: str) -> None:
    """A resumed run must see the vocabulary its checkpoint was trained with."""
    saved = ckpt[key]
    if saved != itos:
        diff = next((i for i, (a, b) in enumerate(zip(saved, itos)) if a != b), min(len(saved), len(itos)))
        raise ValueError(f"checkpoint: vocabulary mismatch with {path!r} ({key}: {len(saved)} tokens saved, "
                         f"{len(itos)} built from this corpus; first difference at id {diff})")


def plot_losses(path: str, losses: list[float], title: str) -> None:
    """A small PNG of the training loss per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(losses) + 1), losses, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
