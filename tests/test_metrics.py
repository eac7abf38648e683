"Tests of jodiff.metrics (mIoU, MMSegmentation agreement, seen/unseen, tables) and jodiff.viz (overlay, grids, saving)."
import math

import numpy as np
import pytest
import torch

from jodiff.core import DataError, LabelSpace, get_label_space
from jodiff.metrics import IoUMeter, compute_miou, iou_table, seen_unseen

# The 2x3 example of the notebook: truth / prediction, one ignored pixel, class 3 absent from both.
TARGET = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
PRED = np.array([[0, 1, 1], [1, 0, 2]], np.uint8)


def random_case(seed=0, n=5):
    "Random maps over 7 classes: 6 nowhere, 5 only predicted, 4 only true, ~15% ignored."
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n):
        h, w = rng.integers(8, 40, 2)
        t = rng.choice([0, 1, 2, 3, 4], size=(h, w)).astype(np.uint8)
        t[rng.random((h, w)) < .15] = 255
        p = np.where(rng.random((h, w)) < .6, t, rng.choice([0, 1, 2, 3, 5], size=(h, w))).astype(np.uint8)
        p[p == 255] = 1
        preds.append(p); targets.append(t)
    return preds, targets


# --- hand-computed cases --------------------------------------------------------------------

def test_hand_computed_2x3():
    m = IoUMeter(4).update(PRED, TARGET)
    assert m.confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    r = m.compute()
    np.testing.assert_allclose(r["per_class"], [100 / 3, 200 / 3, 0.0, np.nan])
    np.testing.assert_allclose(r["per_class_acc"], [50.0, 100.0, 0.0, np.nan])
    assert r["mIoU"] == pytest.approx(100 / 3)
    assert r["aAcc"] == pytest.approx(60.0)
    assert r["mAcc"] == pytest.approx(50.0)
    assert m.num_pixels == 5


def test_predicted_only_class_counts_as_zero_and_absent_class_is_nan():
    # class 1 predicted but never true: IoU 0, included in the mean; class 2 nowhere: NaN, excluded
    r = compute_miou(np.array([0, 1, 0, 0]), np.array([0, 0, 0, 0]), num_classes=3)
    np.testing.assert_allclose(r["per_class"], [75.0, 0.0, np.nan])
    assert r["mIoU"] == pytest.approx(37.5)
    assert math.isnan(r["per_class_acc"][1])      # recall of a class never true is undefined
    assert r["mAcc"] == pytest.approx(75.0)


def test_perfect_and_all_ignored():
    assert compute_miou(TARGET, TARGET, 4)["mIoU"] == 100.0
    r = compute_miou(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8), 3)
    assert all(math.isnan(r[k]) for k in ("mIoU", "aAcc", "mAcc"))


def test_ignore_index_pixels_are_not_looked_at():
    # whatever the prediction says at ignored pixels, even an out-of-range value, changes nothing
    base = compute_miou(PRED, TARGET, 4)
    p = PRED.copy(); p[1, 2] = 200
    np.testing.assert_equal(compute_miou(p, TARGET, 4), base)
    # a custom ignore value
    t = TARGET.copy(); t[t == 255] = 9
    np.testing.assert_equal(compute_miou(PRED, t, 4, ignore_index=9), base)


def test_streaming_equals_one_shot_and_merge():
    preds, targets = random_case(1, n=6)
    streamed = IoUMeter(7)
    for p, t in zip(preds, targets): streamed.update(p, t)
    flat = IoUMeter(7).update(np.concatenate([p.ravel() for p in preds]), np.concatenate([t.ravel() for t in targets]))
    np.testing.assert_array_equal(streamed.confusion, flat.confusion)
    np.testing.assert_equal(streamed.compute(), compute_miou(preds, targets, 7))
    a, b = IoUMeter(7), IoUMeter(7)
    for i, (p, t) in enumerate(zip(preds, targets)): (a if i % 2 else b).update(p, t)
    np.testing.assert_array_equal(a.merge(b).confusion, streamed.confusion)
    streamed.reset()
    assert streamed.num_pixels == 0


def test_torch_tensors_and_batches():
    preds, targets = random_case(2, n=1)
    p, t = preds[0], targets[0]
    ref = compute_miou(p, t, 7)
    np.testing.assert_equal(compute_miou(torch.from_numpy(p).long(), torch.from_numpy(t), 7), ref)
    np.testing.assert_equal(compute_miou(np.stack([p, p]), np.stack([t, t]), 7), ref)


def test_bad_inputs():
    with pytest.raises(DataError, match=r"pred has shape \(2, 3\) but target has shape \(3, 2\)"):
        IoUMeter(4).update(PRED, TARGET.reshape(3, 2))
    with pytest.raises(DataError, match="pred values 4, 7 are outside 0..3"):
        IoUMeter(4).update(np.array([0, 4, 7]), np.array([0, 1, 2]))
    with pytest.raises(DataError, match="target values 5 are outside 0..3"):
        IoUMeter(4).update(np.array([0, 1]), np.array([5, 255]))
    with pytest.raises(DataError, match="pred must hold integer class ids, got dtype float32"):
        IoUMeter(4).update(np.zeros((2, 3), np.float32), TARGET)
    with pytest.raises(DataError, match="item 1: pred values"):
        compute_miou([PRED, PRED + 4], [TARGET, TARGET], 4)
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        compute_miou([PRED, PRED], [TARGET], 4)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        IoUMeter(0)
    with pytest.raises(ValueError, match="ignore_index 2 is a class id"):
        IoUMeter(4, ignore_index=2)
    with pytest.raises(ValueError, match="ignore_index 255 vs 254"):
        IoUMeter(4).merge(IoUMeter(4, ignore_index=254))


# --- agreement with MMSegmentation --------------------------------------------------------------

def test_seen_unseen():
    su = seen_unseen([80, 60, math.nan, 20, 40], unseen_ids=[2, 3, 4])
    assert (su["seen"], su["unseen"]) == pytest.approx((70.0, 30.0))
    assert su["hIoU"] == pytest.approx(42.0)
    assert seen_unseen([80, 60, math.nan, 20, 40], [2, 3, 4], ignore_nan=False)["unseen"] == pytest.approx(20.0)
    assert seen_unseen([50, 0], [1])["hIoU"] == 0.0
    assert math.isnan(seen_unseen([50, math.nan], [1])["hIoU"])
    with pytest.raises(ValueError, match="not all in 0..1"): seen_unseen([1, 2], [2])
    with pytest.raises(ValueError, match="every class is unseen"): seen_unseen([1, 2], [0, 1])
    with pytest.raises(ValueError, match="unseen_ids is empty"): seen_unseen([1, 2], [])


# --- tables -----------------------------------------------------------------------------------

def test_iou_table_markdown_and_text():
    r = compute_miou(PRED, TARGET, 4)
    space = LabelSpace("toy", ["background", "cat", "dog", "bird"], background=0)
    md = iou_table(r, space).splitlines()
    assert md[0] == "| class | IoU | Acc |"
    assert md[2] == "| background | 33.33 | 50.00 |"
    assert md[5] == "| bird | - | - |"
    assert md[-1] == "| mean | **33.33** | **50.00** |"
    txt = iou_table(r, space.names, fmt="text", digits=1).splitlines()
    assert txt[0].split() == ["class", "IoU", "Acc"]
    assert txt[3].split() == ["cat", "66.7", "100.0"]
    assert txt[-1].split() == ["mean", "33.3", "50.0"]
    assert len({len(l) for l in txt}) == 1            # aligned columns
    only_iou = iou_table({"mIoU": r["mIoU"], "per_class": r["per_class"]}, space).splitlines()
    assert only_iou[0] == "| class | IoU |"
    with pytest.raises(ValueError, match="3 names for 4 classes"): iou_table(r, space.names[:3])
    with pytest.raises(ValueError, match="fmt must be 'markdown' or 'text'"): iou_table(r, space, fmt="html")


# --- viz --------------------------------------------------------------------------------------

def test_overlay_blends_labelled_pixels_and_leaves_ignore_untouched():
    from jodiff.viz import overlay
    space = get_label_space("shapes")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    mask = rng.integers(0, space.num_classes, (6, 7)).astype(np.uint8)
    mask[rng.random((6, 7)) < .3] = 255
    ov = overlay(img, mask, space, alpha=0.25)
    assert ov.dtype == np.uint8 and ov.shape == img.shape
    ign = mask == 255
    assert ign.any() and (~ign).any()
    np.testing.assert_array_equal(ov[ign], img[ign])
    expected = np.round(0.75 * img[~ign] + 0.25 * space.palette[mask[~ign]].astype(float)).astype(np.uint8)
    np.testing.assert_array_equal(ov[~ign], expected)
    with pytest.raises(ValueError, match="alpha must be in"): overlay(img, mask, space, alpha=2)
    with pytest.raises(DataError, match="does not match image shape"): overlay(img, mask[:3], space)


def test_show_pairs_and_save_figure(tmp_path):
    from PIL import Image
    from jodiff.viz import legend_handles, save_figure, show_pairs
    space = get_label_space("shapes")
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8) for _ in range(3)]
    masks = [rng.choice([0, 2, 255], size=(16, 20)).astype(np.uint8) for _ in range(3)]
    fig = show_pairs(imgs, masks, space, captions=["a", "b", "c"], ncols=2, titles=["x", "y", "z"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "square"]
    assert sum(ax.get_visible() for ax in fig.axes) == 9
    assert [h.get_label() for h in legend_handles(space, ids=[3, 1])] == ["triangle", "circle"]
    out = save_figure(fig, tmp_path / "sub" / "pairs.png", dpi=60)
    assert out.stat().st_size > 2000
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 200
        assert np.asarray(im.convert("L")).std() > 1     # not a blank picture
    assert [p.name for p in out.parent.iterdir()] == ["pairs.png"]
    fig2 = show_pairs(imgs[:1], masks[:1], space, overlay_alpha=None, legend=False)
    assert len(fig2.axes) == 2 and not fig2.legends
    with pytest.raises(ValueError, match="2 images but 1 masks"): show_pairs(imgs[:2], masks[:1], space)
    with pytest.raises(ValueError, match="unsupported format"): save_figure(fig, tmp_path / "x.nope")


def test_mask_colour_r2_real_pairs_vs_shuffled():
    "Real shapes pairs: the mask explains a large share of the image's colour variance; shuffled masks almost none."
    from jodiff.data import load_dataset
    from jodiff.metrics import mask_colour_r2
    ds = load_dataset('shapes:train?n=40&size=48&level=easy')
    ims, mks = [ds[i]['image'] for i in range(40)], [ds[i]['mask'] for i in range(40)]
    real, shuffled = mask_colour_r2(ims, mks), mask_colour_r2(ims, mks[1:] + mks[:1])
    assert real > 30 and shuffled < 10 and real > 4 * shuffled, (real, shuffled)
    assert mask_colour_r2(ims[:1], [np.zeros_like(mks[0])]) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match='as many masks'): mask_colour_r2(ims, mks[:3])
