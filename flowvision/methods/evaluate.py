"""Inference passes: per-sample losses and correctness, keyed by sample index.

One pass serves three uses: test accuracy, source (IN-1K or synthetic) accuracy for forgetting,
and the static FLOW loss pass over the training set (eval transforms, as the paper's Algorithm 1).

EWC's Fisher pass (``fisher_diagonal``) is one more pass of the pre-trained model, with per-sample
gradients instead of losses.

Forgetting without labels compares predictions instead: the share of images whose top-1 class is
the pre-trained model's (agreement) and the mean KL(p_pre || p_after) over the images
(``agreement_kl``). Images without a label carry label -1 (``UNLABELLED``): no loss, never correct.

``per_sample_losses`` is the loss pass as the public face (``flowvision.per_sample_losses``) offers it and
the loss stages call it: any map-style data set (torchvision's (image, label) pairs, or flowvision's
(image, label, index) triples), in fp32 whatever autocast surrounds it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, Optional, overload

import torch
import torch.nn.functional as F
from torch import nn

from ..core import distributed
from ..core.console import progress
from ..data.base import Indexed, make_loader
from ..core.hardware import CPU, Hardware, device_of, for_model, full_precision


UNLABELLED = -1


@dataclass
class Predictions:
    """Per sample, by index: losses (N,) float32 cross-entropy (NaN when unlabelled), labels (N,),
    correct (N,) bool top-1, correct5 (N,) bool top-5 (equal to correct when there are fewer than 5
    classes); logprobs (N, C) float32 log-softmax when asked for, else None."""

    losses: torch.Tensor
    labels: torch.Tensor
    correct: torch.Tensor
    correct5: torch.Tensor
    logprobs: Optional[torch.Tensor] = None

    @property
    def labelled(self) -> torch.Tensor:
        return self.labels != UNLABELLED

    @property
    def acc(self) -> Optional[float]:
        """Top-1 over the labelled samples; None when none is labelled."""
        mask = self.labelled
        return float(self.correct[mask].float().mean()) if mask.any() else None

    @property
    def acc5(self) -> Optional[float]:
        mask = self.labelled
        return float(self.correct5[mask].float().mean()) if mask.any() else None


def agreement_kl(reference: torch.Tensor, logprobs: torch.Tensor) -> tuple[float, float]:
    """(agreement, mean KL) of log-probabilities (N, C) against the reference's (N, C): the share of
    rows whose arg-max class is the reference's, and mean over rows of Σ_c p_ref·(log p_ref − log p),
    in nats. An identical model gives (1.0, 0.0) exactly."""
    if reference.shape != logprobs.shape:
        raise ValueError(f"predictions of shape {tuple(logprobs.shape)} vs reference {tuple(reference.shape)}")
    agree = (reference.argmax(dim=1) == logprobs.argmax(dim=1)).double().mean()
    ref, lp = reference.double(), logprobs.double()
    p = ref.exp()
    kl = torch.where(p > 0, p * (ref - lp), 0.0).sum(dim=1).mean()  # 0·log 0 = 0
    return float(agree), float(kl)


@torch.no_grad()
def predict(model: nn.Module, dataset, *, batch_size: int = 256, hw: Hardware = CPU,
            desc: str = "eval", keep_logprobs: bool = False, draw_seed: int = 0) -> Predictions:
    """Run ``model`` in eval mode over ``dataset`` (yielding (image, label, index); label -1 for an
    unlabelled image). keep_logprobs: also return every sample's log-softmax (N × classes floats).
    A data set read with random (training) transforms on the host draws each sample's augmentation
    from (``draw_seed``, index): every pass sees the same images, for any number of workers.

    Under several processes (``distributed``) process r runs batches r, r + N, ... of the one-process
    batch sequence and the results are gathered by sample index: each sample is counted once, and its
    numbers are those one process computes (the same batches through the same kernels)."""
    n = len(dataset)
    dev = hw.device
    # the results stay on the device until the pass ends (one copy back each then): a copy per batch would make
    # the host wait for every batch
    losses = torch.empty(n, device=dev)
    labels = torch.empty(n, dtype=torch.long, device=dev)
    correct = torch.zeros(n, dtype=torch.bool, device=dev)
    correct5 = torch.zeros(n, dtype=torch.bool, device=dev)
    logprobs = None
    was_training = model.training
    model.eval()
    forward = hw.prepare(model)
    shared = distributed.active()
    batches = None
    if shared:
        batches = [list(range(b * batch_size, min(n, (b + 1) * batch_size)))
                   for b in range(distributed.rank(), -(-n // batch_size), distributed.world())]
    loader = make_loader(dataset, batch_size, num_workers=hw.num_workers,
                         pin_memory=dev.type == "cuda", batches=batches, draw_seed=draw_seed)
    with progress() as bar:
        task = bar.add_task(desc, total=len(loader), info="", unit="batch")
        for x, y, idx in loader:
            with hw.autocast():
                logits = forward(hw.images(x, dataset)).float()
            y, idx = hw.put(y), hw.put(idx)
            loss = F.cross_entropy(logits, y, reduction="none", ignore_index=UNLABELLED)
            losses[idx] = torch.where(y == UNLABELLED, torch.nan, loss)
            labels[idx] = y
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            correct[idx] = topk[:, 0] == y
            correct5[idx] = (topk == y[:, None]).any(dim=1)
            if keep_logprobs:
                if logprobs is None:
                    logprobs = torch.empty(n, logits.shape[1], device=dev)
                logprobs[idx] = F.log_softmax(logits, dim=1)
            bar.advance(task)
    model.train(was_training)
    losses, labels, correct, correct5 = losses.cpu(), labels.cpu(), correct.cpu(), correct5.cpu()
    logprobs = logprobs.cpu() if logprobs is not None else None
    if shared:
        losses, labels, correct, correct5, logprobs = _gather(n, batches, losses, labels, correct, correct5, logprobs,
                                                              keep_logprobs)
    return Predictions(losses, labels, correct, correct5, logprobs)


class InOrder:
    """A map-style data set's samples as (image, label, position): what flowvision's passes read. Samples
    may be (image, label) pairs (torchvision's) or longer tuples (their first two entries are used). A data
    set with a ``batch_transform`` (flowvision's decoded caches) keeps it."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.batch_transform = getattr(dataset, "batch_transform", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        sample = self.dataset[i]
        return sample[0], sample[1], i


def in_order(dataset):
    """``dataset`` if it yields flowvision's (image, label, index) already (``data.base.Indexed``: the index is
    the position), else its samples with their positions (``InOrder``)."""
    return dataset if isinstance(dataset, (Indexed, InOrder)) else InOrder(dataset)


@overload
def per_sample_losses(model: nn.Module, dataset, *, batch_size: int = 256,
                      device: str | torch.device | Hardware | None = None, seed: int = 0,
                      return_labels: Literal[False] = False, desc: str = "per-sample losses") -> torch.Tensor:
    ...


@overload
def per_sample_losses(model: nn.Module, dataset, *, batch_size: int = 256,
                      device: str | torch.device | Hardware | None = None, seed: int = 0,
                      return_labels: Literal[True], desc: str = "per-sample losses") -> tuple[torch.Tensor, torch.Tensor]:
    ...


def per_sample_losses(model: nn.Module, dataset, *, batch_size: int = 256,
                      device: str | torch.device | Hardware | None = None, seed: int = 0,
                      return_labels: bool = False, desc: str = "per-sample losses"):
    """The cross-entropy of every sample of ``dataset`` under ``model``, in dataset order: FLOW's f_i(θ*)
    when ``model`` is the pre-trained network with the target head (Algorithm 1; flowvision's linear probe).

    -> losses (N,) float32 on the CPU, in nats, ``losses[i]`` of ``dataset[i]``; NaN for a sample labelled -1
    (unlabelled). With ``return_labels``: (losses, labels (N,) int64).

    The model runs in eval mode (BatchNorm's running statistics, no dropout; its mode is put back after)
    without gradients, in fp32 whatever ``torch.autocast`` is active around the call: τ and every weight are
    exponentials of these numbers, which bf16 logits would move. ``dataset``: any map-style data set of
    (image tensor, int label) pairs, as torchvision's with its eval transform (no random augmentation: the
    paper computes the losses on the eval view), or flowvision's (image, label, index). ``device``: where to
    run (a torch device or its name; None: where the model's parameters are; flowvision's stages pass their
    run's Hardware); the model is back where it was afterwards. ``seed``: a data set with random transforms
    draws sample i's from (seed, i), so two passes see the same images. Under torch.distributed every process
    computes a share and every process gets all N. ``desc`` labels the progress line."""
    hw = full_precision(for_model(device, model))
    home = device_of(model)
    p = predict(model, in_order(dataset), batch_size=batch_size, hw=hw, desc=desc, draw_seed=seed)
    model.to(home)
    return (p.losses, p.labels) if return_labels else p.losses


def _gather(n, batches, losses, labels, correct, correct5, logprobs, keep_logprobs):
    """Every process's per-sample results in full (N,) tensors: each process zeroes what it did not
    compute and the sum over processes is taken (x + 0 is x exactly; NaN stays NaN). A count per
    sample checks that each was computed by exactly one process."""
    mine = torch.zeros(n, dtype=torch.bool)
    for b in batches:
        mine[b] = True
    count = distributed.sum_(mine.long())
    if not bool((count == 1).all()):
        raise RuntimeError(f"sharded evaluation: {int((count != 1).sum())} of {n} samples not counted exactly once")

    def summed(t, kind=None):
        t = torch.where(mine.view(-1, *[1] * (t.dim() - 1)), t, torch.zeros((), dtype=t.dtype))
        return distributed.sum_(t if kind is None else t.to(kind)).to(t.dtype)

    losses, labels = summed(losses), summed(labels)
    correct, correct5 = summed(correct, torch.int32), summed(correct5, torch.int32)
    if keep_logprobs:
        classes = distributed.max_(logprobs.shape[1] if logprobs is not None else 0)
        logprobs = summed(logprobs if logprobs is not None else torch.zeros(n, classes))
    return losses, labels, correct, correct5, logprobs


HARD_SHARE = 0.10  # Table 5: the hardest 10% of the test samples


def hard_count(n: int, share: float = HARD_SHARE) -> int:
    """How many of n samples are "the hardest ``share``": those at or above the (1 − share) quantile
    (numpy's linear rule) when no losses tie, n − ⌈(1 − share)(n − 1)⌉. This is the count Table 5
    reports: 1000 of CIFAR's 10,000 test images, 805 (not 804) of Stanford Cars' 8,041."""
    return n - math.ceil(round((1 - share) * (n - 1), 9))


def hardest(losses: torch.Tensor, share: float = HARD_SHARE) -> torch.Tensor:
    """Indices of the ``hard_count(N)`` samples with the highest loss under the pre-trained (probe)
    model, hardest first (Table 5's "hardest 10%"); ties go to the lower index, so the pick is the
    same on every machine. losses: (N,) float, one per test sample by index."""
    losses = torch.as_tensor(losses, dtype=torch.float64)
    if losses.ndim != 1 or len(losses) == 0:
        raise ValueError(f"losses must be a non-empty (N,) vector, got shape {tuple(losses.shape)}")
    if torch.isnan(losses).any():
        raise ValueError("losses hold NaN (unlabelled samples have no difficulty)")
    k = hard_count(len(losses), share)
    return torch.sort(losses, descending=True, stable=True).indices[:k]


def hard_accuracy(losses: torch.Tensor, correct: torch.Tensor, share: float = HARD_SHARE) -> dict:
    """{"acc": top-1 over the hardest ``share`` of the samples, "n": how many, "min_loss": the
    pre-trained loss of the easiest of them}. losses (N,) from the pre-trained (probe) model;
    correct (N,) bool from the model being measured, both by sample index."""
    correct = torch.as_tensor(correct, dtype=torch.bool)
    if correct.shape != torch.as_tensor(losses).shape:
        raise ValueError(f"correct {tuple(correct.shape)} and losses {tuple(torch.as_tensor(losses).shape)} differ in shape")
    idx = hardest(losses, share)
    return {"acc": float(correct[idx].double().mean()), "n": len(idx),
            "min_loss": float(torch.as_tensor(losses, dtype=torch.float64)[idx[-1]])}


def accuracy(model: nn.Module, dataset, hw: Hardware = CPU, desc: str = "eval", *,
             keep_logprobs: bool = False, reference: Optional[torch.Tensor] = None,
             keep_correct: bool = False, batch_size: int = 256) -> dict:
    """{"acc": top-1, "acc5": top-5 (None without labels), "n": images, "n_labelled"} of ``model`` on
    ``dataset``; with ``reference`` (the pre-trained model's log-probabilities on the same images)
    also "agreement" and "kl" (``agreement_kl``); with keep_logprobs, "logprobs" (N, C); with
    keep_correct, "correct" (N,) bool top-1 by sample index (for ``hard_accuracy``). The model is back
    on the CPU afterwards."""
    p = predict(model, dataset, batch_size=batch_size, hw=hw, desc=desc,
                keep_logprobs=keep_logprobs or reference is not None)
    model.cpu()
    out = {"acc": p.acc, "acc5": p.acc5, "n": len(dataset), "n_labelled": int(p.labelled.sum())}
    if reference is not None:
        out["agreement"], out["kl"] = agreement_kl(reference, p.logprobs)
    if keep_logprobs:
        out["logprobs"] = p.logprobs
    if keep_correct:
        out["correct"] = p.correct
    return out


# EWC's Fisher pass: at most this many floats of per-sample gradients at once, by device type: 1 GiB in fp32 on
# the CPU (10 images at a time for resnet50), 4 GiB on a GPU (42 for resnet50, 91 for resnet18), where a larger
# vmap keeps the GPU busy. A constant per device type, not the free memory: the sums' order, and so the Fisher's
# last bits, follow the chunking, and must not depend on what else holds the GPU.
FISHER_FLOATS = {"cpu": 1 << 28, "cuda": 1 << 30}
FISHER_SEED = 0  # the sample subset and the label draws: fixed, so the Fisher is shared by every seed and λ


def fisher_chunk(model: nn.Module, device: torch.device) -> int:
    """(image, label) pairs whose per-sample gradients one vmap call holds: FISHER_FLOATS over the parameter count."""
    floats = FISHER_FLOATS.get(device.type, FISHER_FLOATS["cpu"])
    return max(1, floats // sum(p.numel() for p in model.parameters()))


def fisher_diagonal(model: nn.Module, dataset, *, samples: Optional[int] = None, draws: int = 1, hw: Hardware = CPU,
                    desc: str = "Fisher (pre-trained model)", chunk: Optional[int] = None) -> dict:
    """The diagonal Fisher of ``model``'s own predictive distribution on ``dataset``'s images (EWC,
    Kirkpatrick et al. 2017), for every parameter:

        F_j = 1/(n·D) Σ_i Σ_d (∂ log p_θ(y_id | x_i) / ∂θ_j)²,   y_id ~ p_θ(· | x_i)

    with the model in eval mode (its BatchNorm statistics) and fp32. Source-data-free: the x_i are
    target images and the labels y_id are drawn from the model's own predictions (its own head), D =
    ``draws`` per image. ``samples``: the first n of a permutation seeded by FISHER_SEED (None: every
    image, in index order). -> {"fisher": name -> (shape of the parameter) float32 on the CPU, "n", "draws",
    "order": (n,) the images' positions in ``dataset``, "labels": (n, D) the labels drawn for them}.

    Per-sample gradients come from torch.func (vmap over grad), in chunks of at most FISHER_FLOATS
    gradient floats (per device type, ``fisher_chunk``); the sums run in a fixed order, so the result depends on
    nothing but the inputs and the device type. ``chunk`` overrides the pairs per vmap (``flowvision bench
    --fisher`` times them).
    Every process of a torchrun computes all of it (the store keeps rank 0's file)."""
    from torch.func import functional_call, grad, vmap

    n_all = len(dataset)
    generator = torch.Generator().manual_seed(FISHER_SEED)
    order = (torch.randperm(n_all, generator=generator)[:samples] if samples is not None and samples < n_all
             else torch.arange(n_all))
    was_training = model.training
    model.eval()
    # NCHW: under vmap, channels_last sends the pooling through a strided copy vmap has no batching rule for (a
    # per-sample loop; torch warns so under fake CUDA)
    hw = dataclasses.replace(hw, channels_last=False)
    hw.place(model)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def log_likelihood(p, x, y):
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return -F.cross_entropy(logits.float(), y.unsqueeze(0))  # log p(y | x)

    per_sample = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
    pairs = chunk or fisher_chunk(model, hw.device)  # (image, label) pairs at once
    images = max(1, pairs // draws)
    batches = [order[k:k + images].tolist() for k in range(0, len(order), images)]
    loader = make_loader(dataset, images, num_workers=hw.num_workers, pin_memory=hw.device.type == "cuda",
                         batches=batches)
    sums = {k: torch.zeros_like(v) for k, v in params.items()}
    drawn = []
    with progress() as bar:
        task = bar.add_task(desc, total=len(loader), info="")
        for x, _, _ in loader:
            x = hw.images(x, dataset)
            with torch.no_grad():
                probs = F.softmax(model(x).float(), dim=1)
            labels = torch.multinomial(probs.double().cpu(), draws, replacement=True, generator=generator)  # (B, D)
            drawn.append(labels)
            xs, ys = x.repeat_interleave(draws, dim=0), hw.put(labels.flatten())
            for start in range(0, len(ys), pairs):
                for k, g in per_sample(params, xs[start:start + pairs], ys[start:start + pairs]).items():
                    sums[k] += g.square().sum(dim=0)
            bar.advance(task)
    model.train(was_training)
    total = len(order) * draws
    return {"fisher": {k: (s / total).cpu() for k, s in sums.items()}, "n": len(order), "draws": draws,
            "order": order, "labels": torch.cat(drawn) if drawn else torch.empty(0, draws, dtype=torch.long)}
