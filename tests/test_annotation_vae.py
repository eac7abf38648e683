"Tests for jodiff.jodiffusion.annotation_vae and its training, beyond the notebooks' lessons: edge cases and the command line."
import json, os, subprocess, sys

import numpy as np
import pytest
import torch

from jodiff.jodiffusion.annotation_vae import AnnotationVAE, decode_bits, encode_bits, n_bits_for, tiny_annotation_vae
from jodiff.jodiffusion.train_annotation_vae import (_class_index, _crop_batch, annotation_loss, load_masks, reconstruction_miou,
                                                     save_masks, train_annotation_vae)
from jodiff.shapes import render_scene

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy():
    return [render_scene(s, 64)["mask"] for s in range(6)]


def test_bits_threshold_ignore_code_and_errors():
    "Decoding thresholds at 0 (not at +-1), ignore is the all-ones code, unused codes decode to ignore, bad ids are refused."
    for K in (3, 150, 254):
        n = n_bits_for(K)
        assert 2 ** n - 1 >= K and (n == 1 or 2 ** (n - 1) - 1 < K)  # the smallest n leaving a spare code
        ids = torch.cat([torch.arange(K), torch.tensor([255])]).view(1, 1, -1)
        assert torch.equal(decode_bits(encode_bits(ids, n) * 0.3, K), ids)
    m = np.array([[[0, 1, 255]]], np.uint8)
    b = encode_bits(m, 2)
    assert b[0, :, 0, 2].tolist() == [1.0, 1.0] and b[0, :, 0, 1].tolist() == [1.0, -1.0]   # ignore = 3; 1 = LSB set
    assert decode_bits(torch.tensor([[[[1.]], [[-1.]], [[1.]]]]), 5).item() == 255        # code 5 >= K
    with pytest.raises(ValueError, match="0..6"): encode_bits(torch.tensor([[[7]]]), 3)
    with pytest.raises(ValueError, match="integer"): encode_bits(torch.zeros(1, 2, 2), 3)
    with pytest.raises(ValueError, match="B,H,W"): encode_bits(torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="ignore_index"): AnnotationVAE(n_classes=300)


def test_loss_ignores_ignore_pixels():
    "The loss equals cross-entropy over the labelled pixels only; an all-ignore batch gives 0 with hard-pixel mining."
    logits, m = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4))
    m[0, 0] = 255
    keep = m != 255
    want = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[keep], m[keep])
    assert torch.allclose(annotation_loss(logits, m), want)
    assert annotation_loss(logits, torch.full_like(m, 255), 255, hard_fraction=0.5).item() == 0.0
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match='hard_fraction'): annotation_loss(logits, m, 255, hard_fraction=bad)


KW = dict(steps=8, batch_size=4, crop=32, lr=3e-3, n_classes=8, checkpoint_every=4, keep_checkpoints=4,
          progress=False, block_out_channels=(8, 8, 16))


def test_finished_run_is_not_trained_again_and_bad_args(tmp_path, toy):
    full = train_annotation_vae(toy, tmp_path / "full", **KW)
    again = train_annotation_vae(toy, tmp_path / "full", **KW)
    assert json.loads((tmp_path / "full" / "train_log.json").read_text())["resumed_from"] == 8
    for a, b in zip(again.parameters(), full.parameters()): assert torch.equal(a.detach(), b.detach())
    with pytest.raises(ValueError, match="crop"): train_annotation_vae(toy, tmp_path, **{**KW, "crop": 30})
    with pytest.raises(ValueError, match="n_classes"): train_annotation_vae(toy, tmp_path, **{**KW, "n_classes": None})
    with pytest.raises(ValueError, match="steps"): train_annotation_vae(toy, tmp_path, **{**KW, "steps": 0})
    with pytest.raises(ValueError, match="class_uniform"): train_annotation_vae(toy, tmp_path, **{**KW, "class_uniform": 1.5})


def test_class_uniform_crops_are_centred_and_fall_back():
    "Crops of a rare class contain it whole even when small; all-ignore masks fall back to uniform crops."
    alone = np.full((64, 64), 255, np.uint8); alone[40:44, 10:14] = 5
    b = _crop_batch([alone], 0, 0, 16, 8, 255, 1.0, _class_index([alone], 8))
    assert ((b == 5).flatten(1).sum(1) == 16).all()
    ig = [np.full((32, 32), 255, np.uint8)]
    assert (_crop_batch(ig, 0, 0, 2, 16, 255, 1.0, _class_index(ig, 8)) == 255).all()


def test_reconstruction_miou_perfect_decoder_and_ignore(toy):
    "A decoder patched to return the true one-hot logits scores 100; an all-ignore mask adds nothing to the score."
    vae = tiny_annotation_vae(4)
    masks = [np.random.default_rng(i).integers(0, 4, (16, 24)).astype(np.uint8) for i in range(3)]
    truth, enc = {}, vae.encode
    def encode(m):
        truth["m"] = torch.as_tensor(np.asarray(m)).long()
        return enc(m)
    vae.encode = encode
    vae.decode = lambda z: torch.nn.functional.one_hot(truth["m"].clamp(0, 3), 4).permute(0, 3, 1, 2).float()
    assert reconstruction_miou(vae, masks)["mIoU"] == pytest.approx(100.0)
    v8 = tiny_annotation_vae(8)
    assert reconstruction_miou(v8, toy + [np.full((64, 64), 255, np.uint8)])["mIoU"] == pytest.approx(reconstruction_miou(v8, toy)["mIoU"])


def test_group_norm_variant_round_trip_and_trains(tmp_path):
    "norm_num_groups > 0 adds GroupNorm layers that survive save/load; the model trains; bad groups are refused."
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


def test_mask_archive_trains_like_its_spec_and_errors(tmp_path):
    "save_masks keeps every mask with the label space; the archive trains exactly like the spec it came from."
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
    np.savez(tmp_path / 'other.npz', x=np.zeros(3))
    with pytest.raises(ValueError, match='not a save_masks archive'): load_masks(tmp_path / 'other.npz')
    with pytest.raises(ValueError, match='no label space'): save_masks([np.zeros((4, 4), np.uint8)], tmp_path / 'x.npz')


def test_command_line_trains_scores_and_writes_eval(tmp_path):
    "`jodiff avae` as a user runs it: a trained model beats an untrained one on easy shapes; eval.json with the curve."
    script = os.path.join(os.path.dirname(sys.executable), 'jodiff')
    data = ['--train', 'shapes:train?n=32&size=32&level=easy', '--val', 'shapes:val?n=8&size=32&level=easy']
    cmd = [script, 'avae', *data, '--out-dir', str(tmp_path / 'run'), '--steps', '40', '--batch-size', '8', '--crop', '32',
           '--lr', '3e-3', '--block-out-channels', '8,8,16', '--checkpoint-every', '20', '--hard-fraction', '0.5', '--curve', '--quiet']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads((tmp_path / 'run' / 'eval.json').read_text())
    assert f"reconstruction mIoU {ev['mIoU']:.2f}" in r.stdout
    untrained = reconstruction_miou(tiny_annotation_vae(8), 'shapes:val?n=8&size=32&level=easy')['mIoU']
    assert ev['mIoU'] > untrained + 5, (ev['mIoU'], untrained)   # 40 steps: about 12 against 3
    assert [c['step'] for c in ev['curve']] == [20, 40] and ev['curve'][-1]['mIoU'] == ev['mIoU']
    assert json.loads((tmp_path / 'run' / 'train_log.json').read_text())['hard_fraction'] == 0.5
    assert tuple(AnnotationVAE.from_pretrained(tmp_path / 'run' / 'final').config.block_out_channels) == (8, 8, 16)


def test_accelerate_launch_two_processes_train_like_one_with_their_batch(tmp_path):
    "`accelerate launch -m jodiff.cli avae` on 2 CPU processes of 2 crops each trains like one process of 4: the processes take"
    " their shares of one global batch (not the same crops twice); one final model, one log, one eval.json."
    import socket
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    acc = os.path.join(os.path.dirname(sys.executable), 'accelerate')
    args = ['avae', '--train', 'shapes:train?n=16&size=32', '--val', 'shapes:val?n=4&size=32', '--steps', '6', '--crop', '32',
            '--lr', '3e-3', '--block-out-channels', '8,8,16', '--checkpoint-every', '3', '--quiet']
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
    two = [acc, 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no', '--main_process_port',
           str(port), '--dynamo_backend', 'no', '-m', 'jodiff.cli', *args, '--batch-size', '2', '--out-dir', str(tmp_path / 'two')]
    r = subprocess.run(two, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('reconstruction mIoU') == 1, r.stdout        # the main process scores and prints
    one = train_annotation_vae('shapes:train?n=16&size=32', tmp_path / 'one', steps=6, batch_size=4, crop=32, lr=3e-3,
                               block_out_channels=(8, 8, 16), checkpoint_every=3, progress=False)
    assert json.loads((tmp_path / 'two' / 'train_log.json').read_text())['processes'] == 2
    history = json.loads((tmp_path / 'two' / 'checkpoint-6' / 'train_state.json').read_text())['history']
    np.testing.assert_allclose(history, one.history, rtol=1e-4)
    b = AnnotationVAE.from_pretrained(tmp_path / 'two' / 'final')
    for (k, v), w in zip(b.state_dict().items(), one.state_dict().values()): torch.testing.assert_close(v, w, rtol=1e-3, atol=1e-5, msg=k)
    assert json.loads((tmp_path / 'two' / 'eval.json').read_text())['steps'] == 6
