"The Image2Mask baselines through `jodiff generate`: the same folder format, scores per sample, resumable."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
from jodiff.core import read_mask
from jodiff.data import load_dataset
from jodiff.generation import save_label_space
from jodiff.baselines.dataset_diffusion import DatasetDiffusionPipeline

ROOT = Path(__file__).resolve().parents[1]
JODIFF = str(Path(sys.executable).with_name('jodiff'))

def run(*args):
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    r = subprocess.run([JODIFF, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, f"jodiff {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r

def test_generate_dataset_diffusion_writes_scored_pairs_and_resumes(tmp_path):
    model = tmp_path / 'dd'
    DatasetDiffusionPipeline.tiny(0).save_pretrained(model); save_label_space(model, 'shapes')
    prompts = tmp_path / 'prompts.txt'
    prompts.write_text('a red circle and a blue square\na star on grass; star\n')
    args = ['generate', '--method', 'dataset-diffusion', '--model', str(model), '--prompts', str(prompts), '--num', '3',
            '--out', str(tmp_path / 'out'), '--steps', '4', '--batch-size', '2', '--quiet', '--tau', '2']
    first = json.loads(run(*args).stdout.strip().splitlines()[-1])
    assert first['generated'] == 3
    ds = load_dataset(f"folder:{tmp_path / 'out'}")
    assert len(ds) == 3 and ds.space.name == 'shapes'
    scores = [json.loads(l) for l in (tmp_path / 'out' / 'scores.jsonl').read_text().splitlines()]
    assert [s['classes'] for s in scores] == [2, 1, 2] and all(0 <= s['tff'] <= 1 for s in scores)
    assert set(np.unique(read_mask(tmp_path / 'out' / 'SegmentationClass' / '0000001.png'))) <= {0, 4, 255}
    assert json.loads((tmp_path / 'out' / 'generation.json').read_text())['tau'] == 2
    again = json.loads(run(*args).stdout.strip().splitlines()[-1])
    assert (again['skipped'], again['generated']) == (3, 0)

def test_generate_diffumask_uses_the_classes_of_each_caption(tmp_path):
    from jodiff.baselines.diffumask import DiffuMaskPipeline
    model = tmp_path / 'dm'
    DiffuMaskPipeline.tiny(0).save_pretrained(model); save_label_space(model, 'shapes')
    prompts = tmp_path / 'prompts.txt'
    prompts.write_text('a red circle\na star on grass\n')
    out = tmp_path / 'out'
    run('generate', '--method', 'diffumask', '--model', str(model), '--prompts', str(prompts), '--num', '2', '--out', str(out),
        '--steps', '3', '--quiet', '--threshold', '0.3')
    assert set(np.unique(read_mask(out / 'SegmentationClass' / '0000000.png'))) <= {0, 1}
    assert set(np.unique(read_mask(out / 'SegmentationClass' / '0000001.png'))) <= {0, 4}
    assert [json.loads(l)['classes'] for l in (out / 'scores.jsonl').read_text().splitlines()] == [1, 1]
