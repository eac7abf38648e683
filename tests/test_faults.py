"""Fault injection and bad input, as a user meets them: `jodiff generate` and `jodiff segment train` killed (SIGKILL) at
random points and rerun, compared byte for byte (or weight for weight) with uninterrupted runs; two writers on one
folder; an interrupted extension; every bad input a one-line error, exit 2, with nothing written."""
import json, os, random, shutil, signal, subprocess, sys, time, zipfile
from pathlib import Path

import pytest
import torch

from jodiff.cli import run
from jodiff.data import IMAGE_DIR, MASK_DIR, load_dataset
from jodiff.generation import save_label_space

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from toy_method import TOY_SPACE, ToyPipeline

ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')]))
PROMPTS = ['a red circle', 'a blue square', 'two stars on grass']
LOCKS = ('.jodiff.lock', '.jodiff.lock.json')


def jodiff(*args, fault=('none', 0), env=None, timeout=300):
    "Run `jodiff ARGS` in a subprocess that kills itself at the chosen point (tests/faulty.py)."
    cmd = [sys.executable, str(HERE / 'faulty.py'), fault[0], str(fault[1]), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=timeout)


def files_of(d):
    "Every file under `d` but the lock, relative path -> bytes."
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob('*')) if p.is_file() and p.name not in LOCKS}


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    "A saved toy model (not JoDiffusion), a prompt file, and an uninterrupted 12-sample run of it."
    d = tmp_path_factory.mktemp('faults')
    ToyPipeline.tiny().save_pretrained(d / 'model'); save_label_space(d / 'model', TOY_SPACE)
    (d / 'prompts.txt').write_text('\n'.join(PROMPTS) + '\n')
    r = jodiff(*gen(d, d / 'reference', 12))
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def gen(d, out, num, *extra):
    return ['generate', '--method', 'toy_method:ToyPipeline', '--model', d / 'model', '--prompts', d / 'prompts.txt',
            '--num', num, '--out', out, '--batch-size', 2, '--steps', 2, '--quiet', *extra]


def test_generate_survives_kills_at_random_points(toy, tmp_path):
    "A chain of runs into one folder, each killed at a random point (mid-sample, a torn temporary file, before a rename,"
    " during the metadata), then a run without a fault: nothing lost, duplicated or corrupt; the folder is the reference."
    out, rng, kills = tmp_path / 'killed', random.Random(0), []
    for n in (1, 2):   # killed during its first writes (the lock's record, generation.json): the folder holds only a .tmp
        r = jodiff(*gen(toy, out, 12), fault=('torn', n))
        assert r.returncode == -signal.SIGKILL and not (out / 'generation.json').exists(), r.stderr[-2000:]
    for point in ['sample', 'torn', 'rename', 'metadata'] * 2:
        n = rng.randint(1, 2 if point == 'metadata' else 5)
        env = dict(ENV, JODIFF_TOY_KILL_AT=str(n)) if point == 'sample' else None
        r = jodiff(*gen(toy, out, 12), fault=('none', 0) if point == 'sample' else (point, n), env=env)
        assert r.returncode in (0, -signal.SIGKILL), r.stderr[-2000:]
        kills.append((point, n, r.returncode == -signal.SIGKILL))
    assert sum(k for *_, k in kills) >= 6, kills                 # most of the runs were indeed killed somewhere
    final = jodiff(*gen(toy, out, 12))
    assert final.returncode == 0, final.stderr[-2000:]
    got, want = files_of(out), files_of(toy / 'reference')
    names = [f'{i:07d}' for i in range(12)]
    assert sorted(p.name for p in (out / MASK_DIR).iterdir()) == [n + '.png' for n in names]      # none lost, none twice
    assert not [k for k in got if k.endswith('.tmp')]                                            # no torn leftovers
    assert sorted(got) == sorted(want) and [k for k in got if got[k] != want[k]] == []           # byte for byte
    assert len(load_dataset(f'folder:{out}')) == 12


def test_interrupted_extension_is_marked_incomplete(toy, tmp_path):
    "Growing a finished folder from 6 to 12 samples, killed half-way: it refuses to load (or loads with ?partial=1); the rerun finishes it."
    out = tmp_path / 'ext'
    assert jodiff(*gen(toy, out, 6)).returncode == 0
    r = jodiff(*gen(toy, out, 12), env=dict(ENV, JODIFF_TOY_KILL_AT='2'))
    assert r.returncode == -signal.SIGKILL
    with pytest.raises(ValueError, match='incomplete: a run was adding samples'): load_dataset(f'folder:{out}')
    part = load_dataset(f'folder:{out}?partial=1')
    assert 6 < len(part) < 12
    assert jodiff(*gen(toy, out, 12)).returncode == 0
    assert files_of(out) == files_of(toy / 'reference')


def test_two_writers_one_folder(toy, tmp_path):
    "A second run into a folder being written stops at once with one line (or waits with --wait); the first is not disturbed."
    out = tmp_path / 'two'
    first = subprocess.Popen([sys.executable, str(HERE / 'faulty.py'), 'none', '0', *map(str, gen(toy, out, 12, '--delay', '1.5'))],
                             cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()     # 12 samples of 1.5 s: the second and third runs start while the first is sampling
    while not (out / '.jodiff.lock.json').exists():
        assert time.time() - t0 < 60 and first.poll() is None, first.stderr.read() if first.poll() is not None else 'no start'
        time.sleep(0.05)
    second = jodiff(*gen(toy, out, 12, '--delay', '1.5'))
    assert second.returncode == 2 and second.stderr.count('\n') == 1, second.stderr
    assert f'another run is writing here (jodiff generate, pid {first.pid}' in second.stderr
    assert first.poll() is None                                   # it was refused while the first one was still running
    waiting = jodiff(*gen(toy, out, 12, '--delay', '1.5', '--wait'))
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert waiting.returncode == 0 and json.loads(waiting.stdout.strip().splitlines()[-1])['generated'] == 0
    got, want = files_of(out), files_of(toy / 'reference')
    assert {k: v for k, v in got.items() if not k.endswith('.json')} == {k: v for k, v in want.items() if not k.endswith('.json')}


def test_ctrl_c_exits_130_with_one_line(toy, tmp_path):
    p = subprocess.Popen([sys.executable, str(HERE / 'faulty.py'), 'none', '0', *map(str, gen(toy, tmp_path / 'int', 12, '--delay', '0.5'))],
                         cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a suite run in the background ignores SIGINT
    t0 = time.time()
    while not list((tmp_path / 'int' / MASK_DIR).glob('*.png')) if (tmp_path / 'int' / MASK_DIR).is_dir() else True:
        assert time.time() - t0 < 60 and p.poll() is None
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.strip().count('\n') == 0 and 'interrupted' in err, err
    assert not [f for f in (tmp_path / 'int').rglob('*.tmp')]


SEG = ['segment', 'train', '--model', 'deeplabv3-r18-tiny', '--train', 'shapes:train?n=8&size=32&level=easy', '--iters', 6,
       '--batch-size', 2, '--crop', 32, '--quiet']


def weights(work):
    return torch.load(work / 'iter_6.pth', map_location='cpu', weights_only=False)['state_dict']


@pytest.fixture(scope='module')
def seg_reference(tmp_path_factory):
    work = tmp_path_factory.mktemp('seg') / 'reference'
    r = jodiff(*SEG, '--work-dir', work)
    assert r.returncode == 0, r.stderr[-2000:]
    return work, weights(work)


@pytest.mark.parametrize('fault', [('save', 2), ('save', 3), ('none', 0)], ids=['before-pointer', 'during-save', 'pointer-truncated'])
def test_segmenter_killed_then_resumed_trains_like_uninterrupted(seg_reference, tmp_path, fault):
    "Killed before `last_checkpoint` moves on, or while iter_4 is being saved; or a torn iter_6.pth left by an old run:"
    " the rerun resumes from the last whole checkpoint and ends with exactly the uninterrupted run's weights."
    work = tmp_path / 'w'
    if fault[0] == 'none':   # what a save that was not atomic leaves: a torn iter_6.pth, named by last_checkpoint
        shutil.copytree(seg_reference[0], work)
        (work / 'iter_6.pth').write_bytes((work / 'iter_6.pth').read_bytes()[:1000]); (work / 'last_checkpoint').write_text(str(work / 'iter_6.pth'))
    else:
        r = jodiff(*SEG, '--work-dir', work, fault=fault)
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        assert all(zipfile.is_zipfile(p) for p in work.glob('iter_*.pth'))          # no torn checkpoint under its real name
    r = jodiff(*SEG, '--work-dir', work)
    assert r.returncode == 0, r.stderr[-2000:]
    got, want = weights(work), seg_reference[1]
    diff = max((got[k].float() - want[k].float()).abs().max().item() for k in want)
    assert diff == 0.0, f'largest weight difference {diff}'


def one_line_error(args, capsys):
    "Run `jodiff ARGS` in-process: (exit status, what it printed on stderr)."
    capsys.readouterr()                       # what came before (e.g. a model being saved) is not the command's
    with pytest.raises(SystemExit) as e: run([str(a) for a in args])
    return e.value.code, capsys.readouterr().err


def listing(d):
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob('*'))


BAD_GENERATE = [(['--num', '0'], 'num must be an integer >= 1'), (['--num', '-5'], 'num must be an integer >= 1'),
                (['--batch-size', '0'], 'batch_size must be an integer >= 1'), (['--method', 'nosuch'], "unknown method 'nosuch'"),
                (['--label-space', 'nosuch'], "unknown label space 'nosuch'"), (['--steps', '0'], 'num_inference_steps must be >= 1'),
                (['--size', '30'], 'size must be a multiple of 8'), (['--guidance-scale', '2'], 'ToyPipeline has no option guidance_scale'),
                (['--delay', 'inf'], 'delay must be a finite number'), (['--delay', 'x'], "could not convert string to float: 'x'"),
                (['--method', 'freegen'], 'a saved ToyPipeline without text_encoder, tokenizer, unet, vae, which FreeGenPipeline needs')]


@pytest.mark.parametrize('extra,msg', BAD_GENERATE, ids=[' '.join(a) for a, _ in BAD_GENERATE])
def test_bad_generate_inputs(toy, tmp_path, capsys, extra, msg):
    before = listing(tmp_path)
    code, err = one_line_error(gen(toy, tmp_path / 'out', 4) + extra, capsys)
    assert code == 2 and err.count('\n') == 1 and err.startswith('jodiff generate: error: ') and msg in err, err
    assert listing(tmp_path) == before                       # nothing written: not even the output folder


@pytest.fixture(scope='module')
def jodiffusion_model(tmp_path_factory):
    "A saved tiny JoDiffusion pipeline (32x32, the 8 classes of `shapes`)."
    from jodiff.jodiffusion.pipeline import JoDiffusionPipeline
    d = tmp_path_factory.mktemp('jodiffusion') / 'model'
    JoDiffusionPipeline.tiny(num_classes=8).save_pretrained(d); save_label_space(d, 'shapes')
    return d


BAD_JODIFFUSION = [(['--guidance-scale', 'nan'], 'guidance_scale must be a finite number, got nan'),
                   (['--guidance-scale', 'inf'], 'guidance_scale must be a finite number, got inf'),
                   (['--guidance-scale', '-1'], 'guidance_scale must be a finite number >= 0, got -1.0'),
                   (['--steps', '0'], 'num_inference_steps must be an integer >= 1, got 0'),
                   (['--height', '48'], 'this transformer generates 32x32, got 48x32')]


@pytest.mark.parametrize('extra,msg', BAD_JODIFFUSION, ids=[' '.join(a) for a, _ in BAD_JODIFFUSION])
def test_bad_jodiffusion_options(jodiffusion_model, toy, tmp_path, capsys, extra, msg):
    "The method's own checks (`JoDiffusionPipeline.check_options`) run before the folder is made."
    args = ['generate', '--model', jodiffusion_model, '--prompts', toy / 'prompts.txt', '--num', 2, '--out', tmp_path / 'o', '--quiet', *extra]
    code, err = one_line_error(args, capsys)
    assert code == 2 and err.count('\n') == 1 and msg in err, err
    assert listing(tmp_path) == []


def test_bad_generate_folders(toy, tmp_path, capsys):
    (tmp_path / 'file').write_text('x')
    bare = tmp_path / 'bare'; ToyPipeline.tiny().save_pretrained(bare)
    (tmp_path / 'photos').mkdir(); (tmp_path / 'photos' / 'cat.jpg').write_text('x')
    before = listing(tmp_path)
    for args, msg in ((gen(toy, tmp_path / 'file', 4), 'exists and is not a folder'),
                      (gen(toy, '/proc/jodiff-out', 4), 'cannot write in /proc'),
                      (gen(toy, tmp_path / 'photos', 4), 'not empty and not a folder this command wrote'),
                      (['generate', '--model', bare, '--prompts', toy / 'prompts.txt', '--num', 2, '--out', tmp_path / 'o',
                        '--method', 'toy_method:ToyPipeline'], 'no label space known'),
                      (['generate', '--model', tmp_path / 'nowhere', '--prompts', toy / 'prompts.txt', '--num', 2, '--out', tmp_path / 'o',
                        '--method', 'toy_method:ToyPipeline'], 'not a saved pipeline')):
        code, err = one_line_error(args, capsys)
        assert code == 2 and err.count('\n') == 1 and msg in err, (args, err)
    assert listing(tmp_path) == before


BAD_SEGMENT = [(['--iters', '0'], 'iters must be >= 1'), (['--crop', 'abc'], "crop_size must be N or HxW"),
               (['--mix-ratio', '0.5'], 'needs exactly 2 train specs'), (['--augment', 'heavy'], "unknown augmentation 'heavy'")]


@pytest.mark.parametrize('extra,msg', BAD_SEGMENT, ids=[' '.join(a) for a, _ in BAD_SEGMENT])
def test_bad_segment_inputs(tmp_path, capsys, extra, msg):
    before = listing(tmp_path)
    code, err = one_line_error([*SEG, '--work-dir', tmp_path / 'w', *extra], capsys)
    assert code == 2 and err.count('\n') == 1 and msg in err, err
    assert listing(tmp_path) == before


def test_bad_segment_folders_and_eval_out(seg_reference, tmp_path, capsys):
    (tmp_path / 'file').write_text('x')
    code, err = one_line_error([*SEG, '--work-dir', tmp_path / 'file'], capsys)
    assert code == 2 and 'work dir' in err and 'exists and is not a folder' in err
    (tmp_path / 'empty').mkdir(); (tmp_path / 'empty' / 'last_checkpoint').write_text('')
    code, err = one_line_error(['segment', 'eval', '--checkpoint', tmp_path / 'empty', '--data', 'shapes:val?n=2&size=32'], capsys)
    assert code == 2 and 'no whole checkpoint in this work dir' in err, err
    code, err = one_line_error(['segment', 'eval', '--checkpoint', seg_reference[0], '--data', 'shapes:val?n=2&size=32', '--out', tmp_path], capsys)
    assert code == 2 and 'is a folder; give a file name' in err, err


def test_bad_recipe_inputs(tmp_path, capsys, monkeypatch):
    code, err = one_line_error(['recipe', '--scale', 'test', '--out', tmp_path / 'r', '--num', '0'], capsys)
    assert code == 2 and 'num must be a positive int' in err
    monkeypatch.setenv('JODIFF_SHARED', '/nonexistent')
    code, err = one_line_error(['recipe', '--data', 'camvid', '--scale', 'test', '--out', tmp_path / 'r'], capsys)
    assert code == 2 and '/nonexistent/data/camvid: CamVid directory not found' in err, err
    assert listing(tmp_path) == []                              # no recipe.json with the wrong path in it


def test_bad_model_under_accelerate_launch_is_one_line(toy, tmp_path):
    "Two processes, one bad --model: our message once (the launcher adds its own report of the failed processes)."
    acc = Path(sys.executable).parent / 'accelerate'
    cmd = [str(acc), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '-m', 'jodiff.cli', 'generate', '--method', 'toy_method:ToyPipeline', '--model', tmp_path / 'nowhere',
           '--prompts', toy / 'prompts.txt', '--num', '4', '--out', tmp_path / 'o']
    r = subprocess.run(list(map(str, cmd)), cwd=ROOT, env=dict(ENV, CUDA_VISIBLE_DEVICES=''), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert (r.stdout + r.stderr).count('jodiff generate: error:') == 1, r.stderr[-3000:]
    assert 'Traceback' not in r.stdout + r.stderr.split('jodiff generate: error:')[0]


def test_traceback_of_a_user_error_on_request(toy, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('JODIFF_TRACEBACK', '1')
    code, err = one_line_error(gen(toy, tmp_path / 'out', 0), capsys)
    assert code == 2 and err.startswith('Traceback') and err.rstrip().endswith('num must be an integer >= 1, got 0'), err
