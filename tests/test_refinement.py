"Tests for jodiff.jodiffusion.refinement: the vectorised refinement equals the reference loop, and the semantics."
import numpy as np
import pytest
from scipy import ndimage

from jodiff.jodiffusion.refinement import bench_refine, noisy_masks, refine_mask, refine_mask_loop


def _simultaneous(mask, tau, background=0):
    "A wrong variant (votes on the mask as it was before the class was touched), to show the tests see the difference."
    mask = mask.copy()
    for c in np.unique(mask):
        if c == background: continue
        labels, n = ndimage.label(mask == c)
        snap = mask.copy()
        for k in range(1, n + 1):
            comp = labels == k
            if comp.sum() >= tau: continue
            ring = ndimage.binary_dilation(comp, structure=np.ones((3, 3), bool)) & ~comp
            if not ring.any(): continue
            vals, counts = np.unique(snap[ring], return_counts=True)
            mask[comp] = vals[np.argmax(counts)]
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_loop_random(seed):
    rng = np.random.default_rng(seed)
    n_diff_from_simultaneous = 0
    for i in range(150):
        H, W = (int(v) for v in rng.integers(1, 24, 2))
        k = int(rng.integers(1, 7))
        dtype = [np.uint8, np.int16, np.int32, np.int64][i % 4]
        m = rng.integers(0, k, (H, W)).astype(dtype)
        if i % 5 == 0 and dtype == np.uint8: m[rng.random((H, W)) < 0.1] = 255
        if i % 7 == 0: m = ndimage.zoom(m, 2, order=0)  # blobs of 2x2 next to single pixels
        tau = int(rng.integers(0, 15))
        bg = [0, None, 2][i % 3]
        a, b = refine_mask_loop(m, tau, bg), refine_mask(m, tau, bg)
        assert a.dtype == b.dtype == m.dtype
        np.testing.assert_array_equal(a, b, err_msg=f"seed={seed} i={i} tau={tau} bg={bg}\n{m}")
        n_diff_from_simultaneous += not np.array_equal(a, _simultaneous(m, tau, bg if bg is not None else -1))
    assert n_diff_from_simultaneous > 0  # the sequential semantics were exercised


def test_fast_equals_loop_noisy_masks():
    for m in noisy_masks(96, 3, noise=0.05, seed=3):
        for tau in (1, 5, 20, 200):
            np.testing.assert_array_equal(refine_mask(m, tau), refine_mask_loop(m, tau))


def test_speck_absorbed_large_region_and_background_kept():
    m = np.full((9, 9), 1, np.uint8)
    m[:, 6:] = 0                 # background strip
    m[2, 2] = 3                  # one-pixel speck of 3 inside 1
    m[5:9, 0:4] = 2              # a 16-pixel region of 2
    m[1, 7] = 4                  # speck of 4 inside background
    m[4, 8] = 0; m[7, 4] = 0     # a background speck inside 1 at (7,4)
    r = refine_mask(m, tau=10)
    assert r[2, 2] == 1          # absorbed by its ring (all 1)
    assert (r[5:9, 0:4] == 2).all()  # 16 >= tau: unchanged
    assert r[1, 7] == 0          # non-background speck inside background takes background
    assert r[7, 4] == 0          # background speck is not refined
    assert m[2, 2] == 3          # input untouched
    np.testing.assert_array_equal(r, refine_mask_loop(m, 10))
    # refining the background too absorbs the background speck
    assert refine_mask(m, tau=10, background=None)[7, 4] == 1


def test_ties_smallest_id_and_ignore_votes():
    m = np.array([[5, 5, 5], [5, 1, 3], [3, 3, 3]], np.uint8)  # ring: 4x5, 4x3 -> tie -> 3
    assert refine_mask(m, 2)[1, 1] == 3
    t = np.array([[5, 5, 5], [5, 1, 5], [3, 3, 3]], np.uint8)  # ring: 5x5, 3x3 -> majority 5
    assert refine_mask(t, 2)[1, 1] == 5 == refine_mask_loop(t, 2)[1, 1]
    g = np.array([[255, 255, 255], [255, 1, 2], [255, 2, 2]], np.uint8)  # ignore can win a vote
    assert refine_mask(g, 2)[1, 1] == 255


def test_whole_image_component_and_thresholds():
    m = np.full((5, 5), 2, np.uint8)
    np.testing.assert_array_equal(refine_mask(m, 100), m)       # empty ring: unchanged
    s = np.zeros((5, 5), np.int32); s[2, 2] = 4
    np.testing.assert_array_equal(refine_mask(s, 1), s)         # size 1 is not < 1
    assert refine_mask(s, 2)[2, 2] == 0


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"): refine_mask(np.zeros((2, 3, 3), np.uint8), 3)
    with pytest.raises(ValueError, match="integer"): refine_mask(np.zeros((3, 3), np.float32), 3)
    with pytest.raises(ValueError, match="tau"): refine_mask(np.zeros((3, 3), np.uint8), -2)
    with pytest.raises(ValueError, match="tau"): refine_mask_loop(np.zeros((3, 3), np.uint8), 2.5)


def test_bench_small():
    r = bench_refine(size=96, n_masks=2, tau=20, verbose=False)   # raises if the two disagree on any pixel
    assert r["speedup"] > 2 and 0 < r["changed"] < 0.1, r
