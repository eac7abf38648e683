"Tests of jodiff.generation: determinism, resume after SIGKILL / exceptions, 2-process split, bad inputs."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

from jodiff.core import DataError, read_mask, save_image
from jodiff.data import FolderWriter
from jodiff.generation import (DEFAULT_GUIDANCE, IMAGE_DIR, MASK_DIR, RAW_DIR, batches_for, complete_names, generate,
                                 main, plan_samples, save_label_space)
from jodiff.pipeline import JoDiffusionPipeline, tiny_pipeline
from jodiff.refinement import refine_mask

torch.set_num_threads(1)
PROMPTS = ['a red circle', 'a blue square', 'two stars on grass']
STEPS = 2


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('gen') / 'model'
    tiny_pipeline(0, num_classes=8).save_pretrained(d)  # 8 classes: the `shapes` label space
    save_label_space(d, 'shapes')
    return d


@pytest.fixture(scope='module')
def prompts_file(model_dir):
    f = model_dir.parent / 'prompts.txt'
    f.write_text('\n'.join(PROMPTS) + '\n\n')  # a trailing blank line is skipped
    return f


def cli_args(model_dir, prompts_file, out, num, batch_size=2, extra=()):
    return ['generate', '--method', 'jodiffusion', '--model', str(model_dir), '--prompts', str(prompts_file),
            '--num', str(num), '--out', str(out), '--batch-size', str(batch_size), '--steps', str(STEPS),
            '--refine-tau', '4', '--quiet', *extra]


def files_of(d):
    "Every file under `d`, relative path -> bytes."
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob('*')) if p.is_file()}


def assert_same_folder(a, b):
    "Folders `a` and `b` hold the same files with the same bytes, and no temp files."
    fa, fb = files_of(a), files_of(b)
    assert sorted(fa) == sorted(fb)
    assert not [k for k in fa if k.endswith('.tmp')]
    assert [k for k in fa if fa[k] != fb[k]] == []


def check_complete(out, num):
    "All `num` samples are there, once, with their captions in order."
    names = [f'{i:07d}' for i in range(num)]
    assert sorted(os.listdir(out / MASK_DIR)) == [n + '.png' for n in names]
    assert sorted(os.listdir(out / IMAGE_DIR)) == [n + '.jpg' for n in names]
    caps = [json.loads(l) for l in (out / 'captions.jsonl').read_text().splitlines()]
    assert [c['name'] for c in caps] == names
    assert [(c['caption'], c['seed']) for c in caps] == [(PROMPTS[i % 3], i) for i in range(num)]
    meta = json.loads((out / 'dataset.json').read_text())
    assert meta['made_by']['method'] == 'jodiffusion' and meta['made_by']['num'] == num
    assert meta['made_by']['num_inference_steps'] == STEPS and meta['made_by']['refine_tau'] == 4


@pytest.fixture(scope='module')
def reference(model_dir, prompts_file):
    "An uninterrupted run of 12 samples through the CLI entry point, in-process."
    out = model_dir.parent / 'reference'
    main(cli_args(model_dir, prompts_file, out, 12))
    return out


def test_reference_run(reference, model_dir, tmp_path):
    check_complete(reference, 12)
    pipe = JoDiffusionPipeline.from_pretrained(str(model_dir))
    one = pipe(prompt=[PROMPTS[1]], seeds=[7], num_inference_steps=STEPS, guidance_scale=DEFAULT_GUIDANCE)
    m = read_mask(reference / RAW_DIR / '0000007.png')  # sample 7 = prompt 1, seed 7, as sampled alone
    assert np.array_equal(m, one.masks[0])
    save_image(tmp_path / 'x.jpg', one.images[0])
    assert (tmp_path / 'x.jpg').read_bytes() == (reference / IMAGE_DIR / '0000007.jpg').read_bytes()
    # the final mask is what refine_mask makes of the raw one
    bg = json.loads((reference / 'dataset.json').read_text())['label_space']['background']
    assert np.array_equal(read_mask(reference / MASK_DIR / '0000007.png'), refine_mask(m, 4, background=bg))


def test_kill_and_resume(reference, model_dir, prompts_file, tmp_path):
    out = tmp_path / 'killed'
    num = 12
    cmd = [sys.executable, '-m', 'jodiff.generation', *cli_args(model_dir, prompts_file, out, num)]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while len(complete_names(out)) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() - t0 < 60, 'no progress within 60 s'
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL); proc.wait()
    n_before = len(complete_names(out))
    assert 3 <= n_before < num, f'the kill came too late ({n_before} of {num} complete)'
    assert not (out / 'captions.jsonl').exists()
    # a kill in the middle of a write leaves a temp file (and maybe an image without its mask): simulate both
    missing = sorted(set(f'{i:07d}' for i in range(num)) - complete_names(out))[0]
    (out / IMAGE_DIR / f'.{missing}.jpg.abcd.tmp').write_bytes(b'half an image')
    (out / IMAGE_DIR / f'{missing}.jpg').write_bytes(b'not the final image')
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary['skipped'] == n_before and summary['generated'] == num - n_before
    check_complete(out, num)
    assert_same_folder(out, reference)  # same names, masks, image bytes, captions, metadata; no temp files


def test_exception_and_resume(reference, model_dir, tmp_path):
    "An exception after k samples loses nothing: the rerun makes exactly the missing ones."
    pipe = JoDiffusionPipeline.from_pretrained(str(model_dir))
    calls = []
    class Boom:
        def __getattr__(self, name): return getattr(pipe, name)
        def __call__(self, **kw):
            calls.append(len(kw['seeds']))
            if len(calls) == 3: raise KeyboardInterrupt
            return pipe(**kw)
    out = tmp_path / 'interrupted'
    kw = dict(refine_tau=4, batch_size=2, num_inference_steps=STEPS, progress=False)
    with pytest.raises(KeyboardInterrupt): generate(Boom(), PROMPTS, 12, out, **kw)
    assert complete_names(out) == {f'{i:07d}' for i in range(4)}
    s = generate(pipe, PROMPTS, 12, out, **kw)
    assert (s['skipped'], s['generated'], s['complete']) == (4, 8, 12)
    for n in range(12):  # the in-memory pipeline is named differently in the metadata, so compare the samples
        name = f'{n:07d}'
        assert (out / IMAGE_DIR / f'{name}.jpg').read_bytes() == (reference / IMAGE_DIR / f'{name}.jpg').read_bytes()
        assert (out / MASK_DIR / f'{name}.png').read_bytes() == (reference / MASK_DIR / f'{name}.png').read_bytes()
    assert (out / 'captions.jsonl').read_text() == (reference / 'captions.jsonl').read_text()


def test_two_processes(reference, model_dir, prompts_file, tmp_path):
    out = tmp_path / 'two'
    num = 12
    accelerate = Path(sys.executable).parent / 'accelerate'
    # (`--cpu` would start one process; `--multi_gpu` picks torchrun, and generate uses gloo on a CPU-only machine)
    cmd = [str(accelerate), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '-m', 'jodiff.generation', *cli_args(model_dir, prompts_file, out, num)]
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')  # CPU processes, even on a GPU machine
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    sums = sorted((json.loads(l) for l in r.stdout.splitlines() if l.startswith('{')), key=lambda s: s['rank'])
    assert [(s['rank'], s['num_processes'], s['assigned'], s['generated']) for s in sums] == [(0, 2, 6, 6), (1, 2, 6, 6)]
    check_complete(out, num)
    assert_same_folder(out, reference)  # the split changes nothing in what is written


def test_plan_split_has_no_overlap():
    plan = plan_samples(PROMPTS, 101, 5)
    assert [(s.name, s.prompt, s.seed) for s in plan[:4]] == [('0000000', PROMPTS[0], 5), ('0000001', PROMPTS[1], 6), ('0000002', PROMPTS[2], 7), ('0000003', PROMPTS[0], 8)]
    for B in (1, 4):
        parts = [batches_for(plan, B, r, 3) for r in range(3)]
        idx = [s.index for p in parts for b in p for s in b]
        assert sorted(idx) == list(range(101)) and len(set(idx)) == 101
        assert all(s.index // B % 3 == r and s.seed == 5 + s.index for r, p in enumerate(parts) for b in p for s in b)


def test_bad_inputs(reference, model_dir, prompts_file, tmp_path):
    with pytest.raises(DataError, match='nope.txt: prompts file not found'):
        main(cli_args(model_dir, tmp_path / 'nope.txt', tmp_path / 'o', 2))
    empty = tmp_path / 'empty.txt'; empty.write_text('\n  \n')
    with pytest.raises(DataError, match='empty.txt: prompts file has no prompts'):
        main(cli_args(model_dir, empty, tmp_path / 'o', 2))
    with pytest.raises(ValueError, match="--method 'freegen' is not supported"):
        main(cli_args(model_dir, prompts_file, tmp_path / 'o', 2)[:1] + ['--method', 'freegen'] + cli_args(model_dir, prompts_file, tmp_path / 'o', 2)[3:])
    with pytest.raises(DataError, match='model_index.json'):
        main(cli_args(tmp_path, prompts_file, tmp_path / 'o', 2))
    with pytest.raises(SystemExit):  # argparse: a bad --refine-tau
        main(cli_args(model_dir, prompts_file, tmp_path / 'o', 2, extra=['--refine-tau', 'x']))
    # rerunning into the reference folder with other arguments is refused, naming what differs, and changes nothing
    before = files_of(reference)
    with pytest.raises(ValueError, match='seed: stored 0, given 3'):
        main(cli_args(model_dir, prompts_file, reference, 12, extra=['--seed', '3']))
    with pytest.raises(ValueError, match='refine_tau: stored 4, given None'):
        main(cli_args(model_dir, prompts_file, reference, 12, extra=['--refine-tau', 'none']))
    with pytest.raises(ValueError, match='batch_size: stored 2, given 3'):
        main(cli_args(model_dir, prompts_file, reference, 12, batch_size=3))
    with pytest.raises(ValueError, match='would shrink'):
        main(cli_args(model_dir, prompts_file, reference, 5))
    assert files_of(reference) == before
    # the label space: none known, or one that does not fit the model
    bare = tmp_path / 'bare'
    tiny_pipeline(0, num_classes=8).save_pretrained(bare)
    with pytest.raises(ValueError, match='no label space known'):
        main(cli_args(bare, prompts_file, tmp_path / 'o', 2))
    with pytest.raises(ValueError, match="'camvid' has 11 classes but the model's annotation VAE decodes 8"):
        main(cli_args(bare, prompts_file, tmp_path / 'o', 2, extra=['--label-space', 'camvid']))
    s = main(cli_args(bare, prompts_file, tmp_path / 'ok', 2, extra=['--label-space', 'shapes']))
    assert s['complete'] == 2
    # --captions-from a dataset without captions
    img = np.zeros((8, 8, 3), np.uint8)
    with FolderWriter(tmp_path / 'nocaps', 'shapes') as w: w.add('a', img, np.zeros((8, 8), np.uint8))
    args = cli_args(model_dir, prompts_file, tmp_path / 'o', 2)
    i = args.index('--prompts'); args[i:i + 2] = ['--captions-from', f'folder:{tmp_path / "nocaps"}']
    with pytest.raises(DataError, match='dataset has no captions'):
        main(args)
    # a folder with masks that jodiff generate did not make
    (tmp_path / 'alien' / MASK_DIR).mkdir(parents=True); (tmp_path / 'alien' / MASK_DIR / 'x.png').touch()
    with pytest.raises(ValueError, match='no generation.json'):
        main(cli_args(model_dir, prompts_file, tmp_path / 'alien', 2))
