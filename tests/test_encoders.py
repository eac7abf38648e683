"Tests for jodiff.encoders beyond the notebook's lessons: bad inputs, the latent scaling, loaders by path, the real taef2 weights."
import glob
import numpy as np, pytest, torch
from jodiff.data import expand_path
from jodiff.encoders import (ImageCodec, TAESDAutoencoder, TAEF2, load_image_autoencoder, load_text_encoder, psnr,
                             tensor_to_uint8, tiny_image_autoencoder, tiny_text_encoder)

torch.set_num_threads(1)
U8 = np.random.default_rng(0).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)

def test_image_codec_rejects_bad_input():
    c = ImageCodec(tiny_image_autoencoder(0))
    with pytest.raises(ValueError, match="uint8"): c.encode(U8.astype(np.float32))
    with pytest.raises(ValueError, match="latents"): c.decode(torch.zeros(1, 3, 2, 2))
    with pytest.raises(FileNotFoundError, match="does not exist"): load_image_autoencoder("$JODIFF_SHARED/no/such/vae")
    with pytest.raises(ValueError, match="strings"): tiny_text_encoder(0).encode([3])

def test_scaling_applied():
    vae = tiny_image_autoencoder(0)
    raw, scaled = ImageCodec(vae, 1.0, 0.0).encode(U8), ImageCodec(vae, 2.0, 0.5).encode(U8)
    torch.testing.assert_close(scaled, (raw - 0.5) * 2.0)

def test_bert_text_codec_save_load_by_path(tmp_path):
    t = tiny_text_encoder(1)
    t.model.save_pretrained(tmp_path); t.tokenizer.save_pretrained(tmp_path)
    t2 = load_text_encoder(tmp_path, max_length=8)
    torch.testing.assert_close(t2.encode("a blue star"), t.encode("a blue star"))

frames = sorted(glob.glob(str(expand_path("$JODIFF_SHARED/data/camvid/val/*.png"))))

@pytest.mark.skipif(not expand_path(TAEF2).is_dir() or not frames,
                    reason=f"taef2 weights or CamVid val frames not found under {expand_path('$JODIFF_SHARED')} (set JODIFF_SHARED)")
def test_taef2_roundtrip_psnr():
    from PIL import Image
    c = load_image_autoencoder("taef2")
    assert isinstance(c.vae, TAESDAutoencoder) and c.latent_channels == 32
    im = np.asarray(Image.open(frames[0]).convert("RGB"))[:128, :192].copy()
    z = c.encode(im)
    assert z.shape == (1, 32, 16, 24) and 0.6 < z.std().item() < 1.5   # scaled to about unit std
    p = psnr(im, tensor_to_uint8(c.decode(z))[0])
    assert p > 24, p   # random weights give ~10 dB
