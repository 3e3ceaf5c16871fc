"""Table 5's selection: the hardest 10% of the test samples by pre-trained loss, on hand-made vectors."""
import pytest
import torch

from flowvision.methods.evaluate import hard_accuracy, hard_count, hardest


def test_the_hardest_tenth_of_a_hand_made_loss_vector():
    # 20 samples: the two highest losses are at 13 (9.0) and 4 (7.5); 11 (7.5) ties with 4 and loses on index
    losses = torch.tensor([0.1, 0.2, 0.3, 1.0, 7.5, 0.4, 0.5, 2.0, 0.6, 0.7,
                           0.8, 7.5, 0.9, 9.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6])
    assert hardest(losses).tolist() == [13, 4]
    correct = torch.zeros(20, dtype=torch.bool)
    correct[[0, 1, 2, 13, 11]] = True  # right on the hardest, wrong on the second; 11 is not among them
    got = hard_accuracy(losses, correct)
    assert got == {"acc": 0.5, "n": 2, "min_loss": 7.5}
    assert hard_accuracy(losses, ~correct)["acc"] == 0.5
    correct[4] = True
    assert hard_accuracy(losses, correct)["acc"] == 1.0


def test_the_count_is_the_papers():
    assert hard_count(10_000) == 1000 and hard_count(8041) == 805  # Table 5: CIFAR and Stanford Cars
    assert hard_count(1000) == 100 and hard_count(1) == 1
    losses = torch.rand(8041, generator=torch.Generator().manual_seed(0))
    threshold = torch.quantile(losses.double(), 0.9)  # the rule the count stands for, when nothing ties
    assert set(hardest(losses).tolist()) == set(torch.nonzero(losses >= threshold).flatten().tolist())


def test_bad_vectors_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        hardest(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="shape"):
        hard_accuracy(torch.ones(10), torch.ones(9, dtype=torch.bool))
