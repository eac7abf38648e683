"Tests for jodiff.data and jodiff.shapes: fake on-disk layouts for every loader, the folder format, bad inputs, real CamVid."
import json, os
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
import jodiff.data as jd
from jodiff.core import DataError, LabelSpace, get_label_space
from jodiff.data import (parse_spec, DatasetSpec, load_dataset, FolderWriter, Resize, RandomCrop, RandomFlip, Compose,
                         class_frequencies, read_jsonl)
from jodiff.shapes import render_scene, SPLIT_OFFSETS, SPLIT_SIZE, CLASSES
from fake_layouts import rgb, save_rgb, save_ids, ids

PRESET_K = dict(voc=21, coco=81, ade20k=150, cityscapes=19)

@pytest.fixture
def presets():
    "The paper presets (read from jodiff/assets/label_spaces.json; no library needed)."
    return {name: get_label_space(name) for name in PRESET_K}

def test_presets_match_mmseg_and_mmdet(presets):
    "The class lists and palettes in jodiff/assets equal those MMSegmentation / MMDetection train with (tools/label_spaces.py)."
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location('label_spaces', Path(__file__).resolve().parents[1] / 'tools' / 'label_spaces.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    for name, want in mod.from_libraries().items():
        sp = presets[name]
        assert (sp.names, sp.palette.tolist(), sp.background) == (want['names'], want['palette'], want['background']), name
    assert {n: len(presets[n].names) for n in PRESET_K} == PRESET_K

@pytest.fixture(scope='session')
def shared():
    "The shared data folder beside the repository root (or $JODIFF_SHARED); skip when absent."
    root = jd.shared_dir()
    if not (root / 'data' / 'camvid' / 'train.txt').is_file():
        pytest.skip(f"real CamVid not found at {root / 'data' / 'camvid'} (set JODIFF_SHARED to the shared folder)")
    return root

# ---------------------------------------------------------------- specs
def test_parse_spec():
    assert parse_spec('shapes:val?n=50&size=64') == DatasetSpec('shapes', None, 'val', dict(n=50, size=64))
    assert parse_spec('camvid:../shared/data/camvid:val') == DatasetSpec('camvid', '../shared/data/camvid', 'val')
    assert parse_spec('folder:out/syn') == DatasetSpec('folder', 'out/syn', None)
    assert parse_spec('voc:/data/VOCdevkit/VOC2012:train_aug').split == 'train_aug'
    assert parse_spec('coco:/data/coco:val2017').path == '/data/coco'
    assert parse_spec('ade20k:/data/ADEChallengeData2016:validation').split == 'validation'
    assert parse_spec('cityscapes:/data/cityscapes:val').split == 'val'
    for bad, msg in [('imagenet:/x', 'known kinds'), ('voc:/x:test', "split 'test'"), ('coco', 'needs a path'),
                     ('shapes:val?n=0', 'out of range'), ('shapes?x=1', "unknown option 'x'"), ('camvid:/x?size=64', 'only applies to shapes'),
                     ('', 'non-empty')]:
        with pytest.raises(DataError, match=msg.replace('?', r'\?')): parse_spec(bad)
    with pytest.raises(DataError, match='imagenet'): load_dataset('imagenet:/x')

# ---------------------------------------------------------------- loaders on fake layouts
def test_camvid_layout(tmp_path):
    raw = ids(values=(0, 5, 10, 11))
    for split, names in [('train', ['a', 'b']), ('val', ['c'])]:
        for n in names:
            save_rgb(tmp_path / split / f'{n}.png'); save_ids(tmp_path / f'{split}annot' / f'{n}.png', raw)
        (tmp_path / f'{split}.txt').write_text(''.join(f'{split}/{n}.png {split}annot/{n}.png\n' for n in names))
    # SegNet's own lists use absolute paths from its machine: the last two components are kept
    (tmp_path / 'test.txt').write_text('/SegNet/CamVid/train/a.png /SegNet/CamVid/trainannot/a.png\n')
    ds = load_dataset(f'camvid:{tmp_path}:train')
    assert ds.space.name == 'camvid' and len(ds) == 2 and ds.names == ['a', 'b']
    it = ds[1]
    assert it['image'].shape == (6, 8, 3) and it['caption'] is None and it['name'] == 'b'
    np.testing.assert_array_equal(it['mask'], np.where(raw == 11, 255, raw))
    assert len(load_dataset(f'camvid:{tmp_path}:val')) == 1 and load_dataset(f'camvid:{tmp_path}:test').names == ['a']
    (tmp_path / 'val.txt').write_text('val/c.png valannot/c.png\nval/zz.png valannot/zz.png\n')
    with pytest.raises(DataError, match=r'zz\.png.*val\.txt'): load_dataset(f'camvid:{tmp_path}:val')
    (tmp_path / 'val.txt').write_text('val/c.png\n')
    with pytest.raises(DataError, match=r"val\.txt:1: expected 'IMAGE MASK'"): load_dataset(f'camvid:{tmp_path}:val')

def test_voc_layout(tmp_path, presets):
    root = tmp_path / 'VOCdevkit' / 'VOC2012'
    cls = ids(values=(0, 3, 20, 255), seed=1); aug = ids(values=(0, 7), seed=2)
    for n in ['2007_000001', '2007_000002', '2008_000003']:
        save_rgb(root / 'JPEGImages' / f'{n}.jpg')
        save_ids(root / 'SegmentationClass' / f'{n}.png', cls, palette=True)
        save_ids(root / 'SegmentationClassAug' / f'{n}.png', aug)
    sets = root / 'ImageSets' / 'Segmentation'; sets.mkdir(parents=True)
    (sets / 'train.txt').write_text('2007_000001\n2007_000002\n'); (sets / 'val.txt').write_text('2008_000003\n')
    (sets / 'train_aug.txt').write_text('2007_000001\n2007_000002\n2008_000003\n')
    ds = load_dataset(f'voc:{root}:train')
    assert ds.space.num_classes == 21 and ds.names == ['2007_000001', '2007_000002']
    np.testing.assert_array_equal(ds[0]['mask'], cls)                     # palette indices, 255 border kept
    aug_ds = load_dataset(f'voc:{tmp_path / "VOCdevkit"}:train_aug')      # the devkit folder works too
    assert len(aug_ds) == 3
    np.testing.assert_array_equal(aug_ds[2]['mask'], aug)                 # masks from SegmentationClassAug
    assert load_dataset(f'voc:{root}:val').names == ['2008_000003']
    with pytest.raises(DataError, match=r'trainval\.txt: split list not found'): load_dataset(f'voc:{root}:trainval')

def test_coco_layout(tmp_path, presets):
    raw = ids(values=(0, 1, 80, 255), seed=3)
    for n in ['000000000139', '000000000285']:
        save_rgb(tmp_path / 'images' / 'val2017' / f'{n}.jpg')
        save_ids(tmp_path / 'annotations' / 'semantic' / 'val2017' / f'{n}.png', raw)
    caps = dict(images=[dict(id=139, file_name='000000000139.jpg'), dict(id=285, file_name='000000000285.jpg')],
                annotations=[dict(id=1, image_id=139, caption='A living room. '), dict(id=2, image_id=139, caption='A room.')])
    (tmp_path / 'annotations' / 'captions_val2017.json').write_text(json.dumps(caps))
    ds = load_dataset(f'coco:{tmp_path}:val2017')
    assert ds.space.num_classes == 81 and len(ds) == 2
    assert ds[0]['caption'] == 'A living room.' and ds[1]['caption'] is None
    np.testing.assert_array_equal(ds[1]['mask'], raw)
    (tmp_path / 'annotations' / 'captions_val2017.json').write_text('{"images": [')
    with pytest.raises(DataError, match=r'captions_val2017\.json: cannot read COCO captions'): load_dataset(f'coco:{tmp_path}:val2017')
    with pytest.raises(DataError, match=r'images/train2017: COCO images directory not found'): load_dataset(f'coco:{tmp_path}:train2017')

def test_ade20k_layout(tmp_path, presets):
    root = tmp_path / 'ADEChallengeData2016'
    raw = ids(values=(0, 1, 2, 150), seed=4)
    for n in ['ADE_val_00000001', 'ADE_val_00000002']:
        save_rgb(root / 'images' / 'validation' / f'{n}.jpg'); save_ids(root / 'annotations' / 'validation' / f'{n}.png', raw)
    ds = load_dataset(f'ade20k:{tmp_path}:validation')                    # the parent folder works too
    assert ds.space.num_classes == 150 and ds.names == ['ADE_val_00000001', 'ADE_val_00000002']
    expect = np.where(raw == 0, 255, raw.astype(int) - 1)
    np.testing.assert_array_equal(ds[0]['mask'], expect)                  # reduce zero label
    assert set(np.unique(ds[0]['mask'])) == {0, 1, 149, 255}
    save_ids(root / 'annotations' / 'validation' / 'ADE_val_00000002.png', np.full((6, 8), 200))
    with pytest.raises(DataError, match=r'ADE_val_00000002\.png \(ADE20K reduce-zero-label.*outside label space'): load_dataset(f'ade20k:{root}:validation')[1]

def test_cityscapes_layout(tmp_path, presets):
    raw = ids(values=(0, 7, 18, 255), seed=5)
    for city, n in [('frankfurt', 'frankfurt_000000_000294'), ('lindau', 'lindau_000000_000019')]:
        save_rgb(tmp_path / 'leftImg8bit' / 'val' / city / f'{n}_leftImg8bit.png')
        save_ids(tmp_path / 'gtFine' / 'val' / city / f'{n}_gtFine_labelTrainIds.png', raw)
        save_ids(tmp_path / 'gtFine' / 'val' / city / f'{n}_gtFine_labelIds.png', np.full((6, 8), 33))   # not the one to read
    ds = load_dataset(f'cityscapes:{tmp_path}:val')
    assert ds.space.num_classes == 19 and ds.names == ['frankfurt_000000_000294', 'lindau_000000_000019']
    np.testing.assert_array_equal(ds[1]['mask'], raw)
    (tmp_path / 'gtFine' / 'val' / 'lindau' / 'lindau_000000_000019_gtFine_labelTrainIds.png').unlink()
    with pytest.raises(DataError, match=r'lindau_000000_000019_gtFine_labelTrainIds\.png: mask file'): load_dataset(f'cityscapes:{tmp_path}:val')

# ---------------------------------------------------------------- folder format
def test_folder_writer_round_trip_and_accumulate(tmp_path):
    out = tmp_path / 'syn'
    scenes = [render_scene(k, 32) for k in range(3)]
    with FolderWriter(out, 'shapes', made_by=dict(method='test', run=1)) as w:
        assert w.existing_names() == []
        for k in (1, 0):
            w.add(f's{k}', scenes[k]['image'], scenes[k]['mask'], scenes[k]['caption'], seed=np.int64(k))
    info = json.loads((out / 'dataset.json').read_text())
    assert info['num_images'] == 2 and info['made_by'] == dict(method='test', run=1)
    assert LabelSpace.from_dict(info['label_space']) == get_label_space('shapes')
    ds = load_dataset(f'folder:{out}')
    assert ds.names == ['s0', 's1'] and ds.space == get_label_space('shapes')
    for k in (0, 1):
        np.testing.assert_array_equal(ds[k]['mask'], scenes[k]['mask'])
        assert ds[k]['caption'] == scenes[k]['caption']
        assert np.abs(ds[k]['image'].astype(int) - scenes[k]['image']).mean() < 8
    assert Image.open(out / 'SegmentationClass' / 's0.png').mode == 'P'
    assert [r['seed'] for r in read_jsonl(out / 'captions.jsonl')] == [0, 1]
    # a rerun adds and overwrites, keeping what was there
    with FolderWriter(out, 'shapes', made_by=dict(method='test', run=2)) as w:
        assert w.existing_names() == ['s0', 's1']
        w.add('s2', scenes[2]['image'], scenes[2]['mask'], 'third')
    ds = load_dataset(f'folder:{out}')
    assert ds.names == ['s0', 's1', 's2'] and ds[2]['caption'] == 'third' and ds[0]['caption'] == scenes[0]['caption']
    assert json.loads((out / 'dataset.json').read_text())['num_images'] == 3
    # a torn last line (interrupted append) is ignored, a broken middle line is an error
    with open(out / 'captions.jsonl', 'a') as f: f.write('{"name": "s9", "capt')
    assert load_dataset(f'folder:{out}').names == ['s0', 's1', 's2']
    (out / 'captions.jsonl').write_text('{"name": "s0"}\nnonsense\n{"name": "s1"}\n')
    with pytest.raises(DataError, match=r'captions\.jsonl:2: not valid JSON'): load_dataset(f'folder:{out}')
    # another label space into the same folder is refused
    with pytest.raises(DataError, match='dataset.json.*cannot add samples'): FolderWriter(out, 'camvid')

def test_folder_writer_validates_before_writing(tmp_path):
    w = FolderWriter(tmp_path / 'o', 'camvid')
    img = rgb(4, 5)
    with pytest.raises(DataError, match="sample 'x'.*mask values 11"): w.add('x', img, np.full((4, 5), 11, np.uint8))
    with pytest.raises(DataError, match="sample 'x'.*differs from image"): w.add('x', img, np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match='bad sample name'): w.add('../x', img, np.zeros((4, 5), np.uint8))
    assert list((tmp_path / 'o' / 'JPEGImages').iterdir()) == [] and w.existing_names() == []
    w.add('y', img, np.full((4, 5), 255, np.uint8)); w.close()
    assert load_dataset(f'folder:{tmp_path / "o"}')[0]['mask'].max() == 255

def test_sample_complete_iff_mask_exists(tmp_path):
    with FolderWriter(tmp_path / 'o', 'shapes') as w:
        s = render_scene(0, 32); w.add('a', s['image'], s['mask'])
    save_rgb(tmp_path / 'o' / 'JPEGImages' / 'b.jpg', 32, 32)              # image written, mask never: incomplete
    assert load_dataset(f'folder:{tmp_path / "o"}').names == ['a']

# ---------------------------------------------------------------- bad inputs name the file
def test_bad_inputs_name_the_file(tmp_path):
    out = tmp_path / 'bad'
    with FolderWriter(out, 'shapes') as w:
        for k in range(4): s = render_scene(k, 32); w.add(f'n{k}', s['image'], s['mask'])
    (out / 'JPEGImages' / 'n0.jpg').write_bytes(b'\x00garbage')
    save_ids(out / 'SegmentationClass' / 'n1.png', np.zeros((16, 32)))
    save_ids(out / 'SegmentationClass' / 'n2.png', np.full((32, 32), 8))
    (out / 'SegmentationClass' / 'n3.png').write_bytes(b'not a png')
    ds = load_dataset(f'folder:{out}')
    with pytest.raises(DataError, match=r'n0\.jpg: cannot read image'): ds[0]
    with pytest.raises(DataError, match=r'n1\.png: mask is 32x16 but image .*n1\.jpg is 32x32'): ds[1]
    with pytest.raises(DataError, match=r"n2\.png: mask values 8 are outside label space 'shapes'"): ds[2]
    with pytest.raises(DataError, match=r'n3\.png: cannot read mask'): ds[3]
    with pytest.raises(DataError, match=r'n2\.png'): class_frequencies(ds.select([2]), verbose=False)
    (out / 'JPEGImages' / 'n1.jpg').unlink()
    with pytest.raises(DataError, match=r'n1\.jpg: image file of sample'): load_dataset(f'folder:{out}')
    (out / 'dataset.json').write_text('{"label_space": ')
    with pytest.raises(DataError, match=r'dataset\.json: cannot read'): load_dataset(f'folder:{out}')
    (tmp_path / 'empty' / 'SegmentationClass').mkdir(parents=True)
    (tmp_path / 'empty' / 'dataset.json').write_text(json.dumps(dict(label_space=get_label_space('shapes').to_dict())))
    with pytest.raises(DataError, match=r'empty.*SegmentationClass: no samples found \(empty split\)'): load_dataset(f'folder:{tmp_path / "empty"}')
    with pytest.raises(DataError, match=r'nowhere: dataset folder directory not found'): load_dataset(f'folder:{tmp_path / "nowhere"}')
    (tmp_path / 'cv').mkdir(); (tmp_path / 'cv' / 'train.txt').write_text('\n')
    with pytest.raises(DataError, match=r'train\.txt: no samples found'): load_dataset(f'camvid:{tmp_path / "cv"}')

# ---------------------------------------------------------------- shapes
def test_shapes_deterministic_and_disjoint():
    a, b = render_scene(123, 64), render_scene(123, 64)
    np.testing.assert_array_equal(a['image'], b['image']); np.testing.assert_array_equal(a['mask'], b['mask'])
    assert a['caption'] == b['caption'] and not np.array_equal(a['mask'], render_scene(124, 64)['mask'])
    sets = {s: load_dataset(f'shapes:{s}') for s in SPLIT_OFFSETS}
    assert [len(sets[s]) for s in ('train', 'val', 'test')] == [2000, 200, 200]
    seeds = {s: {r['seed'] for r in d.records} for s, d in sets.items()}
    for s, off in SPLIT_OFFSETS.items(): assert min(seeds[s]) >= off and max(seeds[s]) < off + SPLIT_SIZE
    assert not (seeds['train'] & seeds['val'] or seeds['val'] & seeds['test'] or seeds['train'] & seeds['test'])
    ds = load_dataset('shapes:val?n=3&size=48&seed=10')
    it = ds[2]
    assert ds.names == ['shapes_1000010', 'shapes_1000011', 'shapes_1000012'] and it['image'].shape == (48, 48, 3)
    np.testing.assert_array_equal(it['mask'], render_scene(1_000_012, 48)['mask'])
    assert set(np.unique(it['mask'])) <= set(range(len(CLASSES) + 1))
    with pytest.raises(DataError, match='leaves the split'): load_dataset(f'shapes:val?seed={SPLIT_SIZE - 1}&n=2')
    with pytest.raises(ValueError, match=r'\[32, 512\]'): render_scene(0, 31)

def test_shapes_caption_matches_mask():
    for seed in range(30):
        s = render_scene(seed, 96)
        assert set(np.unique(s['mask'])) - {0} == {CLASSES.index(o['kind']) + 1 for o in s['objects']}
        for o in s['objects']: assert o['colour'] in s['caption']
        assert s['caption'].endswith(' on ' + s['background'])

# ---------------------------------------------------------------- transforms, subsets, frequencies
def test_transforms_and_subsets(tmp_path):
    ds = load_dataset('shapes:val?n=3&size=64')
    aug = Compose([Resize((40, 50)), RandomFlip(), RandomCrop(48)], seed=3)
    a = ds.with_transform(aug)[0]
    b = ds.with_transform(Compose([Resize((40, 50)), RandomFlip(), RandomCrop(48)], seed=3))[0]
    np.testing.assert_array_equal(a['mask'], b['mask'])
    assert a['mask'].shape == (48, 48) and a['image'].shape == (48, 48, 3)
    assert (a['mask'] == 255).sum() == 48 * 48 - 40 * 48                    # padded rows are ignore
    assert ds[0]['mask'].shape == (64, 64)                                   # the original is untouched
    assert load_dataset('shapes:val?n=3&size=64', transform=Resize(32))[0]['mask'].shape == (32, 32)
    out = tmp_path / 'f'
    with FolderWriter(out, 'shapes') as w:
        for k in range(5): s = render_scene(k, 32); w.add(f'{k}', s['image'], s['mask'])
    sub = load_dataset(f'folder:{out}?n=3&seed=7')
    assert sub.names == [str(k) for k in np.random.default_rng(7).permutation(5)[:3]]
    assert load_dataset(f'folder:{out}?n=2').names == ['0', '1']

def test_class_frequencies_counts_pixels():
    ds = load_dataset('shapes:train?n=5&size=32')
    f = class_frequencies(ds, verbose=False)
    counts = np.bincount(np.concatenate([render_scene(k, 32)['mask'].ravel() for k in range(5)]), minlength=8)
    assert list(f['pixels'].values()) == counts.tolist() and f['total'] == 5 * 32 * 32 and f['ignore'] == 0
    assert abs(sum(f['fraction'].values()) - 1) < 1e-9
    assert class_frequencies(ds, max_items=2, verbose=False)['items'] == 2

# ---------------------------------------------------------------- real CamVid
def test_real_camvid(shared, capsys):
    tr, va = load_dataset('camvid:$JODIFF_SHARED/data/camvid:train'), load_dataset('camvid:$JODIFF_SHARED/data/camvid:val')
    assert (len(tr), len(va)) == (367, 101)
    it = va[0]
    assert it['image'].shape == (360, 480, 3) and it['mask'].shape == (360, 480)
    for name, ds in (('train', tr), ('val', va)):
        f = class_frequencies(ds, verbose=False)
        with capsys.disabled(): print(f'\nCamVid {name}\n' + jd.frequency_table(f))
        assert f['total'] == len(ds) * 360 * 480 and f['ignore'] > 0         # void (11) became ignore
        assert abs(sum(f['fraction'].values()) - 1) < 1e-9 and min(f['pixels'].values()) > 0
        assert max(f['fraction'], key=f['fraction'].get) in ('road', 'building')

def test_shapes_easy_level():
    "`level=easy`: 1-3 larger objects, its own scene names; 'hard' stays the default world; bad levels are refused."
    easy = load_dataset('shapes:val?n=40&size=64&level=easy')
    hard = load_dataset('shapes:val?n=40&size=64')
    assert easy.names[0] == 'shapes-easy_1000000' and hard.names[0] == 'shapes_1000000'
    np.testing.assert_array_equal(hard[3]['mask'], render_scene(1_000_003, 64)['mask'])
    np.testing.assert_array_equal(easy[3]['mask'], render_scene(1_000_003, 64, level='easy')['mask'])
    scenes = [render_scene(1_000_000 + i, 64, level='easy') for i in range(40)]
    assert all(1 <= len(s['objects']) <= 3 for s in scenes)
    px = lambda ss: np.mean([o['pixels'] for s in ss for o in s['objects']])
    assert px(scenes) > 1.5 * px([render_scene(1_000_000 + i, 64) for i in range(40)])
    assert str(parse_spec('shapes:val?n=4&level=easy')) == 'shapes:val?n=4&level=easy'
    with pytest.raises(DataError, match='known levels: hard, easy'): parse_spec('shapes:val?level=medium')
    with pytest.raises(DataError, match='only applies to shapes'): parse_spec('camvid:/x:val?level=easy')
    with pytest.raises(ValueError, match='medium'): render_scene(0, 64, level='medium')


def test_captions_file_needs_only_the_items_the_other_options_keep(shared, tmp_path):
    "A captions file for one CamVid sequence serves a spec that keeps that sequence (`prefix`, `exclude`, `n`), whatever the option order."
    base = f"camvid:{shared / 'data' / 'camvid'}:train"
    kept = load_dataset(f'{base}?prefix=0006R0')
    (tmp_path / 'caps.jsonl').write_text(''.join(json.dumps(dict(name=n, caption=f'frame {n}')) + '\n' for n in kept.names))
    for spec in (f'{base}?prefix=0006R0&captions={tmp_path}/caps.jsonl', f'{base}?captions={tmp_path}/caps.jsonl&exclude=0001TP,0016E5'):
        ds = load_dataset(spec)
        assert ds.names == kept.names and [r['caption'] for r in ds.records] == [f'frame {n}' for n in kept.names]
    assert len(load_dataset(f'{base}?prefix=0006R0&n=5&captions={tmp_path}/caps.jsonl')) == 5
    with pytest.raises(DataError, match='no caption for 266 of the 367 items'): load_dataset(f'{base}?captions={tmp_path}/caps.jsonl')
