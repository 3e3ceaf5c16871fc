"""Sample audit: exactly the top-k / bottom-k by weight are drawn, in the right block, and the
per-class means match hand-computed values."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flowvision.stages.audit import per_class, pick_extremes, sample_audit
from flowvision.core.errors import UserError

RED, BLUE = (220, 0, 0), (0, 0, 220)


def weights_table():
    # index 0..7; ties at weight 0.5 (indices 2 and 5) are broken by the lower index
    return pd.DataFrame({
        "index": range(8),
        "label": [0, 0, 1, 1, 1, 2, 2, 2],
        "loss": [0.1, 0.3, 0.7, 2.0, 0.0, 0.7, 3.0, 1.1],
        "weight": [0.9, 0.7, 0.5, 0.1, 1.0, 0.5, 0.05, 0.3],
    })


def test_pick_extremes_is_exactly_top_and_bottom_k():
    top, bottom = pick_extremes(weights_table(), 3)
    assert list(top["index"]) == [4, 0, 1]
    assert list(bottom["index"]) == [6, 3, 7]
    top, _ = pick_extremes(weights_table(), 4)
    assert list(top["index"]) == [4, 0, 1, 2]


def test_per_class_means_and_order():
    stats = per_class(weights_table(), ["cat", "dog", "eel"])
    # label 0: w (0.9+0.7)/2=0.8, loss 0.2; label 1: w 1.6/3, loss 2.7/3; label 2: w 0.85/3, loss 4.8/3
    assert list(stats["class"]) == ["cat", "dog", "eel"]
    assert list(stats["n"]) == [2, 3, 3]
    assert stats["mean_weight"].tolist() == pytest.approx([0.8, 1.6 / 3, 0.85 / 3])
    assert stats["mean_loss"].tolist() == pytest.approx([0.2, 0.9, 1.6])
    flipped = weights_table().assign(weight=lambda w: 1.0 - w["weight"])
    assert list(per_class(flipped)["class"]) == ["2", "1", "0"]  # no names: the label as text


def test_sample_audit_draws_top_k_above_bottom_k(tmp_path):
    weights = weights_table()
    top, bottom = pick_extremes(weights, 2)
    asked = []

    def image_of(index):
        asked.append(index)
        colour = RED if index in set(top["index"]) else BLUE
        return np.full((12, 12, 3), colour, dtype=np.uint8)

    stats = sample_audit(weights, image_of, ["cat", "dog", "eel"], 2, tmp_path / "sheet" / "audit.png")
    assert sorted(asked) == sorted([*top["index"], *bottom["index"]]) == [0, 3, 4, 6]
    assert stats["mean_weight"].iloc[0] == pytest.approx(0.8)

    image = np.asarray(Image.open(tmp_path / "sheet" / "audit.png").convert("RGB")).astype(int)
    assert image.shape[:2] == (416, 352)  # 2 tiles x 1.1 in; 2 blocks x 1.1 in + 0.4 in; 160 dpi
    red = (image[..., 0] > 180) & (image[..., 2] < 60)
    blue = (image[..., 2] > 180) & (image[..., 0] < 60)
    half = image.shape[0] // 2
    assert red[:half].sum() > 100 and red[half:].sum() == 0
    assert blue[half:].sum() > 100 and blue[:half].sum() == 0


def test_greyscale_images_and_bad_input(tmp_path):
    weights = weights_table()
    stats = sample_audit(weights, lambda i: np.full((8, 8), 10 * i, np.uint8), None, 1, tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0 and len(stats) == 3
    with pytest.raises(UserError, match="k=0"):
        pick_extremes(weights, 0)
    with pytest.raises(UserError, match="k=9"):
        pick_extremes(weights, 9)
    with pytest.raises(UserError, match="weight"):
        per_class(weights.drop(columns="weight"))
    with pytest.raises(UserError, match="label 2"):
        per_class(weights, ["cat", "dog"])
    with pytest.raises(ValueError, match="HxWx3"):
        sample_audit(weights, lambda i: np.zeros((4, 4, 5), np.uint8), None, 1, tmp_path / "bad.png")


def test_noise_audit_by_hand():
    from flowvision.stages.audit import noise_audit

    table = weights_table().assign(noisy=[0, 0, 0, 1, 0, 0, 1, 0])  # the two lowest weights but one
    got = noise_audit(table, k=3)
    assert got["n_noisy"] == 2 and got["base_rate"] == 0.25
    assert got["mean_weight_noisy"] == pytest.approx((0.1 + 0.05) / 2)
    assert got["mean_weight_clean"] == pytest.approx((0.9 + 0.7 + 0.5 + 1.0 + 0.5 + 0.3) / 6)
    assert got["noisy_share_bottom_k"] == pytest.approx(2 / 3)  # bottom 3: 6 (noisy), 3 (noisy), 7
    assert got["noisy_share_bottom_n_noisy"] == 1.0
    assert noise_audit(weights_table()) is None  # a real data set's weights.csv: no such column
