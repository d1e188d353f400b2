"""
The embedded default: a synthetic paired dataset whose picture decides its sound, with patch k-means
tokenizers fitted on it (no download, minutes on a CPU), and its analytic probes (class from pixels
and from the spectrum, no learned weights) that evaluate.py scores the toy with.
$ python data/toy/prepare.py            # -> data/toy (train.py config/toy.py makes it on first use)
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

import numpy as np
import soundfile as sf
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run as a script from anywhere: the repo's modules
from data import (SPLITS, _map, _warm_up, encode_images, encode_mels, is_complete, load_image,  # noqa: E402
                  modality_meta, save_meta, save_npy, save_png, save_probe_set, save_wav)
from tokenizers import (MelConfig, PatchKMeansTokenizer, griffin_lim, load_tokenizers, pixels_to_tensor,  # noqa: E402
                        tokenized_mel)
from util import report_error, repo_path  # noqa: E402

DEFAULT_OUT = repo_path(os.path.join('data', 'toy'))  # data/toy from the repo root, else its full path

# Class = (shape, colour). Colour sets the pitch, shape sets the timbre: a pure tone (square), or
# the tone with a second, quieter partial 5 mel bands above it (ring), below it (hbar) or both
# (vbar). The four pitches sit at the centres of mel bands 8, 24, 40, 56, one per 16-band row of
# audio patches, with their partials inside the same row, so every audio token shows the class.
# The class must explain most of every token, or a tiny model spends its few minutes on nuisance
# detail and never learns to use the other modality; and the sound must not need all its tokens
# right to be heard as its class (docs/LOG.md: the designs that failed). So the shapes fill most of the picture near its middle on a plain grey, the sound is one
# steady note, and level, pitch and start vary only a little, over near-silence.

TOY_SIZE, TOY_MEL = 64, MelConfig(clip_seconds=2.0, frames=160)   # 64 px; 80 x 160 mel (1.86 s)
TOY_SHAPES = ('square', 'ring', 'hbar', 'vbar')
TOY_COLOURS = {'red': (1.0, 0.15, 0.1), 'yellow': (1.0, 0.85, 0.1),
               'green': (0.1, 0.8, 0.2), 'blue': (0.15, 0.35, 1.0)}
TOY_HUES = (0.0, 50.0, 125.0, 225.0)                       # hue of each colour, degrees
TOY_PITCHES = (441.0, 1002.0, 1788.0, 3189.0)              # Hz, one per colour: mel bands 8, 24, 40, 56
TOY_PARTIALS = ((265.0, 616.0), (827.0, 1201.0), (1492.0, 2142.0), (2662.0, 3822.0))  # 5 bands below, above
TOY_TIMBRES = ((), (1,), (0,), (0, 1))                     # per shape: which partials sound (0 below, 1 above)
TOY_PARTIAL_GAIN, TOY_BAND = 0.5, 0.04                     # partial amplitude (-6 dB); probe band +-4%
TOY_CLASSES = [f'{c} {s}' for s in TOY_SHAPES for c in TOY_COLOURS]  # label = 4 * shape + colour
TOY_SQUARE, TOY_RING, TOY_RING_WIDTH = (40, 54), (48, 58), (10, 14)   # px: side, diameter, ring width
TOY_BAR = ((16, 22), (54, 60))                             # px: short and long side
TOY_CENTRE_JITTER, TOY_GREY = 4, (0.15, 0.16)              # px from the middle; background grey level
TOY_BRIGHTNESS, TOY_PIXEL_NOISE = (0.9, 1.0), 0.01         # shape colour scale; pixel noise std
TOY_LEVEL_DB, TOY_NOISE_DB = (-11, -10), (-92, -90)        # tone level and noise floor, dB full scale
TOY_DETUNE, TOY_START = 0.005, (0.05, 0.06)                # relative pitch; note onset, s

def toy_image(rng, label):
    """-> uint8 (64, 64, 3): a big coloured shape near the middle on a plain grey."""
    shape, colour = divmod(label, 4)
    img = np.full((TOY_SIZE, TOY_SIZE, 3), rng.uniform(*TOY_GREY), np.float32)
    h = w = rng.uniform(*TOY_SQUARE) if shape == 0 else rng.uniform(*TOY_RING)
    if shape >= 2:  # bars: horizontal (2) or vertical (3)
        h, w = rng.uniform(*TOY_BAR[0]), rng.uniform(*TOY_BAR[1])
        h, w = (h, w) if shape == 2 else (w, h)
    c, j = TOY_SIZE / 2, TOY_CENTRE_JITTER  # the centre: near the middle, the whole shape inside
    cy = rng.uniform(max(h / 2 + 2, c - j), min(TOY_SIZE - h / 2 - 2, c + j))
    cx = rng.uniform(max(w / 2 + 2, c - j), min(TOY_SIZE - w / 2 - 2, c + j))
    yy, xx = np.mgrid[:TOY_SIZE, :TOY_SIZE] + 0.5
    if shape == 1:
        r = np.hypot(yy - cy, xx - cx)
        mask = (r <= h / 2) & (r >= h / 2 - rng.uniform(*TOY_RING_WIDTH))
    else:
        mask = (abs(yy - cy) <= h / 2) & (abs(xx - cx) <= w / 2)
    img[mask] = np.array(list(TOY_COLOURS.values())[colour]) * rng.uniform(*TOY_BRIGHTNESS)
    img += rng.normal(0, TOY_PIXEL_NOISE, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)

def toy_wave(rng, label, cfg=TOY_MEL):
    """-> float32 (cfg.num_samples,): one steady note of the colour's pitch with the shape's partials
    (level, detune and onset jittered a little) over a faint noise floor."""
    shape, colour = divmod(label, 4)
    n, sr = cfg.num_samples, cfg.sample_rate
    t, start = np.arange(n) / sr, int(rng.uniform(*TOY_START) * sr)
    env = np.zeros(n, np.float32)
    ramp = np.arange(n - start)
    env[start:] = np.minimum(1, np.minimum(ramp, ramp[::-1]) / (0.01 * sr))  # 10 ms fades: no clicks
    detune = rng.uniform(1 - TOY_DETUNE, 1 + TOY_DETUNE)
    partials = [(TOY_PITCHES[colour], 1.0)] + [(TOY_PARTIALS[colour][k], TOY_PARTIAL_GAIN) for k in TOY_TIMBRES[shape]]
    tone = sum(g * np.sin(2 * np.pi * f * detune * t + rng.uniform(0, 2 * np.pi)) for f, g in partials)
    wave = env * tone * 10 ** (rng.uniform(*TOY_LEVEL_DB) / 20) + rng.normal(0, 10 ** (rng.uniform(*TOY_NOISE_DB) / 20), n)
    return wave.astype(np.float32)

def probe_image(images):
    """images (B, 3, H, W) in [-1, 1] -> class ids (B,). Colour: hue of the saturated pixels.
    Shape: elongation of those pixels (bars), else whether the middle is empty (ring) or full."""
    out = []
    for im in ((images.detach().cpu().float().numpy() + 1) / 2).clip(0, 1):
        mask = im.max(0) - im.min(0) > 0.3                  # the grey background is unsaturated
        if mask.sum() < 8:
            out.append(0)
            continue
        r, g, b = im[:, mask].mean(1)
        mx, mn = max(r, g, b), min(r, g, b)                  # hue of the mean colour (HSV formula)
        h = 60 * (((g - b) / (mx - mn + 1e-6)) % 6 if mx == r else
                  (b - r) / (mx - mn + 1e-6) + 2 if mx == g else (r - g) / (mx - mn + 1e-6) + 4)
        colour = int(np.argmin([abs((h - t + 180) % 360 - 180) for t in TOY_HUES]))
        ys, xs = np.nonzero(mask)
        if xs.var() > 2.5 * ys.var():
            shape = 2
        elif ys.var() > 2.5 * xs.var():
            shape = 3
        else:  # square vs ring: is the disc at the centroid (0.4 x rms radius) mostly filled?
            yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]]
            inner = np.hypot(yy - ys.mean(), xx - xs.mean()) < 0.4 * np.sqrt(ys.var() + xs.var())
            shape = 1 if mask[inner].mean() < 0.5 else 0
        out.append(4 * shape + colour)
    return torch.tensor(out, dtype=torch.long)

def probe_audio(waves, sample_rate):
    """waves (B, T) -> class ids (B,). Pitch: the strongest of the four pitch bands. Timbre: which of
    that pitch's two partials carry at least 1/20 of its power (a partial sounds at 1/4)."""
    import librosa
    waves = np.atleast_2d(np.asarray(waves, np.float32))
    if sample_rate != TOY_MEL.sample_rate:
        waves = librosa.resample(waves, orig_sr=sample_rate, target_sr=TOY_MEL.sample_rate)
    power = (np.abs(librosa.stft(waves, n_fft=1024, hop_length=TOY_MEL.hop_length)) ** 2).sum(-1)  # (B, 513)
    freqs = librosa.fft_frequencies(sr=TOY_MEL.sample_rate, n_fft=1024)
    band = lambda f: power[:, (freqs > f / (1 + TOY_BAND)) & (freqs < f * (1 + TOY_BAND))].sum(1)  # (B,)
    main = np.stack([band(p) for p in TOY_PITCHES], 1)                                 # (B, 4)
    partials = np.stack([np.stack([band(f) for f in pair], 1) for pair in TOY_PARTIALS], 1)  # (B, 4, 2)
    out = []
    for i, c in enumerate(main.argmax(1)):
        sounding = tuple(k for k in (0, 1) if partials[i, c, k] > main[i, c] / 20)
        out.append(4 * TOY_TIMBRES.index(sounding) + c)
    return torch.tensor(out, dtype=torch.long)



def _toy_batch(args):
    """Worker: items start.. of one split -> images uint8 (n, 64, 64, 3), mels (n, 80, 160)."""
    seed, split, start, labels, out = args
    rngs = [np.random.default_rng([seed, SPLITS.index(split), start + j]) for j in range(len(labels))]  # one per item
    images = np.stack([toy_image(r, l) for r, l in zip(rngs, labels)])
    waves = np.stack([toy_wave(r, l) for r, l in zip(rngs, labels)])
    for j in range(len(labels) if split != 'train' else 0):  # evaluation compares against exactly these
        save_wav(f'{out}/{split}_wav/{split}{start + j:05d}.wav', waves[j], TOY_MEL.sample_rate)
        save_png(f'{out}/{split}_frame/{split}{start + j:05d}.png', images[j])
    return images, tokenized_mel(waves, TOY_MEL)

def prepare(data_dir=DEFAULT_OUT, seed=1337, n_train=4000, n_val=400, n_test=400,
                image_codebook=32, audio_codebook=32, workers=None):
    """Make the embedded synthetic dataset, fit the patch k-means tokenizers on its train split and
    write the token format. Does nothing if data_dir already holds a complete dataset."""
    if is_complete(data_dir):
        return data_dir
    t0 = time.time()
    for d in ('val_wav', 'val_frame', 'test_wav', 'test_frame'):
        os.makedirs(f'{data_dir}/{d}', exist_ok=True)
    labels = {s: np.random.default_rng([seed, i]).permutation(np.arange(n) % len(TOY_CLASSES))  # balanced
              for i, (s, n) in enumerate(zip(SPLITS, (n_train, n_val, n_test)))}
    jobs = [(seed, s, i, labels[s][i:i + 200], data_dir) for s in SPLITS for i in range(0, len(labels[s]), 200)]
    _warm_up(TOY_MEL)
    with ProcessPoolExecutor(workers or os.cpu_count(), mp_context=mp.get_context('fork')) as pool:
        res = _map(pool, _toy_batch, jobs, data_dir)
    images = {s: np.concatenate([r[0] for j, r in zip(jobs, res) if j[1] == s]) for s in SPLITS}
    mels = {s: np.concatenate([r[1] for j, r in zip(jobs, res) if j[1] == s]) for s in SPLITS}
    print(f"toy: made {n_train}/{n_val}/{n_test} train/val/test pairs in {time.time() - t0:.0f} s, fitting tokenizers")
    image_tok = PatchKMeansTokenizer.fit(pixels_to_tensor(images['train']),
                                         image_codebook, patch=(8, 8), seed=seed)   # 8 x 8 grid
    audio_tok = PatchKMeansTokenizer.fit(torch.from_numpy(mels['train'])[:, None], audio_codebook,
                                         patch=(16, 16), seed=seed)                 # 5 x 10 grid
    image_tok.save(f'{data_dir}/tokenizer_image.pt')
    audio_tok.save(f'{data_dir}/tokenizer_audio.pt')
    save_probe_set(data_dir, images['train'], mels['train'], labels['train'])
    meta = {'name': 'toy', 'frames': 1, 'classes': TOY_CLASSES, 'probe': 'toy',
            'audio': modality_meta(audio_tok, mel=asdict(TOY_MEL)),
            'image': modality_meta(image_tok, size=TOY_SIZE), 'splits': {}}
    for s in SPLITS:
        save_npy(f'{data_dir}/{s}_audio.npy', encode_mels(audio_tok, mels[s]))
        save_npy(f'{data_dir}/{s}_image.npy', encode_images(image_tok, images[s][:, None]))
        meta['splits'][s] = {'n': len(labels[s]), 'ids': [f'{s}{i:05d}' for i in range(len(labels[s]))],
                             'labels': labels[s].tolist()}
    save_meta(data_dir, meta)
    print(f"toy: {data_dir} ready in {time.time() - t0:.0f} s")
    return data_dir

def bench(data_dir=DEFAULT_OUT, split='test', n=160):
    """Probe accuracy on real pairs and on tokenize -> decode round trips (audio through Griffin-Lim)."""
    meta = json.load(open(f'{data_dir}/meta.json'))
    cfg, ids = MelConfig(**meta['audio']['mel']), meta['splits'][split]['ids'][:n]
    labels = torch.tensor(meta['splits'][split]['labels'][:n])
    toks = load_tokenizers(meta)
    images = torch.stack([load_image(f'{data_dir}/{split}_frame/{i}.png', meta['image']['size']) for i in ids])
    waves = np.stack([sf.read(f'{data_dir}/{split}_wav/{i}.wav', dtype='float32')[0] for i in ids])
    ids_of = lambda m: torch.from_numpy(np.load(f'{data_dir}/{split}_{m}.npy')[:n].astype(np.int64))
    rt_images = toks['image'].decode(ids_of('image')[:, 0])
    rt_waves = griffin_lim(toks['audio'].decode(ids_of('audio'))[:, 0].numpy(), cfg)
    acc = lambda pred: round((pred == labels).float().mean().item(), 4)
    return {'image_real': acc(probe_image(images)), 'audio_real': acc(probe_audio(waves, cfg.sample_rate)),
            'image_roundtrip': acc(probe_image(rt_images.clamp(-1, 1))),
            'audio_roundtrip': acc(probe_audio(rt_waves, cfg.sample_rate))}


if __name__ == '__main__':
    p = argparse.ArgumentParser(description='the embedded synthetic dataset, tokenized')
    p.add_argument('--out', default=DEFAULT_OUT, help='output dataset folder')
    p.add_argument('--seed', type=int, default=1337)
    a = p.parse_args()
    try:
        print(f"{prepare(a.out, seed=a.seed)}: ready")
    except ValueError as e:  # a full disk, an unwritable folder: one line
        sys.exit(report_error(e))
