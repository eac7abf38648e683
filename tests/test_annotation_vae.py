"Tests for jodiff.annotation_vae: bit codes, the model's save/load, training with checkpoint/resume, reconstruction mIoU."
import json
import shutil

import numpy as np
import pytest
import torch

from jodiff.annotation_vae import (AnnotationVAE, _class_index, _crop_batch, annotation_loss, decode_bits, encode_bits,
                                   n_bits_for, reconstruction_miou, tiny_annotation_vae, train_annotation_vae)
from jodiff.shapes import render_scene

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy():
    return [render_scene(s, 64)["mask"] for s in range(6)]


@pytest.mark.parametrize("K", [1, 2, 3, 7, 8, 11, 21, 150, 254])
def test_bits_exact_all_ids(K):
    n = n_bits_for(K)
    assert 2 ** n - 1 >= K and (n == 1 or 2 ** (n - 1) - 1 < K)  # smallest n leaving a spare code
    ids = torch.cat([torch.arange(K), torch.tensor([255])]).repeat(2, 3, 1)  # (2,3,K+1)
    bits = encode_bits(ids, n)
    assert bits.shape == (2, n, 3, K + 1) and bits.dtype == torch.float32
    assert set(bits.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(decode_bits(bits, K), ids)
    assert torch.equal(decode_bits(bits * 0.3, K), ids)  # thresholded at 0, not at +-1
    codes = {tuple(c) for c in bits[0, :, 0].T.tolist()}
    assert len(codes) == K + 1


def test_bits_numpy_ignore_code_and_errors():
    m = np.array([[[0, 1, 255]]], np.uint8)
    b = encode_bits(m, 2)
    assert b[0, :, 0, 2].tolist() == [1.0, 1.0]        # ignore = all-ones code 3
    assert b[0, :, 0, 1].tolist() == [1.0, -1.0]       # 1 = LSB set
    # unused codes (>= K) decode to ignore
    assert decode_bits(torch.ones(1, 3, 1, 1), 5).item() == 255
    assert decode_bits(torch.tensor([[[[1.]], [[-1.]], [[1.]]]]), 5).item() == 255  # code 5 >= K
    with pytest.raises(ValueError, match="0..6"): encode_bits(torch.tensor([[[7]]]), 3)
    with pytest.raises(ValueError, match="integer"): encode_bits(torch.zeros(1, 2, 2), 3)
    with pytest.raises(ValueError, match="B,H,W"): encode_bits(torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError): n_bits_for(0)


def test_model_shapes_and_save_load_roundtrip(tmp_path, toy):
    vae = tiny_annotation_vae(n_classes=8, seed=1)
    masks = torch.from_numpy(np.stack(toy[:3])).long()
    masks[0, :5, :5] = 255
    with torch.no_grad():
        z = vae.encode(masks)
        logits = vae(masks)
    assert z.shape == (3, 4, 8, 8) and logits.shape == (3, 8, 64, 64)
    assert vae.decode_mask(z).shape == (3, 64, 64)
    vae.register_to_config(scaling_factor=0.25)
    vae.save_pretrained(tmp_path / "m")
    back = AnnotationVAE.from_pretrained(tmp_path / "m")
    assert back.config.scaling_factor == 0.25 and back.config.n_classes == 8
    with torch.no_grad():
        assert torch.equal(back(masks), logits)
    other = tiny_annotation_vae(n_classes=8, seed=2)
    with torch.no_grad():
        assert not torch.equal(other(masks), logits)
    with pytest.raises(ValueError, match="multiples of 8"): vae.encode(masks[:, :60])
    with pytest.raises(ValueError, match="ignore_index"): AnnotationVAE(n_classes=300)


def test_loss_ignores_ignore_pixels():
    logits = torch.randn(1, 3, 4, 4)
    m = torch.randint(0, 3, (1, 4, 4))
    m2 = m.clone(); m2[0, 0] = 255
    keep = m2 != 255
    want = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[keep], m2[keep])
    assert torch.allclose(annotation_loss(logits, m2), want)


KW = dict(steps=16, batch_size=4, crop=32, lr=3e-3, n_classes=8, checkpoint_every=4, keep_checkpoints=4,
          progress=False, block_out_channels=(8, 8, 16))


def test_train_reduces_loss_and_resume_is_exact(tmp_path, toy):
    full = train_annotation_vae(toy, tmp_path / "full", **KW)
    assert len(full.history) == 16
    assert np.mean(full.history[-4:]) < np.mean(full.history[:4])
    names = sorted(p.name for p in (tmp_path / "full").iterdir())
    assert names == ["checkpoint-12", "checkpoint-16", "checkpoint-4", "checkpoint-8", "final", "train_log.json"]
    # simulate a run killed after step 8
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    for n in ["checkpoint-12", "checkpoint-16", "final"]: shutil.rmtree(tmp_path / "cut" / n)
    resumed = train_annotation_vae(toy, tmp_path / "cut", **KW)
    log = json.loads((tmp_path / "cut" / "train_log.json").read_text())
    assert log["resumed_from"] == 8 and log["steps"] == 16
    assert log["class_uniform"] == 0.8 and log["config"]["block_out_channels"] == [8, 8, 16]
    np.testing.assert_allclose(resumed.history, full.history, rtol=1e-5, atol=1e-6)
    for a, b in zip(resumed.parameters(), full.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    # the final model is loadable and has a latent scale
    back = AnnotationVAE.from_pretrained(tmp_path / "full" / "final")
    assert back.config.scaling_factor > 0 and back.config.scaling_factor != 1.0
    # a finished run is not trained again
    again = train_annotation_vae(toy, tmp_path / "full", **KW)
    assert json.loads((tmp_path / "full" / "train_log.json").read_text())["resumed_from"] == 16
    for a, b in zip(again.parameters(), full.parameters()):
        assert torch.equal(a.detach(), b.detach())


def test_train_bad_args(tmp_path, toy):
    with pytest.raises(ValueError, match="crop"): train_annotation_vae(toy, tmp_path, **{**KW, "crop": 30})
    with pytest.raises(ValueError, match="n_classes"): train_annotation_vae(toy, tmp_path, **{**KW, "n_classes": None})
    with pytest.raises(ValueError, match="steps"): train_annotation_vae(toy, tmp_path, **{**KW, "steps": 0})
    with pytest.raises(ValueError, match="class_uniform"): train_annotation_vae(toy, tmp_path, **{**KW, "class_uniform": 1.5})


def test_class_uniform_crops_find_rare_classes():
    bg = [np.zeros((64, 64), np.uint8) for _ in range(10)]
    rare = np.zeros((64, 64), np.uint8); rare[40:44, 10:14] = 5   # one 4x4 object in 11 masks
    data = bg + [rare]
    idx = _class_index(data, 8)
    assert [list(i) for i in idx[:6]] == [list(range(11)), [], [], [], [], [10]]
    def share(cu):
        return np.mean([(_crop_batch(data, s, 0, 8, 16, 255, cu, idx) == 5).flatten(1).any(1).float().mean().item()
                        for s in range(50)])
    assert share(0.0) < 0.05                 # uniform crops almost never see it
    assert 0.4 < share(1.0) < 0.6            # class-uniform: 1 of the 2 present classes
    assert 0.15 < share(0.5) < share(1.0)   # about half as often (0.25 expected)
    assert torch.equal(_crop_batch(data, 3, 1, 8, 16, 255, 0.8, idx), _crop_batch(data, 3, 1, 8, 16, 255, 0.8, idx))
    # crops of class 5 are centred on it, so they contain it whole even when small
    alone = np.full((64, 64), 255, np.uint8); alone[40:44, 10:14] = 5
    b = _crop_batch([alone], 0, 0, 16, 8, 255, 1.0, _class_index([alone], 8))
    assert ((b == 5).flatten(1).sum(1) == 16).all()
    # no class present at all (all-ignore masks): falls back to uniform crops instead of failing
    ig = [np.full((32, 32), 255, np.uint8)]
    assert (_crop_batch(ig, 0, 0, 2, 16, 255, 1.0, _class_index(ig, 8)) == 255).all()


def test_reconstruction_miou_range_and_padding(tmp_path, toy):
    vae = train_annotation_vae(toy, tmp_path / "r", **{**KW, "steps": 12})
    r = reconstruction_miou(vae, toy)
    assert 0 <= r["mIoU"] <= 100 and len(r["per_class"]) == 8
    # identity check of the metric path: an odd-sized mask is padded internally, and the batch size does not matter
    odd = [np.pad(toy[0], ((0, 5), (0, 3)))] + toy[1:3]
    r1, r2 = reconstruction_miou(vae, odd, batch_size=1), reconstruction_miou(vae, odd, batch_size=3)
    assert r1["mIoU"] == pytest.approx(r2["mIoU"])
    # an all-ignore mask adds nothing
    assert reconstruction_miou(vae, toy + [np.full((64, 64), 255, np.uint8)])["mIoU"] == pytest.approx(r["mIoU"])


def test_reconstruction_miou_perfect_decoder():
    "A model whose decoder is patched to return the true one-hot logits scores 100."
    vae = tiny_annotation_vae(4)
    masks = [np.random.default_rng(i).integers(0, 4, (16, 24)).astype(np.uint8) for i in range(3)]
    truth = {}
    enc = vae.encode
    def encode(m):
        truth["m"] = torch.as_tensor(np.asarray(m)).long()
        return enc(m)
    vae.encode = encode
    vae.decode = lambda z: torch.nn.functional.one_hot(truth["m"].clamp(0, 3), 4).permute(0, 3, 1, 2).float()
    assert reconstruction_miou(vae, masks)["mIoU"] == pytest.approx(100.0)


def test_group_norm_variant_round_trip_and_trains(tmp_path):
    "norm_num_groups > 0 adds GroupNorm layers (with weights) that survive save/load; the model trains; bad groups are refused."
    torch.manual_seed(0)
    v = AnnotationVAE(n_classes=8, block_out_channels=(8, 8, 16), norm_num_groups=4)
    assert any(isinstance(mod, torch.nn.GroupNorm) for mod in v.modules())
    assert not any(isinstance(mod, torch.nn.GroupNorm) for mod in tiny_annotation_vae(8).modules())
    masks = torch.stack([torch.from_numpy(render_scene(s, 32)['mask']) for s in range(2)]).long()
    v.save_pretrained(tmp_path / 'gn')
    w = AnnotationVAE.from_pretrained(tmp_path / 'gn')
    assert w.config.norm_num_groups == 4
    torch.testing.assert_close(w(masks), v(masks))
    with pytest.raises(ValueError, match='norm groups'): AnnotationVAE(n_classes=8, block_out_channels=(6, 8, 16), norm_num_groups=4)
    t = train_annotation_vae([render_scene(s, 32)['mask'] for s in range(4)], tmp_path / 'train', steps=12, batch_size=2, crop=32,
                             lr=3e-3, n_classes=8, block_out_channels=(8, 8, 16), norm_num_groups=4, progress=False)
    assert t.history[-1] < t.history[0]


def test_hard_fraction_loss_is_mean_of_hardest_pixels():
    "hard_fraction < 1 averages the cross-entropy of the hardest valid pixels only; ignore stays out; 1 is plain cross-entropy."
    g = torch.Generator().manual_seed(0)
    logits, mask = torch.randn(2, 5, 8, 8, generator=g), torch.randint(0, 5, (2, 8, 8), generator=g)
    mask[1] = 255                                           # a whole image of ignore
    ce = torch.nn.functional.cross_entropy(logits, mask, ignore_index=255, reduction='none')[mask != 255]
    top = ce.sort(descending=True).values[:16]              # 25% of 64 valid pixels
    assert annotation_loss(logits, mask, 255, hard_fraction=0.25).item() == pytest.approx(top.mean().item(), rel=1e-6)
    assert annotation_loss(logits, mask, 255, hard_fraction=1.0).item() == pytest.approx(ce.mean().item(), rel=1e-6)
    assert annotation_loss(logits, torch.full_like(mask, 255), 255, hard_fraction=0.5).item() == 0.0
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match='hard_fraction'): annotation_loss(logits, mask, 255, hard_fraction=bad)


def test_mask_archive_round_trip_and_errors(tmp_path):
    "save_masks keeps every mask byte for byte with the label space; the archive trains like the spec it came from."
    from jodiff.annotation_vae import save_masks, load_masks
    from jodiff.data import load_dataset
    spec = 'shapes:val?n=5&size=32'
    p = save_masks(spec, tmp_path / 'm.npz')
    masks, k, names = load_masks(p)
    ds = load_dataset(spec)
    assert (k, names) == (ds.space.num_classes, list(ds.space.names))
    for m, it in zip(masks, ds): np.testing.assert_array_equal(m, it['mask'])
    kw = dict(steps=3, batch_size=2, crop=32, block_out_channels=(8, 8, 16), progress=False)
    a, b = train_annotation_vae(str(p), tmp_path / 'a', **kw), train_annotation_vae(spec, tmp_path / 'b', **kw)
    assert a.history == b.history
    with pytest.raises(FileNotFoundError, match='not found'): load_masks(tmp_path / 'nope.npz')
    np.savez(tmp_path / 'other.npz', x=np.zeros(3))
    with pytest.raises(ValueError, match='not a save_masks archive'): load_masks(tmp_path / 'other.npz')
    with pytest.raises(ValueError, match='no label space'): save_masks([np.zeros((4, 4), np.uint8)], tmp_path / 'x.npz')


def test_command_line_trains_scores_and_writes_eval(tmp_path):
    "`python -m jodiff.annotation_vae` as a user runs it: eval.json with the scores and the curve; a bad argument exits non-zero."
    import os, subprocess, sys
    cmd = [sys.executable, '-m', 'jodiff.annotation_vae', '--train', 'shapes:train?n=8&size=32', '--val', 'shapes:val?n=4&size=32',
           '--out-dir', str(tmp_path / 'run'), '--steps', '6', '--batch-size', '2', '--crop', '32', '--block-out-channels', '8,8,16',
           '--checkpoint-every', '3', '--keep-checkpoints', '2', '--hard-fraction', '0.5', '--curve', '--no-progress']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'reconstruction mIoU' in r.stdout
    ev = json.loads((tmp_path / 'run' / 'eval.json').read_text())
    assert ev['steps'] == 6 and ev['device'] == 'cpu' and 0 <= ev['mIoU'] <= 100
    assert [c['step'] for c in ev['curve']] == [3, 6] and ev['curve'][-1]['mIoU'] == ev['mIoU']
    assert json.loads((tmp_path / 'run' / 'train_log.json').read_text())['hard_fraction'] == 0.5
    vae = AnnotationVAE.from_pretrained(tmp_path / 'run' / 'final')
    assert tuple(vae.config.block_out_channels) == (8, 8, 16)
    bad = subprocess.run(cmd[:3] + ['--out-dir', str(tmp_path / 'x')], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and '--train' in bad.stderr
