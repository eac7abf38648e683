"The `jodiff` command as a user runs it: subprocesses of the installed console script, checked against the library."
import json, os, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
JODIFF = [str(Path(sys.executable).with_name('jodiff'))]

def run(*args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE='1', MPLBACKEND='Agg', OMP_NUM_THREADS='1')
    r = subprocess.run(JODIFF + list(args), capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    if check and r.returncode != 0: raise AssertionError(f"jodiff {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r

def test_help_lists_the_registered_commands():
    "`jodiff --help` lists every command of every registered module (the method's too), each with its one-line help."
    from jodiff.cli import registered_commands
    out = run('--help').stdout
    listed = set(re.findall(r'^    (\w+) ', out, re.M))
    assert listed == {f.__jodiff_command__['words'][0] for f in registered_commands()}
    assert {'recipe', 'avae', 'joint'} <= listed               # JoDiffusion's, found through the entry points

def test_data_stats_prints_the_frequencies(tmp_path):
    "`jodiff data stats --json` prints what `class_frequencies` computes, and exits 0 (the console script wraps main in sys.exit)."
    from jodiff.data import class_frequencies, load_dataset
    r = run('data', 'stats', 'shapes:val?n=6&size=32', '--json')
    freq = json.loads(r.stdout[r.stdout.index('{'):])
    want = class_frequencies(load_dataset('shapes:val?n=6&size=32'), verbose=False)
    assert freq['pixels'] == want['pixels'] and freq['items'] == 6 and r.returncode == 0

def test_bad_spec_is_one_line_and_exit_2():
    r = run('data', 'stats', 'kitti:/nowhere:val', check=False)
    assert r.returncode == 2
    assert r.stderr.strip().count('\n') == 0 and "unknown kind 'kitti'" in r.stderr and 'Traceback' not in r.stderr

def test_bench_refine_and_generate():
    r = run('bench', 'refine', '--size', '96', '--n-masks', '2', '--tau', '10')
    speedup = float(re.search(r'\s(\d+)x\s', r.stdout).group(1))
    assert speedup > 2, r.stdout
    g = run('bench', 'generate', '--n', '4', '--batch-size', '2', '--steps', '2')
    row = g.stdout.strip().splitlines()[2].split('|')
    one, many = float(row[3]), float(row[4])
    assert one > 0 and many > 0 and 'jodiffusion tiny' in row[1]

def test_recipe_plan_prints_the_stages_and_refuses_a_wrong_root_in_one_line(tmp_path):
    "`jodiff recipe --plan`: the plan of a test run (exit 0, nothing written); with a wrong --data-root the plan, then one error line, exit 2."
    r = run('recipe', '--data', 'shapes', '--scale', 'test', '--out', str(tmp_path / 'run'), '--plan')
    assert '## Plan: shapes at test scale' in r.stdout and '| joint |' in r.stdout and 'No problems found.' in r.stdout
    bad = run('recipe', '--data', 'voc', '--scale', 'full', '--data-root', str(tmp_path), '--out', str(tmp_path / 'run'), '--plan', check=False)
    assert bad.returncode == 2 and '| joint |' in bad.stdout
    assert bad.stderr.strip().count('\n') == 0 and re.search(r'plan: \d+ problem\(s\); first: train data:', bad.stderr) and 'VOCdevkit/VOC2012' in bad.stderr
    assert not (tmp_path / 'run').exists()

def test_captions_writes_one_line_per_item(tmp_path):
    "`jodiff captions` with the tiny BLIP-2 on a folder without captions; `?captions=` reads them back."
    from jodiff.data import FolderWriter, load_dataset
    with FolderWriter(tmp_path / 'data', 'shapes') as w:
        for k in range(2): s = load_dataset('shapes:val?n=2&size=32')[k]; w.add(f'{k}', s['image'], s['mask'])
    r = run('captions', '--data', f'folder:{tmp_path}/data', '--out', str(tmp_path / 'caps.jsonl'), '--model', 'tiny', '--max-new-tokens', '3')
    assert json.loads(r.stdout.strip().splitlines()[-1])['captioned'] == 2
    assert all(it['caption'] for it in load_dataset(f'folder:{tmp_path}/data?captions={tmp_path}/caps.jsonl'))

def test_prompts_from_captions_classes_or_a_captioner(tmp_path):
    "`jodiff prompts`: a dataset's captions, class templates, a (tiny) captioner; an existing --out is refused before writing."
    from jodiff.prompts import captions_of, read_prompts
    run('prompts', '--data', 'shapes:train?n=3&size=32', '--out', str(tmp_path / 'a.txt'))
    assert read_prompts(tmp_path / 'a.txt') == captions_of('shapes:train?n=3&size=32')
    run('prompts', '--classes', 'camvid', '--n', '2', '--out', str(tmp_path / 'b.txt'))
    assert len(read_prompts(tmp_path / 'b.txt')) == 22
    run('prompts', '--data', 'shapes:train?n=2&size=32', '--captioner', 'tiny', '--out', str(tmp_path / 'c.txt'))
    assert len(read_prompts(tmp_path / 'c.txt')) == 2
    bad = run('prompts', '--classes', 'shapes', '--out', str(tmp_path / 'a.txt'), check=False)
    assert bad.returncode == 2 and 'exists' in bad.stderr and read_prompts(tmp_path / 'a.txt') == captions_of('shapes:train?n=3&size=32')

def test_segment_train_keep_best_filters_generated_sets_by_their_tff(tmp_path):
    "`jodiff segment train --keep-best F` trains on the most stable fraction of each generated --train folder; a fraction outside (0, 1] or a folder without scores is one line, exit 2, nothing written."
    from jodiff.generation import generate
    from jodiff.jodiffusion.pipeline import tiny_pipeline
    from jodiff.data import load_dataset
    pipe = tiny_pipeline(0, num_classes=8); pipe.set_progress_bar_config(disable=True)
    generate(pipe, ['a red circle', 'a blue square'], 4, tmp_path / 'syn', num_inference_steps=2, progress=False, label_space='shapes')
    tffs = [json.loads(l)['tff'] for l in (tmp_path / 'syn' / 'scores.jsonl').read_text().splitlines()]
    r = run('segment', 'train', '--train', f'folder:{tmp_path}/syn', '--work-dir', str(tmp_path / 'seg'), '--iters', '2', '--batch-size', '2',
            '--crop', '32', '--keep-best', '0.5', '--quiet')
    kept = load_dataset(f'folder:{tmp_path}/syn?keep_best=0.5').names
    assert len(kept) == 2 and sorted(tffs)[:2] == sorted(t for n, t in zip(load_dataset(f'folder:{tmp_path}/syn').names, tffs) if n in kept)
    ck = json.loads(r.stdout.strip().splitlines()[-1])['checkpoint']
    assert Path(ck).is_file()
    bad = run('segment', 'train', '--train', f'folder:{tmp_path}/syn', '--work-dir', str(tmp_path / 'seg2'), '--iters', '2', '--keep-best', '2', check=False)
    assert bad.returncode == 2 and 'keep_best=2' in bad.stderr and '(0, 1]' in bad.stderr and bad.stderr.strip().count('\n') == 0
    (tmp_path / 'syn' / 'scores.jsonl').unlink()
    bad = run('segment', 'train', '--train', f'folder:{tmp_path}/syn', '--work-dir', str(tmp_path / 'seg3'), '--iters', '2', '--keep-best', '0.5', check=False)
    assert bad.returncode == 2 and 'needs a TFF score' in bad.stderr and not (tmp_path / 'seg2').exists() and not (tmp_path / 'seg3').exists()
