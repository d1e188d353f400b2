"""Tests for tokenizers.py: golden fixtures (tests/fixtures/) and behaviours. Runs in seconds on CPU."""
import json
import os
import re
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tokenizers as T  # noqa: E402
import util  # noqa: E402

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    # on a shared 2-core machine, OpenMP threads spin-wait each other: these small models run
    # 3-5x faster in one thread. Restored afterwards so other test modules are unaffected.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

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
    ref = np.load(fix('mel', 'mel.npy'))  # made with zero padding at the edges (tests/fixtures/README.md)
    assert mel.shape == ref.shape == (80, cfg.frames_all) == (80, 860)
    assert max_rel_err(mel[:, 2:-2], ref[:, 2:-2]) < 1e-4  # the frames no padding reaches
    # the edge frames follow the release's reflect padding: librosa's own mel path, independent of ours
    import librosa
    power1 = librosa.feature.melspectrogram(y=wave, sr=sr, n_fft=1024, hop_length=256, power=1.0, n_mels=80,
                                            fmin=125, fmax=7600, center=True, pad_mode='reflect')
    edges = np.clip((20 * np.log10(np.maximum(power1, 1e-5)) - 20 + 100) / 100, 0, 1)[:, :860]
    for frames in (np.s_[:2], np.s_[-2:]):
        assert max_rel_err(mel[:, frames], edges[:, frames]) < 1e-4
    assert max_rel_err(mel[:, :2], ref[:, :2]) > 1e-2  # zero padding would not pass the line above
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

def test_mel_to_magnitude_is_librosas_nnls():
    # the fast path (librosa's L-BFGS-B would stop at its starting point) and the fallback (it would
    # iterate) both give librosa's exact result; a 10 s mel spans several of librosa's column blocks
    import librosa
    wave, _ = sf.read(fix('mel', 'input.wav'), dtype='float32')
    rng = np.random.default_rng(0)
    for cfg, mel in ((T.MelConfig(clip_seconds=2.0), None), (T.MelConfig(), None), (T.MelConfig(), rng.random((80, 848)))):
        mel = T.mel_spectrogram(wave[:cfg.num_samples], cfg) if mel is None else mel
        amp = T.mel_to_amplitude(mel)
        ref = librosa.feature.inverse.mel_to_stft(amp, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=1.0,
                                                  fmin=cfg.fmin, fmax=cfg.fmax)
        assert np.array_equal(T.mel_to_magnitude(amp, cfg), ref)

def test_griffin_lim_is_librosas_and_a_batch_is_item_by_item():
    import librosa
    cfg = T.MelConfig(clip_seconds=0.5)
    mel = np.random.default_rng(0).random((3, cfg.n_mels, 20)).astype(np.float32)
    batch = T.griffin_lim(mel, cfg, n_iter=4)
    assert batch.shape == (3, 20 * cfg.hop_length) and batch.dtype == np.float32
    for m, wave in zip(mel, batch):
        # float32 FFTs of a batch and of one item round differently on some CPUs (1e-6 of a ~2 peak
        # seen); another item's sound leaking in would be of the order of the wave itself
        assert np.abs(T.griffin_lim(m, cfg, n_iter=4) - wave).max() <= 1e-5 * np.abs(wave).max()
        S = T.mel_to_magnitude(T.mel_to_amplitude(m), cfg)
        ref = librosa.griffinlim(S, n_iter=4, hop_length=cfg.hop_length, win_length=cfg.n_fft, random_state=0)
        assert np.abs(wave[:len(ref)] - ref).max() < 1e-3 * np.abs(ref).max()  # float32 vs librosa's float64
        assert not wave[len(ref):].any()  # padded to T*hop

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
    assert d['type'] == 'patch_kmeans' and d['path'] == os.path.normpath(path)
    assert json.loads(json.dumps(d)) == d  # goes into meta.json as is

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

# -----------------------------------------------------------------------------
# VQGAN (taming layout): the image fixture, and the SpecVQGAN codebook layout at a tiny width

@pytest.fixture(scope='module')
def vqgan_image():
    return T.load_tokenizer(fix('vqgan_image', 'last.ckpt'))

def test_vqgan_image_fixture(vqgan_image):
    m = vqgan_image
    x = torch.from_numpy(np.load(fix('vqgan_image', 'input.npy')))
    pre = m.encode_features(x).numpy()
    assert max_rel_err(pre, np.load(fix('vqgan_image', 'pre_quant.npy'))) < 1e-4
    ids = m.encode(x)
    ref_ids = np.load(fix('vqgan_image', 'indices.npy'))
    assert ids.shape == (1, 256) and ids.dtype == torch.int64 and m.grid == (16, 16)
    assert (ids.numpy().reshape(ref_ids.shape) == ref_ids).mean() >= 0.99
    dec = m.decode(torch.from_numpy(ref_ids).reshape(1, -1), clamp=False).numpy()
    assert max_rel_err(dec, np.load(fix('vqgan_image', 'decoded.npy'))) < 1e-4
    d = m.describe()
    assert d['type'] == 'vqgan' and d['codebook_size'] == 128 and d['path'].endswith('last.ckpt')
    assert json.loads(json.dumps(d)) == d
    T.check_tokenizer_matches({'grid': [16, 16], 'codebook_size': 128, 'tokenizer': d}, m)

def test_vqgan_image_errors(vqgan_image, tmp_path):
    with pytest.raises(ValueError, match='expected input'):
        vqgan_image.encode(torch.zeros(1, 1, 256, 256))
    with pytest.raises(ValueError, match='values must be in'):
        vqgan_image.encode(torch.full((1, 3, 32, 32), 2.0))
    with pytest.raises(ValueError, match='ids'):
        vqgan_image.decode(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(FileNotFoundError, match='missing.ckpt'):
        T.load_tokenizer(str(tmp_path / 'missing.ckpt'))

SPEC_CFG = {'model': {'target': 'specvqgan.models.vqgan.VQModel', 'params': {
    'embed_dim': 8, 'n_embed': 16, 'ddconfig': {
        'double_z': False, 'z_channels': 8, 'resolution': 848, 'in_channels': 1, 'out_ch': 1,
        'ch': 32, 'ch_mult': [1, 1, 2, 2, 2], 'num_res_blocks': 1, 'attn_resolutions': [53],
        'dropout': 0.0}}}}

def _write_release(folder, config, state_dict):
    """Lay files out as the SpecVQGAN/taming logs do: checkpoints/last.ckpt + configs/*-project.yaml."""
    os.makedirs(folder / 'checkpoints'), os.makedirs(folder / 'configs')
    with open(folder / 'configs' / '2021-05-19T22-16-54-project.yaml', 'w') as f:
        yaml.safe_dump(config, f)
    torch.save({'state_dict': state_dict, 'global_step': 1, 'epoch': 0}, folder / 'checkpoints' / 'last.ckpt')
    return str(folder / 'checkpoints' / 'last.ckpt')

def test_vqgan_specvqgan_layout(tmp_path):
    torch.manual_seed(0)
    model = T.VQGANTokenizer(SPEC_CFG)
    # attention at resolution 53 = the last encoder level and the first decoder level
    assert len(model.encoder.down[4].attn) == 1 and len(model.encoder.down[3].attn) == 0
    assert len(model.decoder.up[4].attn) == 2 and len(model.decoder.up[0].attn) == 0
    sd = dict(model.state_dict(), **{'loss.logvar': torch.zeros(())})  # loss.* is ignored
    ckpt = _write_release(tmp_path / 'vggsound_codebook', SPEC_CFG, sd)
    for spec in (ckpt, str(tmp_path / 'vggsound_codebook')):
        tok = T.load_tokenizer(spec)
        assert tok.grid == (5, 53) and tok.size == (80, 848) and tok.codebook_size == 16
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in tok.state_dict().items())
    mel = torch.rand(1, 1, 80, 848)
    ids = tok.encode(mel)
    assert ids.shape == (1, 265) and 0 <= ids.min() and ids.max() < 16
    rec = tok.decode(ids)
    assert rec.shape == mel.shape and rec.min() >= 0 and rec.max() <= 1
    # rebuilt from its description (as sample.py does from meta.json), with the data's grid
    tok2 = T.load_tokenizer(tok.describe())
    assert tok2.grid == (5, 53) and tok2.describe() == tok.describe()
    with pytest.raises(ValueError, match='values must be in'):
        tok.encode(mel * 2 - 1)  # the tokenizer applies 2*mel-1 itself

def test_vqgan_bad_checkpoints(tmp_path):
    cfg = yaml.safe_load(open(fix('vqgan_image', 'model.yaml')))
    sd = torch.load(fix('vqgan_image', 'last.ckpt'), weights_only=True)['state_dict']
    # a key missing from the weights is named
    ck = _write_release(tmp_path / 'a', cfg, {k: v for k, v in sd.items() if k != 'quant_conv.bias'})
    with pytest.raises(ValueError, match='quant_conv.bias'):
        T.load_tokenizer(ck)
    # not a VQGAN at all (a vocoder's weights)
    ck = _write_release(tmp_path / 'b', cfg, torch.load(fix('melgan', 'best_netG.pt'), weights_only=True))
    with pytest.raises(ValueError, match='unexpected keys'):
        T.load_tokenizer(ck)
    # a config whose shapes do not match the weights
    cfg['model']['params']['n_embed'] = 256
    ck = _write_release(tmp_path / 'c', cfg, sd)
    with pytest.raises(ValueError, match='quantize.embedding.weight'):
        T.load_tokenizer(ck)
    # a checkpoint that needs unpickling (a pickled Namespace inside) is refused, not unpickled
    import argparse
    os.makedirs(tmp_path / 'd')
    torch.save({'state_dict': sd, 'hparams': argparse.Namespace(lr=1.0)}, tmp_path / 'd' / 'last.ckpt')
    with pytest.raises(ValueError, match='weights_only'):
        T.VQGANTokenizer.load(str(tmp_path / 'd' / 'last.ckpt'), fix('vqgan_image', 'model.yaml'))

# -----------------------------------------------------------------------------
# vocoders

def test_melgan_fixture():
    gen = T.load_melgan(fix('melgan', 'best_netG.pt'))
    with torch.no_grad():
        out = gen(torch.from_numpy(np.load(fix('melgan', 'input.npy')))).numpy()
    assert max_rel_err(out, np.load(fix('melgan', 'output.npy'))) < 1e-4

def test_melgan_pickled_args_yml(tmp_path):
    # the real args.yml is a python-tagged YAML Namespace: we must not unpickle it, just infer
    import shutil
    shutil.copy(fix('melgan', 'best_netG.pt'), tmp_path / 'best_netG.pt')
    (tmp_path / 'args.yml').write_text('!!python/object:argparse.Namespace\nngf: 8\nn_residual_layers: 3\n')
    gen = T.load_melgan(str(tmp_path))
    assert gen.model[1].weight.shape == (128, 80, 7)
    (tmp_path / 'args.yml').write_text('ngf: 32\n')
    with pytest.raises(ValueError, match='ngf'):
        T.load_melgan(str(tmp_path))

@pytest.mark.parametrize('resblock', ['1', '2'])
def test_hifigan(resblock, tmp_path):
    if resblock == '1':  # the released layout: reproduce the fixture
        gen = T.load_hifigan(fix('hifigan', 'generator'))
        with torch.no_grad():
            out = gen(torch.from_numpy(np.load(fix('hifigan', 'input.npy')))).numpy()
        assert max_rel_err(out, np.load(fix('hifigan', 'output.npy'))) < 1e-4
        return
    # resblock 2 (generator_v3 style): random weights saved with weight norm, loaded back
    h = json.load(open(fix('hifigan', 'config.json')))
    h.update(resblock='2', resblock_kernel_sizes=[3, 5, 7], resblock_dilation_sizes=[[1, 2], [2, 6], [3, 12]])
    ref = T.HiFiGANGenerator(h)
    with warnings.catch_warnings():  # the old API on purpose: it makes the released key names
        warnings.simplefilter('ignore', FutureWarning)
        for m in ref.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                torch.nn.utils.weight_norm(m)  # -> weight_g / weight_v
    (tmp_path / 'config.json').write_text(json.dumps(h))
    torch.save({'generator': ref.state_dict()}, tmp_path / 'g_00000001')
    gen = T.load_hifigan(str(tmp_path))
    x = torch.randn(1, 80, 12)
    with torch.no_grad():
        assert torch.allclose(gen(x), ref(x), atol=1e-6)

@pytest.mark.parametrize('change, says', [
    (dict(upsample_rates=[8, 8, 4]), '3 upsample_rates but 4 upsample_kernel_sizes'),  # zip() would drop a layer
    (dict(resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]]), '3 resblock_kernel_sizes but 2'),
    (dict(upsample_kernel_sizes=[16, 16, 4, 5]), 'minus its rate must be even'),  # output length off by one
    (dict(resblock_kernel_sizes=[3, 6, 11]), 'must be odd'),
    (dict(resblock='3'), "resblock must be '1' or '2'"),
    (dict(upsample_rates=None), 'are needed'),
])
def test_hifigan_config_lists_must_fit(tmp_path, change, says):
    """A config.json whose lists do not fit each other is refused at load, even when the weights
    were made with it (the generator would run silently wrong or fail mid-generation)."""
    h = {**json.load(open(fix('hifigan', 'config.json'))), **change}
    try:
        sd = T.HiFiGANGenerator(h).state_dict()  # weights of exactly that config, where one can be built
    except Exception:
        sd = torch.load(fix('hifigan', 'generator'), weights_only=True)['generator']
    torch.save({'generator': sd}, tmp_path / 'generator')
    (tmp_path / 'config.json').write_text(json.dumps(h))
    with pytest.raises(ValueError, match=f'config.json: .*{re.escape(says)}'):
        T.load_vocoder(str(tmp_path), T.MelConfig())

def test_truncated_file_is_told_from_a_pickled_one(tmp_path):
    import argparse
    whole = open(fix('hifigan', 'generator'), 'rb').read()
    (tmp_path / 'truncated').write_bytes(whole[:len(whole) // 2])
    (tmp_path / 'empty').write_bytes(b'')
    for name in ('truncated', 'empty'):
        with pytest.raises(ValueError, match='truncated or corrupt') as e:
            util.torch_load(str(tmp_path / name))
        assert 'weights_only=False' not in str(e.value)  # no re-saving advice for damaged bytes
    torch.save({'generator': {}, 'args': argparse.Namespace(lr=1.0)}, tmp_path / 'pickled')
    with pytest.raises(ValueError, match=r'pickled argparse.Namespace.*weights_only=False'):
        T.load_vocoder(str(tmp_path / 'pickled'), T.MelConfig())

def test_load_vocoder_and_errors(tmp_path):
    cfg = T.MelConfig()
    mel = np.random.RandomState(0).rand(2, 80, 12).astype(np.float32)
    for spec in (None, 'griffinlim', fix('melgan'), fix('hifigan', 'generator')):
        wave = T.load_vocoder(spec, cfg)(mel)
        assert wave.shape == (2, 12 * 256) and wave.dtype == np.float32
        assert np.abs(T.load_vocoder(spec, cfg)(np.ones_like(mel))).max() <= 1.0  # a loud mel: within full scale
    voc = T.load_vocoder(fix('melgan'), cfg)
    with pytest.raises(ValueError, match='mel'):
        voc(mel[:, :40])
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        voc(mel * 2 - 1)
    with pytest.raises(FileNotFoundError):
        T.load_vocoder(str(tmp_path / 'nothing'), cfg)
    with pytest.raises(ValueError, match='hop'):
        T.load_vocoder(fix('melgan'), T.MelConfig(hop_length=128))


# ----------------------------------------------------------------------------- shared helpers

def test_pixels_round_trip():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    x = T.pixels_to_tensor(pixels)
    assert x.shape == (2, 3, 4, 5) and x.min() >= -1 and x.max() <= 1
    assert (T.tensor_to_pixels(x) == pixels).all()
