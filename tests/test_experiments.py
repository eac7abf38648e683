"Every experiment notebook runs with papermill at the smallest scale and writes its results."
import csv, json, math, os, subprocess, sys
import pytest
from pathlib import Path
from fake_layouts import make_layout

ROOT = Path(__file__).resolve().parents[1]

def run_papermill(nb, out_nb, expect_ok=True, **params):
    args = [sys.executable, '-m', 'papermill', str(ROOT / nb), str(out_nb), '--cwd', str(ROOT), '--no-progress-bar']
    for k, v in params.items(): args += ['-p', k, str(v)]
    env = dict(os.environ, HF_HUB_OFFLINE='1', MPLBACKEND='Agg', OMP_NUM_THREADS='1')
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    if expect_ok: assert r.returncode == 0, f"papermill {nb} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r

def test_table1_test_scale(tmp_path):
    run_papermill('experiments/table1.ipynb', tmp_path / 'out.ipynb', dataset='shapes', scale='test', output_dir=tmp_path, work_dir=tmp_path / 'work')
    res = tmp_path / 'shapes-test-seed0'
    rows = list(csv.reader((res / 'table1.csv').open()))
    assert rows[0] == ['setting', 'deeplabv3-r18-tiny']
    assert [r[0] for r in rows[1:]] == ['Real', 'Synthetic', 'Real+Synthetic', 'Synthetic→Real']
    work = tmp_path / 'work' / 'shapes-test-seed0' / 'segment' / 'deeplabv3-r18-tiny'
    runs = dict(real='real', syn='syn', **{'real+syn': 'real+syn', 'syn->real': 'syn-real/finetune'})
    for r, d in zip(rows[1:], runs.values()):   # each cell is the mIoU its segmenter's own evaluation wrote
        assert float(r[1]) == pytest.approx(json.loads((work / d / 'metrics.json').read_text())['mIoU'], abs=1e-4), r
    md = (res / 'table1.md').read_text()
    assert md.startswith('| Training data | deeplabv3-r18-tiny |')
    data = json.loads((res / 'table1.json').read_text())
    assert data['synthetic'].startswith('folder:') and Path(data['synthetic'][len('folder:'):]).is_dir()
    pc = data['per_class']['deeplabv3-r18-tiny/real']
    assert list(pc)[0] == 'background' and len(pc) == 8
    assert (res / 'table1.png').stat().st_size > 1000
    # the recipe's own results sit beside the table, and the synthetic set is in the generated folder format
    syn = Path(data['synthetic'][len('folder:'):])
    assert (syn / 'dataset.json').is_file() and (syn / 'captions.jsonl').is_file()
    assert len(list((syn / 'SegmentationClass').glob('*.png'))) == len(list((syn / 'JPEGImages').glob('*.jpg'))) > 0


def test_table1_voc_needs_its_root_then_runs_on_a_fake_one(tmp_path):
    "The user's own command, `-p dataset voc`: without a data root one line says what is missing; with a (fake) VOC root it writes the table."
    r = run_papermill('experiments/table1.ipynb', tmp_path / 'no-root.ipynb', expect_ok=False, dataset='voc', output_dir=tmp_path, work_dir=tmp_path / 'w')
    assert r.returncode != 0
    assert 'ValueError: recipe: --data voc needs --data-root: the folder of VOCdevkit/VOC2012' in r.stdout + r.stderr
    root = make_layout('voc', tmp_path / 'data')
    run_papermill('experiments/table1.ipynb', tmp_path / 'voc.ipynb', dataset='voc', data_root=root, scale='test', settings='real,syn',
                  output_dir=tmp_path, work_dir=tmp_path / 'work')
    rows = list(csv.reader((tmp_path / 'voc-test-seed0' / 'table1.csv').open()))
    assert [r[0] for r in rows[1:]] == ['Real', 'Synthetic'] and all(0 <= float(r[1]) <= 100 for r in rows[1:])
    data = json.loads((tmp_path / 'voc-test-seed0' / 'table1.json').read_text())
    assert len(data['per_class']['deeplabv3-r18-tiny/real']) == 21


def test_table1_plan_checks_and_writes_nothing(tmp_path):
    "`-p plan True` on a fake VOC root prints the plan (data counted, stages timed) and writes no table; a plan with problems fails in one line."
    root = make_layout('voc', tmp_path / 'data')
    out = tmp_path / 'plan.ipynb'
    run_papermill('experiments/table1.ipynb', out, dataset='voc', data_root=root, scale='test', plan=True, output_dir=tmp_path / 'res', work_dir=tmp_path / 'work')
    text = out.read_text()
    assert '## Plan: voc at test scale' in text and '| joint |' in text and 'No problems found.' in text
    assert not (tmp_path / 'res').exists() and not (tmp_path / 'work').exists()
    bad = run_papermill('experiments/table1.ipynb', tmp_path / 'bad.ipynb', expect_ok=False, dataset='voc', data_root=tmp_path / 'data',
                        scale='test', plan=True, output_dir=tmp_path / 'res', work_dir=tmp_path / 'work')
    assert bad.returncode != 0 and 'problem(s); first: train data:' in bad.stdout + bad.stderr and not (tmp_path / 'res').exists()

def test_study_reads_one_stored_record_per_lever(tmp_path):
    "The study notebook runs without rerunning anything, and every lever it defines has its stored record (check part only)."
    out = tmp_path / 'study.ipynb'
    run_papermill('experiments/study.ipynb', out, work_dir=tmp_path / 'work')
    text = out.read_text()
    assert 'not run yet: none' in text, 'a lever of experiments/study.ipynb has no stored record'
    records = [json.loads(l) for l in (ROOT / 'experiments/results/study/records.jsonl').read_text().splitlines()]
    for r in records:   # each record's headline is the mean of its own per-class IoUs
        v = [x for x in r['per_class'].values() if x is not None]   # None: a class absent from the check part
        assert r['check_mIoU'] == pytest.approx(sum(v) / len(v), abs=0.06), r['name']
    assert not (tmp_path / 'work').exists()                      # reading the records trains nothing


def test_jodiffusion_table1_test_scale(tmp_path):
    "JoDiffusion's Table 1 in miniature: every method samples the same prompts, scores each pair by its TFF, and each cell is its segmenter's own evaluation."
    run_papermill('experiments/jodiffusion_table1.ipynb', tmp_path / 'out.ipynb', dataset='shapes', scale='test', keep_best=0.5,
                  output_dir=tmp_path / 'res', work_dir=tmp_path / 'work')
    res, work = tmp_path / 'res' / 'shapes-test-seed0-keep0.5', tmp_path / 'work' / 'shapes-test-seed0'
    rows = list(csv.reader((res / 'table.csv').open()))
    assert rows[0] == ['segmenter', 'method', 'Syn', 'Real+Syn', 'tff_mean']
    assert [r[1] for r in rows[1:]] == ['Real', 'DiffuMask', 'Dataset Diffusion', 'JoDiffusion']
    seg = work / 'segment' / 'deeplabv3-r18-tiny'
    for r, m in zip(rows[2:], ('diffumask', 'dataset-diffusion', 'jodiffusion')):
        for v, c in zip(r[2:4], ('syn', 'real_syn')):
            meta = json.loads((seg / m / f'{c}-keep0.5' / 'metrics.json').read_text())
            assert float(v) == pytest.approx(meta['mIoU'], abs=1e-4), (m, c)
            assert meta['train_specs'][-1] == f"folder:{work / 'pairs' / m}?keep_best=0.5"
        scores = [json.loads(l) for l in (work / 'pairs' / m / 'scores.jsonl').read_text().splitlines()]
        assert len(scores) == 4 and all(0 <= s['tff'] <= 1 for s in scores)
        assert float(r[4]) == pytest.approx(sum(s['tff'] for s in scores) / 4, abs=1e-4)
    prompts = [[json.loads(l)['caption'] for l in (work / 'pairs' / m / 'captions.jsonl').read_text().splitlines()]
               for m in ('diffumask', 'dataset-diffusion', 'jodiffusion')]
    assert prompts[0] == prompts[1] == prompts[2]   # the same prompts, so the pairs differ only by method
    data = json.loads((res / 'results.json').read_text())
    assert all(data['seconds'][f'{m}_s_per_pair'] > 0 for m in ('diffumask', 'dataset-diffusion', 'jodiffusion'))
    assert '| JoDiffusion | 72.5 | 94% |' in (res / 'paper_beside_ours.md').read_text()
    for f in ('pairs_side_by_side.png', 'tff.png'): assert (res / f).stat().st_size > 1000
    r = run_papermill('experiments/jodiffusion_table1.ipynb', tmp_path / 'bad.ipynb', expect_ok=False, methods='diffumask,freegen',
                      output_dir=tmp_path / 'res', work_dir=tmp_path / 'work')
    assert r.returncode != 0 and "ValueError: methods: choose from diffumask, dataset-diffusion, jodiffusion, got 'diffumask,freegen'" in r.stdout + r.stderr


def test_freegen_table6_test_scale(tmp_path):
    "FreeGen's ablation in miniature: every row samples the same prompts, each cell is its segmenter's own evaluation, the open-vocab decoder never saw the unseen classes."
    run_papermill('experiments/freegen_table6.ipynb', tmp_path / 'out.ipynb', dataset='shapes', scale='test', output_dir=tmp_path / 'res', work_dir=tmp_path / 'work')
    res, work = tmp_path / 'res' / 'shapes-test-seed0', tmp_path / 'work' / 'shapes-test-seed0'
    rows = list(csv.reader((res / 'table6.csv').open()))
    names = ['astar', 'no-points', 'no-tff', 'asr', 'egd-no-st', 'egd', 'open-vocab']
    assert rows[0][:6] == ['row', 'points', 'tff', 'asr', 'egd', 'self_training'] and [r[0] for r in rows[1:]] == names
    for r in rows[1:]:
        assert float(r[6]) == pytest.approx(json.loads((work / 'segment' / r[0] / 'metrics.json').read_text())['mIoU'], abs=1e-4), r
    caps = {n: [json.loads(l)['caption'] for l in ((work / 'stage2' / 'all' / 'pairs') if n == 'asr' else (work / 'pairs' / n)).joinpath('captions.jsonl').read_text().splitlines()]
            for n in names}
    assert all(c == caps['astar'] for c in caps.values())            # the same prompts, so the rows differ only in their masks
    seen = json.loads((work / 'stage2' / 'open-vocab' / 'stage2.json').read_text())['classes']
    assert 'ring' not in seen and 'cross' not in seen and len(seen) == 5
    data = json.loads((res / 'results.json').read_text())
    assert set(data['seen_unseen']) == {'real', *names} and data['unseen'] == ['ring', 'cross']
    assert (res / 'table4_seen_unseen.md').read_text().startswith('Unseen: ring, cross.')
    assert (res / 'pairs_side_by_side.png').stat().st_size > 1000
    bad = run_papermill('experiments/freegen_table6.ipynb', tmp_path / 'bad.ipynb', expect_ok=False, rows='asr,nosuch',
                        output_dir=tmp_path / 'res2', work_dir=tmp_path / 'work2')
    assert bad.returncode != 0 and 'rows: choose from' in bad.stdout + bad.stderr and not (tmp_path / 'work2').exists()
    # Table 1 and Table 4 read the ablation's run back and add to it
    dirs = dict(dataset='shapes', scale='test', output_dir=tmp_path / 'res', work_dir=tmp_path / 'work')
    run_papermill('experiments/freegen_table1.ipynb', tmp_path / 't1.ipynb', **dirs, others='')
    t1 = json.loads((res / 'table1_results.json').read_text())
    assert list(t1['mIoU']) == ['real', 'syn', 'real+syn', 'syn->real']
    assert t1['mIoU']['real'] == pytest.approx(data['mIoU']['real']) and t1['mIoU']['syn'] == pytest.approx(data['mIoU']['egd'])   # the ablation's own segmenters
    for s, d in (('real+syn', 'egd-real+syn'), ('syn->real', 'egd-syn-real/finetune')):
        assert t1['mIoU'][s] == pytest.approx(json.loads((work / 'segment' / d / 'metrics.json').read_text())['mIoU'], abs=1e-4)
    assert [r['method'] for r in t1['beside']] == ['FreeGen stage 1 (ASR)', 'FreeGen (full)']
    rows1 = list(csv.reader((res / 'table1.csv').open()))
    assert [r[0] for r in rows1[1:]] == ['Real', 'Syn', 'Real+Syn', 'Syn→Real'] and rows1[0] == ['setting', *data['per_class']['real'], 'mIoU']
    run_papermill('experiments/freegen_table4.ipynb', tmp_path / 't4.ipynb', **dirs)
    t4 = list(csv.reader((res / 'table4.csv').open()))
    assert [r[0] for r in t4[1:]] == ['real', 'egd', 'open-vocab']
    assert float(t4[3][2]) == pytest.approx(data['seen_unseen']['open-vocab']['unseen'], abs=1e-4)
    bad = run_papermill('experiments/freegen_table1.ipynb', tmp_path / 'bad1.ipynb', expect_ok=False, **dirs, iters=7)
    assert bad.returncode != 0 and 'pass -p iters 4' in bad.stdout + bad.stderr
