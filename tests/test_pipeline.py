"Tests for jodiff.jodiffusion.pipeline beyond the notebook's lessons: guidance and prompt change the sample; bad inputs."
import numpy as np, pytest, torch
from jodiff.jodiffusion.pipeline import tiny_pipeline

torch.set_num_threads(1)
P = ["a red circle", "a blue square", "a yellow star"]

@pytest.fixture(scope="module")
def pipe():
    p = tiny_pipeline(0); p.set_progress_bar_config(disable=True); return p

def test_guidance_and_prompt_matter(pipe):
    a = pipe(P[0], num_inference_steps=2, seeds=[7], output_type="latent", guidance_scale=1.0).images
    b = pipe(P[0], num_inference_steps=2, seeds=[7], output_type="latent", guidance_scale=5.0).images
    c = pipe(P[1], num_inference_steps=2, seeds=[7], output_type="latent", guidance_scale=5.0).images
    assert not torch.allclose(a, b) and not torch.allclose(b, c)
    d = pipe(P, num_inference_steps=3, seeds=[4, 5, 6]).images
    assert not np.array_equal(d, pipe(P, num_inference_steps=3, seeds=[1, 2, 3]).images)   # other seeds, other samples

def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="prompt"): pipe([])
    with pytest.raises(ValueError, match="output_type"): pipe(P[0], output_type="tensor")
