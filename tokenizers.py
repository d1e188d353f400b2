"""
Everything that turns pixels and waveforms into token ids and back. Frozen during training.
1) the SpecVQGAN mel front-end and its Griffin-Lim inverse (needs no weights)
2) PatchKMeansTokenizer: a patch vector-quantizer fitted by k-means (needs no downloaded weights)
3) the taming-transformers VQGAN (ImageNet f16 image model and the SpecVQGAN mel codebook)
4) vocoders: SpecVQGAN's MelGAN and HiFi-GAN generators
All checkpoints are read with torch.load(weights_only=True) and YAML with yaml.safe_load.
"""
import os
import json
import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

# -----------------------------------------------------------------------------
# mel front-end (SpecVQGAN recipe, see fixtures/README.md)

@dataclass
class MelConfig:
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    fmin: float = 125.0
    fmax: float = 7600.0
    clip_seconds: float = 10.0
    frames: int = 848     # frames kept for tokenization (paper: 848 -> 5x53 tokens)

    @property
    def num_samples(self):
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def frames_all(self):
        # frames mel_spectrogram returns for one clip: 860 for 10 s, as the SpecVQGAN release
        return num_mel_frames(self.num_samples, self)

def num_mel_frames(num_samples, cfg):
    # librosa's centred STFT gives 1 + T // hop frames (862 for 10 s); SpecVQGAN keeps 860 of
    # them, i.e. drops the last two whose windows are mostly padding. We generalise that rule.
    return max(1, num_samples // cfg.hop_length - 1)

def _mel_basis(cfg):
    import librosa
    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                               fmin=cfg.fmin, fmax=cfg.fmax)  # (n_mels, n_fft//2+1), Slaney

def mel_spectrogram(wave, cfg):
    """wave: (T,) or (B, T) float -> mel (n_mels, frames) or (B, n_mels, frames) in [0, 1]."""
    import librosa
    wave = np.asarray(wave)
    if wave.ndim not in (1, 2) or not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"mel_spectrogram: expected a float waveform (T,) or (B, T), got {wave.dtype} {wave.shape}")
    if wave.shape[-1] < cfg.n_fft or not np.all(np.isfinite(wave)):
        raise ValueError(f"mel_spectrogram: waveform too short ({wave.shape[-1]} < n_fft) or not finite")
    spec = np.abs(librosa.stft(wave.astype(np.float32), n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                               window='hann', center=True, pad_mode='constant'))  # (..., 513, 1+T//hop)
    mel = np.einsum('mf,...ft->...mt', _mel_basis(cfg), spec)
    mel = 20 * np.log10(np.maximum(mel, 1e-5)) - 20        # dB, minus a 20 dB reference level
    mel = np.clip((mel + 100) / 100, 0.0, 1.0)               # [-100, 0] dB -> [0, 1]
    return mel[..., :num_mel_frames(wave.shape[-1], cfg)].astype(np.float32)

def mel_to_amplitude(mel):
    """Inverse of the [0, 1] normalisation: mel -> linear-amplitude mel energies."""
    return 10.0 ** ((np.asarray(mel, dtype=np.float64) * 100 - 100 + 20) / 20)

def griffin_lim(mel, cfg, n_iter=32):
    """mel (n_mels, T) or (B, n_mels, T) in [0, 1] -> float32 wave (T*hop,) or (B, T*hop)."""
    import librosa
    mel = np.asarray(mel.detach().cpu() if torch.is_tensor(mel) else mel)
    if mel.ndim == 3:
        return np.stack([griffin_lim(m, cfg, n_iter) for m in mel])
    if mel.ndim != 2 or mel.shape[0] != cfg.n_mels:
        raise ValueError(f"griffin_lim: expected a mel of shape ({cfg.n_mels}, T), got {mel.shape}")
    # mel energies -> linear magnitude (non-negative least squares), then phase by Griffin-Lim
    S = librosa.feature.inverse.mel_to_stft(mel_to_amplitude(mel), sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                            power=1.0, fmin=cfg.fmin, fmax=cfg.fmax)
    wave = librosa.griffinlim(S, n_iter=n_iter, hop_length=cfg.hop_length, win_length=cfg.n_fft,
                              center=True, random_state=0)  # fixed here: deterministic phase init
    # istft gives (T-1)*hop samples; pad to T*hop so every vocoder returns the same length
    wave = np.pad(wave, (0, mel.shape[-1] * cfg.hop_length - len(wave)))
    return wave.astype(np.float32)

# -----------------------------------------------------------------------------
# helpers shared by the tokenizers

def _check_input(x, name, channels, size, value_range):
    """Clear one-line errors for wrong shape or range of an encode() input."""
    if not torch.is_tensor(x) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor (B, C, H, W), got {getattr(x, 'shape', type(x))}")
    if x.shape[1] != channels or (size is not None and tuple(x.shape[2:]) != tuple(size)):
        want = f"(B, {channels}, {size[0]}, {size[1]})" if size is not None else f"(B, {channels}, H, W)"
        raise ValueError(f"{name}: expected input {want}, got {tuple(x.shape)}")
    lo, hi = value_range
    if x.numel() and (x.min().item() < lo - 1e-3 or x.max().item() > hi + 1e-3 or not torch.isfinite(x).all()):
        raise ValueError(f"{name}: input values must be in [{lo}, {hi}], got [{x.min().item():.3g}, {x.max().item():.3g}]")

def _fingerprint(t):
    # a short hash of the codebook, recorded in meta.json so a refitted tokenizer with the same
    # shapes is still caught as a mismatch
    return hashlib.sha1(t.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()[:16]

def _torch_load(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a weights-only torch checkpoint ({str(e).splitlines()[0][:200]})")

# -----------------------------------------------------------------------------
# patch k-means tokenizer (fixed here: the weights-free default tokenizer)

class PatchKMeansTokenizer(nn.Module):
    """Non-overlapping (ph, pw) patches, each replaced by the id of its nearest k-means centroid."""

    def __init__(self, codebook, patch, channels, size, value_range):
        super().__init__()
        self.register_buffer('codebook', codebook.float())  # (K, C*ph*pw)
        self.patch, self.channels = tuple(patch), int(channels)
        self.size, self.value_range = tuple(size), tuple(float(v) for v in value_range)
        self.codebook_size = codebook.shape[0]
        self.grid = (self.size[0] // self.patch[0], self.size[1] // self.patch[1])
        self.path = None
        if codebook.shape[1] != self.channels * self.patch[0] * self.patch[1]:
            raise ValueError(f"patch k-means: codebook dim {codebook.shape[1]} does not match "
                             f"{self.channels} channels x patch {self.patch}")

    def to_patches(self, x):
        B, C, H, W = x.shape
        ph, pw = self.patch
        x = x.reshape(B, C, H // ph, ph, W // pw, pw).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, ph, pw)
        return x.reshape(B, (H // ph) * (W // pw), C * ph * pw)                   # (B, h*w, D)

    def from_patches(self, p):
        B = p.shape[0]
        (h, w), (ph, pw), C = self.grid, self.patch, self.channels
        x = p.reshape(B, h, w, C, ph, pw).permute(0, 3, 1, 4, 2, 5)              # (B, C, h, ph, w, pw)
        return x.reshape(B, C, h * ph, w * pw)

    @classmethod
    def fit(cls, x, codebook_size, patch=(16, 16), seed=0, iters=10, value_range=None, max_patches=65536):
        """x: (N, C, H, W) float. k-means++ init then `iters` batched Lloyd steps, on at most
        max_patches random patches (fixed here: bounds the time to seconds on CPU)."""
        if not torch.is_tensor(x) or x.dim() != 4:
            raise ValueError(f"PatchKMeansTokenizer.fit: expected a tensor (N, C, H, W), got {getattr(x, 'shape', type(x))}")
        N, C, H, W = x.shape
        ph, pw = patch
        if H % ph or W % pw:
            raise ValueError(f"PatchKMeansTokenizer.fit: input {H}x{W} is not divisible by patch {ph}x{pw}")
        if value_range is None:  # images live in [-1, 1], mels in [0, 1]
            value_range = (0.0, 1.0) if x.min() >= 0 else (-1.0, 1.0)
        tok = cls(torch.zeros(codebook_size, C * ph * pw), patch, C, (H, W), value_range)
        _check_input(x, 'PatchKMeansTokenizer.fit', C, (H, W), tok.value_range)
        g = torch.Generator().manual_seed(seed)
        data = tok.to_patches(x.detach().float().cpu()).reshape(-1, C * ph * pw)  # (N*h*w, D)
        if data.shape[0] > max_patches:
            data = data[torch.randperm(data.shape[0], generator=g)[:max_patches]]
        if data.shape[0] < codebook_size:
            raise ValueError(f"PatchKMeansTokenizer.fit: {data.shape[0]} patches < codebook size {codebook_size}")
        cb = _kmeans_pp(data, codebook_size, g)
        for _ in range(iters):
            ids, dist = _nearest(data, cb)
            counts = torch.bincount(ids, minlength=codebook_size)
            sums = torch.zeros_like(cb).index_add_(0, ids, data)
            cb = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], cb)
            empty = (counts == 0).nonzero().flatten()
            if len(empty):  # re-seed empty clusters at the worst-fitted patches
                cb[empty] = data[dist.topk(len(empty)).indices]
        tok.codebook.copy_(cb)
        return tok

    @torch.no_grad()
    def encode(self, x):
        """x: (B, C, H, W) in value_range -> ids (B, h*w) int64, row-major."""
        _check_input(x, 'PatchKMeansTokenizer.encode', self.channels, self.size, self.value_range)
        p = self.to_patches(x.float())                                       # (B, L, D)
        ids, _ = _nearest(p.reshape(-1, p.shape[-1]), self.codebook)
        return ids.reshape(x.shape[0], -1)

    @torch.no_grad()
    def decode(self, ids):
        """ids: (B, h*w) int64 -> (B, C, H, W)."""
        if ids.dim() != 2 or ids.shape[1] != self.grid[0] * self.grid[1]:
            raise ValueError(f"PatchKMeansTokenizer.decode: expected ids (B, {self.grid[0] * self.grid[1]}), got {tuple(ids.shape)}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ValueError(f"PatchKMeansTokenizer.decode: ids must be in [0, {self.codebook_size})")
        return self.from_patches(self.codebook[ids.long()])

    def describe(self):
        return {"type": "patch_kmeans", "path": self.path, "codebook_size": self.codebook_size,
                "grid": list(self.grid), "patch": list(self.patch), "channels": self.channels,
                "size": list(self.size), "value_range": list(self.value_range),
                "fingerprint": _fingerprint(self.codebook)}

    def save(self, path):
        obj = {"type": "patch_kmeans", "codebook": self.codebook.cpu(), "patch": list(self.patch),
               "channels": self.channels, "size": list(self.size), "value_range": list(self.value_range)}
        tmp = path + '.tmp'
        torch.save(obj, tmp)
        os.replace(tmp, path)
        self.path = os.path.abspath(path)

    @classmethod
    def load(cls, path):
        obj = _torch_load(path)
        if not isinstance(obj, dict) or obj.get("type") != "patch_kmeans":
            raise ValueError(f"{path}: not a patch k-means tokenizer file")
        tok = cls(obj["codebook"], obj["patch"], obj["channels"], obj["size"], obj["value_range"])
        tok.path = os.path.abspath(path)
        return tok

def _nearest(x, cb, chunk=8192):
    """x (N, D), cb (K, D) -> ids (N,) of the nearest row of cb, squared distances (N,)."""
    ids, dists = [], []
    cb2 = (cb * cb).sum(1)
    for i in range(0, x.shape[0], chunk):
        xi = x[i:i + chunk]
        d = (xi * xi).sum(1, keepdim=True) - 2 * xi @ cb.T + cb2           # (n, K)
        m = d.min(1)
        ids.append(m.indices); dists.append(m.values.clamp(min=0))
    return torch.cat(ids), torch.cat(dists)

def _kmeans_pp(data, k, g, max_init=16384):
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on a random subset of at most max_init points."""
    sub = data[torch.randperm(data.shape[0], generator=g)[:max(max_init, k)]]
    cb = torch.empty(k, data.shape[1])
    cb[0] = sub[torch.randint(sub.shape[0], (1,), generator=g)]
    d = ((sub - cb[0]) ** 2).sum(1)                                          # (n,) distance to nearest centre
    for j in range(1, k):
        # sample proportional to squared distance; all-zero d (duplicate data) falls back to uniform
        p = d if d.sum() > 0 else torch.ones_like(d)
        cb[j] = sub[torch.multinomial(p, 1, generator=g)]
        d = torch.minimum(d, ((sub - cb[j]) ** 2).sum(1))
    return cb

# -----------------------------------------------------------------------------
# building tokenizers from a path or a describe() dict, and checking them against meta.json

def load_tokenizer(spec):
    """spec: a path (patch k-means .pt file, or a VQGAN .ckpt / its log folder) or a describe() dict."""
    if isinstance(spec, dict):
        kind, path = spec.get("type"), spec.get("path")
        if not path:
            raise ValueError(f"tokenizer description has no file path: {spec}")
        if kind == "patch_kmeans":
            return PatchKMeansTokenizer.load(path)
        if kind == "vqgan":
            return VQGANTokenizer.load(path, spec.get("config"))
        raise ValueError(f"unknown tokenizer type {kind!r} (expected 'patch_kmeans' or 'vqgan')")
    spec = str(spec)
    if not os.path.exists(spec):
        raise FileNotFoundError(f"{spec}: no such tokenizer file or folder")
    if os.path.isdir(spec) or spec.endswith('.ckpt'):
        return VQGANTokenizer.load(spec)
    return PatchKMeansTokenizer.load(spec)

def check_tokenizer_matches(meta_modality, tokenizer):
    """meta_modality: meta.json["audio"] or ["image"]. Raises ValueError if the tokenizer differs."""
    want = meta_modality.get("tokenizer") or {}
    have = tokenizer.describe()
    problems = []
    if list(meta_modality.get("grid", [])) != list(tokenizer.grid):
        problems.append(f"grid {meta_modality.get('grid')} vs {list(tokenizer.grid)}")
    if meta_modality.get("codebook_size") != tokenizer.codebook_size:
        problems.append(f"codebook size {meta_modality.get('codebook_size')} vs {tokenizer.codebook_size}")
    for key in ("type", "patch", "channels", "size", "fingerprint"):  # not "path": files may move
        if key in want and key in have and want[key] != have[key]:
            problems.append(f"{key} {want[key]} vs {have[key]}")
    if problems:
        raise ValueError(f"tokenizer {have.get('path')} does not match the one the data was "
                         f"tokenized with ({want.get('path')}): " + "; ".join(problems))
