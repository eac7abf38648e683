"Tests for jodiff.pipeline: shapes, per-sample seeds, CFG, save/load round trip."
import numpy as np, pytest, torch
from diffusers import DDIMScheduler
from jodiff.pipeline import JoDiffusionPipeline, tiny_pipeline

torch.set_num_threads(1)
P = ["a red circle", "a blue square", "a yellow star"]

@pytest.fixture(scope="module")
def pipe():
    p = tiny_pipeline(0); p.set_progress_bar_config(disable=True); return p

def test_shapes_and_types(pipe):
    o = pipe(P, num_inference_steps=2, seeds=[1, 2, 3])
    assert o.images.shape == (3, 32, 32, 3) and o.images.dtype == np.uint8
    assert o.masks.shape == (3, 32, 32) and o.masks.dtype == np.uint8
    assert o.masks.max() < pipe.annotation_vae.config.n_classes and o.seeds == [1, 2, 3]
    pil = pipe(P[0], num_inference_steps=2, seeds=[1], output_type="pil").images[0]
    np.testing.assert_array_equal(np.asarray(pil), o.images[0])

def test_seeds_determinism_and_batch_independence(pipe):
    a = pipe(P, num_inference_steps=3, seeds=[1, 2, 3])
    b = pipe(P, num_inference_steps=3, seeds=[1, 2, 3])
    np.testing.assert_array_equal(a.images, b.images); np.testing.assert_array_equal(a.masks, b.masks)
    alone = pipe(P[2], num_inference_steps=3, seeds=[3])
    assert np.abs(alone.images[0].astype(int) - a.images[2]).max() <= 1
    assert (alone.masks[0] == a.masks[2]).mean() > 0.999
    c = pipe(P, num_inference_steps=3, seeds=[4, 5, 6])
    assert not np.array_equal(c.images, a.images)

def test_guidance_and_prompt_matter(pipe):
    a = pipe(P[0], num_inference_steps=2, seeds=[7], output_type="latent", guidance_scale=1.0).images
    b = pipe(P[0], num_inference_steps=2, seeds=[7], output_type="latent", guidance_scale=5.0).images
    c = pipe(P[1], num_inference_steps=2, seeds=[7], output_type="latent", guidance_scale=5.0).images
    assert not torch.allclose(a, b) and not torch.allclose(b, c)

def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="one seed per prompt"): pipe(P, seeds=[1])
    with pytest.raises(ValueError, match="generates 32x32"): pipe(P[0], height=64, width=64)
    with pytest.raises(ValueError, match="prompt"): pipe([])
    with pytest.raises(ValueError, match="output_type"): pipe(P[0], output_type="tensor")

def test_save_load_roundtrip_and_other_scheduler(pipe, tmp_path):
    o = pipe(P, num_inference_steps=2, seeds=[1, 2, 3])
    pipe.save_pretrained(tmp_path)
    p2 = JoDiffusionPipeline.from_pretrained(tmp_path); p2.set_progress_bar_config(disable=True)
    o2 = p2(P, num_inference_steps=2, seeds=[1, 2, 3])
    np.testing.assert_array_equal(o2.images, o.images); np.testing.assert_array_equal(o2.masks, o.masks)
    p2.scheduler = DDIMScheduler.from_config(p2.scheduler.config)
    assert p2(P[0], num_inference_steps=2, seeds=[1]).images.shape == (1, 32, 32, 3)
