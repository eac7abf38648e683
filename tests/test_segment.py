"Tests of jodiff.segment beyond the notebooks' lessons: both tiny models, learning, paper sizes, the joint sampler, fine-tuning, resuming, bad input, CLI."
import json, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jodiff.core import DataError, LabelSpace, get_label_space
from jodiff.data import FolderWriter
from jodiff.segment.adapters import MixSampler, load_checkpoint_file, mix_weights
from jodiff.segment.train import build_config, checkpoint_meta, evaluate_segmenter, train_segmenter, train_setting
from jodiff.segment.zoo import build_segmenter, register_mm_modules

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TRAIN, VAL = 'shapes:train?n=8&size=64', 'shapes:val?n=4&size=64'
QUIET = dict(batch_size=2, progress=False)


def write_folder(path, space, n=3, size=32, bad_value=None):
    "A tiny `folder:` dataset written by FolderWriter; optionally its last mask overwritten with a `bad_value` patch."
    rng = np.random.default_rng(0)
    with FolderWriter(path, space) as w:
        for i in range(n):
            w.add(f'{i:07d}', rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                  rng.integers(0, space.num_classes, (size, size)).astype(np.uint8))
    if bad_value is not None:
        f = Path(path) / 'SegmentationClass' / f'{n - 1:07d}.png'
        im = Image.open(f); m = np.array(im); m[:4, :4] = bad_value
        out = Image.fromarray(m.astype(np.uint8))
        if im.mode == 'P': out.putpalette(im.getpalette())
        out.save(f)
    return f'folder:{path}'


def state(ckpt, key): return load_checkpoint_file(ckpt)['state_dict'][key]


@pytest.mark.parametrize('model', ['deeplabv3-r18-tiny', 'mask2former-r18-tiny'])
def test_tiny_model_trains_and_evaluates(model, tmp_path):
    r = train_segmenter(model, TRAIN, VAL, iters=3, work_dir=tmp_path, **QUIET)
    assert Path(r['checkpoint']).name == 'iter_3.pth'
    meta = checkpoint_meta(r['checkpoint'])
    assert (meta['model'], meta['iter'], meta['space']['names']) == (model, 3, get_label_space('shapes').names)
    m = json.loads((tmp_path / 'metrics.json').read_text())
    assert {'mIoU', 'per_class', 'dataset', 'num_images', 'model', 'checkpoint'} <= set(m)
    assert (m['dataset'], m['num_images'], m['model']) == (VAL, 4, model)
    assert list(m['per_class']) == get_label_space('shapes').names
    # jodiff.metrics over evaluate_segmenter's predictions == mmseg's IoUMetric in the Runner's validation
    assert abs(m['mIoU'] - r['val_IoUMetric']['mIoU']) < 0.02


def test_tiny_deeplab_training_loss_falls(tmp_path):
    "30 iterations on 8 images: the logged training loss (CE + 0.4 aux CE) falls clearly below its start."
    train_segmenter('deeplabv3-r18-tiny', TRAIN, None, iters=30, work_dir=tmp_path, log_interval=1, **QUIET)
    rows = [json.loads(l) for f in tmp_path.glob('*/vis_data/scalars.json') for l in f.read_text().splitlines()]
    loss = [r['loss'] for r in sorted(rows, key=lambda r: r['step']) if 'loss' in r]
    assert len(loss) == 30
    assert np.mean(loss[-5:]) < 0.85 * np.mean(loss[:5]), loss


def test_paper_models_build_at_paper_size():
    "The paper configs build (random init, no download) with parameter counts of the published models."
    def n(name): return sum(p.numel() for p in build_segmenter(name, 150).parameters()) / 1e6
    assert 40 < n('mask2former-r50') < 48          # Mask2Former paper: 44M (R50)
    assert 100 < n('mask2former-swin-b') < 112     # Mask2Former paper: 107M (Swin-B)
    r50, r101 = n('deeplabv3-r50'), n('deeplabv3-r101')
    assert 60 < r50 < 75 and 80 < r101 < 95 and abs((r101 - r50) - 19) < 1.5   # ResNet-101 adds ~19M to ResNet-50
    cfg = build_config('deeplabv3-r101', get_label_space('shapes'), TRAIN)
    assert cfg.model.backbone.depth == 101 and cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model.backbone.init_cfg is None and cfg.model.decode_head.dilations == (1, 12, 24, 36)


def test_pretrained_backbone_is_loaded(tmp_path):
    src = build_segmenter('deeplabv3-r18-tiny', 8)
    f = tmp_path / 'backbone.pth'
    torch.save(src.backbone.state_dict(), f)          # a plain state dict, as a torchvision/mmcls backbone file
    m = build_segmenter('deeplabv3-r18-tiny', 8, pretrained=f)
    assert not torch.equal(m.backbone.stem[0].weight, src.backbone.stem[0].weight)
    m.init_weights()
    assert torch.equal(m.backbone.stem[0].weight, src.backbone.stem[0].weight)
    assert build_config('mask2former-swin-b', get_label_space('shapes'), TRAIN, pretrained='https://x/swin.pth'
                        ).model.backbone.init_cfg == dict(type='Pretrained', checkpoint='https://x/swin.pth')


def test_joint_sampler_draws_from_both_sources(tmp_path):
    from mmengine.runner import Runner
    a, b = 'shapes:train?n=8&size=64', 'shapes:val?n=24&size=64'
    cfg = build_config('deeplabv3-r18-tiny', get_label_space('shapes'), [a, b], VAL, iters=2, work_dir=tmp_path,
                       batch_size=4, mix_ratio=0.5)
    register_mm_modules()
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    it, paths = iter(loader), []
    for _ in range(10): paths += [s.img_path.split('#')[0] for s in next(it)['data_samples']]
    assert set(paths) == {a, b}
    assert 0.25 < paths.count(a) / len(paths) < 0.75     # 50/50 draw although b is 3x larger
    ds = loader.dataset
    for ratio in (0.2, 0.8):
        s = iter(MixSampler(ds, mix_weights(ratio, 2), seed=0))
        first = np.mean([next(s) < 8 for _ in range(3000)])
        assert abs(first - ratio) < 0.03
    # and the joint setting trains
    r = train_setting('real+syn', a, b, VAL, iters=2, work_dir=tmp_path / 'joint', mix_ratio=0.5, **QUIET)
    assert checkpoint_meta(r['checkpoint'])['train_specs'] == [a, b]


def test_finetune_from_starts_from_those_weights(tmp_path):
    src = train_segmenter('deeplabv3-r18-tiny', TRAIN, None, iters=3, work_dir=tmp_path / 'syn', **QUIET)
    key = 'decode_head.conv_seg.weight'
    # lr=0: the fine-tuned weights are exactly the source's; without finetune_from they are a fresh init
    ft = train_segmenter('deeplabv3-r18-tiny', VAL, None, iters=1, work_dir=tmp_path / 'ft', lr=0.0,
                         finetune_from=src['checkpoint'], **QUIET)
    fresh = train_segmenter('deeplabv3-r18-tiny', VAL, None, iters=1, work_dir=tmp_path / 'fresh', lr=0.0, **QUIET)
    assert torch.equal(state(ft['checkpoint'], key), state(src['checkpoint'], key))
    assert not torch.equal(state(fresh['checkpoint'], key), state(src['checkpoint'], key))
    assert checkpoint_meta(ft['checkpoint'])['iter'] == 1    # a new schedule, not the source's iteration count


def test_resume(tmp_path):
    r1 = train_segmenter('deeplabv3-r18-tiny', TRAIN, None, iters=2, work_dir=tmp_path, ckpt_interval=1, **QUIET)
    r2 = train_segmenter('deeplabv3-r18-tiny', TRAIN, None, iters=4, work_dir=tmp_path, ckpt_interval=1, **QUIET)
    assert Path(r2['resumed_from']).name == 'iter_2.pth' and r2['trained_iters'] == 2
    assert checkpoint_meta(r2['checkpoint'])['iter'] == 4
    r3 = train_segmenter('deeplabv3-r18-tiny', TRAIN, None, iters=4, work_dir=tmp_path, **QUIET)
    assert r3['trained_iters'] == 0 and r3['checkpoint'] == r2['checkpoint']
    r4 = train_segmenter('deeplabv3-r18-tiny', TRAIN, None, iters=3, work_dir=tmp_path / 'new', resume=False, **QUIET)
    assert r4['resumed_from'] is None
    assert r1['checkpoint'] != r2['checkpoint']


def test_bad_input_fails_before_training(tmp_path):
    other = LabelSpace('two', ['a', 'b'])
    two = write_folder(tmp_path / 'two', other)
    bad_val = write_folder(tmp_path / 'badval', get_label_space('shapes'), bad_value=9)
    empty = tmp_path / 'empty'; FolderWriter(empty, 'shapes').close()          # a folder dataset with no samples
    wd = tmp_path / 'wd'
    with pytest.raises(ValueError, match='unknown segmenter model .deeplabv4.'):
        train_segmenter('deeplabv4', TRAIN, VAL, iters=1, work_dir=wd)
    with pytest.raises(DataError, match='empty'):
        train_segmenter('deeplabv3-r18-tiny', f'folder:{empty}', VAL, iters=1, work_dir=wd)
    with pytest.raises(DataError, match=r'0000002.*outside label space'):
        train_segmenter('deeplabv3-r18-tiny', TRAIN, bad_val, iters=1, work_dir=wd)
    with pytest.raises(DataError, match="label space 'two'"):
        train_segmenter('deeplabv3-r18-tiny', TRAIN, two, iters=1, work_dir=wd)
    assert not wd.exists()                                    # nothing was trained
    # a checkpoint for another label space: refused for fine-tuning, resuming and evaluation
    ck = train_segmenter('deeplabv3-r18-tiny', two, None, iters=1, work_dir=tmp_path / 'ck2', **QUIET)['checkpoint']
    with pytest.raises(DataError, match=r"finetune_from checkpoint .* label space 'two'"):
        train_segmenter('deeplabv3-r18-tiny', TRAIN, VAL, iters=1, work_dir=wd, finetune_from=ck)
    with pytest.raises(DataError, match=r"resume checkpoint .* label space 'two'"):
        train_segmenter('deeplabv3-r18-tiny', TRAIN, VAL, iters=2, work_dir=tmp_path / 'ck2')
    with pytest.raises(DataError, match="label space 'shapes'"):
        evaluate_segmenter(ck, VAL)
    with pytest.raises(ValueError, match="is a 'deeplabv3-r18-tiny' model"):
        train_segmenter('mask2former-r18-tiny', two, None, iters=1, work_dir=wd, finetune_from=ck)
    torch.save({'state_dict': {}}, tmp_path / 'foreign.pth')
    with pytest.raises(DataError, match='no jodiff label-space meta'):
        evaluate_segmenter(tmp_path / 'foreign.pth', VAL)
    assert not wd.exists()


def test_cli_train_and_eval(tmp_path):
    cmd = [sys.executable, '-m', 'jodiff.cli']
    wd = tmp_path / 'run'
    env = dict(__import__('os').environ, OMP_NUM_THREADS='1')
    t = subprocess.run(cmd + ['segment', 'train', '--model', 'deeplabv3-r18-tiny', '--train', TRAIN, '--val', VAL,
                              '--iters', '2', '--work-dir', str(wd), '--batch-size', '2', '--crop', '48'],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert t.returncode == 0, t.stderr[-3000:]
    assert '2/2 [' in t.stderr and 'mmengine - INFO' not in t.stdout + t.stderr   # one progress bar, no log lines
    assert list(wd.glob('*/*.log'))                           # the full log went to the work dir
    assert (wd / 'iter_2.pth').is_file() and (wd / 'metrics.json').is_file()
    out = tmp_path / 'm.json'
    e = subprocess.run(cmd + ['segment', 'eval', '--checkpoint', str(wd), '--data', VAL, '--out', str(out)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert e.returncode == 0, e.stderr[-3000:]
    m = json.loads(out.read_text())
    assert m['num_images'] == 4 and m['mIoU'] == json.loads((wd / 'metrics.json').read_text())['mIoU']
    assert 'circle' in e.stdout                              # the per-class table
    bad = subprocess.run(cmd + ['segment', 'train', '--model', 'nope', '--train', TRAIN, '--work-dir', str(wd)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert bad.returncode != 0 and 'nope' in bad.stderr


def test_torchrun_two_cpu_processes(tmp_path):
    "`torchrun --nproc_per_node 2 -m jodiff.cli segment train` on CPUs: mmengine's launcher over gloo, one work dir, one result."
    import os, socket
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    torchrun, wd = Path(sys.executable).parent / 'torchrun', tmp_path / 'run'
    cmd = [str(torchrun), '--nproc_per_node', '2', '--master_port', str(port), '-m', 'jodiff.cli', 'segment', 'train', '--model',
           'deeplabv3-r18-tiny', '--train', TRAIN, '--val', VAL, '--iters', '2', '--work-dir', str(wd), '--batch-size', '2', '--crop', '48']
    t = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''})
    assert t.returncode == 0, t.stderr[-3000:]
    assert len(t.stdout.strip().splitlines()) == 1 and json.loads(t.stdout)['trained_iters'] == 2, t.stdout   # printed once
    assert checkpoint_meta(wd / 'iter_2.pth')['processes'] == 2 and (wd / 'metrics.json').is_file()
