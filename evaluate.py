"""
Evaluate a trained Visual Echoes checkpoint on a test split.

$ python evaluate.py --out_dir=out-toy [--split=test] [--cfg=3 --steps=30 --panns=... --vggish=...]

Metric math and the two embedding networks follow the AudioLDM evaluation toolbox
(haoheliu/audioldm_eval, PANNs backbone "cnn14") and torchvggish, as pinned down in
tests/fixtures/metrics/README.md; tests/test_metrics.py checks them against those fixtures.
"""
import functools
import hashlib
import json
import math
import os
import time
from contextlib import contextmanager

import librosa
import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from data import dataset_maker, probe_image_input, probe_mel_input, save_png, save_text, save_wav
from model import (MODALITIES, ModelConfig, forwards_per_sample, audio_to_image, cogenerate, cross_modal_losses, image_to_audio,
                   inpaint_audio, majority_codes, masked_token_counts, random_corruption)
from report import write_pages
from sample import CHOSEN, check_numbers, generation_settings, load_trained, sampling_settings, time_range_to_columns
from tokenizers import (check_tokenizer_matches, load_vocoder, pixels_to_tensor, shift_augment, tensor_to_pixels,
                        tokenized_mel, tokens_to_wave)
from util import (WriteError, autocast_context, compile_for_generation, exit_with_error, repo_path, torch_load,
                  write_atomic)

# -----------------------------------------------------------------------------
# metric math (audioldm_eval)

def frechet_distance(x_g, x_r, eps=1e-6):
    """FD between two feature sets x_g (N, D) generated and x_r (M, D) reference."""
    mu_g, mu_r = x_g.mean(axis=0), x_r.mean(axis=0)  # in the features' dtype, as the reference
    s_g, s_r = np.cov(x_g, rowvar=False), np.cov(x_r, rowvar=False)  # unbiased, float64
    d = mu_g - mu_r
    # tr sqrt(S_g S_r) = sum of the square roots of the eigenvalues of S_g S_r. This replaces
    # scipy's sqrtm (and its deprecated disp argument) and keeps the reference's two safeguards.
    roots = np.sqrt(np.linalg.eigvals(s_g @ s_r).astype(np.complex128))
    if not np.isfinite(roots).all():  # singular product: offset both covariances
        offset = np.eye(s_g.shape[0]) * eps
        roots = np.sqrt(np.linalg.eigvals((s_g + offset) @ (s_r + offset)).astype(np.complex128))
    if np.abs(roots.imag).max() > 1e-3:
        raise ValueError(f"frechet_distance: matrix square root has imaginary part {np.abs(roots.imag).max():.3g}")
    return float(d.dot(d) + np.trace(s_g) + np.trace(s_r) - 2 * roots.real.sum())


def inception_score(logits, splits=10, seed=2020):
    """IS (mean, population std over splits) of classifier logits (N, C), rows shuffled with seed."""
    logits = logits[np.random.RandomState(seed).permutation(len(logits))].astype(np.float64)
    p = torch.from_numpy(logits).softmax(dim=1).numpy()
    log_p = torch.from_numpy(logits).log_softmax(dim=1).numpy()
    scores = []
    for k in range(splits):
        a, b = k * len(p) // splits, (k + 1) * len(p) // splits
        log_q = np.log(p[a:b].mean(axis=0, keepdims=True))
        scores.append(np.exp((p[a:b] * (log_p[a:b] - log_q)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def paired_kl(logits_g, logits_r, kind="softmax"):
    """Mean KL(reference || generated) over paired rows (N, C), float32; kind softmax or sigmoid.
    The sigmoid form sums only the positive-class terms (the toolbox's definition, not a Bernoulli KL)."""
    act = functools.partial(torch.softmax, dim=1) if kind == "softmax" else torch.sigmoid
    p_g, p_r = act(torch.as_tensor(logits_g).float()), act(torch.as_tensor(logits_r).float())
    return float(F.kl_div((p_g + 1e-6).log(), p_r, reduction="sum") / len(p_r))

# -----------------------------------------------------------------------------
# audio loading (audioldm_eval): channel 0, mean removed, torchaudio's sinc resampler, pad to 32000

def sinc_resample(x, orig, new, width_zc=6, rolloff=0.99):
    """torchaudio.functional.resample with its defaults (Hann-windowed sinc). x: float32 (T,)."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    if o == n:
        return x
    base = min(o, n) * rolloff
    width = math.ceil(width_zc * o / base)
    idx = torch.arange(-width, width + o, dtype=x.dtype)[None, None] / o  # (1, 1, K) input taps
    t = (torch.arange(0, -n, -1, dtype=x.dtype)[:, None, None] / n + idx) * base  # (n, 1, K)
    t = t.clamp(-width_zc, width_zc)
    window = torch.cos(t * math.pi / width_zc / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), t.sin() / t) * window * (base / o)  # (n, 1, K)
    y = F.conv1d(F.pad(x[None, None], (width, width + o)), kernel, stride=o)  # (1, n, L)
    return y[0].T.reshape(-1)[:math.ceil(n * len(x) / o)]  # output l*n + j is phase j at step l


def load_eval_audio(path, sample_rate, min_samples=32000):
    """One file as the evaluation networks see it -> float32 tensor (>= min_samples,)."""
    try:
        wave, sr = sf.read(path, dtype="float32", always_2d=True)  # 16-bit PCM / 32768
    except Exception as e:
        raise ValueError(f"{path}: cannot read audio ({e})") from None
    x = torch.from_numpy(wave[:, 0].copy())  # channel 0 only, not a down-mix (as the toolbox)
    x = sinc_resample(x - x.mean(), sr, sample_rate)
    return F.pad(x, (0, max(0, min_samples - len(x))))

# -----------------------------------------------------------------------------
# PANNs Cnn14 (FD on the "2048" embedding, IS and KL on the logits)

class STFT(nn.Module):
    """torchlibrosa's conv1d STFT kernels (they are stored in the public checkpoints too)."""
    def __init__(self, n_fft):
        super().__init__()
        k, m = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None], torch.arange(n_fft, dtype=torch.float64)
        w = 0.5 - 0.5 * torch.cos(2 * math.pi * m / n_fft)  # periodic Hann
        self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, bias=False)
        self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, bias=False)
        self.conv_real.weight.data = (torch.cos(2 * math.pi * k * m / n_fft) * w)[:, None].float()
        self.conv_imag.weight.data = (-torch.sin(2 * math.pi * k * m / n_fft) * w)[:, None].float()
        self.requires_grad_(False)


class Spectrogram(nn.Module):
    def __init__(self, n_fft, hop):
        super().__init__()
        self.stft, self.n_fft, self.hop = STFT(n_fft), n_fft, hop

    def forward(self, x):  # (B, T) -> power (B, 1, frames, n_fft/2+1)
        x = F.pad(x[:, None], (self.n_fft // 2, self.n_fft // 2), mode="reflect")  # center=True
        re = F.conv1d(x, self.stft.conv_real.weight, stride=self.hop)  # (B, F, frames)
        im = F.conv1d(x, self.stft.conv_imag.weight, stride=self.hop)
        return (re ** 2 + im ** 2).transpose(1, 2)[:, None]


class LogMel(nn.Module):
    def __init__(self, sample_rate, n_fft, fmax):
        super().__init__()
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=64, fmin=50, fmax=fmax)  # Slaney
        self.register_buffer("melW", torch.from_numpy(mel.T.copy()).float())  # (F, 64), in the checkpoint

    def forward(self, x):  # (B, 1, frames, F) -> dB (B, 1, frames, 64); ref 1, amin 1e-10, no top_db
        return 10 * torch.log10((x @ self.melW).clamp(min=1e-10))


class ConvBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()  # declaration order = the checkpoint's key order
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

    def forward(self, x, pool):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    """PANNs Cnn14 in eval mode. sample_rate 16000 (Cnn14_16k_mAP=0.438.pth) or 32000 (Cnn14_mAP=0.431.pth)."""
    def __init__(self, sample_rate=16000, classes=527):
        super().__init__()
        n_fft, hop, fmax = {16000: (512, 160, 8000), 32000: (1024, 320, 14000)}[sample_rate]
        self.spectrogram_extractor = Spectrogram(n_fft, hop)
        self.logmel_extractor = LogMel(sample_rate, n_fft, fmax)
        self.bn0 = nn.BatchNorm2d(64)
        widths = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, classes)

    def logmel(self, wave):  # (B, T) -> (B, 1, frames, 64)
        return self.logmel_extractor(self.spectrogram_extractor(wave))

    def forward(self, wave):
        """wave (B, T) float32 -> embedding "2048" (B, 2048), logits (B, 527) (before the sigmoid)."""
        x = self.bn0(self.logmel(wave).transpose(1, 3)).transpose(1, 3)  # bn0 normalises per mel bin
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, (2, 2) if i < 5 else (1, 1))
        x = x.mean(dim=3)  # (B, 2048, time)
        x = F.relu(self.fc1(x.amax(dim=2) + x.mean(dim=2)))
        return x, self.fc_audioset(x)

# -----------------------------------------------------------------------------
# VGGish (FAD): torchvggish with use_pca=False and the final ReLU removed (the toolbox's settings)

def htk_mel(f):
    return 1127.0 * np.log(1.0 + f / 700.0)


def vggish_examples(wave):
    """16 kHz float waveform (T,) -> log-mel examples (n, 1, 96, 64) float32, numpy in float64."""
    x = np.asarray(wave, dtype=np.float64)
    n = 1 + (len(x) - 400) // 160  # 25 ms frames, 10 ms hop, no padding
    frames = np.lib.stride_tricks.as_strided(x, (n, 400), (x.strides[0] * 160, x.strides[0]))
    spec = np.abs(np.fft.rfft(frames * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)), 512))
    bins, edges = htk_mel(np.linspace(0, 8000, 257)), np.linspace(htk_mel(125.0), htk_mel(7500.0), 66)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    w = np.maximum(0.0, np.minimum((bins[:, None] - lo) / (mid - lo), (hi - bins[:, None]) / (hi - mid)))
    w[0] = 0.0  # DC bin
    logmel = np.log(spec @ w + 0.01)  # (frames, 64)
    k = 1 + (len(logmel) - 96) // 96  # 0.96 s examples, partial last one dropped
    return torch.from_numpy(logmel[:k * 96].reshape(k, 1, 96, 64).astype(np.float32))


class VGGish(nn.Module):
    """Keys as vggish-10086976.pth: features.{0,3,6,8,11,13}, embeddings.{0,2,4}."""
    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"]:
            layers += [nn.MaxPool2d(2)] if v == "M" else [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = cin if v == "M" else v
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(512 * 6 * 4, 4096), nn.ReLU(), nn.Linear(4096, 4096),
                                        nn.ReLU(), nn.Linear(4096, 128))  # no final ReLU

    def forward(self, examples):  # (n, 1, 96, 64) -> (n, 128)
        x = self.features(examples).permute(0, 2, 3, 1)  # (n, 6, 4, 512): flatten time, mel, channel
        return self.embeddings(x.reshape(len(x), -1))


PUBLIC_WEIGHTS = {  # kind -> (file name, where the public file comes from)
    "panns16k": ("Cnn14_16k_mAP=0.438.pth", "https://zenodo.org/record/3987831"),
    "panns32k": ("Cnn14_mAP=0.431.pth", "https://zenodo.org/record/3576403"),
    "vggish": ("vggish-10086976.pth", "https://github.com/harritaylor/torchvggish/releases/tag/v0.1"),
}


def load_metric_net(kind, path):
    """kind 'panns16k' | 'panns32k' | 'vggish' -> eval-mode net with the public weights at path."""
    if not path or not os.path.isfile(path):
        name, url = PUBLIC_WEIGHTS[kind]
        raise FileNotFoundError(f"{path}: {kind} weights not found; download the public {name} from {url}")
    net = VGGish() if kind == "vggish" else Cnn14(16000 if kind == "panns16k" else 32000)
    sd = torch_load(path)
    net.load_state_dict(sd["model"] if "model" in sd else sd)  # PANNs wrap the weights in "model"
    return net.eval()

# -----------------------------------------------------------------------------
# learned class probes for any labelled dataset (fixed here): two small CNNs fitted once on the real
# train split (data.py's probe set) and cached beside it. They score generated sounds and pictures
# (the image->audio "alignment accuracy" of MDSGen and Diff-Foley), and their accuracy on real test
# items and on tokenizer round trips gives the ceilings the generated results sit under.

PROBE_VERSION = 1  # bump when the probe's architecture or training changes: cached probes are refitted


class ProbeNet(nn.Module):
    """A small CNN: (B, C, H, W) -> class logits. Each item is standardised first (level, contrast),
    then pooled 2x (the probes need shape, not fine detail); four conv blocks; mean and max over
    the last axis (time for mels) after averaging the other."""
    def __init__(self, channels, n_classes, width=16):
        super().__init__()
        layers, c = [nn.AvgPool2d(2)], channels
        for i, w in enumerate((width, 2 * width, 4 * width, 8 * width)):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            layers += [nn.MaxPool2d(2)] if i < 3 else []
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(2 * c, n_classes))

    def forward(self, x):
        x = (x - x.mean((1, 2, 3), keepdim=True)) / (x.std((1, 2, 3), keepdim=True) + 1e-5)
        h = self.features(x).mean(2)  # (B, c, W / 16)
        return self.head(torch.cat([h.mean(2), h.amax(2)], 1))


def probe_tensor(x, kind):
    """Probe inputs as stored by data.py -> float (B, C, H, W): mels (B, n_mels, T) get a channel,
    pictures (B, 64, 64, 3) uint8 go channels-first in [0, 1]."""
    x = torch.as_tensor(np.asarray(x, np.float32))
    return x[:, None] if kind == 'audio' else x.permute(0, 3, 1, 2) / 255


@torch.enable_grad()  # callers may run under no_grad
def fit_probe(x, y, n_classes, kind, steps=None, batch=64, seed=0):
    """x (N, C, H, W) float, y (N,) class ids -> an eval-mode ProbeNet, trained with shifts; by default
    for 20 passes over x, at least 200 steps and at most 1200 (4,000 items' 20 passes)."""
    steps = steps or min(1200, max(200, round(20 * len(x) / batch)))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = ProbeNet(x.shape[1], n_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    shift = (2, x.shape[3] // 4) if kind == 'audio' else (x.shape[2] // 8, x.shape[3] // 8)
    for _ in tqdm(range(steps), desc=f'fitting the {kind} probe', leave=False):
        ix = torch.randint(len(x), (batch,), generator=g)
        loss = F.cross_entropy(net(shift_augment(x[ix], g, shift)), y[ix], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def load_probes(root, n_classes):
    """{'audio': net, 'image': net}, fitted on root's probe set once and cached in root/probe_*.pt;
    None if the dataset has no probe set (no labels)."""
    try:
        labels = torch.from_numpy(np.load(os.path.join(root, 'probe_labels.npy')).astype(np.int64))
    except OSError:
        return None
    nets = {}
    for kind, name in (('audio', 'probe_mel.npy'), ('image', 'probe_image.npy')):
        x = np.load(os.path.join(root, name))
        key = f'{PROBE_VERSION}-{n_classes}-{x.shape}-{hash_array(x)}-{hash_array(labels.numpy())}'
        path = os.path.join(root, f'probe_{kind}.pt')
        cached = torch.load(path, weights_only=True) if os.path.isfile(path) else {}
        net = ProbeNet(probe_tensor(x[:1], kind).shape[1], n_classes)
        if cached.get('key') == key:
            net.load_state_dict(cached['model'])
            nets[kind] = net.eval()
            continue
        nets[kind] = fit_probe(probe_tensor(x, kind), labels, n_classes, kind)
        try:
            write_atomic(path, functools.partial(torch.save, {'key': key, 'model': nets[kind].state_dict()}))
        except WriteError:  # a read-only dataset: the probe lives for this run only
            pass
    return nets


# -----------------------------------------------------------------------------
# a second judge of another kind (fixed here): multinomial logistic regression on hand-made features that
# do not move when the content does (when a sound starts, where a picture's object sits): for sounds MFCC
# statistics, band co-occurrences over time lags and modulation spectra; for pictures co-occurrences of
# gradient orientations, their Fourier magnitudes and a HOG pyramid. It shares nothing with the CNN probes
# but the train split it is fitted on; where the two disagree, the lower is the result. (HOG on a fixed
# grid and MFCC statistics alone judged real test items from unseen sources at about 0.5: docs/LOG.md.)

def mfcc_stats(mels, n_coef=20):
    """Probe mels (N, n_mels, T) (log-mel, as data.py stores them) -> (N, 3 * n_coef): for each of the
    first n_coef DCT coefficients over the mel bands, its mean and spread over time and its mean
    absolute change from frame to frame."""
    x = torch.as_tensor(np.asarray(mels, np.float32))  # (N, n_mels, T)
    n = x.shape[1]
    dct = torch.cos(math.pi / n * (torch.arange(n) + 0.5)[None] * torch.arange(n_coef)[:, None])  # (n_coef, n_mels)
    c = torch.einsum('kn,bnt->bkt', dct, x)  # (N, n_coef, T)
    return torch.cat([c.mean(2), c.std(2), c.diff(dim=2).abs().mean(2)], 1)


def gradient_orientations(images, bins=9):
    """Pictures (N, S, S, 3) uint8 -> the grey picture's gradient magnitude (N, S - 2, S - 2) and its
    unsigned orientation's bin among bins (N, S - 2, S - 2)."""
    x = torch.as_tensor(np.asarray(images, np.float32)).mean(-1) / 255  # (N, S, S) grey
    gy, gx = x[:, 2:, 1:-1] - x[:, :-2, 1:-1], x[:, 1:-1, 2:] - x[:, 1:-1, :-2]
    magnitude, angle = torch.hypot(gx, gy), torch.atan2(gy, gx) % math.pi
    return magnitude, (angle / math.pi * bins).long().clamp(max=bins - 1)


def gradient_histograms(images, cells=4, bins=9):
    """Probe pictures (N, S, S, 3) uint8 -> (N, cells * cells * bins): in each cell of a cells x cells
    grid, the histogram of the grey picture's gradient orientations (unsigned, weighted by magnitude),
    each cell's histogram scaled to unit length (HOG, Dalal and Triggs 2005)."""
    magnitude, bin_ = gradient_orientations(images, bins)
    N, H, W = magnitude.shape
    cell = (torch.arange(H)[:, None] * cells // H) * cells + torch.arange(W)[None] * cells // W  # (H, W) cell ids
    hist = torch.zeros(N, cells * cells * bins).scatter_add_(1, (cell * bins + bin_).flatten(1), magnitude.flatten(1))
    hist = hist.view(N, cells * cells, bins)
    return (hist / (hist.norm(dim=2, keepdim=True) + 1e-6)).flatten(1)


def coarse_bands(mels, n=16):
    """Probe mels (N, n_mels, T) -> (N, n, T): n bands, each the mean of its mel bands."""
    x = torch.as_tensor(np.asarray(mels, np.float32))
    return F.adaptive_avg_pool1d(x.transpose(1, 2), n).transpose(1, 2)


def sound_features(mels, lags=(0, 1, 2, 4, 8, 16), modulations=12):
    """Probe mels (N, n_mels, T) -> mfcc_stats, then over 16 coarse bands (the item's mean removed): each
    band's mean and spread, the products of every two bands lag frames apart averaged over time, and
    the magnitude of each band's first modulations over time (its rfft): none moves with the onset."""
    b = coarse_bands(mels)
    b = b - b.mean((1, 2), keepdim=True)
    T = b.shape[2]
    lagged = [torch.einsum('nat,nbt->nab', b[..., :T - lag], b[..., lag:]).flatten(1) / (T - lag) for lag in lags]
    modulation = torch.fft.rfft(b - b.mean(2, keepdim=True), dim=2).abs()[..., 1:modulations + 1].flatten(1)
    return torch.cat([mfcc_stats(mels), b.mean(2), b.std(2), *lagged, modulation.log1p()], 1)


def orientation_maps(images, bins=9, size=16):
    """Pictures (N, S, S, 3) uint8 -> (N, bins, size, size): the grey picture's gradient magnitude per
    orientation bin (unsigned), pooled to size x size."""
    magnitude, bin_ = gradient_orientations(images, bins)
    maps = torch.zeros(len(magnitude), bins, *magnitude.shape[1:]).scatter_(1, bin_[:, None], magnitude[:, None])
    return F.adaptive_avg_pool2d(maps, size)


def picture_features(images, offsets=((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0), (0, 4), (4, 0)), keep=6):
    """Pictures (N, S, S, 3) uint8 -> how often orientation a sits at an offset from orientation b (each
    cell's orientations as shares, empty cells 0), the low Fourier magnitudes of the orientation maps
    (unit length first), and orientation histograms over 1 x 1, 2 x 2 and 4 x 4 cells: the first two
    do not move with the object."""
    m = orientation_maps(images)
    total = m.sum(1, keepdim=True)
    shares = m / (total + 1e-6) * (total > 1e-3)
    pairs = [torch.einsum('nahw,nbhw->nab', shares, torch.roll(shares, offset, dims=(2, 3))).flatten(1)
             / shares[0, 0].numel() for offset in offsets]
    f = torch.fft.fft2(m / (m.flatten(1).norm(dim=1)[:, None, None, None] + 1e-6)).abs()
    fourier = torch.cat([f[..., :keep, :keep], f[..., -keep + 1:, :keep]], 2).flatten(1).log1p()
    pyramid = [F.adaptive_avg_pool2d(m, g).flatten(2) for g in (1, 2, 4)]
    pyramid = [h / (h.norm(dim=1, keepdim=True) + 1e-6) for h in pyramid]
    return torch.cat([shares.mean((2, 3)), *pairs, fourier, *(h.flatten(1) for h in pyramid)], 1)


PROBE_FEATURES = {'audio': sound_features, 'image': picture_features}


class FeatureProbe:
    """Logistic regression on standardised hand-made features (features(x) -> (N, D), e.g.
    PROBE_FEATURES), fitted by L-BFGS with an L2 penalty: deterministic, seconds on a CPU. Called on
    inputs of x's kind -> class ids."""

    @torch.enable_grad()  # callers may run under no_grad
    def __init__(self, x, y, n_classes, features, l2=1e-3, iters=300):
        self.features = features
        f = self.features(x).double()
        self.mean, self.std = f.mean(0), f.std(0) + 1e-6
        z = (f - self.mean) / self.std
        self.weight = torch.zeros(f.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        self.bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([self.weight, self.bias], max_iter=iters, history_size=20, line_search_fn='strong_wolfe')

        def loss():
            opt.zero_grad()
            value = F.cross_entropy(z @ self.weight + self.bias, y) + l2 * self.weight.pow(2).sum()
            value.backward()
            return value
        opt.step(loss)

    @torch.no_grad()
    def __call__(self, x):
        return ((self.features(x).double() - self.mean) / self.std @ self.weight + self.bias).argmax(1).numpy()


@functools.lru_cache(maxsize=4)  # a steps table scores many runs of one dataset
def load_feature_probes(root, n_classes):
    """{'audio': FeatureProbe, 'image': FeatureProbe} fitted on root's probe set (the CNN probes' own)."""
    labels = torch.from_numpy(np.load(os.path.join(root, 'probe_labels.npy')).astype(np.int64))
    return {kind: FeatureProbe(np.load(os.path.join(root, name)), labels, n_classes, PROBE_FEATURES[kind])
            for kind, name in (('audio', 'probe_mel.npy'), ('image', 'probe_image.npy'))}


# -----------------------------------------------------------------------------
# fidelity (fixed here): a classifier two-sample test (Lopez-Paz and Oquab, ICLR 2017). Logistic regression on
# hand-made statistics tries to tell generated files from real ones on held-out folds: 0.5 = it cannot, 1 =
# always. It needs no learned network and no labels, and a blurred average is told apart whatever its class.

def band_statistics(mels):
    """Log-mels (N, n_mels, T) in [0, 1] (tokenized_mel) -> (N, 5 * n_mels): per band its mean and
    spread over time, its mean absolute change along time and along frequency, and its flatness over
    time (the log of the power's geometric over its arithmetic mean; mel 1 = 100 dB)."""
    x = torch.as_tensor(np.asarray(mels, np.float32)).double()
    log_power = x * 10 * math.log(10)
    flatness = log_power.mean(2) - (torch.logsumexp(log_power, 2) - math.log(x.shape[2]))
    along_freq = F.pad(x.diff(dim=1).abs(), (0, 0, 0, 1)).mean(2)  # the top band: 0
    return torch.cat([x.mean(2), x.std(2), x.diff(dim=2).abs().mean(2), along_freq, flatness], 1)


def picture_statistics(images):
    """Pictures (N, S, S, 3) uint8 -> per channel its mean, spread and mean absolute change across
    and down, then gradient_histograms."""
    x = torch.as_tensor(np.asarray(images, np.float32)).permute(0, 3, 1, 2).double() / 255  # (N, 3, S, S)
    colour = [x.mean((2, 3)), x.std((2, 3)), x.diff(dim=3).abs().mean((2, 3)), x.diff(dim=2).abs().mean((2, 3))]
    return torch.cat([*colour, gradient_histograms(images).double()], 1)


def two_sample_accuracy(a, b, folds=5, seed=0, l2=1e-2):
    """How often logistic regression tells rows of a from rows of b (statistics (N, D)) on held-out
    folds, the larger set cut to the smaller's size: 0.5 = indistinguishable, 1 = always told apart."""
    n = min(len(a), len(b))
    folds = min(folds, n)  # every fold holds one of each at least
    x, y = torch.cat([a[:n], b[:n]]), torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    g = torch.Generator().manual_seed(seed)  # each fold holds as many of a as of b: a fit never leans to either
    fold = torch.cat([torch.randperm(n, generator=g) % folds, torch.randperm(n, generator=g) % folds])
    hits = sum(int((FeatureProbe(x[fold != k], y[fold != k], 2, torch.as_tensor, l2=l2)(x[fold == k])
                    == y[fold == k].numpy()).sum()) for k in range(folds))
    return hits / (2 * n)


def fidelity(runner, real_wav, real_png, todo, mel_cfg):
    """two_sample_accuracy of each task's files: sounds against the vocoder's rendering of the real
    test mels (so the vocoder's own loss is not the model's), pictures against the real test pictures;
    the tokenizers' round trips and the vocoder alone (against the real sounds) beside them."""
    def sounds(paths):
        return band_statistics(read_mels(paths, mel_cfg))

    def pictures(paths):
        return picture_statistics(np.stack([read_png(p) for p in paths]))
    if len(real_png) < 2:  # one to fit on, one to hold out
        return {}
    with timer('reference', 'fidelity'):
        vocoded, real_pictures = sounds(runner.paths('vocoded', '.wav')), pictures(real_png)
        out = {'vocoder_audio_two_sample_acc': two_sample_accuracy(sounds(real_wav), vocoded),
               'roundtrip_audio_two_sample_acc': two_sample_accuracy(sounds(runner.paths('roundtrip', '.wav')), vocoded),
               'roundtrip_image_two_sample_acc': two_sample_accuracy(pictures(runner.paths('roundtrip', '.png')),
                                                                     real_pictures)}
        for task in ('i2a', 'inpaint', 'cogen'):
            if task in todo:
                out[f'{task}_audio_two_sample_acc'] = two_sample_accuracy(sounds(runner.paths(task, '.wav')), vocoded)
        for task in ('a2i', 'cogen'):
            if task in todo:
                out[f'{task}_image_two_sample_acc'] = two_sample_accuracy(pictures(runner.paths(task, '.png')),
                                                                          real_pictures)
    return out


def hash_array(a):
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


@torch.no_grad()
def probe_predict(net, kind, paths, mel_cfg, chunk=64):
    """Class ids (N,) the probe sees in wav or png files, read as data.py made the probe set."""
    out = []
    with timer(task_of(paths), 'score'):
        for b in range(0, len(paths), chunk):
            if kind == 'audio':
                x = probe_mel_input(read_mels(paths[b:b + chunk], mel_cfg))
            else:
                x = probe_image_input(np.stack([read_png(p) for p in paths[b:b + chunk]]))
            out.append(net(x) if isinstance(net, FeatureProbe) else net(probe_tensor(x, kind)).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)

# -----------------------------------------------------------------------------
# the command. Default config values; config files and --key=value override them (configurator.py)
out_dir = 'out'  # holds ckpt.pt; results go to out_dir/eval_<split>_<settings>/
split = 'test'  # 'test' or 'val'
data_dir = ''  # '' = the dataset the checkpoint was trained on
max_items = 0  # evaluate only the first max_items items of the split (0 = all)
batch_size = 16  # items per generation batch
# sampling: None = the checkpoint's (its config's sample_cfg, ...), else the paper's (sample.sampling_settings)
steps = None  # decoding iterations N (paper: 30)
cfg = None  # guidance scale s (paper: 3; 1 = none)
cfg_fade = None  # guidance s_t = 1 + (s - 1) * share still masked ** cfg_fade (paper: 0, constant; model.guidance_at)
temperature = None  # sampling temperature (paper: 1)
choice_temperature = 9.0  # Gumbel noise T on the confidences (paper: 9)
uncond_every = None  # guidance's unconditional pass every k-th step, reused between (paper: 1; docs/sampling.md)
seed = 1337
tasks = 'i2a,a2i,cogen,inpaint'  # image->audio, audio->image, co-generation (CFG does not touch it), audio inpainting
TASKS = ('i2a', 'a2i', 'cogen', 'inpaint')  # every task, in the order they run
REFERENCES = ('roundtrip', 'vocoded')  # the real test items through the tokenizers and the vocoder, the vocoder alone
inpaint_fraction = 0.5  # inpaint: the middle part of each test sound regenerated, guided by its image
vocoder = 'griffinlim'  # or a MelGAN / HiFi-GAN generator file (tokenizers.load_vocoder)
panns = ''  # Cnn14_16k_mAP=0.438.pth (panns_rate=16000) or Cnn14_mAP=0.431.pth (32000): FD, IS, KL
panns_rate = 16000
vggish = ''  # vggish-10086976.pth: FAD
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'auto'  # the model's precision: float32, bfloat16, float16, or auto (util.autocast_context)
compile = False  # torch.compile the model for the unmasking loop
choose_sampling = False  # True: try SAMPLING_GRID on --split=val and keep the best beside the checkpoint (sample.CHOSEN)
steps_table = ''  # e.g. '4,8,12,16,30': image->audio and audio->image at each N, per order, with and without guidance
sampling_seeds = 3  # steps_table: sampling seeds per setting (seed, seed + 1, ...), mean and spread
ceilings = True  # the probes' ceilings too (real test items, tokenizer round trips); steps_table skips them
SETTINGS = {}  # the sampling settings in use (sample.SAMPLING's names): flag, chosen on val, checkpoint or paper
SECONDS = {}  # task -> part (model, decode, vocoder, write, score) -> seconds: where the time goes
LAST_SPEED = {}  # the last evaluation's throughput: task_items_per_min and task_model_s_per_item
JUDGED = {}  # judge -> task -> each item's class ids {'predicted': [...], 'wanted': [...]} (items.json, report.py)


@contextmanager
def timer(task, part):
    """Adds the block's wall time to SECONDS[task][part] (after the GPU's queued work is done)."""
    t0 = time.perf_counter()
    yield
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    SECONDS.setdefault(task, {}).setdefault(part, 0.0)
    SECONDS[task][part] += time.perf_counter() - t0


def settings_tag(s):
    """The sampling settings in a run folder's name: s3_fade8_n30, then _u4 where not the paper's."""
    fade = f"_fade{s['cfg_fade']:g}" if s['cfg_fade'] and s['cfg'] != 1 else ''  # constant or no guidance: no suffix
    return f"s{s['cfg']:g}{fade}_n{s['steps']}" + ('' if s['uncond_every'] == 1 or s['cfg'] == 1 else f"_u{s['uncond_every']}")


def task_of(paths):  # scoring time goes to the task whose folder holds the files; real files: 'reference'
    task = os.path.basename(os.path.dirname(paths[0])) if paths else ''
    return task if task in (*TASKS, *REFERENCES) else 'reference'


def read_png(path):
    return np.array(Image.open(path).convert('RGB'))  # (S, S, 3) uint8


def generate_missing(paths, make, desc):
    """Call make(indices) for every batch of items whose output file is missing (resumable).
    Returns (items made, items made per minute in this run: None if all were there already)."""
    todo = [i for i, p in enumerate(paths) if not os.path.exists(p)]
    t0 = time.time()
    for b in tqdm(range(0, len(todo), batch_size), desc=desc, disable=not todo):
        make(todo[b:b + batch_size])
    return len(todo), (60 * len(todo) / (time.time() - t0) if todo else None)


def model_seconds_per_item(run, task, made):
    """The model's seconds per generated item of `task` (the unmasking loop alone: no tokenizer, vocoder
    or files), kept in run/timing.json across resumed runs. None before any item was timed."""
    path = os.path.join(run, 'timing.json')
    timing = json.load(open(path)) if os.path.exists(path) else {}
    seconds, items = timing.get(task, (0.0, 0))
    if made:
        seconds, items = seconds + SECONDS[task]['model'], items + made
        save_text(path, json.dumps({**timing, task: (seconds, items)}))
    return seconds / items if items else None


@torch.no_grad()
def token_metrics(model, audio, image, majority):
    """Masked-token loss (label-smoothed, as in training) and accuracy per modality on (N, L) ids,
    under the training corruption with a fixed seed; batches weighted by their masked counts.
    Beside them: the accuracy of always predicting the train split's most frequent code
    (`majority` {modality: id}), and the cross-modal gain (model.cross_modal_losses) in nats."""
    g, sums = torch.Generator().manual_seed(seed), {m: np.zeros(4) for m in MODALITIES}
    cross, n_items = {}, 0
    for b in range(0, len(audio), batch_size):
        a, v = audio[b:b + batch_size].to(device), image[b:b + batch_size].to(device)
        a_in, v_in, keep, targets = random_corruption(a.cpu(), v.cpu(), model.config, g)
        targets = tuple(t.to(device) for t in targets)
        logits, losses = model(a_in.to(device), v_in.to(device), keep.to(device), targets)
        for m, (hits, major, n) in masked_token_counts(logits, targets, majority).items():
            sums[m] += (losses[m].item() * n, hits, major, n)
        for k, v_ in cross_modal_losses(model, a, v).items():  # per item, so weighted by the batch size
            cross[k] = cross.get(k, 0.0) + v_ * len(a)
        n_items += len(a)
    out = {f'{m}_{k}': v for m, (loss, hits, major, n) in sums.items() for k, v in
           (('val_loss', loss / n), ('token_acc', hits / n), ('token_acc_majority_code', major / n))}
    for m in MODALITIES:
        out[f'{m}_cross_modal_gain_nats'] = (cross[f'{m}_alone'] - cross[f'{m}_given']) / n_items
    return out


def read_wav(path):
    return sf.read(path, dtype='float32')[0]


def read_mels(paths, mel_cfg):
    """wav files -> (N, n_mels, frames) in [0, 1], the mels the audio tokenizer takes."""
    return np.stack([tokenized_mel(read_wav(p), mel_cfg) for p in paths])


def mel_stats(paths, mel_cfg):
    """One row per clip: each mel band's mean and std over time, (N, 2 * n_mels). The features of
    the log-mel FD proxy (fixed here: it needs no learned network, so it is not comparable to FD)."""
    rows = []
    with timer(task_of(paths), 'score'):
        for p in paths:
            mel = tokenized_mel(read_wav(p), mel_cfg)  # (n_mels, frames) in [0, 1]
            rows.append(np.concatenate([mel.mean(1), mel.std(1)]))
    return np.stack(rows).astype(np.float64)


def thumbnails(paths):
    """One row per image: the mean colours of an 8x8 grid, (N, 192), the pixel FD proxy's features."""
    with timer(task_of(paths), 'score'):
        x = [F.adaptive_avg_pool2d(torch.from_numpy(read_png(p)).permute(2, 0, 1).float() / 255, 8) for p in paths]
    return torch.stack(x).flatten(1).double().numpy()


def predict(probe, paths, read, chunk=64):
    """A class probe over files, `chunk` files at a time -> (N,) class ids."""
    with timer(task_of(paths), 'score'):
        return np.concatenate([probe([read(p) for p in paths[b:b + chunk]]) for b in range(0, len(paths), chunk)])


def network_metrics(gen_paths, real_paths):
    """FD / IS / KL on PANNs Cnn14 and FAD on VGGish; each file alone at full length (the toolbox).
    Generated and reference files are paired by position (same item id)."""
    out = {}
    if panns:
        net = load_metric_net('panns16k' if panns_rate == 16000 else 'panns32k', panns).to(device)
        (e_g, l_g), (e_r, l_r) = cnn14_outputs(net, gen_paths), cnn14_outputs(net, real_paths)
        out['FD_panns'] = frechet_distance(e_g, e_r)
        # the toolbox's 10 splits, fewer only for a set too small to fill them
        out['IS_panns'], out['IS_panns_std'] = inception_score(l_g, splits=min(10, len(l_g)))
        out['KL_softmax'], out['KL_sigmoid'] = paired_kl(l_g, l_r), paired_kl(l_g, l_r, 'sigmoid')
    if vggish:
        net = load_metric_net('vggish', vggish).to(device)
        out['FAD_vggish'] = frechet_distance(vggish_embeddings(net, gen_paths), vggish_embeddings(net, real_paths))
    return out


def cnn14_outputs(net, paths):
    """Cnn14 on each file -> embeddings (N, 2048), logits (N, 527)."""
    with timer(task_of(paths), 'score'):
        outs = [net(load_eval_audio(p, panns_rate)[None].to(device)) for p in paths]
    return [torch.cat(t).cpu().numpy() for t in zip(*outs)]


def vggish_embeddings(net, paths):
    """One 128-d row per 0.96 s example of every file (FAD pools examples)."""
    with timer(task_of(paths), 'score'):
        examples = [vggish_examples(load_eval_audio(p, 16000).numpy()) for p in paths]  # (n_i, 1, 96, 64) each
        return torch.cat([net(x.to(device)) for x in examples]).cpu().numpy()


def load_split(ckpt):
    """The split's ids, labels and tokens: audio (N, L_a), image (N, L_v) (the middle frame)."""
    train_cfg = ckpt.get('config', {})
    root = data_dir or train_cfg.get('data_dir') or repo_path(os.path.join('data', train_cfg.get('dataset', '')))
    try:
        with open(os.path.join(root, 'meta.json')) as f:
            meta = json.load(f)
        items = meta['splits'][split]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{root}/meta.json: cannot read split {split!r} ({e!r}); set --data_dir") from None
    n = min(len(items['ids']), max_items or len(items['ids']))
    ids, labels = [str(i) for i in items['ids'][:n]], (items.get('labels') or [None] * n)[:n]
    for sub, ext in (('wav', 'wav'), ('frame', 'png')):  # what evaluation compares against (data.py writes it)
        missing = [i for i in ids if not os.path.isfile(os.path.join(root, f'{split}_{sub}', f'{i}.{ext}'))]
        if missing:
            raise FileNotFoundError(f"{root}/{split}_{sub}/{missing[0]}.{ext}: missing ({len(missing)} of {n} items)")
    tokens = [np.load(os.path.join(root, f'{split}_{m}.npy'), mmap_mode='r')[:n] for m in MODALITIES]
    audio = torch.from_numpy(tokens[0].astype(np.int64))  # (N, L_a)
    image = torch.from_numpy(tokens[1][:, meta['frames'] // 2].astype(np.int64))  # (N, L_v): the middle frame
    config = ModelConfig(**ckpt['model_args'])
    if (audio.shape[1], image.shape[1]) != (config.audio_len, config.image_len):
        raise ValueError(f"{root}: token lengths {audio.shape[1]}, {image.shape[1]} do not fit the model in {out_dir}")
    return root, meta, ids, labels, audio, image


def _file_stamp(path):
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def check_results_source(run, ckpt_path, root, toks):
    """A results folder resumes only what the same checkpoint, data folder and tokenizers made: the
    first run writes run/source.json, a later one must match it (else files another checkpoint or
    decoder made would be scored as this one's)."""
    source = {'checkpoint': _file_stamp(ckpt_path), 'data_dir': os.path.abspath(root),
              'tokenizers': {m: [tok.describe().get('fingerprint'),
                                 *(_file_stamp(tok.path) if os.path.isfile(str(getattr(tok, 'path', None))) else [])]
                             for m, tok in toks.items()}}
    source = json.loads(json.dumps(source))  # as it reads back from the file (lists, not tuples)
    path = os.path.join(run, 'source.json')
    if not os.path.isfile(path):
        save_text(path, json.dumps(source))
        return
    with open(path) as f:
        old = json.load(f)
    changed = [k for k in source if old.get(k) != source[k]]
    if changed:
        raise ValueError(f"{run}: its files were made with another {' and '.join(changed).replace('_', ' ')}; "
                         f"delete the folder to redo them, or give another --out_dir")


def check_request():
    """The settings and the weight files checked before any work. Returns the tasks and the model's
    precision (name, autocast context)."""
    todo = tasks.split(',')
    if not todo or set(todo) - set(TASKS):
        raise ValueError(f"tasks must be a comma-separated subset of i2a,a2i,cogen,inpaint, not {tasks!r}")
    numbers = dict(cfg=cfg, cfg_fade=cfg_fade, temperature=temperature, choice_temperature=choice_temperature,
                   steps=steps, uncond_every=uncond_every, seed=seed, max_items=max_items, batch_size=batch_size, inpaint_fraction=inpaint_fraction)
    check_numbers({k: v for k, v in numbers.items() if v is not None})  # sample.py's ranges and messages
    if panns_rate not in (16000, 32000):
        raise ValueError(f'panns_rate must be 16000 or 32000, not {panns_rate}')
    for kind, path in (('panns16k' if panns_rate == 16000 else 'panns32k', panns), ('vggish', vggish)):
        if path and not os.path.isfile(path):  # fail before generating, not after
            name, url = PUBLIC_WEIGHTS[kind]
            raise FileNotFoundError(f"{path}: no such file (the public {name} comes from {url})")
    return todo, autocast_context(device, dtype)  # raises on an unknown dtype, before any work


class Tasks:
    """The generation tasks, one method each: a batch of test items (their indices) in, one file per
    item out (model.py for the tokens, the tokenizers and the vocoder for the files). Each batch
    draws from its own seed, so a resumed run makes what an uninterrupted one would have."""

    def __init__(self, net, ctx, toks, mel_cfg, vocode, run, ids, audio, image, real_wav, n_cols):
        self.net, self.ctx, self.toks, self.mel_cfg, self.vocode = net, ctx, toks, mel_cfg, vocode
        self.audio, self.image, self.real_wav = audio, image, real_wav  # (N, La), (N, Lv) the real test tokens; wavs
        self.kw = dict(generation_settings(SETTINGS), choice_temperature=choice_temperature)
        # each task's files without the extension: .wav for a sound, .png for a picture
        self.stems = {t: [os.path.join(run, t, name) for name in ids] for t in ('i2a', 'a2i', 'inpaint', *REFERENCES)}
        self.stems['cogen'] = [os.path.join(run, 'cogen', f'{k:05d}') for k in range(len(ids))]
        # inpaint: seconds a..b in the middle of the clip -> token columns, one more each side (model.py)
        self.n_cols, clip_s = n_cols, mel_cfg.tokenized_seconds
        a, b = clip_s * (1 - inpaint_fraction) / 2, clip_s * (1 + inpaint_fraction) / 2
        self.columns = time_range_to_columns(a, b, clip_s / n_cols, n_cols, margin=1)

    def sample(self, task, fn, idx, *args, **more):
        """The model's part, in its precision (the tokenizers stay float32)."""
        generator = torch.Generator(device).manual_seed(seed + idx[0])
        with timer(task, 'model'), self.ctx:
            return fn(self.net, *args, generator=generator, **more, **self.kw)

    def decode_audio(self, ids, task):  # (B, La) ids -> (B, T) waves
        return tokens_to_wave(self.toks['audio'], ids, self.mel_cfg, self.vocode, timed=functools.partial(timer, task))[1]

    def decode_image(self, ids, task):  # (B, Lv) ids -> (B, S, S, 3) uint8
        with timer(task, 'decode'):
            return tensor_to_pixels(self.toks['image'].decode(ids))

    def paths(self, task, ext):  # task's files of one kind, '.wav' or '.png'
        return [stem + ext for stem in self.stems[task]]

    def write(self, task, idx, waves=None, images=None):
        """One file per item; of a pair, the wav is written last, so it marks the pair done."""
        sr = self.mel_cfg.sample_rate
        with timer(task, 'write'):
            for k, i in enumerate(idx):
                if images is not None:
                    save_png(self.stems[task][i] + '.png', images[k])
                if waves is not None:
                    save_wav(self.stems[task][i] + '.wav', waves[k], sr)

    def i2a(self, idx):  # the paper's task, guided by the image
        made = self.sample('i2a', image_to_audio, idx, self.image[idx].to(device))
        self.write('i2a', idx, waves=self.decode_audio(made, 'i2a'))

    def a2i(self, idx):  # guided by the sound
        made = self.sample('a2i', audio_to_image, idx, self.audio[idx].to(device))
        self.write('a2i', idx, images=self.decode_image(made, 'a2i'))

    def cogen(self, idx):  # both from nothing
        a, v = self.sample('cogen', cogenerate, idx, len(idx), device=device)
        self.write('cogen', idx, self.decode_audio(a, 'cogen'), self.decode_image(v, 'cogen'))

    def inpaint(self, idx):  # the middle of each real sound regenerated, the rest and the image given
        made = self.sample('inpaint', inpaint_audio, idx, self.audio[idx].to(device), self.image[idx].to(device), *self.columns)
        self.write('inpaint', idx, waves=self.decode_audio(made, 'inpaint'))

    def roundtrip(self, idx):  # the real test tokens decoded as generated ones are: the tokenizers' (and vocoder's) ceiling
        waves = self.decode_audio(self.audio[idx].to(device), 'roundtrip')
        images = self.decode_image(self.image[idx].to(device), 'roundtrip')
        self.write('roundtrip', idx, waves, images)

    def vocoded(self, idx):  # the real test sounds through the vocoder alone: what generated sounds are measured against
        mels = read_mels([self.real_wav[i] for i in idx], self.mel_cfg)
        with timer('vocoded', 'vocoder'):
            waves = self.vocode(mels)
        self.write('vocoded', idx, waves=waves)

    def done_marker(self, task):  # the file whose presence says an item is done: the wav where there is one
        return self.paths(task, '.png' if task == 'a2i' else '.wav')


def task_accuracies(hear, see, want_audio, want_image, runner, todo, tag, judge):
    """Class accuracy of each task's files on disk: hear(wav paths) / see(png paths) -> class ids,
    against the classes the items should have (metric names i2a{tag}_acc, cogen{tag}_agreement, ...).
    Each item's verdict goes to JUDGED[judge], for the report's gallery (report.py)."""
    judged = {}  # task -> (class ids judged, class ids wanted)
    if 'i2a' in todo:  # the image->audio alignment accuracy (MDSGen, Diff-Foley)
        judged['i2a'] = hear(runner.paths('i2a', '.wav')), want_audio
    if 'a2i' in todo:
        judged['a2i'] = see(runner.paths('a2i', '.png')), want_image
    if 'cogen' in todo:  # no condition, no label: do the sound and the picture agree?
        judged['cogen'] = hear(runner.paths('cogen', '.wav')), see(runner.paths('cogen', '.png'))
    if 'inpaint' in todo:  # the probe hears the whole clip, part of it generated
        judged['inpaint'] = hear(runner.paths('inpaint', '.wav')), want_audio
    JUDGED[judge] = {t: {'predicted': p.tolist(), 'wanted': np.asarray(w).tolist()} for t, (p, w) in judged.items()}
    return {f"{t}{tag}_{'agreement' if t == 'cogen' else 'acc'}": float((p == w).mean()) for t, (p, w) in judged.items()}


def score_probes(probes, judge, runner, real_wav, real_png, labels, todo, mel_cfg):
    """Learned class probes (any labelled dataset): accuracy against the labels, the ceilings first
    (real test items, tokenizer round trips)."""
    y = np.array(labels)
    hear = functools.partial(probe_predict, probes['audio'], 'audio', mel_cfg=mel_cfg)
    see = functools.partial(probe_predict, probes['image'], 'image', mel_cfg=mel_cfg)
    metrics = {'probe_audio_acc_real': float((hear(real_wav) == y).mean()),
               'probe_image_acc_real': float((see(real_png) == y).mean()),
               'probe_audio_acc_roundtrip': float((hear(runner.paths('roundtrip', '.wav')) == y).mean()),
               'probe_image_acc_roundtrip': float((see(runner.paths('roundtrip', '.png')) == y).mean())} \
        if ceilings else {}
    return metrics | task_accuracies(hear, see, y, y, runner, todo, tag='', judge=judge)


def score_two_judges(cnn, features, *args):
    """score_probes by the CNN probes (the plain names), by the feature probes (names + '_features')
    and the lower of the two (names + '_lower'): the result, where two judges of different kinds disagree."""
    by_cnn, by_features = score_probes(cnn, 'CNN probe', *args), score_probes(features, 'feature probe', *args)
    return (by_cnn | {f'{k}_features': v for k, v in by_features.items()}
            | {f'{k}_lower': min(v, by_features[k]) for k, v in by_cnn.items()})


def toy_probe_audio(waves, sr):  # the toy's analytic probes live with the toy (data/toy/prepare.py)
    return dataset_maker('toy').probe_audio(np.stack(waves), sr).cpu().numpy()


def toy_probe_image(images):
    return dataset_maker('toy').probe_image(pixels_to_tensor(np.stack(images))).cpu().numpy()


def score_toy_probes(runner, real_wav, real_png, labels, todo, sr):
    """The embedded toy's analytic class probes. An item's class is its label where known, else what
    the probe sees in the given modality."""
    hear = functools.partial(predict, functools.partial(toy_probe_audio, sr=sr), read=read_wav)
    see = functools.partial(predict, toy_probe_image, read=read_png)
    real_a, real_v = hear(real_wav), see(real_png)
    known = all(l is not None for l in labels)
    want_a, want_v = (np.array(labels), np.array(labels)) if known else (real_v, real_a)
    metrics = task_accuracies(hear, see, want_a, want_v, runner, todo, tag='_probe', judge='analytic probe')
    metrics['real_probe_agreement'] = float((real_a == real_v).mean())  # the ceiling of the three above
    return metrics


def write_report(run, root, n_items, precision, metrics, speed, columns):
    """A table on stdout and in metrics.md, everything in metrics.json."""
    report = {'checkpoint': os.path.join(out_dir, 'ckpt.pt'), 'data_dir': root, 'split': split, 'n_items': n_items,
              'settings': dict(SETTINGS, choice_temperature=choice_temperature, seed=seed, vocoder=vocoder, tasks=tasks,
                               dtype=precision, compile=compile),
              'metrics': metrics, 'throughput': speed, 'outputs': run,
              'seconds': {t: {k: round(v, 2) for k, v in parts.items()} for t, parts in SECONDS.items()},
              'inpaint_columns': columns}
    save_text(os.path.join(run, 'metrics.json'), json.dumps(report, indent=1))
    table = [f"| {'metric':<28} | {'value':>10} |", f"|{'-' * 30}|{'-' * 12}|"]
    table += [f"| {k:<28} | {v:>10.4f} |" for k, v in metrics.items()]
    table += [f"| {k:<28} | {v:>10.4g} |" for k, v in speed.items() if v is not None]
    save_text(os.path.join(run, 'metrics.md'), '\n'.join(table) + '\n')
    print('\n'.join(table))
    for t, parts in SECONDS.items():  # the next bottleneck
        print(f"seconds, {t}: " + ', '.join(f'{k} {v:.1f}' for k, v in parts.items()))
    if not (panns and vggish):
        print("FD/IS/KL and FAD need the PANNs and VGGish weights: --panns=Cnn14_16k_mAP=0.438.pth "
              f"({PUBLIC_WEIGHTS['panns16k'][1]}) --vggish=vggish-10086976.pth ({PUBLIC_WEIGHTS['vggish'][1]})")
    print(f"wrote {os.path.join(run, 'metrics.json')} and metrics.md")


def main():
    todo, (precision, ctx) = check_request()
    SECONDS.clear()
    JUDGED.clear()
    # ---- the model, the test split, the tokenizers and the vocoder
    model, ckpt, _, mel_cfg, toks = load_trained(os.path.join(out_dir, 'ckpt.pt'), device)  # tokenizers as trained
    # flag, else chosen on val, else the checkpoint's, else the paper's
    given = dict(steps=steps, cfg=cfg, cfg_fade=cfg_fade, temperature=temperature, uncond_every=uncond_every)
    s, said = sampling_settings(given, ckpt, os.path.join(out_dir, 'ckpt.pt'))
    print(said)
    SETTINGS.clear()
    SETTINGS.update(s)
    net = compile_for_generation(model, device) if compile else model  # the model as the unmasking loop calls it
    root, meta, ids, labels, audio, image = load_split(ckpt)
    for m in MODALITIES:  # the split's tokens were made by the same tokenizers
        check_tokenizer_matches(meta[m], toks[m])
    vocode = load_vocoder(vocoder, mel_cfg)
    run = os.path.join(out_dir, f"eval_{split}_{settings_tag(s)}_T{choice_temperature:g}_t{s['temperature']:g}"
                                f"_seed{seed}_{os.path.basename(vocoder).split('.')[0]}"
                                + ('' if precision == 'float32' else f'_{precision}'))  # float32: no suffix, as before
    for sub in (*TASKS, *REFERENCES):
        os.makedirs(os.path.join(run, sub), exist_ok=True)
    check_results_source(run, os.path.join(out_dir, 'ckpt.pt'), root, toks)
    real_wav = [os.path.join(root, f'{split}_wav', f'{i}.wav') for i in ids]
    real_png = [os.path.join(root, f'{split}_frame', f'{i}.png') for i in ids]
    runner = Tasks(net, ctx, toks, mel_cfg, vocode, run, ids, audio, image, real_wav, model.config.audio_grid_w)
    # ---- generate what is missing, one file per item
    with torch.no_grad():
        speed = {}
        for t in TASKS:
            if t in todo:
                made, speed[f'{t}_items_per_min'] = generate_missing(runner.done_marker(t), getattr(runner, t), t)
                speed[f'{t}_model_s_per_item'] = model_seconds_per_item(run, t, made)
        labelled = bool(meta.get('classes')) and all(l is not None for l in labels)
        probes = load_probes(root, len(meta['classes'])) if labelled else None
        if ceilings:
            generate_missing(runner.done_marker('roundtrip'), runner.roundtrip, 'round trips')
            generate_missing(runner.done_marker('vocoded'), runner.vocoded, 'vocoded real sounds')
        majority = majority_codes(*(np.load(os.path.join(root, f'train_{m}.npy'), mmap_mode='r') for m in MODALITIES))
        metrics = token_metrics(model, audio, image, majority)
    # ---- score the files on disk, so a resumed run scores exactly what it kept
    if 'i2a' in todo:
        metrics['i2a_logmel_stats_FD_proxy'] = frechet_distance(mel_stats(runner.paths('i2a', '.wav'), mel_cfg), mel_stats(real_wav, mel_cfg))
    if 'a2i' in todo:
        metrics['a2i_pixel_8x8_FD_proxy'] = frechet_distance(thumbnails(runner.paths('a2i', '.png')), thumbnails(real_png))
    if probes:
        metrics.update(score_two_judges(probes, load_feature_probes(root, len(meta['classes'])), runner, real_wav,
                                        real_png, labels, todo, mel_cfg))
    if meta.get('probe'):
        metrics.update(score_toy_probes(runner, real_wav, real_png, labels, todo, mel_cfg.sample_rate))
    if ceilings:
        metrics.update(fidelity(runner, real_wav, real_png, todo, mel_cfg))
    if 'i2a' in todo:
        with torch.no_grad():
            metrics.update(network_metrics(runner.paths('i2a', '.wav'), real_wav))
    LAST_SPEED.clear()
    LAST_SPEED.update(speed)
    write_report(run, root, len(ids), precision, metrics, speed,
                 [*runner.columns, runner.n_cols] if 'inpaint' in todo else None)
    # ---- the page to look and listen: each item's verdicts beside the metrics, then report.py
    save_text(os.path.join(run, 'items.json'), json.dumps({'ids': ids, 'labels': labels, 'classes': meta.get('classes'),
                                                           'mel': meta['audio'].get('mel'), 'judged': JUDGED}))
    t0 = time.perf_counter()
    pages = write_pages(run)
    print(f"wrote {pages[-1]} and {len(pages) - 1} gallery pages in {time.perf_counter() - t0:.1f} s")
    return metrics


# the settings --choose_sampling tries (fixed here): no guidance first, so a tie keeps the simpler one
SAMPLING_GRID = [dict(temperature=t, cfg=s, cfg_fade=k) for t in (0.1, 0.3, 1.0) for s, k in ((1.0, 0.0), (3.0, 8.0))] \
    + [dict(temperature=1.0, cfg=3.0, cfg_fade=0.0)]  # and the paper's


def alignment(metrics):
    """The mean of image->audio and audio->image accuracy: by the lower of the two judges where they
    ran, else the CNN probes', else the toy's analytic probes'."""
    for suffix in ('_acc_lower', '_acc', '_probe_acc'):
        if f'i2a{suffix}' in metrics and f'a2i{suffix}' in metrics:
            return (metrics[f'i2a{suffix}'] + metrics[f'a2i{suffix}']) / 2
    raise ValueError(f'{out_dir}: no class accuracy to choose by (the dataset has no labels)')


def choose_sampling_on_val():
    """Evaluate image->audio and audio->image with every setting of SAMPLING_GRID on the val split,
    and keep the best (alignment) for this checkpoint in sample.CHOSEN beside it: sample.py and
    evaluate.py use it from then on where no flag is given. Chosen per dataset, never carried over."""
    global cfg, cfg_fade, temperature, tasks
    if split != 'val':
        raise ValueError('choose_sampling chooses on the val split (the test split is for reporting): add --split=val')
    tasks, results = 'i2a,a2i', []
    for setting in SAMPLING_GRID:
        cfg, cfg_fade, temperature = setting['cfg'], setting['cfg_fade'], setting['temperature']
        results.append((alignment(main()), setting))
    best = max(results, key=lambda r: r[0])[1]  # the first of equals: the grid's order
    for score, setting in results:
        print(f"{'->' if setting is best else '  '} temperature {setting['temperature']:g}, cfg {setting['cfg']:g}, "
              f"cfg_fade {setting['cfg_fade']:g}: alignment {score:.3f}")
    path = os.path.join(out_dir, CHOSEN)
    save_text(path, json.dumps({**best, 'chosen_on': f'{split}, {max_items or "all"} items, seed {seed}',
                                'alignment': {f"t{s['temperature']:g}_s{s['cfg']:g}_fade{s['cfg_fade']:g}": round(a, 4)
                                              for a, s in results}}, indent=1))
    print(f'wrote {path}: sample.py and evaluate.py sample with it where no flag is given')


TABLE_REUSE = 4  # steps_table's reuse row without --uncond_every: the unconditional pass every 4th step


def accuracy_pair(metrics):
    """(image->audio, audio->image) accuracy: the toy's analytic probes, else the lower of the two judges."""
    for suffix in ('_probe_acc', '_acc_lower', '_acc'):
        if f'i2a{suffix}' in metrics and f'a2i{suffix}' in metrics:
            return metrics[f'i2a{suffix}'], metrics[f'a2i{suffix}']
    raise ValueError(f'{out_dir}: no class accuracy to tabulate (the dataset has no labels)')


def steps_vs_accuracy():
    """--steps_table=4,8,...: image->audio and audio->image accuracy and the model's seconds per sample
    at each N, for the paper's loop without guidance and with the checkpoint's (or the flags'), and
    with the unconditional pass reused (every --uncond_every-th step, else every TABLE_REUSE-th), each
    over sampling_seeds seeds; a markdown table in out_dir/steps_table.md. Every setting is an ordinary
    evaluation in its own folder, so an interrupted table resumes; the ceilings, the same for every
    setting, are left to a plain evaluation."""
    global steps, uncond_every, cfg, seed, tasks, ceilings
    counts = [int(n) for n in steps_table.split(',')]
    first_seed, guided_cfg, tasks, rows, ceilings = seed, cfg, 'i2a,a2i', [], False
    reuse = uncond_every if uncond_every and uncond_every > 1 else TABLE_REUSE
    for guided, uncond_every in ((False, 1), (True, 1), (True, reuse)):
        for steps in counts:  # the globals main() reads
            runs = []
            for seed in range(first_seed, first_seed + sampling_seeds):
                cfg = guided_cfg if guided else 1.0
                metrics = main()
                times = [LAST_SPEED[f'{t}_model_s_per_item'] for t in ('i2a', 'a2i')]
                per_sample = np.nan if None in times else sum(times) / 2  # None: made before times were kept
                runs.append((*accuracy_pair(metrics), per_sample, SETTINGS['cfg']))
            forwards = forwards_per_sample(steps, SETTINGS['cfg'] != 1, uncond_every)
            rows.append((f'unconditional pass every {uncond_every}' if uncond_every > 1 else "the paper's", steps,
                         forwards, np.array(runs)))
    seed = first_seed
    lines = ['| guidance | loop | N | forwards per sample | image->audio | audio->image | s per sample (model) |',
             '|---|---|---|---|---|---|---|']
    for loop, n, forwards, runs in rows:
        mean, spread = runs.mean(0), runs.max(0) - runs.min(0)
        mean[2] = np.nanmean(runs[:, 2]) if not np.isnan(runs[:, 2]).all() else np.nan
        lines.append(f"| s = {runs[0, 3]:g} | {loop} | {n} | {forwards} | {mean[0]:.3f} ± {spread[0] / 2:.3f} | "
                     f"{mean[1]:.3f} ± {spread[1] / 2:.3f} | {'not kept' if np.isnan(mean[2]) else f'{mean[2]:.4f}'} |")
    text = '\n'.join(lines) + (f'\n\n{split} split, {max_items or "all"} items, {sampling_seeds} sampling seeds from '
                              f'{first_seed} (mean ± half the range), temperature {SETTINGS["temperature"]:g}, cfg_fade '
                              f'{SETTINGS["cfg_fade"]:g}\n')
    save_text(os.path.join(out_dir, 'steps_table.md'), text)
    print(text)


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())  # overrides
    try:
        steps_vs_accuracy() if steps_table else choose_sampling_on_val() if choose_sampling else main()
    except (ValueError, FileNotFoundError) as e:
        exit_with_error(e)
