"Tests of jodiff.generation with any method: a test-only toy method (not JoDiffusion) killed and resumed, 2 processes, bad inputs."
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

from jodiff.cli import run
from jodiff.core import DataError, read_mask
from jodiff.data import FolderWriter, IMAGE_DIR, MASK_DIR, RAW_DIR, SCORE_DIR
from jodiff.generation import batches_for, complete_names, generate, plan_samples, register_method, save_label_space
from jodiff.jodiffusion.pipeline import JoDiffusionPipeline, tiny_pipeline
from jodiff.jodiffusion.refinement import refine_mask

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from toy_method import TOY_SPACE, ToyPipeline

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ['a red circle', 'a blue square', 'two stars on grass']
TOY = 'toy_method:ToyPipeline'   # a method named as `--method module:Class` (tests/ is on the path of every process)
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')]))


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('gen') / 'toy'
    ToyPipeline.tiny().save_pretrained(d)
    save_label_space(d, TOY_SPACE)
    return d


@pytest.fixture(scope='module')
def prompts_file(model_dir):
    f = model_dir.parent / 'prompts.txt'
    f.write_text('\n'.join(PROMPTS) + '\n\n')  # a trailing blank line is skipped
    return f


def cli_args(model_dir, prompts_file, out, num, batch_size=2, extra=()):
    return ['generate', '--method', TOY, '--model', str(model_dir), '--prompts', str(prompts_file), '--num', str(num),
            '--out', str(out), '--batch-size', str(batch_size), '--steps', '2', '--quiet', *extra]


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
    "All `num` samples are there, once, with their captions, raw masks and scores."
    names = [f'{i:07d}' for i in range(num)]
    for sub, ext in ((MASK_DIR, '.png'), (IMAGE_DIR, '.jpg'), (RAW_DIR, '.png'), (SCORE_DIR, '.json')):
        assert sorted(os.listdir(out / sub)) == [n + ext for n in names], sub
    caps = [json.loads(l) for l in (out / 'captions.jsonl').read_text().splitlines()]
    assert [(c['name'], c['caption'], c['seed']) for c in caps] == [(f'{i:07d}', PROMPTS[i % 3], i) for i in range(num)]
    scores = [json.loads(l) for l in (out / 'scores.jsonl').read_text().splitlines()]
    assert [s['name'] for s in scores] == names and all(0 <= s['warm'] <= 1 for s in scores)
    meta = json.loads((out / 'dataset.json').read_text())
    assert meta['made_by']['method'] == TOY and meta['made_by']['num'] == num and meta['made_by']['num_inference_steps'] == 2
    assert meta['label_space']['name'] == 'toy'


@pytest.fixture(scope='module')
def reference(model_dir, prompts_file):
    "An uninterrupted run of 12 samples through the command line, in-process."
    out = model_dir.parent / 'reference'
    run(cli_args(model_dir, prompts_file, out, 12))
    return out


def test_reference_run_is_the_method_output(reference, model_dir):
    check_complete(reference, 12)
    one = ToyPipeline.from_pretrained(str(model_dir))(prompt=[PROMPTS[1]], seeds=[7], num_inference_steps=2)
    assert np.array_equal(read_mask(reference / MASK_DIR / '0000007.png'), one.masks[0])     # sample 7 = prompt 1, seed 7
    assert np.array_equal(read_mask(reference / RAW_DIR / '0000007.png'), one.raw_masks[0])
    assert not np.array_equal(one.masks[0], one.raw_masks[0])                               # the method's post-processing is kept apart


def test_kill_and_resume(reference, model_dir, prompts_file, tmp_path):
    "SIGKILL mid-run, a torn temp file and an image without its mask, then a rerun: the folder equals the uninterrupted one."
    out, num = tmp_path / 'killed', 12
    cmd = [sys.executable, '-m', 'jodiff.cli', *cli_args(model_dir, prompts_file, out, num, extra=['--delay', '0.1'])]
    env = ENV
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while len(complete_names(out)) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() - t0 < 120, 'no progress within 120 s'
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL); proc.wait()
    n_before = len(complete_names(out))
    assert 3 <= n_before < num, f'the kill came too late ({n_before} of {num} complete)'
    assert not (out / 'captions.jsonl').exists()
    missing = sorted(set(f'{i:07d}' for i in range(num)) - complete_names(out))[0]
    (out / IMAGE_DIR / f'.{missing}.jpg.abcd.tmp').write_bytes(b'half an image')
    (out / IMAGE_DIR / f'{missing}.jpg').write_bytes(b'not the final image')
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary['skipped'] == n_before and summary['generated'] == num - n_before
    check_complete(out, num)
    made = lambda d: {k: v for k, v in json.loads((d / 'dataset.json').read_text())['made_by'].items() if k != 'delay'}
    assert made(out) == made(reference)                        # the same run but for the test's slow-down option
    same = lambda d: {k: v for k, v in files_of(d).items() if k not in ('generation.json', 'dataset.json')}
    assert same(out) == same(reference)                        # every sample, raw mask, score and caption, byte for byte


def test_exception_and_resume(reference, model_dir, tmp_path):
    "An exception after k samples loses nothing: the rerun makes exactly the missing ones, with the method registered by name."
    register_method('toy', ToyPipeline)
    pipe = ToyPipeline.from_pretrained(str(model_dir))
    calls = []
    class Boom:
        def __getattr__(self, name): return getattr(pipe, name)
        def __call__(self, **kw):
            calls.append(len(kw['seeds']))
            if len(calls) == 3: raise KeyboardInterrupt
            return pipe(**kw)
    out, kw = tmp_path / 'interrupted', dict(method='toy', batch_size=2, num_inference_steps=2, progress=False)
    with pytest.raises(KeyboardInterrupt): generate(Boom(), PROMPTS, 12, out, **kw)
    assert complete_names(out) == {f'{i:07d}' for i in range(4)}
    s = generate(pipe, PROMPTS, 12, out, **kw)
    assert (s['skipped'], s['generated'], s['complete']) == (4, 8, 12)
    for sub in (IMAGE_DIR, MASK_DIR, RAW_DIR, SCORE_DIR):
        for p in (reference / sub).iterdir(): assert (out / sub / p.name).read_bytes() == p.read_bytes(), p
    assert (out / 'captions.jsonl').read_text() == (reference / 'captions.jsonl').read_text()


def test_two_processes(reference, model_dir, prompts_file, tmp_path):
    out, num = tmp_path / 'two', 12
    accelerate = Path(sys.executable).parent / 'accelerate'
    # (`--cpu` would start one process; `--multi_gpu` picks torchrun, and generate uses gloo on a CPU-only machine)
    cmd = [str(accelerate), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '-m', 'jodiff.cli', *cli_args(model_dir, prompts_file, out, num)]
    env = dict(ENV, CUDA_VISIBLE_DEVICES='')  # CPU processes, even on a GPU machine
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
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


def test_jodiffusion_options_reach_its_pipeline(tmp_path, prompts_file, capsys):
    "`--refine-tau` is JoDiffusion's own option: it reaches the pipeline, which refines; the raw masks are kept."
    d = tmp_path / 'jd'
    tiny_pipeline(0, num_classes=8).save_pretrained(d); save_label_space(d, 'shapes')
    args = ['generate', '--model', str(d), '--prompts', str(prompts_file), '--num', '3', '--out', str(tmp_path / 'o'),
            '--steps', '2', '--quiet', '--refine-tau', '30']
    run(args)
    raw, final = read_mask(tmp_path / 'o' / RAW_DIR / '0000001.png'), read_mask(tmp_path / 'o' / MASK_DIR / '0000001.png')
    assert np.array_equal(final, refine_mask(raw, 30, background=0))
    assert json.loads((tmp_path / 'o' / 'generation.json').read_text())['refine_tau'] == 30
    assert 'has no option refine_tua' in cli_error(args[:-2] + ['--refine-tua', '3'], capsys)


def cli_error(args, capsys) -> str:
    "Run `jodiff ARGS` in-process, expecting a user error: exit status 2 and one line on stderr, which is returned."
    capsys.readouterr()                       # what came before (e.g. a model being saved) is not the command's
    with pytest.raises(SystemExit) as e: run([str(a) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1, err
    return err


def test_bad_inputs(reference, model_dir, prompts_file, tmp_path, capsys):
    "Refusals that need a finished folder or a dataset (tests/test_faults.py has the rest of the bad inputs)."
    assert 'nope.txt' in cli_error(cli_args(model_dir, tmp_path / 'nope.txt', tmp_path / 'o', 2), capsys)
    with pytest.raises(DataError, match='model_index.json'): generate(tmp_path, PROMPTS, 2, tmp_path / 'o', method=TOY)
    # rerunning into the reference folder with other arguments is refused, naming what differs, and changes nothing
    before = files_of(reference)
    assert 'seed: stored 0, given 3' in cli_error(cli_args(model_dir, prompts_file, reference, 12, extra=['--seed', '3']), capsys)
    assert 'num_inference_steps: stored 2, given 3' in cli_error(cli_args(model_dir, prompts_file, reference, 12)[:-3] + ['--steps', '3'], capsys)
    assert 'batch_size: stored 2, given 3' in cli_error(cli_args(model_dir, prompts_file, reference, 12, batch_size=3), capsys)
    assert 'would shrink' in cli_error(cli_args(model_dir, prompts_file, reference, 5), capsys)
    assert files_of(reference) == before
    # a label space that does not fit the model
    assert "'camvid' has 11 classes but the model decodes 3" in cli_error(cli_args(model_dir, prompts_file, tmp_path / 'o', 2, extra=['--label-space', 'camvid']), capsys)
    # --captions-from a dataset without captions
    img = np.zeros((8, 8, 3), np.uint8)
    with FolderWriter(tmp_path / 'nocaps', 'shapes') as w: w.add('a', img, np.zeros((8, 8), np.uint8))
    args = cli_args(model_dir, prompts_file, tmp_path / 'o', 2)
    i = args.index('--prompts'); args[i:i + 2] = ['--captions-from', f'folder:{tmp_path / "nocaps"}']
    assert 'caption' in cli_error(args, capsys)
    # a folder with masks that jodiff generate did not make
    (tmp_path / 'alien' / MASK_DIR).mkdir(parents=True); (tmp_path / 'alien' / MASK_DIR / 'x.png').touch()
    assert 'not empty and not a folder this command wrote' in cli_error(cli_args(model_dir, prompts_file, tmp_path / 'alien', 2), capsys)
    assert not (tmp_path / 'o').exists()
