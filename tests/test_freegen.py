"FreeGen through the command line: `jodiff freegen stage1` trains ASR on a host, `jodiff generate --method freegen` samples with it (resumable, scored), the no-ASR ablation by an option; `jodiff freegen stage2` adds the grounding decoder."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from jodiff.data import load_dataset
from jodiff.text2image import tiny_text2image

ROOT = Path(__file__).resolve().parents[1]
JODIFF = str(Path(sys.executable).with_name('jodiff'))

def run(*args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    r = subprocess.run([JODIFF, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    if check: assert r.returncode == 0, f"jodiff {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r

@pytest.fixture(scope='module')
def stage1(tmp_path_factory):
    "(stage 1's summary, the prompts file): `jodiff freegen stage1` on a tiny saved host."
    d = tmp_path_factory.mktemp('stage1')
    tiny_text2image(0).save_pretrained(d / 'host')
    prompts = d / 'prompts.txt'
    prompts.write_text('a red circle and a blue square\na star on grass\na ring\n')
    r = run('freegen', 'stage1', '--host', str(d / 'host'), '--prompts', str(prompts), '--num', '6', '--label-space', 'shapes',
            '--out-dir', str(d / 'fg'), '--epochs', '2', '--steps', '3', '--guidance', '3', '--quiet')
    return json.loads(r.stdout.strip().splitlines()[-1]), prompts

def test_stage1_then_generate_with_and_without_asr(stage1, tmp_path):
    s, prompts = stage1
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


def test_stage2_then_generate_with_and_without_the_decoder(stage1, tmp_path):
    "Stage 2 on stage 1's pipeline: pairs, self-training rounds kept, a pipeline whose masks come from the decoder (or, switched off, from ASR)."
    s1, prompts = stage1
    common = ['--prompts', str(prompts), '--num', '6', '--steps', '3', '--guidance', '3', '--epochs', '1', '--quiet']
    bad = run('freegen', 'stage2', '--stage1', s1['pipeline'], *common, '--out-dir', str(tmp_path / 'bad'), '--classes', 'circle,nosuch', check=False)
    assert bad.returncode == 2 and "'nosuch' is not a class of 'shapes'" in bad.stderr and not (tmp_path / 'bad').exists()
    bad = run('freegen', 'stage2', '--stage1', s1['pipeline'], *common, '--out-dir', str(tmp_path / 'bad'), '--rounds', '-1', check=False)
    assert bad.returncode == 2 and 'rounds must be an int >= 0' in bad.stderr and not (tmp_path / 'bad').exists()
    out = tmp_path / 'fg2'
    r = json.loads(run('freegen', 'stage2', '--stage1', s1['pipeline'], *common, '--out-dir', str(out), '--classes', 'circle,square,star',
                       '--rounds', '1').stdout.strip().splitlines()[-1])
    assert r['classes'] == ['circle', 'square', 'star'] and len(r['mean_hardness']) == 2
    r1 = json.loads((out / 'self_training' / 'round-1' / 'round.json').read_text())
    assert len(r1['easy']) == 3 and len(r1['hard']) == 3 and len(load_dataset(f"folder:{out / 'pairs'}")) == 6
    assert json.loads((out / 'pipeline' / 'model_index.json').read_text())['grounding'][1] == 'EntityGroundingDecoder'
    before = (out / 'self_training' / 'round-1' / 'round.json').stat().st_mtime_ns
    run('freegen', 'stage2', '--stage1', s1['pipeline'], *common, '--out-dir', str(out), '--classes', 'circle,square,star', '--rounds', '1')
    assert (out / 'self_training' / 'round-1' / 'round.json').stat().st_mtime_ns == before      # finished: read back, not retrained
    gen = ['generate', '--method', 'freegen', '--prompts', str(prompts), '--num', '3', '--steps', '3', '--guidance-scale', '3', '--quiet']
    run(*gen, '--model', r['pipeline'], '--out', str(tmp_path / 'egd'), '--threshold', '0')
    run(*gen, '--model', r['pipeline'], '--out', str(tmp_path / 'no-egd'), '--use-egd', 'false')
    run(*gen, '--model', s1['pipeline'], '--out', str(tmp_path / 'stage1'))
    egd, no_egd, asr = (load_dataset(f"folder:{tmp_path / n}") for n in ('egd', 'no-egd', 'stage1'))
    assert all((no_egd[i]['mask'] == asr[i]['mask']).all() and (egd[i]['image'] == asr[i]['image']).all() for i in range(3))
    assert set(np.unique(egd[0]['mask'])) <= {1, 2} and set(np.unique(egd[1]['mask'])) == {4}     # threshold 0: every pixel an entity of its prompt
