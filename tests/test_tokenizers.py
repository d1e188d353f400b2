"""Tests for tokenizers.py: golden fixtures (tests/fixtures/) and behaviours. Runs in seconds on CPU."""
import os
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tokenizers as T  # noqa: E402

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')

def fix(*p):
    return os.path.join(FIX, *p)

def max_rel_err(a, b):
    """max abs error relative to the reference's range (the fixtures' tolerance)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(b.max() - b.min(), 1e-12)

# -----------------------------------------------------------------------------
# mel front-end

def test_mel_matches_fixture():
    wave, sr = sf.read(fix('mel', 'input.wav'), dtype='float32')
    cfg = T.MelConfig()
    assert sr == cfg.sample_rate
    mel = T.mel_spectrogram(wave, cfg)
    ref = np.load(fix('mel', 'mel.npy'))
    assert mel.shape == ref.shape == (80, cfg.frames_all) == (80, 860)
    assert max_rel_err(mel, ref) < 1e-4
    assert mel.min() >= 0 and mel.max() <= 1
    # batched input gives the same rows
    batch = T.mel_spectrogram(np.stack([wave[:44100], wave[44100:88200]]), cfg)
    assert batch.shape == (2, 80, 171)
    assert np.allclose(batch[0], T.mel_spectrogram(wave[:44100], cfg), atol=1e-6)

def test_griffin_lim_inverse_is_close():
    cfg = T.MelConfig(clip_seconds=2.0)
    wave, _ = sf.read(fix('mel', 'input.wav'), dtype='float32')
    mel = T.mel_spectrogram(wave[:cfg.num_samples], cfg)
    audio = T.griffin_lim(mel, cfg)
    assert audio.dtype == np.float32 and audio.shape == (mel.shape[1] * cfg.hop_length,)
    mel2 = T.mel_spectrogram(audio, cfg)
    n = min(mel.shape[1], mel2.shape[1])
    err = np.abs(mel2[:, 2:n - 2] - mel[:, 2:n - 2]).mean()
    assert err < 0.03, err  # 3 dB mean error on a 100 dB scale
    # batched
    assert T.griffin_lim(mel[None, :, :20].repeat(2, 0), cfg, n_iter=2).shape == (2, 20 * cfg.hop_length)

def test_mel_bad_input():
    cfg = T.MelConfig()
    with pytest.raises(ValueError):
        T.mel_spectrogram(np.zeros((2, 2, 5000), np.float32), cfg)
    with pytest.raises(ValueError):
        T.mel_spectrogram(np.zeros(5000, np.int16), cfg)
    with pytest.raises(ValueError):
        T.griffin_lim(np.zeros((40, 10)), cfg)

# -----------------------------------------------------------------------------
# patch k-means tokenizer

def _toy_images(n=48, size=32, seed=0):
    # smooth random images in [-1, 1] so k-means has structure to find
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)
    return x * 2 - 1

def test_patch_kmeans_roundtrip_error_falls():
    x = _toy_images()
    errs = []
    for k in (2, 8, 32, 128):
        tok = T.PatchKMeansTokenizer.fit(x, k, patch=(8, 8), seed=0, iters=5)
        ids = tok.encode(x)
        assert ids.shape == (48, 16) and ids.dtype == torch.int64
        assert ids.min() >= 0 and ids.max() < k
        assert tok.grid == (4, 4) and tok.codebook_size == k
        rec = tok.decode(ids)
        assert rec.shape == x.shape
        errs.append(((rec - x) ** 2).mean().item())
    assert all(a > b for a, b in zip(errs, errs[1:])), errs

def test_patch_kmeans_deterministic_and_save_load(tmp_path):
    x = _toy_images()
    a = T.PatchKMeansTokenizer.fit(x, 16, patch=(8, 4), seed=3, iters=3)
    b = T.PatchKMeansTokenizer.fit(x, 16, patch=(8, 4), seed=3, iters=3)
    c = T.PatchKMeansTokenizer.fit(x, 16, patch=(8, 4), seed=4, iters=3)
    assert torch.equal(a.codebook, b.codebook) and not torch.equal(a.codebook, c.codebook)
    assert a.grid == (4, 8)
    path = str(tmp_path / 'tok.pt')
    a.save(path)
    torch.load(path, weights_only=True)  # loadable with no unpickling
    for spec in (path, a.describe()):
        t = T.load_tokenizer(spec)
        assert torch.equal(t.encode(x), a.encode(x))
    d = a.describe()
    assert d['type'] == 'patch_kmeans' and d['path'] == os.path.abspath(path)

def test_patch_kmeans_mel_grid():
    # a mel (B, 1, 80, 848) in [0, 1] with 16x16 patches gives the SpecVQGAN grid 5x53
    mel = torch.rand(2, 1, 80, 848)
    tok = T.PatchKMeansTokenizer.fit(mel, 8, patch=(16, 16), seed=0, iters=2)
    assert tok.grid == (5, 53) and tok.value_range == (0.0, 1.0)
    assert tok.encode(mel).shape == (2, 265)
    assert tok.decode(tok.encode(mel)).shape == mel.shape

def test_patch_kmeans_errors(tmp_path):
    x = _toy_images(n=8)
    tok = T.PatchKMeansTokenizer.fit(x, 4, patch=(8, 8), seed=0, iters=1)
    with pytest.raises(ValueError, match='expected input'):
        tok.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match='values must be in'):
        tok.encode(x * 3)
    with pytest.raises(ValueError):
        tok.decode(torch.full((1, 16), 4))
    with pytest.raises(ValueError, match='not divisible'):
        T.PatchKMeansTokenizer.fit(x, 4, patch=(5, 5))
    with pytest.raises(FileNotFoundError, match='nope.pt'):
        T.load_tokenizer(str(tmp_path / 'nope.pt'))
    bad = str(tmp_path / 'bad.pt')
    torch.save({'weights': torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match='bad.pt'):
        T.load_tokenizer(bad)

def test_check_tokenizer_matches():
    x = _toy_images(n=8)
    tok = T.PatchKMeansTokenizer.fit(x, 4, patch=(8, 8), seed=0, iters=1)
    meta = {"grid": list(tok.grid), "codebook_size": 4, "tokenizer": tok.describe()}
    T.check_tokenizer_matches(meta, tok)  # no error
    with pytest.raises(ValueError, match='codebook size'):
        T.check_tokenizer_matches(dict(meta, codebook_size=8), tok)
    with pytest.raises(ValueError, match='grid'):
        T.check_tokenizer_matches(dict(meta, grid=[2, 2]), tok)
    other = T.PatchKMeansTokenizer.fit(x, 4, patch=(8, 8), seed=1, iters=1)
    with pytest.raises(ValueError, match='fingerprint'):
        T.check_tokenizer_matches(meta, other)
