"""Write jodiff/assets/label_spaces.json: the class names, palettes and background ids of the paper datasets.

jodiff.core reads the presets from that file, so the bottom layer never imports MMSegmentation or
MMDetection. They are copied from those libraries' dataset METAINFO (the conventions the segmenters
train with); `pytest tests/test_data.py -k presets_match` checks that the file still agrees.

    .venv/bin/python tools/label_spaces.py          # rewrite the file
"""
import json
from pathlib import Path

def from_libraries() -> dict:
    "The presets as MMSegmentation 1.x / MMDetection 3.x define them."
    from mmdet.datasets.coco import CocoDataset
    from mmseg.datasets import ADE20KDataset, CityscapesDataset, PascalVOCDataset
    out = {}
    for name, cls, bg in (('voc', PascalVOCDataset, 0), ('ade20k', ADE20KDataset, None), ('cityscapes', CityscapesDataset, None)):
        m = cls.METAINFO
        out[name] = dict(names=list(m['classes']), palette=[list(map(int, p)) for p in m['palette']], background=bg)
    m = CocoDataset.METAINFO   # COCO-semantic (the seed papers): 0 = background, then the 80 things
    out['coco'] = dict(names=['background'] + list(m['classes']), palette=[[0, 0, 0]] + [list(map(int, p)) for p in m['palette']], background=0)
    return out

if __name__ == '__main__':
    f = Path(__file__).resolve().parents[1] / 'jodiff' / 'assets' / 'label_spaces.json'
    f.write_text(json.dumps(from_libraries(), indent=None, separators=(',', ':')).replace('},"', '},\n"') + '\n')
    counts = ', '.join(f"{k} ({len(v['names'])})" for k, v in json.loads(f.read_text()).items())
    print(f"wrote {f.name}: {counts}")
