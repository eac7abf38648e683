"FreeGen stage 1 through the command line: `jodiff freegen stage1` trains ASR on a host, `jodiff generate --method freegen` samples with it (resumable, scored), the no-ASR ablation by an option."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
from jodiff.data import load_dataset
from jodiff.text2image import tiny_text2image

ROOT = Path(__file__).resolve().parents[1]
JODIFF = str(Path(sys.executable).with_name('jodiff'))

def run(*args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    r = subprocess.run([JODIFF, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    if check: assert r.returncode == 0, f"jodiff {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r

def test_stage1_then_generate_with_and_without_asr(tmp_path):
    tiny_text2image(0).save_pretrained(tmp_path / 'host')
    prompts = tmp_path / 'prompts.txt'
    prompts.write_text('a red circle and a blue square\na star on grass\na ring\n')
    r = run('freegen', 'stage1', '--host', str(tmp_path / 'host'), '--prompts', str(prompts), '--num', '6', '--label-space', 'shapes',
            '--out-dir', str(tmp_path / 'fg'), '--epochs', '2', '--steps', '3', '--guidance', '3', '--quiet')
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert (s['with_entities'], s['kept']) == (6, 3)
    model = s['pipeline']
    args = ['generate', '--method', 'freegen', '--model', model, '--prompts', str(prompts), '--num', '4', '--steps', '3',
            '--guidance-scale', '3', '--batch-size', '2', '--quiet']
    first = json.loads(run(*args, '--out', str(tmp_path / 'with')).stdout.strip().splitlines()[-1])
    assert first['generated'] == 4
    ds = load_dataset(f"folder:{tmp_path / 'with'}")
    assert len(ds) == 4 and ds.space.name == 'shapes'
    scores = [json.loads(l) for l in (tmp_path / 'with' / 'scores.jsonl').read_text().splitlines()]
    assert [x['classes'] for x in scores] == [2, 1, 1, 2] and all(0 <= x['tff'] <= 1 for x in scores)
    assert set(np.unique(ds[1]['mask'])) <= {0, 4}                       # background and star
    again = json.loads(run(*args, '--out', str(tmp_path / 'with')).stdout.strip().splitlines()[-1])
    assert (again['skipped'], again['generated']) == (4, 0)
    run(*args, '--out', str(tmp_path / 'without'), '--use-asr', 'false', '--threshold', '0.3')
    run(*args, '--out', str(tmp_path / 'with03'), '--threshold', '0.3')
    plain, rect = load_dataset(f"folder:{tmp_path / 'without'}"), load_dataset(f"folder:{tmp_path / 'with03'}")
    assert all((plain[i]['image'] == rect[i]['image']).all() for i in range(4))     # the same images: ASR changes the masks only
    bad = run(*args, '--out', str(tmp_path / 'bad'), '--threshold', '2', check=False)
    assert bad.returncode == 2 and 'threshold must be in [0, 1]' in bad.stderr and not (tmp_path / 'bad').exists()
