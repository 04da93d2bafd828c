"""sncn.metrics against numbers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sncn import metrics as M


def test_corruptions_in_paper_order():
    from sncn.corruptions import CORRUPTIONS

    assert M.CORRUPTIONS is CORRUPTIONS  # one list, pinned in test_corruptions
    assert tuple(M.ALEXNET_ERRORS) == M.CORRUPTIONS
    assert M.ALEXNET_ERRORS["gaussian_noise"] == 0.886428
    assert M.ALEXNET_ERRORS["jpeg_compression"] == 0.606500


def test_top1_error_from_logits_and_labels():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [0.1, 0.2]])  # predicts 0, 1, 0, 1
    targets = torch.tensor([0, 0, 0, 1])
    assert M.top1_error(logits, targets) == 25.0
    assert M.top1_error(torch.tensor([1, 1, 0]), torch.tensor([1, 0, 0])) == pytest.approx(100 / 3)
    assert M.count_errors(logits, targets) == (1, 4)
    with pytest.raises(ValueError):
        M.top1_error(torch.tensor([1, 2]), torch.tensor([1]))


def test_error_meter_weights_by_examples_not_batches():
    meter = M.ErrorMeter()
    meter.update(torch.tensor([0]), torch.tensor([1]))  # 1 of 1 wrong
    meter.update(torch.tensor([0, 0, 0]), torch.tensor([0, 0, 0]))  # 0 of 3 wrong
    assert meter.error == 25.0  # not the mean of batch errors (50)
    with pytest.raises(ValueError):
        _ = M.ErrorMeter().error


def _errors(fn):
    """{corruption i: [fn(i, s) for s in 1..5]} over the 15 corruptions."""
    return {c: [fn(i, s) for s in range(1, 6)] for i, c in enumerate(M.CORRUPTIONS)}


def test_error_table_and_cifar_mce():
    errors = _errors(lambda i, s: i + s)  # row i: i+1 ... i+5
    table = M.error_table(errors)
    assert table.shape == (15, 5) and table[2].tolist() == [3, 4, 5, 6, 7]
    # mean over 75 entries = mean(i) + mean(s) = 7 + 3
    assert M.cifar_mce(errors) == pytest.approx(10.0)
    assert M.corruption_errors(errors)["shot_noise"] == pytest.approx(4.0)
    with pytest.raises(KeyError, match="fog"):
        M.cifar_mce({c: v for c, v in errors.items() if c != "fog"})
    with pytest.raises(ValueError, match="5 severities"):
        M.cifar_mce({**errors, "fog": [1.0, 2.0]})
    assert M.cifar_mce({**errors, "speckle_noise": [99.0] * 5}) == pytest.approx(10.0)


def test_imagenet_ce_and_mce_by_hand():
    alexnet = {"a": 0.6, "b": 0.5}
    errors = {"a": [10, 20, 30, 40, 50], "b": [50] * 5}
    # CE_a = (10+20+30+40+50) / (5 * 60) = 150 / 300 = 50%; CE_b = 250 / 250 = 100%
    ce = M.imagenet_ce(errors, alexnet, corruptions=("a", "b"))
    assert ce == pytest.approx({"a": 50.0, "b": 100.0})
    assert M.imagenet_mce(errors, alexnet, corruptions=("a", "b")) == pytest.approx(75.0)


def test_alexnet_scores_100():
    alexnet_errors = {c: [100 * e] * 5 for c, e in M.ALEXNET_ERRORS.items()}
    assert M.imagenet_mce(alexnet_errors) == pytest.approx(100.0)
    clean = 100 * M.ALEXNET_CLEAN_ERROR
    assert M.relative_mce(alexnet_errors, clean) == pytest.approx(100.0)


def test_relative_ce_by_hand():
    alexnet = {"a": 0.6, "b": 0.5}
    errors = {"a": [10, 20, 30, 40, 50], "b": [50] * 5}
    # rCE_a = (30 - 10) / (60 - 40) = 100%; rCE_b = (50 - 10) / (50 - 40) = 400%
    kwargs = dict(alexnet=alexnet, alexnet_clean_error=0.4, corruptions=("a", "b"))
    assert M.relative_ce(errors, 10.0, **kwargs) == pytest.approx({"a": 100.0, "b": 400.0})
    assert M.relative_mce(errors, 10.0, **kwargs) == pytest.approx(250.0)


def test_table_rows():
    errors = {"a": [10, 20, 30, 40, 50], "b": [50] * 5}
    alexnet = {"a": 0.6, "b": 0.5}
    rows = M.table_rows(
        errors, clean_error=10.0, alexnet=alexnet, alexnet_clean_error=0.4, corruptions=("a", "b")
    )
    assert [r["corruption"] for r in rows] == ["a", "b", "mean"]
    assert list(rows[0]) == ["corruption", "s1", "s2", "s3", "s4", "s5", "mean", "ce", "rel_ce"]
    assert rows[0]["s3"] == 30.0 and rows[0]["mean"] == 30.0 and rows[0]["ce"] == 50.0
    assert rows[2] == pytest.approx(
        {
            "corruption": "mean",
            **{"s1": 30.0, "s2": 35.0, "s3": 40.0, "s4": 45.0, "s5": 50.0},
            **{"mean": 40.0, "ce": 75.0, "rel_ce": 250.0},
        }
    )
    plain = M.table_rows(_errors(lambda i, s: i + s))
    assert len(plain) == 16 and "ce" not in plain[0] and plain[-1]["mean"] == pytest.approx(10.0)


def test_miou_with_ignored_label_by_hand():
    target = torch.tensor([[0, 0, 1], [1, 255, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 0]])  # the ignored pixel's prediction never counts
    cm = M.ConfusionMatrix(num_classes=3)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # IoU_0 = 1 / (2 + 2 - 1), IoU_1 = 2 / (2 + 3 - 2), IoU_2 = 0 / (1 + 0 - 0)
    np.testing.assert_allclose(cm.iou(), [100 / 3, 200 / 3, 0.0])
    assert cm.miou() == pytest.approx(100 / 3)


def test_miou_counts_an_absent_class_as_zero_by_default_and_can_skip_it():
    cm = M.ConfusionMatrix(num_classes=4)  # class 3 is in neither targets nor predictions
    cm.update(torch.tensor([[0, 1, 1], [1, 0, 0]]), torch.tensor([[0, 0, 1], [1, 255, 2]]))
    # IoU_0 = 1/3, IoU_1 = 2/3, IoU_2 = 0 (in targets, never predicted), IoU_3: union 0
    np.testing.assert_allclose(cm.iou(), [100 / 3, 200 / 3, 0.0, 0.0])
    assert cm.miou() == pytest.approx((100 / 3 + 200 / 3 + 0 + 0) / 4) == pytest.approx(25.0)
    skipped = cm.iou(absent="skip")
    assert math.isnan(skipped[3]) and np.allclose(skipped[:3], [100 / 3, 200 / 3, 0.0])
    assert cm.miou(absent="skip") == pytest.approx((100 / 3 + 200 / 3 + 0) / 3)
    # the released evaluation: mean of intersection / (union + 1e-10) over all classes
    c = cm.matrix.double().numpy()
    inter, union = np.diag(c), c.sum(0) + c.sum(1) - np.diag(c)
    assert cm.miou() == pytest.approx(100 * np.mean(inter / (union + 1e-10)))
    with pytest.raises(ValueError, match="absent"):
        cm.miou(absent="nan")


def test_miou_accumulates_intersections_and_unions_over_the_dataset():
    cm = M.ConfusionMatrix(num_classes=2)
    cm.update(torch.tensor([0, 0]), torch.tensor([0, 0]))  # alone: mIoU 100
    cm.update(torch.tensor([1, 1]), torch.tensor([0, 1]))  # alone: mIoU (0 + 50) / 2
    # totals: C = [[2, 1], [0, 1]] -> IoU_0 = 2 / 3, IoU_1 = 1 / 2
    np.testing.assert_allclose(cm.iou(), [200 / 3, 50.0])
    assert cm.miou() == pytest.approx((200 / 3 + 50) / 2)
    assert M.miou_from_confusion(np.array([[2, 1], [0, 1]])) == pytest.approx(cm.miou())
    assert M.miou_from_confusion(np.zeros((3, 3))) == 0.0  # every class absent: all count 0
    assert math.isnan(M.miou_from_confusion(np.zeros((3, 3)), absent="skip"))


def test_confusion_matrix_rejects_bad_labels():
    cm = M.ConfusionMatrix(num_classes=3)
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([3, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 1]), torch.tensor([0]))
    cm.update(torch.tensor([9]), torch.tensor([255]))  # ignored pixels may hold anything
    assert cm.matrix.sum() == 0
