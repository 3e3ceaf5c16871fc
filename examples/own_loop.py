"""FLOW in your own training loop: a plain PyTorch loop that uses flowvision's public names only.

    python examples/own_loop.py      # offline: flowvision's demo model and a synthetic task

With the demo model cached (`make demo` trains it) it took 208 s on this project's 2-core machine beside other
jobs (load 4–5); without it, the first run also trains the demo model, as `make demo` does. It printed: target
accuracy 73.50 %, τ = 0.5026; source accuracy 95.10 % -> 77.00 %: drop 18.10 points.

``main`` is the recipe ``flowvision finetune --method flow`` runs, written out: a linear probe (a new head on
the frozen pre-trained network), the probe's loss on every training image, FLOW's weights exp(-loss/τ),
fine-tuning with the weighted loss, Appendix B's head refit, then target accuracy and forgetting. With your own
model and data: ``timm.create_model("resnet18.tv_in1k", pretrained=True)`` and torchvision data sets of
(image, label) pairs (CIFAR10 under the training and the eval transform; IN-1K val as an ImageFolder for the
source images). docs/api.md says what each name assumes.

tests/test_api.py runs ``main`` on the inputs of a ``flowvision finetune`` run and checks that its target
accuracy, τ, weights and drop equal the run's: the example cannot drift from the tool.
"""
import copy

import torch
from torch.utils.data import DataLoader, Dataset

from flowvision import flow_weights, forgetting, per_sample_losses, weighted_loss


class WithIndex(Dataset):
    """(image, label) -> (image, label, index): FLOW weighs each sample, so a batch must say which ones it holds."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return (*self.data[i], i)


def fit(model, data, *, epochs, lr, seed, batch_size, head_only=False, weights=None):
    """The official FLOW code's SGD (momentum 0.9, weight decay 5e-4), BatchNorm in train mode; a cosine rate per
    epoch when every layer trains, a constant one for the head alone (probe, refit). The epoch's order comes from
    a generator seeded as flowvision's loop seeds it, so the batches are the CLI's (any seeding would do here)."""
    opt = torch.optim.SGD((model.get_classifier() if head_only else model).parameters(), lr=lr, momentum=0.9,
                          weight_decay=5e-4)
    cosine = None if head_only else torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for epoch in range(epochs):
        model.train()
        order = torch.Generator().manual_seed(seed * 100_003 + epoch)
        for x, y, idx in DataLoader(WithIndex(data), batch_size, shuffle=True, generator=order):
            if head_only:  # the backbone is frozen: no graph through it
                with torch.no_grad():
                    features = model.forward_features(x)
                logits = model.forward_head(features)
            else:
                logits = model(x)
            loss = weighted_loss(logits, y, None if weights is None else weights[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if cosine is not None:
            cosine.step()


def main(pretrained, train, train_eval, test, source_val, num_classes, *, probe_epochs, probe_lr, epochs, lr,
         refit_epochs, refit_lr, batch_size, tau="median", seed=0):
    """-> {"target_acc" (%), "tau", "weights" (N,), and forgetting's numbers: "acc_before", "acc_after" (%),
    "drop" (points), "agreement" (%), "kl" (nats)}. ``train`` and ``train_eval``: the same images under the
    training and the eval transform (the losses are the eval view's, as the paper's Algorithm 1)."""
    model = copy.deepcopy(pretrained)
    torch.manual_seed(seed)  # the new head's initialisation (flowvision seeds it with the run seed)
    model.reset_classifier(num_classes)
    fit(model, train, epochs=probe_epochs, lr=probe_lr, seed=seed * 10 + 1, batch_size=batch_size, head_only=True)
    losses = per_sample_losses(model, train_eval)  # f_i(θ*): the probe's loss on every training image
    weights, tau = flow_weights(losses, tau)  # exp(-f_i / τ); "median": τ is the median loss
    fit(model, train, epochs=epochs, lr=lr, seed=seed * 10 + 2, batch_size=batch_size, weights=weights)
    fit(model, train, epochs=refit_epochs, lr=refit_lr, seed=seed * 10 + 3, batch_size=batch_size, head_only=True)
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in DataLoader(test, 256))
    out = {"target_acc": 100 * correct / len(test), "tau": tau, "weights": weights,
           **forgetting(model, pretrained, source_val)}
    print(f"target accuracy {out['target_acc']:.2f} %, τ = {tau:.4g}; source accuracy {out['acc_before']:.2f} % "
          f"-> {out['acc_after']:.2f} %: drop {out['drop']:.2f} points, agreement {out['agreement']:.2f} %, "
          f"KL {out['kl']:.4f} nats")
    return out


# ---- the offline stand-in ---------------------------------------------------------------------------------------
# A small demo scale: the demo's 32-px images, 1,000 training images, and the demo's source model (timm's resnet18
# pre-trained on the synthetic shapes task: the one `make demo` trains and caches, reused here).
STAND_IN = {"n_train": 1000, "probe_epochs": 2, "epochs": 2, "refit_epochs": 1, "augment": False}


def stand_in(**overrides):
    """The inputs of ``flowvision finetune --dataset gratings --model demo --method flow`` with ``overrides``,
    as ``main`` takes them: the run's pre-trained model, its torchvision-style (image, label) data sets and its
    hyper-parameters. These lines stand in for timm and torchvision and use flowvision's internal modules;
    ``main`` does not. -> (args, kwargs, the run's command line)."""
    from flowvision.core.config import resolve
    from flowvision.core.identity import finetune_command
    from flowvision.stages.pipeline import start

    cfg = resolve("gratings", "demo", "flow", overrides)
    run = start(cfg)
    task, source = run["task"], run["source"].model
    # flowvision's data sets yield (image, label, index); their ``base`` is the plain (image, label) one
    args = (source, task.train.base, task.train_eval.base, task.test.base, run["source_data"].dataset.base,
            task.num_classes)
    kwargs = {k: getattr(cfg, k) for k in ("probe_epochs", "probe_lr", "epochs", "lr", "refit_epochs", "refit_lr",
                                           "batch_size", "tau", "seed")}
    return args, kwargs, finetune_command(cfg)


if __name__ == "__main__":
    args, kwargs, command = stand_in(**STAND_IN)
    main(*args, **kwargs)
    print(f"the same run through the CLI (its numbers are these): {command}")
