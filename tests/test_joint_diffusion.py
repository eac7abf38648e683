"Tests for jodiff.joint_diffusion: model shapes, save/load, from_unidiffuser, training, resume, 2-process launch."
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from jodiff.joint_diffusion import (JointDiffusionTransformer, joint_loss, make_noise_scheduler, tiny_joint_transformer,
                                    tiny_unidiffuser, train_joint)

torch.set_num_threads(1)
SPEC = "shapes:train?n=16&size=32"

def _inputs(B=2, Cm=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, 4, 4, 4, generator=g), torch.randn(B, Cm, 4, 4, generator=g), torch.randn(B, 8, 32, generator=g)

def test_shapes_and_bad_inputs():
    m = tiny_joint_transformer(0, mask_channels=3)
    zi, zm, txt = _inputs(Cm=3)
    o = m(zi, zm, torch.tensor([1, 999]), txt)
    assert o.image_sample.shape == zi.shape and o.mask_sample.shape == zm.shape
    with pytest.raises(ValueError, match="mask latents"): m(zi, zm[:, :2], 1, txt)
    with pytest.raises(ValueError, match="encoder_hidden_states"): m(zi, zm, 1, txt[:, :3])

def test_text_conditions_both_outputs():
    m = tiny_joint_transformer(0).eval()
    zi, zm, txt = _inputs()
    a, b = m(zi, zm, 10, txt), m(zi, zm, 10, txt + 1)
    assert not torch.allclose(a.image_sample, b.image_sample) and not torch.allclose(a.mask_sample, b.mask_sample)

def test_save_load_roundtrip(tmp_path):
    m = tiny_joint_transformer(3, mask_channels=2).eval()
    zi, zm, txt = _inputs(Cm=2)
    m.save_pretrained(tmp_path)
    m2 = JointDiffusionTransformer.from_pretrained(tmp_path).eval()
    assert m2.config.mask_channels == 2
    torch.testing.assert_close(m2(zi, zm, 5, txt).mask_sample, m(zi, zm, 5, txt).mask_sample)

def test_from_unidiffuser_saved_and_reloaded(tmp_path):
    u = tiny_unidiffuser(0)
    u.save_pretrained(tmp_path / "unet")
    j = JointDiffusionTransformer.from_unidiffuser(tmp_path, text_dim=32, num_text_tokens=8)
    ud = u.transformer.state_dict()
    for k, v in j.transformer.state_dict().items(): assert torch.equal(v, ud[k]), k
    assert torch.equal(j.img_in.proj.weight, u.vae_img_in.proj.weight)
    assert torch.equal(j.mask_in.proj.weight, u.vae_img_in.proj.weight)
    assert torch.equal(j.mask_out.weight, u.vae_img_out.weight)
    assert torch.equal(j.mask_pos_embed.detach(), u.pos_embed[:, -16:].detach())
    assert j.config.inner_text_dim == u.config.text_dim
    j2 = JointDiffusionTransformer.from_unidiffuser(u, mask_channels=3)   # other channel count: random mask parts
    assert j2.mask_out.weight.shape[0] == 3 and j2.config.text_dim == 16
    zi = torch.randn(1, 4, 4, 4)
    assert j2(zi, torch.randn(1, 3, 4, 4), 3, torch.randn(1, 10, 16)).mask_sample.shape == (1, 3, 4, 4)

def test_training_steps_reduce_loss_on_fixed_batch():
    m = tiny_joint_transformer(0)
    zi, zm, txt = _inputs(B=4)
    sched, opt = make_noise_scheduler(), torch.optim.AdamW(m.parameters(), lr=3e-3)
    loss = lambda: joint_loss(m, zi, zm, txt, torch.zeros(1, 8, 32), sched, torch.Generator().manual_seed(1), 0.0)
    with torch.no_grad(): before = loss().item()
    for _ in range(15):
        l = loss(); opt.zero_grad(); l.backward(); opt.step()
    with torch.no_grad(): after = loss().item()
    assert after < before, (before, after)

def test_train_joint_checkpoints_and_resume(tmp_path):
    kw = dict(dataset=SPEC, out_dir=tmp_path, steps=4, batch_size=2, lr=1e-3, resolution=32, seed=0, save_pipeline=False)
    r = train_joint("tiny", "tiny", "tiny", checkpoint_every=2, **kw)
    assert len(r["losses"]) == 4 and np.isfinite(r["losses"]).all()
    assert (tmp_path / "checkpoint-2").is_dir() and (tmp_path / "transformer" / "config.json").exists()
    shutil.rmtree(tmp_path / "checkpoint-4")
    r2 = train_joint("tiny", "tiny", "tiny", **kw)
    np.testing.assert_allclose(r2["losses"], r["losses"][2:], rtol=1e-4)
    with pytest.raises(ValueError, match="multiple of 8"): train_joint(resolution=30, out_dir=tmp_path / "x")

def test_accelerate_launch_two_cpu_processes(tmp_path):
    "A 2-process CPU run under `accelerate launch` (about a minute on a loaded 2-core machine)."
    import socket
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]  # free port: no clash with other runs
    acc = Path(sys.executable).parent / "accelerate"
    cmd = [str(acc), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--main_process_port", str(port),
           "--dynamo_backend", "no", "-m", "jodiff.joint_diffusion", "--steps", "3", "--batch-size", "2", "--resolution", "32",
           "--dataset", SPEC, "--out-dir", str(tmp_path), "--no-resume", "--cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["processes"] == 2 and len(log["losses"]) == 3
    assert (tmp_path / "pipeline" / "model_index.json").exists()

def test_min_snr_weighting():
    "snr_gamma scales each sample's error by min(SNR, g)/SNR: a huge g is the plain loss, a small one lowers it."
    m, s = tiny_joint_transformer(0), make_noise_scheduler()
    zi, zm, txt = _inputs(B=4)
    L = lambda g: joint_loss(m, zi, zm, txt, torch.zeros(1, 8, 32), s, torch.Generator().manual_seed(2), 0.1, 1.0, g).item()
    assert L(1e9) == pytest.approx(L(None), rel=1e-5)
    assert L(0.5) < L(5.0) <= L(None) + 1e-6

def test_train_joint_with_snr_gamma(tmp_path):
    r = train_joint("tiny", "tiny", "tiny", SPEC, tmp_path / "j", steps=3, batch_size=2, lr=1e-3, resolution=32,
                    model_kwargs=dict(num_layers=3), mask_weight=1.0, snr_gamma=5.0, save_pipeline=False)
    assert len(r["losses"]) == 3 and all(np.isfinite(r["losses"]))
