"""Inference passes: per-sample losses and correctness, keyed by sample index.

One pass serves three uses: test accuracy, source (IN-1K or synthetic) accuracy for forgetting,
and the static FLOW loss pass over the training set (eval transforms, as the paper's Algorithm 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .console import progress
from .data.base import make_loader
from .hardware import CPU, Hardware


@dataclass
class Predictions:
    """Per sample, by index: losses (N,) float32 cross-entropy, labels (N,), correct (N,) bool top-1,
    correct5 (N,) bool top-5 (equal to correct when there are fewer than 5 classes)."""

    losses: torch.Tensor
    labels: torch.Tensor
    correct: torch.Tensor
    correct5: torch.Tensor

    @property
    def acc(self) -> float:
        return float(self.correct.float().mean())

    @property
    def acc5(self) -> float:
        return float(self.correct5.float().mean())


@torch.no_grad()
def predict(model: nn.Module, dataset, *, batch_size: int = 256, hw: Hardware = CPU,
            desc: str = "eval") -> Predictions:
    """Run ``model`` in eval mode over ``dataset`` (yielding (image, label, index))."""
    n = len(dataset)
    losses = torch.empty(n)
    labels = torch.empty(n, dtype=torch.long)
    correct = torch.zeros(n, dtype=torch.bool)
    correct5 = torch.zeros(n, dtype=torch.bool)
    was_training = model.training
    model.eval()
    forward = hw.prepare(model)
    loader = make_loader(dataset, batch_size, num_workers=hw.num_workers,
                         pin_memory=hw.device.type == "cuda")
    with progress() as bar:
        task = bar.add_task(desc, total=len(loader), info="")
        for x, y, idx in loader:
            with hw.autocast():
                logits = forward(hw.images(x, dataset)).float()
            y = y.to(hw.device)
            losses[idx] = F.cross_entropy(logits, y, reduction="none").cpu()
            labels[idx] = y.cpu()
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            correct[idx] = (topk[:, 0] == y).cpu()
            correct5[idx] = (topk == y[:, None]).any(dim=1).cpu()
            bar.advance(task)
    model.train(was_training)
    return Predictions(losses, labels, correct, correct5)


def accuracy(model: nn.Module, dataset, hw: Hardware = CPU, desc: str = "eval") -> dict:
    """{"acc": top-1, "acc5": top-5, "n": images} of ``model`` on ``dataset``; the model is back on
    the CPU afterwards."""
    p = predict(model, dataset, batch_size=256, hw=hw, desc=desc)
    model.cpu()
    return {"acc": p.acc, "acc5": p.acc5, "n": len(dataset)}
