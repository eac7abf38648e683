"Tests for the joint model and its training beyond the notebooks' lessons: text conditioning, UniDiffuser weights, learning, 2 processes."
import json, os, shutil, socket, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from dataclasses import replace
from jodiff.data import load_dataset
from jodiff.jodiffusion.joint_model import JointDiffusionTransformer, tiny_joint_transformer, tiny_unidiffuser
from jodiff.jodiffusion.train_joint import joint_loss, make_noise_scheduler, train_joint

torch.set_num_threads(1)
SPEC = "shapes:train?n=16&size=32"

def _inputs(B=2, Cm=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, 4, 4, 4, generator=g), torch.randn(B, Cm, 4, 4, generator=g), torch.randn(B, 8, 32, generator=g)

def test_text_conditions_both_outputs():
    m = tiny_joint_transformer(0).eval()
    zi, zm, txt = _inputs()
    a, b = m(zi, zm, 10, txt), m(zi, zm, 10, txt + 1)
    assert not torch.allclose(a.image_sample, b.image_sample) and not torch.allclose(a.mask_sample, b.mask_sample)

def test_from_unidiffuser_saved_and_reloaded(tmp_path):
    u = tiny_unidiffuser(0)
    u.save_pretrained(tmp_path / "unet")
    j = JointDiffusionTransformer.from_unidiffuser(tmp_path, text_dim=32, num_text_tokens=8)
    ud = u.transformer.state_dict()
    for k, v in j.transformer.state_dict().items(): assert torch.equal(v, ud[k]), k
    assert torch.equal(j.img_in.proj.weight, u.vae_img_in.proj.weight)
    assert j.config.inner_text_dim == u.config.text_dim
    j2 = JointDiffusionTransformer.from_unidiffuser(u, mask_channels=3)   # other channel count: random mask parts
    assert j2.mask_out.weight.shape[0] == 3 and j2.config.text_dim == 16
    assert j2(torch.randn(1, 4, 4, 4), torch.randn(1, 3, 4, 4), 3, torch.randn(1, 10, 16)).mask_sample.shape == (1, 3, 4, 4)

def test_training_steps_reduce_loss_on_fixed_batch():
    "A few optimiser steps lower the joint loss on a fixed batch with a fixed noise draw (the loss can learn)."
    m = tiny_joint_transformer(0)
    zi, zm, txt = _inputs(B=4)
    sched, opt = make_noise_scheduler(), torch.optim.AdamW(m.parameters(), lr=3e-3)
    loss = lambda: joint_loss(m, zi, zm, txt, torch.zeros(1, 8, 32), sched, torch.Generator().manual_seed(1), 0.0)
    with torch.no_grad(): before = loss().item()
    for _ in range(15):
        l = loss(); opt.zero_grad(); l.backward(); opt.step()
    with torch.no_grad(): after = loss().item()
    assert after < 0.9 * before, (before, after)

def test_accelerate_launch_two_cpu_processes(tmp_path):
    "`accelerate launch -m jodiff.cli joint` on 2 CPU processes: one log, 3 steps, a saved pipeline with its label space."
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]  # a free port: no clash with other runs
    acc = Path(sys.executable).parent / "accelerate"
    cmd = [str(acc), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--main_process_port", str(port), "--dynamo_backend", "no", "-m", "jodiff.cli", "joint", "--steps", "3",
           "--batch-size", "2", "--resolution", "32", "--dataset", SPEC, "--out-dir", str(tmp_path), "--no-resume", "--cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["processes"] == 2 and len(log["losses"]) == 3
    assert (tmp_path / "pipeline" / "model_index.json").exists()
    assert json.loads((tmp_path / "pipeline" / "label_space.json").read_text())["name"] == "shapes"


def test_train_joint_from_unidiffuser_with_accumulation_and_flip_crop(tmp_path):
    "The paper's training path at toy size: start from (tiny) UniDiffuser weights, 2 micro-batches a step, centre crop and flips."
    from fake_layouts import make_layout
    tiny_unidiffuser(0).save_pretrained(tmp_path / 'unidiffuser')
    root = make_layout('voc', tmp_path / 'voc')          # 48 x 64 images without captions: cropped, and captioned from their masks
    r = train_joint("tiny", "tiny", "tiny", f"voc:{root}:train_aug", tmp_path / 'run', steps=2, batch_size=2, lr=1e-3, resolution=32, init_from=tmp_path / 'unidiffuser',
                    grad_accum=2, augment='flip_crop')
    assert len(r['losses']) == 2 and all(np.isfinite(r['losses']))
    assert r['model'].config.num_layers == 3 and r['model'].config.num_attention_heads == 2   # UniDiffuser's sizes, not the defaults
    log = json.loads((tmp_path / 'run' / 'train_log.json').read_text())
    assert (log['grad_accum'], log['augment']) == (2, 'flip_crop')


def test_optimizer_names_are_checked_and_8bit_adam_names_its_package(monkeypatch):
    from jodiff.jodiffusion.train_joint import make_optimizer, train_joint
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer(p, 'adamw', 1e-3), torch.optim.AdamW)
    with pytest.raises(ValueError, match='optimizer must be one of adamw, adamw8bit'): train_joint(optimizer='sgd')
    monkeypatch.setitem(sys.modules, 'bitsandbytes', None)      # as on a machine without it
    with pytest.raises(ImportError, match="needs bitsandbytes"): make_optimizer(p, 'adamw8bit')

def test_ema_saved_and_resumed_exactly(tmp_path):
    "With `ema_decay` the saved transformer is the weights' average (not the last weights), and a run resumed from a checkpoint saves the same average."
    kw = dict(steps=6, batch_size=2, lr=1e-2, resolution=32, seed=0, ema_decay=0.9)
    full = train_joint("tiny", "tiny", "tiny", SPEC, tmp_path / "a", **kw, checkpoint_every=3)
    plain = train_joint("tiny", "tiny", "tiny", SPEC, tmp_path / "b", **{**kw, "ema_decay": None})
    assert json.loads((tmp_path / "a" / "train_log.json").read_text())["ema_decay"] == 0.9
    np.testing.assert_allclose(full["losses"], plain["losses"], rtol=1e-5)   # the average does not change training
    avg, last = (JointDiffusionTransformer.from_pretrained(str(p / "transformer")).img_out.weight for p in (tmp_path / "a", tmp_path / "b"))
    assert not torch.allclose(avg, last)
    shutil.rmtree(tmp_path / "a" / "checkpoint-6")                  # interrupted after step 3
    again = train_joint("tiny", "tiny", "tiny", SPEC, tmp_path / "a", **kw)
    assert len(again["losses"]) == 3
    torch.testing.assert_close(again["model"].img_out.weight, avg, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ema_decay"): train_joint(ema_decay=1.0)

def test_object_weight_changes_training_and_needs_a_background_class(tmp_path):
    "`object_weight` reaches the loss (other losses from the same draws), is logged, and is refused where no class is background."
    kw = dict(steps=2, batch_size=2, resolution=32, seed=0, mask_weight=1.0)
    weighted = train_joint("tiny", "tiny", "tiny", SPEC, tmp_path / "w", object_weight=4.0, **kw)
    plain = train_joint("tiny", "tiny", "tiny", SPEC, tmp_path / "p", **kw)
    assert json.loads((tmp_path / "w" / "train_log.json").read_text())["object_weight"] == 4.0
    assert np.isfinite(weighted["losses"]).all() and weighted["losses"][0] != pytest.approx(plain["losses"][0], rel=1e-6)
    ds = load_dataset(SPEC); ds.space = replace(ds.space, background=None)   # a label space like CamVid's
    with pytest.raises(ValueError, match="background class"): train_joint("tiny", "tiny", "tiny", ds, tmp_path / "x", object_weight=4.0, **kw)
    with pytest.raises(ValueError, match="needs mask_weight"): train_joint(object_weight=4.0)
    with pytest.raises(ValueError, match="object_weight must be >= 0"): train_joint(object_weight=-1.0, mask_weight=1.0)
