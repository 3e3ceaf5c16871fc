"""flowvision: reproduce and extend the vision experiments of FLOW
("Upweighting Easy Samples in Fine-Tuning Mitigates Forgetting", ICML 2025).

    flowvision demo                                   # offline demo, synthetic tasks, ~4 min on 2 cores
    flowvision finetune --dataset gratings --model demo --method flow
    flowvision finetune --dataset cifar10 --model resnet18 --tau 1.0
"""

__version__ = "0.1.0"
