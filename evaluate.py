"""
Evaluate a trained Visual Echoes checkpoint on a test split.

$ python evaluate.py --out_dir=out-toy [--split=test] [--cfg=3 --steps=30 --panns=... --vggish=...]

Metric math and the two embedding networks follow the AudioLDM evaluation toolbox
(haoheliu/audioldm_eval, PANNs backbone "cnn14") and torchvggish, as pinned down in
tests/fixtures/metrics/README.md; tests/test_metrics.py checks them against those fixtures.
"""
import math
import os

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F

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
    act = (lambda x: x.softmax(dim=1)) if kind == "softmax" else torch.sigmoid
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
        import librosa
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

def vggish_examples(wave):
    """16 kHz float waveform (T,) -> log-mel examples (n, 1, 96, 64) float32, numpy in float64."""
    x = np.asarray(wave, dtype=np.float64)
    n = 1 + (len(x) - 400) // 160  # 25 ms frames, 10 ms hop, no padding
    frames = np.lib.stride_tricks.as_strided(x, (n, 400), (x.strides[0] * 160, x.strides[0]))
    spec = np.abs(np.fft.rfft(frames * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)), 512))
    hz2mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # HTK
    bins, edges = hz2mel(np.linspace(0, 8000, 257)), np.linspace(hz2mel(125.0), hz2mel(7500.0), 66)
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
    net = {"panns16k": lambda: Cnn14(16000), "panns32k": lambda: Cnn14(32000), "vggish": VGGish}[kind]()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(sd["model"] if "model" in sd else sd)  # PANNs wrap the weights in "model"
    return net.eval()
