"Tests of jodiff.jodiffusion.recipe: the `test`-scale recipe end to end, skipping finished stages on rerun, the CLI, bad input."
import argparse, json, shutil, time
from pathlib import Path

import numpy as np
import pytest
import torch

from jodiff.core import DataError, get_label_space, read_mask
from jodiff.data import load_dataset, shared_dir
from jodiff.jodiffusion.recipe import STAGES, RecipeConfig, run_recipe
from jodiff.jodiffusion.refinement import scaled_tau
from fake_layouts import make_layout

torch.set_num_threads(1)
QUIET = lambda m: None


@pytest.fixture(scope='module')
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('recipe') / 'run'
    t = time.perf_counter()
    s = run_recipe('shapes', out, scale='test', seed=0, log=QUIET)
    return out, s, time.perf_counter() - t


def test_outputs_exist_and_values_in_range(first_run):
    out, s, _ = first_run
    for f in ['summary.json', 'summary.md', 'generated_pairs.png', 'val_overlays.png', 'recipe.json', 'consistency.json',
              'joint/pipeline/model_index.json', 'joint/pipeline/label_space.json', 'annotation_vae/final/config.json',
              'seg_real/metrics.json', 'seg_syn/metrics.json'] + [f'stages/{k}.json' for k in STAGES]:
        assert (out / f).is_file(), f
    assert json.loads((out / 'summary.json').read_text()) == s
    for k in ('real_miou', 'syn_miou', 'pair_consistency_miou', 'vae_recon_miou'):
        assert s[k] == json.loads((out / 'stages' / {'real_miou': 'real.json', 'syn_miou': 'syn.json', 'pair_consistency_miou': 'consistency.json',
                                                     'vae_recon_miou': 'avae.json'}[k]).read_text())['mIoU' if k != 'vae_recon_miou' else 'recon_mIoU']
    assert set(s['colour_r2']) == {'synthetic', 'real', 'shuffled', 'n'} and s['colour_r2']['n'] == 4
    assert s['colour_r2']['real'] > 20, s['colour_r2']   # real pairs: objects are where their masks say
    assert 'colour R²' in (out / 'summary.md').read_text()
    assert s['syn_over_real'] == pytest.approx(s['syn_miou'] / s['real_miou'], abs=1e-4)
    assert s['generation_pairs_per_s'] > 0 and s['num_pairs'] == 4 and s['num_real_train'] == 16
    assert set(s['timings_s']) == set(STAGES) and s['total_s'] == pytest.approx(sum(s['timings_s'].values()), abs=0.2)
    cfg = RecipeConfig.preset('shapes', 'test')
    assert s['config'] == cfg.to_dict() and s['refine_tau'] == scaled_tau(cfg.resolution)
    names = load_dataset(cfg.val_spec).space.names
    assert list(s['per_class']['real']) == names and list(s['per_class']['syn']) == names
    md = (out / 'summary.md').read_text()
    assert f"| Real only (16 real pairs) | {s['real_miou']:.2f} |" in md and f"{s['syn_miou']:.2f}" in md


def test_generated_folder_is_a_dataset(first_run):
    out, s, _ = first_run
    syn = load_dataset(f"folder:{out / 'synthetic'}")
    assert len(syn) == 4 and syn.space.name == 'shapes'
    it = syn[0]
    assert it['image'].shape == (32, 32, 3) and it['mask'].shape == (32, 32) and it['mask'].max() < 8
    prompts = load_dataset('shapes:train?n=16&size=32')
    assert [syn[i]['caption'] for i in range(4)] == [prompts[i]['caption'] for i in range(4)]  # captions of the train set
    raw = read_mask(out / 'synthetic' / 'SegmentationClassRaw' / '0000000.png')
    assert raw.shape == (32, 32)  # refinement ran and kept the raw masks


def test_rerun_skips_finished_stages(first_run):
    out, s, t_first = first_run
    msgs = []
    t = time.perf_counter()
    s2 = run_recipe('shapes', out, scale='test', seed=0, log=msgs.append)
    t_again = time.perf_counter() - t
    assert s2 == s
    assert sum('skipped' in m for m in msgs) == len(STAGES) and not any('running' in m for m in msgs)
    assert t_again < t_first / 5, (t_again, t_first)


def test_interrupted_stage_is_redone(first_run, tmp_path):
    out = tmp_path / 'copy'
    shutil.copytree(first_run[0], out)
    for k in ('figures', 'consistency'): (out / 'stages' / f'{k}.json').unlink()   # as if killed during stage 6
    (out / 'val_overlays.png').unlink()
    msgs = []
    s = run_recipe('shapes', out, scale='test', seed=0, log=msgs.append)
    assert [m for m in msgs if 'running' in m] == ['[consistency] running', '[figures] running']
    assert (out / 'val_overlays.png').is_file()
    assert s['pair_consistency_miou'] == first_run[1]['pair_consistency_miou']  # same model, same data, same score


def test_cli_terminal_shows_stages_and_the_log_keeps_the_rest(first_run, capsys):
    "`jodiff recipe` prints one line per stage and the summary; the stages' tables and the libraries' notices go to run.log."
    from jodiff.cli import run
    out = first_run[0]
    s = run(['recipe', '--data', 'shapes', '--out', str(out), '--scale', 'test', '--seed', '0'])
    assert s == first_run[1]
    cap = capsys.readouterr()
    lines = [l for l in cap.out.splitlines() if l.strip()]
    assert [l for l in lines if l.startswith('== stage')] == [f'== stage {i}/7: {k}' for i, k in enumerate(STAGES, 1)]
    assert 'Synthetic / Real' in cap.out and 'Warning' not in cap.out + cap.err
    log = (out / 'run.log').read_text()
    assert 'real-only segmenter on real val' in log and '| background |' in log   # the first run's stage tables
    with pytest.raises(SystemExit) as e: run(['recipe', '--out', str(out), '--scale', 'test', '--num', '5'])
    assert e.value.code == 2 and 'num: stored 4, given 5' in capsys.readouterr().err


def test_joint_loss_settings_reach_training(first_run, tmp_path):
    "The joint stage reproduces its record with the preset's loss weighting and changes with another one."
    import dataclasses
    from jodiff.jodiffusion.recipe import stage_joint
    out = tmp_path / 'run'
    shutil.copytree(first_run[0] / 'annotation_vae', out / 'annotation_vae')
    rec = json.loads((first_run[0] / 'stages' / 'joint.json').read_text())
    cfg = RecipeConfig.preset('shapes', 'test')
    assert cfg.joint_mask_weight == RecipeConfig().joint_mask_weight == 1.0
    assert stage_joint(cfg, out)['loss_first'] == pytest.approx(rec['loss_first'], rel=1e-5)
    shutil.rmtree(out / 'joint')
    image_only = stage_joint(dataclasses.replace(cfg, joint_mask_weight=0.0), out)['loss_first']
    assert image_only != pytest.approx(rec['loss_first'], rel=1e-3)


def test_fused_tokens_reach_the_model_and_generation(first_run, tmp_path):
    "`joint_fuse` trains a one-token-per-patch joint model, and its pipeline samples pairs like the paper's layout does."
    from jodiff.jodiffusion.recipe import stage_joint, stage_generate
    out = tmp_path / 'run'
    shutil.copytree(first_run[0] / 'annotation_vae', out / 'annotation_vae')
    cfg = RecipeConfig.preset('shapes', 'test', joint_fuse=True)
    stage_joint(cfg, out)
    tr = json.loads((out / 'joint' / 'transformer' / 'config.json').read_text())
    assert tr['fuse_tokens'] is True and json.loads((first_run[0] / 'joint' / 'transformer' / 'config.json').read_text())['fuse_tokens'] is False
    g = stage_generate(cfg, out)
    assert g['generated'] == cfg.num and len(load_dataset(f"folder:{out / 'synthetic'}")) == cfg.num


@pytest.mark.skipif(not (shared_dir() / 'data' / 'camvid' / 'train.txt').is_file(), reason='no CamVid in shared/data')
def test_camvid_test_scale(tmp_path):
    s = run_recipe('camvid', tmp_path / 'cv', scale='test', log=QUIET)
    assert s['data'] == 'camvid' and s['num_pairs'] == 4 and s['train_spec'] == 'camvid:$JODIFF_SHARED/data/camvid:train?n=6'
    assert list(s['per_class']['real']) == load_dataset('camvid:$JODIFF_SHARED/data/camvid:val?n=3').space.names
    caps = json.loads((tmp_path / 'cv' / 'synthetic' / 'captions.jsonl').read_text().splitlines()[0])['caption']
    assert caps.startswith('a scene with ')  # CamVid has no captions: made from the masks
    assert (tmp_path / 'cv' / 'generated_pairs.png').is_file() and (tmp_path / 'cv' / 'val_overlays.png').is_file()


def test_avae_settings_reach_training(first_run, tmp_path):
    "The annotation VAE stage passes its width, norm, latent and loss settings on, and an 8-channel mask latent trains the joint model."
    import dataclasses
    from jodiff.jodiffusion.annotation_vae import AnnotationVAE
    from jodiff.jodiffusion.recipe import stage_avae, stage_joint
    cfg = dataclasses.replace(RecipeConfig.preset('shapes', 'test'), avae_channels=(8, 8, 16), avae_layers=2, avae_norm_groups=4,
                              avae_latent_channels=8, avae_hard_fraction=0.5)
    rec = stage_avae(cfg, tmp_path)
    log = json.loads((tmp_path / 'annotation_vae' / 'train_log.json').read_text())
    assert log['hard_fraction'] == 0.5 and rec['recon_mIoU'] is not None
    c = AnnotationVAE.from_pretrained(tmp_path / 'annotation_vae' / 'final').config
    assert (c.layers_per_block, c.norm_num_groups, c.latent_channels) == (2, 4, 8)
    j = stage_joint(cfg, tmp_path)
    assert np.isfinite(j['loss_first'])
    tr = json.loads((tmp_path / 'joint' / 'transformer' / 'config.json').read_text())
    assert tr['mask_channels'] == 8
    with pytest.raises(ValueError, match='avae_hard_fraction'): RecipeConfig.preset('shapes', 'test', avae_hard_fraction=2.0)


# ---------------------------------------------------------------- the seed papers' datasets
@pytest.mark.parametrize('kind', ['voc', 'coco', 'ade20k', 'cityscapes'])
def test_paper_dataset_at_test_scale(tmp_path, kind):
    "VOC, COCO, ADE20K and Cityscapes reach every stage: a small fake on-disk layout, tiny models, the code path of `full`."
    root = make_layout(kind, tmp_path / 'data')
    s = run_recipe(kind, tmp_path / 'run', scale='test', data_root=str(root), log=QUIET)
    assert (s['data'], s['config']['data_root'], s['num_real_train'], s['num_pairs']) == (kind, str(root), 6, 4)
    assert list(s['per_class']['real']) == get_label_space(kind).names
    assert (tmp_path / 'run' / 'synthetic' / 'dataset.json').is_file()


def test_paper_dataset_root_is_checked_first(tmp_path):
    with pytest.raises(ValueError, match=r'voc needs --data-root: the folder of VOCdevkit/VOC2012'):
        run_recipe('voc', tmp_path / 'run', scale='test', log=QUIET)
    with pytest.raises(DataError, match=r'images/training: ADE20K images directory not found; --data-root .* should be ADEChallengeData2016'):
        run_recipe('ade20k', tmp_path / 'run', scale='test', data_root=str(tmp_path), log=QUIET)
    with pytest.raises(ValueError, match=r'cityscapes has the scales test and full'):
        run_recipe('cityscapes', tmp_path / 'run', scale='small', data_root=str(tmp_path), log=QUIET)
    assert not (tmp_path / 'run').exists()                       # refused before anything is written


def test_full_scale_plan_of_a_paper_dataset(tmp_path, monkeypatch):
    "`--plan` at full scale on a (fake) VOC root: data counted, the authors' settings and hub ids listed, nothing timed on a CPU, nothing written."
    from jodiff.jodiffusion.recipe import plan_recipe, plan_markdown
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    root = make_layout('voc', tmp_path / 'data')
    p = plan_recipe('voc', tmp_path / 'run', scale='full', data_root=str(root), probe=False, num=10, processes=4)
    assert p['problems'] == [], p['problems']
    assert [r['items'] for r in p['datasets']] == [6, 3] and 'the papers train on 10582' in p['datasets'][0]['note']
    assert {k: w['id'] for k, w in p['weights'].items()} == {
        'image_codec': 'stabilityai/sd-vae-ft-mse', 'text_codec': 'openai/clip-vit-large-patch14', 'joint_init': 'thu-ml/unidiffuser-v1',
        'seg_pretrained': 'open-mmlab://resnet101_v1c'}
    joint = next(s for s in p['stages'] if s['stage'] == 'joint')
    assert '1 x 8 accum x 4 GPU = 32 a step' in joint['settings'] and 'adamw8bit' in joint['settings'] and joint['seconds'] is None
    assert p['settings']['avae_weight_decay'] == 0.05 and p['settings']['avae_grad_norm'] == 3.0 and p['settings']['joint_augment'] == 'flip_crop'
    assert 'Times not measured' in plan_markdown(p)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')                     # offline, nothing cached: each hub id is a problem
    offline = plan_recipe('voc', tmp_path / 'run', scale='full', data_root=str(root), probe=False, num=10)
    assert sum('not in the local cache' in x for x in offline['problems']) == 3, offline['problems']
    assert not (tmp_path / 'run').exists()


def test_recipe_trains_on_a_captions_file(tmp_path):
    "--captions FILE: the joint model and the prompts read the file's captions (here for a fake VOC, which has none)."
    root = make_layout('voc', tmp_path / 'data')
    names = load_dataset(f'voc:{root}:train_aug?n=6').names
    caps = tmp_path / 'caps.jsonl'
    caps.write_text(''.join(json.dumps(dict(name=n, caption=f'a photo number {k}')) + '\n' for k, n in enumerate(names)))
    s = run_recipe('voc', tmp_path / 'run', scale='test', data_root=str(root), captions=str(caps), log=QUIET)
    got = [json.loads(l)['caption'] for l in (tmp_path / 'run' / 'synthetic' / 'captions.jsonl').read_text().splitlines()]
    assert got and all(c.startswith('a photo number ') for c in got), got
    assert s['config']['captions'] == str(caps)


def test_balanced_prompts_reach_generation(first_run, tmp_path):
    "With `balance_prompts` the generated pairs' captions are the balanced draw of the training captions, in order."
    import dataclasses
    from jodiff.jodiffusion.recipe import stage_generate
    from jodiff.prompts import balanced_prompts, prompts_for
    out = tmp_path / 'run'
    for part in ('annotation_vae', 'joint'): shutil.copytree(first_run[0] / part, out / part)
    cfg = dataclasses.replace(RecipeConfig.preset('shapes', 'test'), balance_prompts=True, num=6)
    assert stage_generate(cfg, out)['generated'] == 6
    want = balanced_prompts(prompts_for(cfg.joint_data()), load_dataset(cfg.train_spec).space, 6, seed=cfg.seed)
    got = [json.loads(l)['caption'] for l in (out / 'synthetic' / 'captions.jsonl').read_text().splitlines()]
    assert got == want and want != prompts_for(cfg.joint_data())[:6]


def test_keep_best_trains_the_synthetic_segmenter_on_the_stablest_pairs(first_run, tmp_path):
    "With `keep_best` the synthetic-only segmenter trains on that fraction of the pairs, lowest TFF first; the summary says so."
    import dataclasses, math
    from jodiff.jodiffusion.recipe import stage_syn, summarize, summary_markdown
    out = tmp_path / 'run'
    shutil.copytree(first_run[0] / 'synthetic', out / 'synthetic')
    cfg = dataclasses.replace(RecipeConfig.preset('shapes', 'test'), keep_best=0.5)
    rec = stage_syn(cfg, out)
    spec = json.loads((out / 'seg_syn' / 'metrics.json').read_text())['train_specs'][-1]
    assert spec == f"folder:{out / 'synthetic'}?keep_best=0.5"
    tff = sorted((json.loads(l)['tff'], json.loads(l)['name']) for l in (out / 'synthetic' / 'scores.jsonl').read_text().splitlines())
    kept = load_dataset(spec).names
    assert len(kept) == math.ceil(cfg.num / 2) < cfg.num and set(kept) == {n for _, n in tff[:len(kept)]}
    records = {k: json.loads((first_run[0] / 'stages' / f'{k}.json').read_text()) for k in STAGES if k != 'syn'}
    s = summarize(cfg, dict(records, syn=dict(rec, seconds=0.0)))   # run_stage adds the seconds
    assert f"Synthetic only ({len(kept)} of {cfg.num} generated pairs, lowest TFF)" in summary_markdown(s)
    with pytest.raises(ValueError, match='keep_best'): RecipeConfig.preset('shapes', 'test', keep_best=0)
