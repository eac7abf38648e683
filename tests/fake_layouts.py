"Small fake on-disk copies of the seed papers' dataset layouts (VOC, COCO, ADE20K, Cityscapes), for loader and recipe tests."
import json
from pathlib import Path
import numpy as np
from PIL import Image

def rgb(h, w, seed=0): return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)

def save_rgb(path, h=6, w=8, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb(h, w, seed)).save(path)

def save_ids(path, ids, palette=False):
    "A mask PNG holding exactly the raw values `ids` (grey, or palette mode like VOC's SegmentationClass)."
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(ids, np.uint8))
    if palette: im.putpalette(list(np.random.default_rng(1).integers(0, 256, 768)))
    im.save(path)

def ids(h=6, w=8, values=(0, 1, 2, 255), seed=0):
    return np.random.default_rng(seed).choice(np.asarray(values, np.uint8), (h, w))

def blocks(h, w, values, seed):
    "A mask of a few rectangles of raw `values` (what a segmenter and the annotation VAE can learn from)."
    g = np.random.default_rng(seed)
    m = np.full((h, w), values[0], np.uint8)
    for v in values[1:]:
        y, x = g.integers(0, h // 2), g.integers(0, w // 2)
        m[y:y + h // 2, x:x + w // 2] = v
    return m

def make_layout(kind: str, root, n_train: int = 6, n_val: int = 3, h: int = 48, w: int = 64) -> Path:
    "A fake `kind` dataset under `root` with n_train / n_val items of h x w; returns the folder `data_root` names."
    root = Path(root)
    train, val = dict(voc=('train_aug', 'val'), coco=('train2017', 'val2017'), ade20k=('training', 'validation'),
                      cityscapes=('train', 'val'))[kind]
    values = dict(voc=(0, 3, 15), coco=(0, 1, 62), ade20k=(1, 3, 13), cityscapes=(0, 11, 13))[kind]
    items = [(split, i) for split, n in ((train, n_train), (val, n_val)) for i in range(n)]
    if kind == 'voc':
        root = root / 'VOCdevkit' / 'VOC2012'
        names = {s: [] for s in (train, val)}
        for k, (split, i) in enumerate(items):
            name = f'2007_{k:06d}'; names[split].append(name)
            save_rgb(root / 'JPEGImages' / f'{name}.jpg', h, w, k)
            m = blocks(h, w, values, k)
            save_ids(root / 'SegmentationClass' / f'{name}.png', m, palette=True); save_ids(root / 'SegmentationClassAug' / f'{name}.png', m)
        sets = root / 'ImageSets' / 'Segmentation'; sets.mkdir(parents=True, exist_ok=True)
        for s, ns in names.items(): (sets / f'{s}.txt').write_text('\n'.join(ns) + '\n')
        return root
    for k, (split, i) in enumerate(items):
        m = blocks(h, w, values, k)
        if kind == 'coco':
            save_rgb(root / 'images' / split / f'{k:012d}.jpg', h, w, k); save_ids(root / 'annotations' / 'semantic' / split / f'{k:012d}.png', m)
        elif kind == 'ade20k':
            save_rgb(root / 'ADEChallengeData2016' / 'images' / split / f'ADE_{k:08d}.jpg', h, w, k)
            save_ids(root / 'ADEChallengeData2016' / 'annotations' / split / f'ADE_{k:08d}.png', m)
        else:
            stem = f'aachen_{k:06d}_000019'
            save_rgb(root / 'leftImg8bit' / split / 'aachen' / f'{stem}_leftImg8bit.png', h, w, k)
            save_ids(root / 'gtFine' / split / 'aachen' / f'{stem}_gtFine_labelTrainIds.png', m)
    if kind == 'coco':
        for split in (train, val):
            files = sorted((root / 'images' / split).glob('*.jpg'))
            caps = dict(images=[dict(id=j, file_name=p.name) for j, p in enumerate(files)],
                        annotations=[dict(id=j, image_id=j, caption=f'a photo number {j}') for j in range(len(files))])
            (root / 'annotations' / f'captions_{split}.json').write_text(json.dumps(caps))
    return root / 'ADEChallengeData2016' if kind == 'ade20k' else root
