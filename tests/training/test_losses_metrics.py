"""Losses and scores against hand-worked answers and reference computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from cloudseg.config import LossConfig
from cloudseg.metrics import confusion_metric, confusion_scores, image_scores
from cloudseg.training.losses import SegmentationLoss, dice_loss, jaccard_loss, lovasz_softmax, ohem_cross_entropy

IGNORE = 255


def random_batch(seed=0, classes=4, size=(2, 16, 16)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size[0], classes, *size[1:], generator=generator), torch.randint(
        0, classes, size, generator=generator
    )


def test_ohem_averages_exactly_the_hardest_fraction():
    logits, target = random_batch()
    target[0, :4] = IGNORE
    pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")[target != IGNORE]
    hardest = pixel.sort(descending=True).values[: int(0.25 * pixel.numel())]
    assert ohem_cross_entropy(logits, target, 0.25, IGNORE).item() == pytest.approx(hardest.mean().item(), rel=1e-6)


def test_ohem_threshold_keeps_low_confidence_pixels_but_at_least_min_kept():
    logits, target = random_batch(1)
    probability = logits.softmax(1).gather(1, target[:, None])[:, 0].flatten()
    pixel = F.cross_entropy(logits, target, reduction="none").flatten()
    below = pixel[probability < 0.2]
    assert ohem_cross_entropy(logits, target, 0.0, IGNORE, threshold=0.2).item() == pytest.approx(
        below.mean().item(), rel=1e-5
    )
    at_least = pixel.sort(descending=True).values[:300].mean()
    assert ohem_cross_entropy(logits, target, 0.0, IGNORE, threshold=0.01, min_kept=300).item() == pytest.approx(
        at_least.item(), rel=1e-5
    )


def test_ohem_threshold_selects_by_probability_whatever_the_class_weights():
    """Class weights scale the kept pixels' losses but not which pixels are kept: heavy classes are not made 'hard'
    by their weight, nor light ones 'easy'."""
    logits, target = random_batch(2)
    target[1, :3] = IGNORE
    weight = torch.tensor([0.5, 4.0, 1.0, 2.0])
    valid = target != IGNORE
    probability = logits.softmax(1).gather(1, target.clamp(max=3)[:, None])[:, 0]
    pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE, reduction="none")
    kept = pixel[valid & (probability < 0.3)]
    assert ohem_cross_entropy(logits, target, 0.0, IGNORE, weight=weight, threshold=0.3).item() == pytest.approx(
        kept.mean().item(), rel=1e-5
    )


def test_ohem_gradient_reaches_exactly_the_kept_pixels_and_ignored_or_empty_batches_give_zero():
    logits, target = random_batch(4)
    target[1] = IGNORE
    logits.requires_grad_(True)
    ohem_cross_entropy(logits, target, 0.1, IGNORE).backward()
    pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    kept = int(0.1 * (target != IGNORE).sum())
    threshold = pixel[target != IGNORE].sort(descending=True).values[kept - 1]
    touched = logits.grad.abs().sum(1) > 0
    assert torch.equal(touched, (pixel >= threshold) & (target != IGNORE)) and touched.sum() == kept
    # min_kept beyond the valid pixels keeps them all; a batch with none gives a zero loss that still backpropagates
    all_valid = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert ohem_cross_entropy(logits, target, 0.0, IGNORE, threshold=1e-9, min_kept=10_000).item() == pytest.approx(
        all_valid.item(), rel=1e-5
    )
    empty = ohem_cross_entropy(logits, torch.full_like(target, IGNORE), 0.25, IGNORE)
    empty.backward()
    assert empty.item() == 0.0


def test_the_recipe_loss_traces_into_one_graph_for_torch_compile():
    # Boolean indexing or a count read back with .item() would break the graph (and wait for the GPU every step).
    logits, target = random_batch(5)
    target[0, :2] = IGNORE
    configs = (
        LossConfig(ohem=0.7, dice=0.3),
        LossConfig(ohem=1.0, ohem_threshold=0.7, ohem_min_kept=50),
        LossConfig(ce=1.0, lovasz=0.5, jaccard=0.5),
    )
    for cfg in configs:
        explanation = torch._dynamo.explain(SegmentationLoss(cfg))(logits, target)
        assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


def confident(target, classes=4, scale=50.0):
    return F.one_hot(target, classes).permute(0, 3, 1, 2).float() * scale


def test_overlap_losses_vanish_on_a_perfect_prediction_and_ignore_ignored_pixels():
    _, target = random_batch(2)
    logits = confident(target)
    noisy = target.clone()
    noisy[:, :3] = IGNORE  # wrong logits there would not matter
    logits[:, :, :3] = -logits[:, :, :3]
    for loss in (dice_loss, jaccard_loss, lovasz_softmax):
        assert loss(logits, noisy, IGNORE).item() == pytest.approx(0.0, abs=1e-3), loss.__name__


def lovasz_reference(logits, target):
    """Berman et al.'s algorithm as written: per class present, drop ignored pixels, sort errors, dot with the
    Jaccard loss's discrete gradient."""
    probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    labels = target.flatten()
    probs, labels = probs[labels != IGNORE], labels[labels != IGNORE]
    losses = []
    for k in labels.unique():
        truth = (labels == k).float()
        errors, order = (truth - probs[:, k]).abs().sort(descending=True)
        truth = truth[order]
        jaccard = 1 - (truth.sum() - truth.cumsum(0)) / (truth.sum() + (1 - truth).cumsum(0))
        losses.append(errors @ torch.cat((jaccard[:1], jaccard.diff())))
    return torch.stack(losses).mean()


def test_lovasz_matches_the_papers_algorithm_and_is_one_minus_iou_on_hard_predictions():
    logits, target = random_batch(6, size=(2, 12, 12))
    target[0, :5] = IGNORE
    target[target == 2] = 1  # class 2 absent: left out of the mean
    logits.requires_grad_(True)
    loss = lovasz_softmax(logits, target, IGNORE)
    reference = lovasz_reference(logits, target)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.allclose(*(torch.autograd.grad(value, logits)[0] for value in (loss, reference)), atol=1e-7)
    # At a hard prediction the Lovász extension equals the set function it extends: 1 - IoU of each class present.
    prediction = torch.randint(0, 4, target.shape, generator=torch.Generator().manual_seed(7))
    valid = target != IGNORE
    ious = [
        ((prediction == k) & (target == k) & valid).sum() / (((prediction == k) | (target == k)) & valid).sum()
        for k in (0, 1, 3)
    ]
    expected = 1 - torch.stack(ious).double().mean()
    assert lovasz_softmax(confident(prediction), target, IGNORE).item() == pytest.approx(expected.item(), abs=1e-6)


def test_dice_loss_matches_a_hand_worked_case():
    # One image, two classes, four pixels; hard probabilities. Class 0: |P|=3, |T|=2, overlap 2; class 1:
    # |P|=1, |T|=2, overlap 1. Dice (smooth 1): (4+1)/(5+1) and (2+1)/(3+1).
    target = torch.tensor([[[0, 0, 1, 1]]])
    prediction = torch.tensor([[[0, 0, 0, 1]]])
    expected = 1 - ((5 / 6) + (3 / 4)) / 2
    assert dice_loss(confident(prediction, 2, 100.0), target, IGNORE).item() == pytest.approx(expected, abs=1e-4)


def test_combined_loss_is_the_weighted_sum_of_its_terms():
    logits, target = random_batch(3)
    loss = SegmentationLoss(LossConfig(ohem=0.7, dice=0.3, ohem_fraction=0.25))
    total, parts = loss(logits, target)
    assert set(parts) == {"ohem", "dice"}
    assert total.item() == pytest.approx(0.7 * parts["ohem"].item() + 0.3 * parts["dice"].item())
    with pytest.raises(ValueError, match="every term's weight is 0"):
        SegmentationLoss(LossConfig(ohem=0, dice=0))


def test_scores_match_a_hand_worked_confusion_matrix():
    truth = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2]])
    prediction = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 0]])
    metric = confusion_metric(3)
    metric.update(prediction, truth)
    scores = confusion_scores(metric.compute())
    # class 0: tp 2, fp 1, fn 1 -> IoU 2/4, Dice 4/6; class 1: tp 1, fp 1, fn 1 -> 1/3, 2/4; class 2: tp 2, fp 1, fn 1
    assert scores["iou"].tolist() == pytest.approx([0.5, 1 / 3, 0.5])
    assert scores["dice"].tolist() == pytest.approx([4 / 6, 0.5, 4 / 6])
    assert scores["precision"].tolist() == pytest.approx([2 / 3, 0.5, 2 / 3])
    assert scores["accuracy"].item() == pytest.approx(5 / 8)
    assert scores["mIoU"].item() == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)


def test_scores_over_two_batches_equal_scores_over_their_concatenation():
    a, b = random_batch(4), random_batch(5)
    a[1][0, 0, :5] = IGNORE
    split, joined = confusion_metric(4), confusion_metric(4)
    for logits, target in (a, b):
        split.update(logits.argmax(1), target)
    joined.update(torch.cat((a[0], b[0])).argmax(1), torch.cat((a[1], b[1])))
    assert torch.equal(split.compute(), joined.compute())
    assert split.compute().sum() == 2 * 2 * 16 * 16 - 5


def test_a_class_absent_everywhere_is_left_out_of_the_mean():
    metric = confusion_metric(3)
    metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    scores = confusion_scores(metric.compute())
    assert math.isnan(scores["iou"][2].item()) and scores["mIoU"].item() == 1.0


def test_sqrt_inverse_weights_favour_rare_classes_by_the_square_root_of_their_rarity():
    from cloudseg.training.losses import sqrt_inverse_weights

    assert sqrt_inverse_weights([400, 100, 25, 0]) == (1.0, 2.0, 4.0, 1.0)  # an absent class keeps weight 1
    with pytest.raises(ValueError, match="resolved into numbers"):
        SegmentationLoss(LossConfig(class_weights="sqrt_inverse"))


def test_one_images_scores_leave_its_ignored_pixels_out():
    target = torch.tensor([[0, 0, 1], [1, 255, 255], [2, 2, 255]])
    prediction = torch.tensor([[0, 1, 1], [1, 3, 0], [2, 0, 3]])  # under 255: anything, never counted
    scores = image_scores(prediction, target, ("clear", "thick_cloud", "thin_cloud", "cloud_shadow"))
    # 6 counted pixels, 4 right; clear 1 / (2 + 1 + 0), thick 2 / 3, thin 1 / 2, shadow neither present nor predicted
    assert scores["pixels"] == 6 and scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["iou/clear"] == pytest.approx(1 / 3) and scores["iou/thick_cloud"] == pytest.approx(2 / 3)
    assert scores["iou/thin_cloud"] == pytest.approx(1 / 2) and scores["iou/cloud_shadow"] is None
    assert scores["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
