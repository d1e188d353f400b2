"""
Everything that turns pixels and waveforms into token ids and back. Frozen during training.
0) pixels <-> tensors
1) the SpecVQGAN mel front-end and its Griffin-Lim inverse (needs no weights)
2) tokenizers fitted here, no downloaded weights: patch k-means (the toy, videos) and semantic units
   (your own pairs); load_tokenizers rebuilds any of them from meta.json
3) the taming-transformers VQGAN (ImageNet f16 image model and the SpecVQGAN mel codebook)
4) vocoders: SpecVQGAN's MelGAN and HiFi-GAN generators; tokens -> mel -> wave
All checkpoints are read with torch.load(weights_only=True) and YAML with yaml.safe_load.
"""
import os
import glob
import math
import json
import hashlib
import functools
import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from util import repo_path, torch_load, write_atomic

# -----------------------------------------------------------------------------
# pixels <-> tensors

def pixels_to_tensor(pixels):
    """uint8 pixels (B, H, W, 3), array or tensor -> float (B, 3, H, W) in [-1, 1], as the image
    tokenizers take them."""
    return torch.as_tensor(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1

def tensor_to_pixels(images):
    """float (B, 3, H, W) in [-1, 1] -> uint8 numpy pixels (B, H, W, 3), values outside clamped."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()

def shift_augment(x, g, max_shift):
    """Each item moved by up to max_shift (rows, columns), the edges repeated: where a word starts,
    where a picture's object sits, and a little pitch, should not matter to a probe or a pair encoder."""
    dy, dx = max_shift
    padded = F.pad(x, (dx, dx, dy, dy), mode='replicate')
    H, W = x.shape[2:]
    oy = torch.randint(0, 2 * dy + 1, (len(x),), generator=g)
    ox = torch.randint(0, 2 * dx + 1, (len(x),), generator=g)
    return torch.stack([p[:, a:a + H, b:b + W] for p, a, b in zip(padded, oy.tolist(), ox.tolist())])

# -----------------------------------------------------------------------------
# mel front-end (SpecVQGAN recipe: SPEC.md section 1, tests/fixtures/README.md)

@dataclass
class MelConfig:
    """The mel front-end's settings (the SpecVQGAN release's by default; meta.json keeps a dataset's):
    the STFT, the mel bands, the clip. Each derived property sits beside the fields it reads."""
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256

    @property
    def frames_per_second(self):
        return self.sample_rate / self.hop_length

    n_mels: int = 80
    fmin: float = 125.0
    fmax: float = 7600.0
    clip_seconds: float = 10.0

    @property
    def num_samples(self):
        return int(round(self.sample_rate * self.clip_seconds))

    frames: int = 848     # frames kept for tokenization (paper: 848 -> 5x53 tokens)

    @property
    def tokenized_seconds(self):
        # what the tokenized frames cover, i.e. one window of audio tokens (848 frames: 9.85 s)
        return self.frames * self.hop_length / self.sample_rate

    @property
    def frames_all(self):
        # frames mel_spectrogram returns for one clip: 860 for 10 s, as the SpecVQGAN release
        return num_mel_frames(self.num_samples, self)

def num_mel_frames(num_samples, cfg):
    # librosa's centred STFT gives 1 + T // hop frames (862 for 10 s); SpecVQGAN keeps 860 of
    # them, i.e. drops the last two whose windows are mostly padding. We generalise that rule.
    return max(1, num_samples // cfg.hop_length - 1)

def _mel_basis(cfg):
    return _mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)

@functools.lru_cache(maxsize=8)
def _mel_filters(sr, n_fft, n_mels, fmin, fmax):
    import librosa  # imported lazily: slow to import, and only the audio path needs it
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)  # (n_mels, 1+n_fft//2), Slaney

def mel_spectrogram(wave, cfg):
    """wave: (T,) or (B, T) float -> mel (n_mels, frames) or (B, n_mels, frames) in [0, 1]."""
    import librosa
    wave = np.asarray(wave)
    if wave.ndim not in (1, 2) or not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"mel_spectrogram: expected a float waveform (T,) or (B, T), got {wave.dtype} {wave.shape}")
    if wave.shape[-1] < cfg.n_fft or not np.all(np.isfinite(wave)):
        raise ValueError(f"mel_spectrogram: waveform too short ({wave.shape[-1]} < n_fft) or not finite")
    # the clip's edges are padded by reflection, as in the release the codebook and vocoder were
    # trained on (librosa's default is now zeros; only the first two frames differ)
    spec = np.abs(librosa.stft(wave.astype(np.float32), n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                               window='hann', center=True, pad_mode='reflect'))  # (..., 513, 1+T//hop)
    mel = np.einsum('mf,...ft->...mt', _mel_basis(cfg), spec)
    mel = 20 * np.log10(np.maximum(mel, 1e-5)) - 20        # dB, minus a 20 dB reference level
    mel = np.clip((mel + 100) / 100, 0.0, 1.0)               # [-100, 0] dB -> [0, 1]
    return mel[..., :num_mel_frames(wave.shape[-1], cfg)].astype(np.float32)

def tokenized_mel(wave, cfg):
    """wave (T,) or (B, T) -> the frames the audio tokenizer takes: mel (..., n_mels, cfg.frames) in [0, 1]."""
    return mel_spectrogram(wave, cfg)[..., :cfg.frames]

def mel_to_amplitude(mel):
    """Inverse of the [0, 1] normalisation: mel -> linear-amplitude mel energies."""
    return 10.0 ** ((np.asarray(mel, dtype=np.float64) * 100 - 100 + 20) / 20)

def mel_to_magnitude(amp, cfg):
    """Mel energies (n_mels, T) float64 -> linear STFT magnitude (1 + n_fft/2, T), exactly what
    librosa.feature.inverse.mel_to_stft(power=1) returns. Its NNLS (L-BFGS-B over column blocks of
    librosa.util.MAX_MEM_BLOCK bytes) starts at the clipped pseudo-inverse and, on our mels, stops
    there: the projected gradient of its objective (scaled by 1 / the block's size) is already under
    L-BFGS-B's tolerance pgtol = 1e-5. We run that test (a millisecond) and call librosa only where it
    would iterate: its set-up alone (a bound tuple per unknown, a 513-pair history) took 0.6 s per toy clip."""
    import librosa
    A, A_pinv = _mel_basis_and_pinv(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, amp.dtype.name)
    x = np.einsum('fm,...mt->...ft', A_pinv, amp, optimize=True)  # librosa's starting point
    np.clip(x, 0, None, out=x)
    width = max(1, librosa.util.MAX_MEM_BLOCK // (amp.shape[0] * A.itemsize))  # librosa's columns per block
    for b in range(0, amp.shape[1], width):
        xb, mb = x[:, b:b + width], amp[:, b:b + width]
        diff = np.einsum('mf,...ft->...mt', A, xb, optimize=True) - mb
        g = (1 / mb.size) * np.einsum('mf,...mt->...ft', A, diff, optimize=True)  # the objective's gradient
        if np.abs(np.where(g < 0, g, np.minimum(xb, g))).max() > 1e-5:  # L-BFGS-B's projected gradient
            return librosa.feature.inverse.mel_to_stft(amp, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=1.0,
                                                       fmin=cfg.fmin, fmax=cfg.fmax)
    return x

@functools.lru_cache(maxsize=8)
def _mel_basis_and_pinv(sr, n_fft, n_mels, fmin, fmax, dtype):
    # the filters as mel_to_stft builds them, and their pseudo-inverse once (librosa recomputes it
    # per call: an SVD, slow with several numpy threads on a busy machine)
    import librosa
    A = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=dtype)  # (n_mels, F)
    return A, np.linalg.pinv(A)

def griffin_lim(mel, cfg, n_iter=32, momentum=0.99, chunk=32):
    """mel (n_mels, T) or (B, n_mels, T) in [0, 1] -> float32 wave (T*hop,) or (B, T*hop).
    librosa.griffinlim's algorithm (fast Griffin-Lim, momentum 0.99, a random phase drawn with seed 0
    per item) on the whole batch at once in torch float32: its FFTs use every core. It equals
    librosa's output to 1.2e-4 of a 0.64 peak (3e-13 in float64); its speed: README, "Results"."""
    mel = np.asarray(mel.detach().cpu() if torch.is_tensor(mel) else mel)
    if mel.ndim not in (2, 3) or mel.shape[-2] != cfg.n_mels:
        raise ValueError(f"griffin_lim: expected a mel of shape ({cfg.n_mels}, T) or (B, {cfg.n_mels}, T), got {mel.shape}")
    batch = mel.reshape(-1, *mel.shape[-2:])
    if len(batch) > chunk:  # bounded memory: a 10 s clip's complex STFT and its copies are ~15 MB
        return np.concatenate([griffin_lim(batch[b:b + chunk], cfg, n_iter, momentum) for b in range(0, len(batch), chunk)]
                              ).reshape(*mel.shape[:-2], mel.shape[-1] * cfg.hop_length)
    # mel energies -> linear magnitude (non-negative least squares), then phase by Griffin-Lim
    S = torch.from_numpy(np.stack([mel_to_magnitude(mel_to_amplitude(m), cfg) for m in batch])).float()
    phase = np.random.RandomState(0).random(size=S.shape[1:])  # fixed here: librosa's phase init, seed 0
    angles = S * torch.polar(torch.ones_like(S[0]), torch.from_numpy(2 * np.pi * phase).float())
    window = torch.hann_window(cfg.n_fft)
    frames = mel.shape[-1]
    istft = lambda X: torch.istft(X, cfg.n_fft, cfg.hop_length, cfg.n_fft, window, center=True,
                                  length=(frames - 1) * cfg.hop_length)
    stft = lambda x: torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.n_fft, window, center=True,
                                pad_mode='constant', return_complex=True)  # librosa's padding here
    previous = None
    for _ in range(n_iter):
        rebuilt = stft(istft(angles))
        angles = rebuilt if previous is None else rebuilt - (momentum / (1 + momentum)) * previous
        angles = S * angles / (angles.abs() + torch.finfo(S.dtype).tiny)
        previous = rebuilt
    wave = torch.nn.functional.pad(istft(angles), (0, cfg.hop_length))  # every vocoder returns T*hop samples
    return wave.numpy().reshape(*mel.shape[:-2], frames * cfg.hop_length)

# -----------------------------------------------------------------------------
# helpers shared by the tokenizers

def _check_input(x, name, channels, size, value_range):
    """Clear one-line errors for wrong shape or range of an encode() input."""
    if not torch.is_tensor(x) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor (B, C, H, W), got {getattr(x, 'shape', type(x))}")
    if x.shape[1] != channels or tuple(x.shape[2:]) != tuple(size):
        raise ValueError(f"{name}: expected input (B, {channels}, {size[0]}, {size[1]}), got {tuple(x.shape)}")
    lo, hi = value_range
    if x.numel() and (x.min().item() < lo - 1e-3 or x.max().item() > hi + 1e-3 or not torch.isfinite(x).all()):
        raise ValueError(f"{name}: input values must be in [{lo}, {hi}], got [{x.min().item():.3g}, {x.max().item():.3g}]")

def _fingerprint(t):
    # a short hash of the codebook, recorded in meta.json so a refitted tokenizer with the same
    # shapes is still caught as a mismatch
    return hashlib.sha1(t.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()[:16]

def _save_file(tokenizer, obj, path):
    """A tokenizer's file, written whole or not at all (a temporary name, then a rename); its path is
    kept as given: relative to the repo root when run from there."""
    write_atomic(path, lambda f: torch.save(obj, f))
    tokenizer.path = os.path.normpath(path)

def _read_file(path, type_, what):
    """A tokenizer's file (a dict saved by its save()), checked to be of this type."""
    obj = torch_load(path)
    if not isinstance(obj, dict) or obj.get("type") != type_:
        raise ValueError(f"{path}: not a {what} file")
    return obj

class LearnedTokenizerFile:
    """save() / load() for a tokenizer trained here: one file of type TYPE holding its constructor's
    arguments (ARGS, read from its attributes; tuples as lists) and its weights."""
    TYPE, WHAT, ARGS = None, None, ()

    def save(self, path):
        args = {k: list(v) if isinstance(v, tuple) else v for k in self.ARGS for v in [getattr(self, k)]}
        _save_file(self, {"type": self.TYPE, "state_dict": {k: v.cpu() for k, v in self.state_dict().items()}, **args}, path)

    @classmethod
    def load(cls, path):
        obj = _read_file(path, cls.TYPE, cls.WHAT)
        tok = cls(*(obj[k] for k in cls.ARGS))
        _load_exact(tok, obj["state_dict"], path, path)
        tok.path = os.path.normpath(path)
        return tok.eval().requires_grad_(False)

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
        C, H, W = x.shape[1:]
        ph, pw = patch
        if H % ph or W % pw:
            raise ValueError(f"PatchKMeansTokenizer.fit: input {H}x{W} is not divisible by patch {ph}x{pw}")
        if value_range is None:  # the contract: 1-channel mels live in [0, 1], images in [-1, 1]
            value_range = (0.0, 1.0) if C == 1 else (-1.0, 1.0)
        tok = cls(torch.zeros(codebook_size, C * ph * pw), patch, C, (H, W), value_range)
        _check_input(x, 'PatchKMeansTokenizer.fit', C, (H, W), tok.value_range)
        with _one_thread():
            tok.codebook.copy_(_kmeans(tok.to_patches(x.detach().float().cpu()).reshape(-1, tok.codebook.shape[1]),
                                       codebook_size, seed, iters, max_patches))
        return tok

    @torch.no_grad()
    def encode(self, x):
        """x: (B, C, H, W) in value_range -> ids (B, h*w) int64, row-major."""
        _check_input(x, 'PatchKMeansTokenizer.encode', self.channels, self.size, self.value_range)
        p = self.to_patches(x.float())                                       # (B, L, D)
        ids, _ = _nearest(p.reshape(-1, p.shape[-1]), self.codebook)
        return ids.reshape(x.shape[0], -1)

    def check_ids(self, ids):
        """A clear error for ids that are not (B, h*w) codes of this tokenizer."""
        name = f"{type(self).__name__}.decode"
        if ids.dim() != 2 or ids.shape[1] != self.grid[0] * self.grid[1]:
            raise ValueError(f"{name}: expected ids (B, {self.grid[0] * self.grid[1]}), got {tuple(ids.shape)}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ValueError(f"{name}: ids must be in [0, {self.codebook_size})")

    @torch.no_grad()
    def decode(self, ids):
        """ids: (B, h*w) int64 -> (B, C, H, W)."""
        self.check_ids(ids)
        return self.from_patches(self.codebook[ids.long()])

    def code_vectors(self):
        """(C, D): what each id stands for, here its centroid patch (model.py's embedding_init='codes')."""
        return self.codebook.clone()

    def describe(self):
        return {"type": "patch_kmeans", "path": self.path, "codebook_size": self.codebook_size,
                "grid": list(self.grid), "patch": list(self.patch), "channels": self.channels,
                "size": list(self.size), "value_range": list(self.value_range),
                "fingerprint": _fingerprint(self.codebook)}

    def save(self, path):
        obj = {"type": "patch_kmeans", "codebook": self.codebook.cpu(), "patch": list(self.patch),
               "channels": self.channels, "size": list(self.size), "value_range": list(self.value_range)}
        _save_file(self, obj, path)

    @classmethod
    def load(cls, path):
        obj = _read_file(path, "patch_kmeans", "patch k-means tokenizer")
        tok = cls(obj["codebook"], obj["patch"], obj["channels"], obj["size"], obj["value_range"])
        tok.path = os.path.normpath(path)
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

def _kmeans(data, codebook_size, seed, iters, max_patches):
    """data (N, D) -> codebook (K, D): k-means++ seeding, then `iters` batched Lloyd steps."""
    g = torch.Generator().manual_seed(seed)
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
    return cb

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

@contextlib.contextmanager
def _one_thread():
    # k-means is many small ops: on a shared CPU, OpenMP threads spend more time syncing than
    # computing (10-50x slower measured on 2 busy cores), and one thread is deterministic
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)

# -----------------------------------------------------------------------------
# UnitTokenizer: semantic units, what a pair's picture and sound share (fixed here; the paper uses
# VQGAN / SpecVQGAN codes). A pair encoder, two small CNNs trained with CLIP's contrastive loss to pick
# a picture's own sound among a batch's (no labels), is fitted on the train pairs; the k-means of its
# per-position features are the units (GSLM's and AudioLM's recipe for speech, with the other modality
# as the self-supervision); a small conv decoder per modality renders units -> picture or mel,
# trained on reconstruction. Colours, backgrounds, voices and noise that the other modality cannot
# tell apart stay out of the ids, so the transformer models what crosses over; the decoder renders
# the rest as its average (blurred). Grid: 8 x 8 for pictures, 1 x frames // 8 for mels (time only).

UNIT_INPUT_ROWS = {'image': 32, 'audio': 20}  # encoder input rows (pictures square; mels: frames // 2 columns)
UNIT_POOLS = {'image': ((2, 2), (2, 2), None, None), 'audio': ((2, 2), (2, 2), (2, 1), None)}

def unit_grid(modality, size):
    """The units' grid for an input of size (H, W): UnitEncoder's input rows and columns after its pools."""
    h, w = UNIT_INPUT_ROWS[modality], UNIT_INPUT_ROWS[modality] if modality == 'image' else size[1] // 2
    for pool in filter(None, UNIT_POOLS[modality]):
        h, w = h // pool[0], w // pool[1]
    return (1, w) if modality == 'audio' else (h, w)  # a mel's features are averaged over frequency

class UnitEncoder(nn.Module):
    """(B, C, H, W) in [-1, 1] -> per-position features (B, 8 * width, h, w), unit length; the
    mel's are averaged over frequency (h = 1). embed(): the pair encoder's (B, dim) vector."""

    def __init__(self, channels, modality, width=16, dim=64):
        super().__init__()
        self.modality, layers, c = modality, [], channels
        for w, pool in zip((width, 2 * width, 4 * width, 8 * width), UNIT_POOLS[modality]):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()] + ([nn.MaxPool2d(pool)] if pool else [])
            c = w
        self.features, self.head = nn.Sequential(*layers), nn.Linear(2 * c, dim)

    def pool(self, x):
        rows = UNIT_INPUT_ROWS[self.modality]
        cols = rows if self.modality == 'image' else x.shape[3] // 2
        return F.adaptive_avg_pool2d(x.float(), (rows, cols))

    def forward(self, pooled):
        x = (pooled - pooled.mean((1, 2, 3), keepdim=True)) / (pooled.std((1, 2, 3), keepdim=True) + 1e-5)
        h = self.features(x)
        return h.mean(2, keepdim=True) if self.modality == 'audio' else h

    def embed(self, pooled):
        h = self(pooled).flatten(2)
        return F.normalize(self.head(torch.cat([h.mean(2), h.amax(2)], 1)), dim=1)

APPEARANCE_COLOURS = 4  # a picture's appearance: its 4 main colours and their shares

def picture_palette(x01, k=APPEARANCE_COLOURS, iters=10):
    """Pictures (N, C, H, W) in [0, 1] -> (N, k * (C + 1)): the k-means of each picture's pixel
    colours (seeded at brightness quantiles), largest cluster first, then the clusters' shares. It
    says which colours a picture is made of, not where they are."""
    px = x01.float().flatten(2).transpose(1, 2)                      # (N, P, C)
    order = px.mean(2).argsort(1)
    seeds = ((torch.arange(k) + 0.5) / k * px.shape[1]).long()
    centres = torch.gather(px, 1, order[:, seeds, None].expand(-1, -1, px.shape[2]))
    for _ in range(iters):
        member = F.one_hot(torch.cdist(px, centres).argmin(2), k).float()  # (N, P, k)
        count = member.sum(1)
        centres = torch.where(count[..., None] > 0, member.transpose(1, 2) @ px / count.clamp(min=1)[..., None], centres)
    share, rank = (count / px.shape[1]).sort(1, descending=True)
    centres = torch.gather(centres, 1, rank[..., None].expand(-1, -1, px.shape[2]))
    return torch.cat([centres.flatten(1), share], 1)

class UnitDecoder(nn.Module):
    """ids (B, h*w) -> (B, C, H, W) in [0, 1]: embeddings on the grid, conv + nearest upsampling to
    half the size (mels: 5 bands first), bilinear to the full size. With global_codes K, the item's
    global id (B,) in [0, K] is added to every position's embedding (K: not known); with
    appearance_dim, so is a projection of the item's appearance (B, appearance_dim) (picture_palette)."""

    def __init__(self, codes, grid, channels, size, width=64, global_codes=0, appearance_dim=0):
        super().__init__()
        self.grid, self.size, self.global_codes = tuple(grid), tuple(size), int(global_codes)
        self.appearance = (nn.Sequential(nn.Linear(appearance_dim, width), nn.SiLU(), nn.Linear(width, width))
                           if appearance_dim else None)
        self.bands = 5 if grid[0] == 1 else 1  # a mel's time-only grid grows 5 frequency rows first
        half = (size[0] // 2, size[1] // 2)
        ups = max(1, round(math.log2(half[0] / (grid[0] * self.bands))))
        self.embed = nn.Embedding(codes, width)
        self.global_embed = nn.Embedding(self.global_codes + 1, width) if self.global_codes else None
        self.rows = nn.Conv2d(width, width * self.bands, 3, padding=1)
        layers, c = [], width
        for i in range(ups):
            up = (2, 2 if 2 ** (i + 1) * grid[1] <= half[1] else 1)
            c_out = max(32, c // 2)
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU(), nn.Upsample(scale_factor=up),
                       nn.Conv2d(c, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
            c = c_out
        self.body = nn.Sequential(*layers, nn.Conv2d(c, channels, 3, padding=1))

    def forward(self, ids, global_ids=None, appearance=None):
        e = self.embed(ids)  # (B, h*w, width)
        if self.global_embed is not None:
            unknown = torch.full((len(ids),), self.global_codes, dtype=torch.long, device=ids.device)
            e = e + self.global_embed(unknown if global_ids is None else global_ids)[:, None]
        if self.appearance is not None:
            e = e + self.appearance(appearance)[:, None]
        h = self.rows(e.view(len(ids), *self.grid, -1).permute(0, 3, 1, 2))
        B, C, H, W = h.shape
        h = h.view(B, C // self.bands, H * self.bands, W)  # (mels) the channels' 5 groups become 5 rows
        return F.interpolate(torch.sigmoid(self.body(h)), size=self.size, mode='bilinear', align_corners=False)

class UnitTokenizer(LearnedTokenizerFile, nn.Module):
    """One modality's units: encode (B, C, H, W) in value_range -> ids (B, h*w); decode back.
    global_codes K > 0 (fixed here; the paper has no such token): one more id first, C + the k-means
    cluster of the item's whole pair embedding (UnitEncoder.embed) among K, ids (B, 1 + h*w). What a
    picture and its sound share then sits in one token of each, so the transformer maps a token to a
    token instead of pooling a weak signal spread over every unit (docs/units.md)."""
    TYPE, WHAT = "units", "unit tokenizer"
    ARGS = ("modality", "channels", "size", "unit_codes", "value_range", "width", "global_codes", "appearance_items")

    def __init__(self, modality, channels, size, codes, value_range, width=16, global_codes=0, appearance_items=0):
        super().__init__()
        self.modality, self.channels, self.size, self.unit_codes = modality, int(channels), tuple(size), int(codes)
        self.global_codes, self.appearance_items = int(global_codes), int(appearance_items)
        if self.appearance_items and modality != 'image':
            raise ValueError(f"UnitTokenizer: appearances are a picture's palette; got modality {modality!r}")
        self.codebook_size = self.unit_codes + self.global_codes  # ids [C, C + K) are the global token's
        self.value_range, self.width, self.path = tuple(float(v) for v in value_range), width, None
        self.encoder = UnitEncoder(channels, modality, width)
        self.grid = unit_grid(modality, self.size)
        self.register_buffer('centroids', torch.zeros(self.unit_codes, 8 * width))
        self.register_buffer('global_centroids', torch.zeros(self.global_codes, self.encoder.head.out_features))
        # appearance (fixed here): the palettes of some train pictures and their global codes; the units
        # leave colour out, so decode() draws one (of an item of the same global code) for the decoder
        appearance_dim = APPEARANCE_COLOURS * (self.channels + 1) if self.appearance_items else 0
        self.register_buffer('appearances', torch.zeros(self.appearance_items, appearance_dim))
        self.register_buffer('appearance_globals', torch.zeros(self.appearance_items, dtype=torch.long))
        self.decoder = UnitDecoder(self.unit_codes, self.grid, channels, size, global_codes=self.global_codes,
                                   appearance_dim=appearance_dim)

    @property
    def global_tokens(self):
        """Ids before the grid: 1 with global codes, else 0."""
        return int(self.global_codes > 0)

    def _scale(self, x):  # value_range -> [0, 1] (the encoder's input, the decoder's output)
        lo, hi = self.value_range
        return (x - lo) / (hi - lo)

    def unit_features(self, x01):
        """x (B, C, H, W) in [0, 1] -> (B*h*w, 8 * width) unit-length features, row-major positions."""
        f = F.normalize(self.encoder(self.encoder.pool(x01)), dim=1)
        return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])

    def global_ids(self, x01):
        """x (B, C, H, W) in [0, 1] -> (B,) ids in [C, C + K): the cluster of each item's pair embedding."""
        return _nearest(self.encoder.embed(self.encoder.pool(x01)), self.global_centroids)[0] + self.unit_codes

    @torch.no_grad()
    def fit_global_codes(self, x01, seed=0):
        """global_centroids <- the k-means of the items' pair embeddings (x01 (N, C, H, W) in [0, 1]).
        Returns each item's cluster (N,) in [0, K)."""
        z = torch.cat([self.encoder.embed(self.encoder.pool(x01[b:b + 256])) for b in range(0, len(x01), 256)])
        self.global_centroids.copy_(_kmeans(z, self.global_codes, seed, 50, len(z)))
        return _nearest(z, self.global_centroids)[0]

    @torch.no_grad()
    def fit_appearances(self, x01, global_ids, g):
        """Stores the palettes of appearance_items of the pictures x01 (N, C, H, W) in [0, 1] (a random
        subset) with their global ids (N,) (or None); returns every picture's palette (N, dim)."""
        palettes = torch.cat([picture_palette(x01[b:b + 256]) for b in range(0, len(x01), 256)])
        keep = torch.randperm(len(x01), generator=g)[:self.appearance_items]
        self.appearances.copy_(palettes[keep])
        self.appearance_globals.copy_(global_ids[keep] if global_ids is not None else torch.zeros_like(keep))
        return palettes

    @torch.no_grad()
    def encode(self, x):
        _check_input(x, 'UnitTokenizer.encode', self.channels, self.size, self.value_range)
        x01 = self._scale(x.float())
        ids = _nearest(self.unit_features(x01), self.centroids)[0].view(len(x), -1)
        return torch.cat([self.global_ids(x01)[:, None], ids], 1) if self.global_codes else ids

    @torch.no_grad()
    def decode(self, ids):
        """ids (B, 1 + h*w) as encode gives them with global codes, or (B, h*w) units alone (the
        decoder then draws without the global id) -> (B, C, H, W) in value_range."""
        n, global_ids = math.prod(self.grid), None
        if ids.dim() == 2 and self.global_codes and ids.shape[1] == 1 + n:
            global_ids, ids = ids[:, 0].long() - self.unit_codes, ids[:, 1:]
            if global_ids.min() < 0 or global_ids.max() >= self.global_codes:
                raise ValueError(f"UnitTokenizer.decode: a global id must be in [{self.unit_codes}, {self.codebook_size})")
        if ids.dim() != 2 or ids.shape[1] != n:
            raise ValueError(f"UnitTokenizer.decode: expected ids (B, {n}), got {tuple(ids.shape)}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.unit_codes):
            raise ValueError(f"UnitTokenizer.decode: unit ids must be in [0, {self.unit_codes})")
        lo, hi = self.value_range
        appearance = self.draw_appearance(ids, global_ids) if self.appearance_items else None
        return self.decoder(ids.long(), global_ids, appearance) * (hi - lo) + lo

    def draw_appearance(self, ids, global_ids=None):
        """A stored train picture's palette for each item (B, appearance_dim): one of an item with the
        same global id (any, without one), picked by a hash of the units, so the same ids always
        decode to the same picture and different ones spread over the palettes."""
        position = torch.arange(ids.shape[1], device=ids.device)
        hashes = ((ids.long() + 1) * (2 * position + 1) * 2654435761).sum(1).abs()
        every, picks = torch.arange(self.appearance_items, device=ids.device), []
        for item, h in enumerate(hashes.tolist()):
            pool = every if global_ids is None else (self.appearance_globals == global_ids[item]).nonzero()[:, 0]
            pool = pool if len(pool) else every  # a global code none of the stored pictures has
            picks.append(pool[(h * 40503) % len(pool)])
        return self.appearances[torch.stack(picks)]

    def code_vectors(self):
        """(C + K, 8 * width + dim): each unit's centroid, then each global code's, in their own columns
        (model.py's embedding_init='codes')."""
        return torch.block_diag(self.centroids, self.global_centroids) if self.global_codes else self.centroids.clone()

    def describe(self):
        return {"type": "units", "path": self.path, "modality": self.modality, "codebook_size": self.codebook_size,
                "global_codes": self.global_codes, "grid": list(self.grid), "channels": self.channels,
                "size": list(self.size), "value_range": list(self.value_range),
                "fingerprint": _fingerprint(torch.cat([self.centroids.flatten(), self.global_centroids.flatten()]))}

    @staticmethod
    @torch.enable_grad()  # callers may run under no_grad
    def fit_pair(images, mels, codes, seed=0, steps=None, decoder_steps=None, batch=128, global_codes=0,
                 appearance_items=8192, progress=None):
        """images (N, C, S, S) in [-1, 1] and mels (N, 1, n_mels, T) in [0, 1], row i of each from
        one pair -> {'image': UnitTokenizer, 'audio': UnitTokenizer} with codes[modality] units
        (and global_codes global codes each; the picture's decoder reads the palettes of up to
        appearance_items train pictures). steps (the pair encoder's) and decoder_steps (one count for
        both decoders): None for unit_steps, passes over the N pairs. progress: a file that keeps
        each finished part (the encoder, then each modality's codes and decoder), so an interrupted
        fit on the same inputs resumes after the last one with the result an uninterrupted fit gives."""
        if len(images) != len(mels) or len(images) < max(8, global_codes):
            raise ValueError(f"UnitTokenizer.fit_pair: needs as many pictures as sounds, at least "
                             f"{max(8, global_codes)}, got {len(images)} and {len(mels)}")
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        toks = {'image': UnitTokenizer('image', images.shape[1], images.shape[2:], codes['image'], (-1.0, 1.0),
                                       global_codes=global_codes, appearance_items=min(appearance_items, len(images))),
                'audio': UnitTokenizer('audio', 1, mels.shape[2:], codes['audio'], (0.0, 1.0), global_codes=global_codes)}
        x01 = {'image': (images.float() + 1) / 2, 'audio': mels.float()}
        batch = min(batch, len(images) // 2)
        inputs = json.loads(json.dumps([_fingerprint(x) for x in (images, mels)] + [
            codes, seed, steps, decoder_steps, batch, global_codes, appearance_items]))
        done = _fit_progress(progress, inputs, toks)
        if 'encoder' not in done:
            _fit_pair_encoder(toks, x01, g, steps or unit_steps('encoder', len(images), batch), batch)
            done = _keep_fit_progress(progress, inputs, toks, done + ['encoder'])
        for i, (m, tok) in enumerate(toks.items()):
            if m in done:  # its codes and decoder were fitted before an interruption
                continue
            decoder_g = torch.Generator().manual_seed(seed + 1 + i)  # each decoder its own draws: one's steps leave the other's be
            with torch.no_grad(), _one_thread():
                feats = torch.cat([tok.unit_features(x01[m][b:b + 256]) for b in range(0, len(images), 256)])
                tok.centroids.copy_(_kmeans(feats, tok.unit_codes, seed, 20, 65536))
                ids = _nearest(feats, tok.centroids)[0].view(len(images), -1)
                global_ids = tok.fit_global_codes(x01[m], seed) if global_codes else None
                appearance = tok.fit_appearances(x01[m], global_ids, decoder_g) if tok.appearance_items else None
            steps_m = unit_steps(m, len(images), UNIT_DECODER_BATCH) if decoder_steps is None else decoder_steps
            if steps_m:
                _fit_unit_decoder(tok, ids, x01[m], decoder_g, steps_m, global_ids, appearance)
            done = _keep_fit_progress(progress, inputs, toks, done + [m])
        return {m: tok.eval().requires_grad_(False) for m, tok in toks.items()}

def _fit_progress(path, inputs, toks):
    """The parts of a fit kept in `path` for these inputs, their weights loaded into toks; [] if none."""
    if not path or not os.path.isfile(path):
        return []
    kept = torch_load(path)
    if kept.get('inputs') != inputs:  # another data set or settings: start over
        return []
    for m, tok in toks.items():
        tok.load_state_dict(kept['toks'][m])
        tok.encoder.eval()  # as _fit_pair_encoder leaves it: its batch norms keep their statistics
    return list(kept['done'])

def _keep_fit_progress(path, inputs, toks, done):
    """Writes the fit so far to `path` (whole or not at all); returns done."""
    if path:
        obj = {'inputs': inputs, 'done': done,
               'toks': {m: {k: v.detach().cpu() for k, v in tok.state_dict().items()} for m, tok in toks.items()}}
        write_atomic(path, lambda f: torch.save(obj, f))
    return done

def _fit_pair_encoder(toks, x01, g, steps, batch):
    """CLIP's loss on (picture, sound) pairs: each picture's own sound is the right answer among the
    batch's, and back. Inputs shift at random (where an object sits, when a sound starts, is not what
    a pair shares)."""
    from tqdm import tqdm
    nets = {m: t.encoder for m, t in toks.items()}
    pooled = {m: nets[m].pool(x) for m, x in x01.items()}
    shift = {m: (p.shape[2] // 8, p.shape[3] // 8) if m == 'image' else (1, p.shape[3] // 4) for m, p in pooled.items()}
    opt = torch.optim.AdamW([p for net in nets.values() for p in net.parameters()], lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    target = torch.arange(batch)
    for net in nets.values():
        net.train()
    for _ in tqdm(range(steps), desc='fitting the pair encoder (semantic units)', leave=False):
        ix = torch.randint(len(pooled['image']), (batch,), generator=g)
        z = {m: nets[m].embed(shift_augment(p[ix], g, shift[m])) for m, p in pooled.items()}
        logits = z['image'] @ z['audio'].t() / 0.1
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    for net in nets.values():
        net.eval()

# How long each part of the units trains (fixed here): passes over the pairs, capped at what the digits'
# 4,000 pairs take (600 encoder steps of 128 pairs; 16000 picture and 1200 sound decoder steps of 32), so a
# small folder fits in seconds and a large one no longer than the digits. The picture decoder still gained
# from 8000 to 16000 steps; the sound's keeps the class after 1200, and its step costs 5x a picture's.
UNIT_PASSES = {'encoder': 19.2, 'image': 128.0, 'audio': 9.6}
UNIT_MAX_STEPS = {'encoder': 600, 'image': 16000, 'audio': 1200}
UNIT_DECODER_BATCH = 32

def unit_steps(part, n_pairs, batch):
    """Steps of `part` ('encoder', 'image' or 'audio' decoder): UNIT_PASSES over n_pairs, at most UNIT_MAX_STEPS."""
    return max(1, min(UNIT_MAX_STEPS[part], round(UNIT_PASSES[part] * n_pairs / batch)))

@torch.enable_grad()
def _fit_unit_decoder(tok, ids, target01, g, steps, global_ids=None, appearance=None, batch=UNIT_DECODER_BATCH,
                      unknown_prob=0.1):
    """L1 + L2 reconstruction of the [0, 1] input from its units, global id (N,) and appearance
    (N, dim) if given; the global id is hidden (K) from unknown_prob of the items, so the units alone
    also decode."""
    from tqdm import tqdm
    tok.decoder.requires_grad_(True)
    opt = torch.optim.AdamW(tok.decoder.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    tok.decoder.train()
    for _ in tqdm(range(steps), desc=f'fitting the {tok.modality} unit decoder', leave=False):
        ix = torch.randint(len(ids), (batch,), generator=g)
        gix = None
        if global_ids is not None:
            hide = torch.rand(batch, generator=g) < unknown_prob
            gix = global_ids[ix].masked_fill(hide, tok.global_codes)
        out = tok.decoder(ids[ix], gix, None if appearance is None else appearance[ix])
        loss = (out - target01[ix]).abs().mean() + (out - target01[ix]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    tok.decoder.eval().requires_grad_(False)

# -----------------------------------------------------------------------------
# building tokenizers from a path or a describe() dict, and checking them against meta.json

# the .pt tokenizer files by their "type" (a VQGAN is a .ckpt file or a log folder)
TOKENIZER_FILES = {"patch_kmeans": PatchKMeansTokenizer, "units": UnitTokenizer}

def load_tokenizer(spec):
    """spec: a path (patch k-means .pt file, or a VQGAN .ckpt / its log folder) or a describe() dict."""
    if isinstance(spec, dict):
        kind, path = spec.get("type"), spec.get("path")
        if not path:
            raise ValueError(f"tokenizer description has no file path: {spec}")
        path = repo_path(path)  # recorded relative to the repo root when data.py ran there
        if kind in TOKENIZER_FILES:
            return TOKENIZER_FILES[kind].load(path)
        if kind == "vqgan":
            tok = VQGANTokenizer.load(path, spec.get("config"))
            if spec.get("size"):
                tok.set_size(*spec["size"])  # so decode() works before any encode()
            return tok
        raise ValueError(f"unknown tokenizer type {kind!r} (expected 'patch_kmeans', 'patch_gain_shape', 'conv_vq', "
                         f"'units' or 'vqgan')")
    spec = str(spec)
    if not os.path.exists(spec):
        raise FileNotFoundError(f"{spec}: no such tokenizer file or folder")
    if os.path.isdir(spec) or spec.endswith('.ckpt'):
        return VQGANTokenizer.load(spec)
    kind = torch_load(spec).get("type") if spec.endswith('.pt') else None
    return TOKENIZER_FILES.get(kind, PatchKMeansTokenizer).load(spec)

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

def load_tokenizers(meta, device='cpu'):
    """Both tokenizers named by a dataset's meta.json (or a checkpoint's copy of it), each checked
    against it: the one way every script rebuilds them. Returns {'audio': ..., 'image': ...}."""
    toks = {}
    for m in ('audio', 'image'):  # model.MODALITIES (model.py imports this file, not the reverse)
        toks[m] = load_tokenizer(meta[m]['tokenizer'])  # a path relative to the repo root works from anywhere
        check_tokenizer_matches(meta[m], toks[m])
        toks[m].to(device)
    return toks

# -----------------------------------------------------------------------------
# taming-transformers VQGAN (taming/modules/diffusionmodules/model.py layout; same for SpecVQGAN)

def Normalize(c):
    return nn.GroupNorm(num_groups=32, num_channels=c, eps=1e-6, affine=True)

def swish(x):
    return x * torch.sigmoid(x)

class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = Normalize(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = Normalize(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        # 1x1 projection when widths differ (taming's "nin_shortcut")
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))  # dropout is 0 in every released config
        return self.nin_shortcut(x) + h

class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions, 1x1 conv projections."""
    def __init__(self, c):
        super().__init__()
        self.norm = Normalize(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(B, 1, C, H * W).transpose(2, 3) for m in (self.q, self.k, self.v))  # (B, 1, HW, C)
        h = F.scaled_dot_product_attention(q, k, v)                         # softmax(q k^T / sqrt(C)) v
        return x + self.proj_out(h.transpose(2, 3).reshape(B, C, H, W))

class Resample(nn.Module):
    def __init__(self, c, down):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(c, c, 3, 2 if down else 1, 0 if down else 1)

    def forward(self, x):
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))  # taming pads right/bottom only: H -> ceil(H/2)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))

class Level(nn.Module):
    """One resolution level: res blocks (+ attention), then an optional resample. Holds the
    state_dict names down.{i}.block/attn/downsample and up.{i}.block/attn/upsample."""
    def __init__(self, cin, cout, n_blocks, attn, resample=None):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin if j == 0 else cout, cout) for j in range(n_blocks))
        self.attn = nn.ModuleList(AttnBlock(cout) for _ in range(n_blocks if attn else 0))
        if resample is not None:  # registered as "downsample" or "upsample", as in taming
            setattr(self, resample, Resample(cout, down=resample == 'downsample'))

    def forward(self, x):
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[j](x)
        resample = getattr(self, 'downsample', None) or getattr(self, 'upsample', None)
        return resample(x) if resample is not None else x

class Mid(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))

class Encoder(nn.Module):
    def __init__(self, *, ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution,
                 z_channels, double_z=False, **ignored):
        super().__init__()
        n = len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        mult, res = (1,) + tuple(ch_mult), resolution  # res follows the width; (SpecVQGAN: 848 ... 53)
        self.down = nn.ModuleList()
        for i in range(n):
            self.down.append(Level(ch * mult[i], ch * mult[i + 1], num_res_blocks, res in attn_resolutions,
                                   'downsample' if i != n - 1 else None))
            res = res // 2 if i != n - 1 else res
        c = ch * ch_mult[-1]
        self.mid = Mid(c)
        self.norm_out = Normalize(c)
        self.conv_out = nn.Conv2d(c, 2 * z_channels if double_z else z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(swish(self.norm_out(self.mid(h))))

class Decoder(nn.Module):
    def __init__(self, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, resolution,
                 z_channels, **ignored):
        super().__init__()
        n = len(ch_mult)
        c = ch * ch_mult[-1]
        res = resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(z_channels, c, 3, 1, 1)
        self.mid = Mid(c)
        levels = [None] * n  # built from the coarsest level up, stored by level index as in taming
        for i in reversed(range(n)):
            levels[i] = Level(c, ch * ch_mult[i], num_res_blocks + 1, res in attn_resolutions,
                              'upsample' if i != 0 else None)
            c = ch * ch_mult[i]
            res = res * 2 if i != 0 else res
        self.up = nn.ModuleList(levels)
        self.norm_out = Normalize(c)
        self.conv_out = nn.Conv2d(c, out_ch, 3, 1, 1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))

class VectorQuantizer(nn.Module):
    def __init__(self, n_embed, embed_dim):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def forward(self, z):
        """z (B, D, h, w) -> ids (B, h*w) of the nearest codebook entry (L2), row-major."""
        B, D, h, w = z.shape
        ids, _ = _nearest(z.permute(0, 2, 3, 1).reshape(-1, D), self.embedding.weight)
        return ids.reshape(B, h * w)

class VQGANTokenizer(nn.Module):
    """The frozen VQGAN: encoder -> quant_conv -> nearest code; code -> post_quant_conv -> decoder.
    Image models (in_channels 3) take (B, 3, H, W) in [-1, 1]; mel codebooks (in_channels 1) take
    the mel (B, 1, n_mels, frames) in [0, 1] and feed 2*mel - 1 (SpecVQGAN recipe)."""

    def __init__(self, config):
        super().__init__()
        p = config['model']['params']
        dd = p['ddconfig']
        self.config, self.path, self.config_path = config, None, None
        self.encoder, self.decoder = Encoder(**dd), Decoder(**dd)
        z = dd['z_channels'] * (2 if dd.get('double_z') else 1)
        self.quant_conv = nn.Conv2d(z, p['embed_dim'], 1)
        self.quantize = VectorQuantizer(p['n_embed'], p['embed_dim'])
        self.post_quant_conv = nn.Conv2d(p['embed_dim'], dd['z_channels'], 1)
        self.codebook_size = p['n_embed']
        self.channels = dd['in_channels']
        self.is_mel = self.channels == 1
        self.value_range = (0.0, 1.0) if self.is_mel else (-1.0, 1.0)
        # the (H, W) inputs are encoded at; any size works (fully convolutional) and the grid follows.
        # SpecVQGAN mels are 80 bins x `resolution` frames; image models are square.
        self.set_size(80 if self.is_mel else dd['resolution'], dd['resolution'])
        self.eval()

    def set_size(self, H, W):
        f = 2 ** (len(self.config['model']['params']['ddconfig']['ch_mult']) - 1)  # 16 for f16
        self.size, self.grid = (H, W), (-(-H // f), -(-W // f))  # ceil: taming's padded downsampling

    @torch.no_grad()
    def encode_features(self, x):
        """x in the model's own range ([-1, 1]) -> pre-quantization features (B, embed_dim, h, w)."""
        return self.quant_conv(self.encoder(x))

    @torch.no_grad()
    def encode(self, x):
        """x (B, C, H, W) in value_range -> ids (B, h*w) int64, row-major."""
        if torch.is_tensor(x) and x.dim() == 4 and tuple(x.shape[2:]) != self.size:
            self.set_size(*x.shape[2:])  # any size works (fully convolutional); the grid follows it
        _check_input(x, 'VQGAN encode', self.channels, self.size, self.value_range)
        x = x.float()
        if self.is_mel:
            x = 2 * x - 1
        return self.quantize(self.encode_features(x))

    @torch.no_grad()
    def decode(self, ids, clamp=True):
        """ids (B, h*w) -> (B, C, H, W), clamped to value_range unless clamp=False."""
        h, w = self.grid
        if ids.dim() != 2 or ids.shape[1] != h * w:
            raise ValueError(f"VQGAN decode: expected ids (B, {h * w}) for grid {h}x{w}, got {tuple(ids.shape)}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ValueError(f"VQGAN decode: ids must be in [0, {self.codebook_size})")
        q = self.quantize.embedding(ids.long()).reshape(ids.shape[0], h, w, -1).permute(0, 3, 1, 2)  # (B, D, h, w)
        x = self.decoder(self.post_quant_conv(q))
        x = x[:, :, :self.size[0], :self.size[1]]  # undo the ceil-padding of odd sizes
        x = (x + 1) / 2 if self.is_mel else x
        return x.clamp(*self.value_range) if clamp else x

    def code_vectors(self):
        """(C, embed_dim): the codebook entries (model.py's embedding_init='codes')."""
        return self.quantize.embedding.weight.detach().clone()

    def describe(self):
        return {"type": "vqgan", "path": self.path, "config": self.config_path,
                "codebook_size": self.codebook_size, "grid": list(self.grid), "size": list(self.size),
                "channels": self.channels, "fingerprint": _fingerprint(self.quantize.embedding.weight)}

    @classmethod
    def load(cls, path, config_path=None):
        """path: a .ckpt file, or a log folder holding checkpoints/*.ckpt and configs/*.yaml."""
        ckpt_path, config_path = _find_vqgan_files(path, config_path)
        with open(config_path) as f:
            try:
                config = yaml.safe_load(f)
                config['model']['params']['ddconfig']
            except Exception as e:
                raise ValueError(f"{config_path}: not a VQGAN config with model.params.ddconfig ({e})")
        obj = torch_load(ckpt_path)
        sd = obj.get('state_dict', obj) if isinstance(obj, dict) else None
        if not isinstance(sd, dict):
            raise ValueError(f"{ckpt_path}: no state_dict in checkpoint")
        sd = {k: v for k, v in sd.items() if not k.startswith('loss.')}  # training-loss weights
        model = cls(config)
        _load_exact(model, sd, ckpt_path, config_path)
        model.path, model.config_path = os.path.normpath(ckpt_path), os.path.normpath(config_path)
        return model

def _find_vqgan_files(path, config_path=None):
    """A .ckpt, or a log folder with checkpoints/*.ckpt, and its model config: given, else a .yaml
    next to the .ckpt, else in ../configs. Releases ship logs/NAME/checkpoints/{last,epoch_39}.ckpt
    with logs/NAME/configs/{model,*-project}.yaml (*-lightning.yaml holds no model)."""
    if os.path.isdir(path):
        ckpts = sorted(glob.glob(os.path.join(path, '*.ckpt')) + glob.glob(os.path.join(path, 'checkpoints', '*.ckpt')))
        if not ckpts:
            raise FileNotFoundError(f"{path}: no .ckpt file in it or in its checkpoints/ folder")
        path = next((c for c in ckpts if c.endswith('last.ckpt')), ckpts[-1])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such VQGAN checkpoint")
    here = os.path.dirname(os.path.abspath(path))
    for d in ([] if config_path else [here, os.path.join(here, '..', 'configs')]):
        ys = [y for y in sorted(glob.glob(os.path.join(d, '*.y*ml'))) if not y.endswith('lightning.yaml')]
        if ys:
            config_path = next((y for y in ys if y.endswith(('project.yaml', 'model.yaml'))), ys[0])
            break
    if not config_path or not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path}: no model config (.yaml) given, next to it, or in ../configs")
    return path, config_path

def _load_exact(model, sd, ckpt_path, config_path):
    """load_state_dict with errors that name the missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise ValueError(f"{ckpt_path}: not a checkpoint for this model: missing keys {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}")
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if sd[k].shape != v.shape]
    if bad:
        raise ValueError(f"{ckpt_path}: weights do not match the shapes in {config_path}: {bad[:3]}")
    model.load_state_dict(sd)

# -----------------------------------------------------------------------------
# vocoders: mel (B, n_mels, T) in [0, 1] -> waveform. Weight-norm parameters are folded into plain
# conv weights at load time (w = g * v / ||v||, norm over all dims but 0), the same numbers.

def fold_weight_norm(sd):
    out = {}
    for k, v in sd.items():
        if k.endswith('.weight_g'):
            base = k[:-len('.weight_g')]
            wv = sd[base + '.weight_v']
            norm = wv.flatten(1).norm(dim=1).reshape(-1, *[1] * (wv.dim() - 1))
            out[base + '.weight'] = v * wv / norm
        elif not k.endswith('.weight_v'):
            out[k] = v
    return out

class MelGANResBlock(nn.Module):
    def __init__(self, dim, dilation):
        super().__init__()
        self.block = nn.Sequential(nn.LeakyReLU(0.2), nn.ReflectionPad1d(dilation),
                                   nn.Conv1d(dim, dim, 3, dilation=dilation), nn.LeakyReLU(0.2),
                                   nn.Conv1d(dim, dim, 1))
        self.shortcut = nn.Conv1d(dim, dim, 1)

    def forward(self, x):
        return self.shortcut(x) + self.block(x)

class MelGANGenerator(nn.Module):
    """descript melgan-neurips Generator, as released with SpecVQGAN: upsampling 8*8*2*2 = hop 256."""
    ratios = (8, 8, 2, 2)

    def __init__(self, n_mel_channels=80, ngf=32, n_residual_layers=3):
        super().__init__()
        mult = 2 ** len(self.ratios)
        layers = [nn.ReflectionPad1d(3), nn.Conv1d(n_mel_channels, mult * ngf, 7)]
        for r in self.ratios:
            layers += [nn.LeakyReLU(0.2), nn.ConvTranspose1d(mult * ngf, mult * ngf // 2, 2 * r, stride=r,
                                                             padding=r // 2 + r % 2, output_padding=r % 2)]
            layers += [MelGANResBlock(mult * ngf // 2, 3 ** j) for j in range(n_residual_layers)]
            mult //= 2
        layers += [nn.LeakyReLU(0.2), nn.ReflectionPad1d(3), nn.Conv1d(ngf, 1, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)  # indices match the released state_dict ("model.1...")
        self.hop_length, self.n_mels = 256, n_mel_channels

    def forward(self, mel):
        return self.model(mel)  # (B, n_mels, T) -> (B, 1, T*256)

def load_melgan(path):
    """path: best_netG.pt or its folder (with args.yml). Numbers come from the weights' shapes;
    args.yml is only cross-checked when it is plain YAML (the release pickles a Namespace)."""
    if os.path.isdir(path):
        path = os.path.join(path, 'best_netG.pt')
    sd = torch_load(path)
    if not isinstance(sd, dict) or 'model.1.weight_v' not in sd:
        raise ValueError(f"{path}: not a MelGAN generator state_dict (no model.1.weight_v)")
    n_mels, ngf = sd['model.1.weight_v'].shape[1], sd['model.1.weight_v'].shape[0] // 16
    n_res = sum(k.endswith('.shortcut.weight_v') for k in sd) // len(MelGANGenerator.ratios)
    args_path = os.path.join(os.path.dirname(path), 'args.yml')
    if os.path.isfile(args_path):
        try:
            with open(args_path) as f:
                args = yaml.safe_load(f)
        except yaml.YAMLError:
            args = None  # python-tagged YAML: do not unpickle; the shapes tell us everything
        want = {'n_mel_channels': n_mels, 'ngf': ngf, 'n_residual_layers': n_res}
        for k, v in (args.items() if isinstance(args, dict) else []):
            if k in want and v != want[k]:
                raise ValueError(f"{args_path}: {k}={v} but the weights in {path} have {want[k]}")
    gen = MelGANGenerator(n_mels, ngf, n_res)
    _load_exact(gen, fold_weight_norm(sd), path, args_path)
    return gen.eval()

LRELU_SLOPE = 0.1  # HiFi-GAN's slope inside the generator

class HiFiResBlock1(nn.Module):
    def __init__(self, ch, k, dilation):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(ch, ch, k, dilation=d, padding=(k * d - d) // 2) for d in dilation)
        self.convs2 = nn.ModuleList(nn.Conv1d(ch, ch, k, padding=(k - 1) // 2) for _ in dilation)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x

class HiFiResBlock2(nn.Module):
    def __init__(self, ch, k, dilation):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(ch, ch, k, dilation=d, padding=(k * d - d) // 2) for d in dilation)

    def forward(self, x):
        for c in self.convs:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x

class HiFiGANGenerator(nn.Module):
    """jik876/hifi-gan Generator: natural-log mel (B, num_mels, T) -> (B, 1, T*prod(upsample_rates))."""

    def __init__(self, h):
        super().__init__()
        c0, self.num_kernels = h['upsample_initial_channel'], len(h['resblock_kernel_sizes'])
        self.conv_pre = nn.Conv1d(h.get('num_mels', 80), c0, 7, 1, padding=3)
        self.ups = nn.ModuleList(nn.ConvTranspose1d(c0 // 2 ** i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)
                                 for i, (u, k) in enumerate(zip(h['upsample_rates'], h['upsample_kernel_sizes'])))
        block = HiFiResBlock1 if str(h['resblock']) == '1' else HiFiResBlock2
        self.resblocks = nn.ModuleList(block(c0 // 2 ** (i + 1), k, d) for i in range(len(self.ups))
                                       for k, d in zip(h['resblock_kernel_sizes'], h['resblock_dilation_sizes']))
        self.conv_post = nn.Conv1d(c0 // 2 ** len(self.ups), 1, 7, 1, padding=3)
        self.hop_length = int(np.prod(h['upsample_rates']))

    def forward(self, x):
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            # multi-receptive-field fusion: mean of the level's resblocks
            x = sum(self.resblocks[i * self.num_kernels + j](x) for j in range(self.num_kernels)) / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))  # default slope 0.01 here, as released

def load_hifigan(path):
    """path: a generator file ({'generator': state_dict}) with config.json beside it, or the folder."""
    if os.path.isdir(path):
        names = sorted(f for f in os.listdir(path) if f.startswith(('generator', 'g_')))
        if not names:
            raise FileNotFoundError(f"{path}: no HiFi-GAN generator file (generator*, g_*) in it")
        path = os.path.join(path, names[-1])
    obj = torch_load(path)
    if not isinstance(obj, dict) or 'generator' not in obj:
        raise ValueError(f"{path}: not a HiFi-GAN checkpoint (no 'generator' entry)")
    cfg_path = os.path.join(os.path.dirname(path), 'config.json')
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: HiFi-GAN config.json not found next to {path}")
    try:
        with open(cfg_path) as f:
            h = json.load(f)
    except ValueError as e:
        raise ValueError(f"{cfg_path}: not valid JSON ({e})") from None
    _check_hifigan_config(h, cfg_path)
    gen = HiFiGANGenerator(h)
    _load_exact(gen, fold_weight_norm(obj['generator']), path, cfg_path)
    gen.h = h
    return gen.eval()

def _check_hifigan_config(h, path):
    """Lists that do not fit each other are an error at load: zip() would silently drop entries, and an
    even resblock kernel or a kernel-rate difference that is odd changes the output's length."""
    def positive_ints(v):
        return isinstance(v, list) and len(v) > 0 and all(type(i) is int and i > 0 for i in v)
    rates, kernels = h.get('upsample_rates'), h.get('upsample_kernel_sizes')
    rk, rd, c0 = h.get('resblock_kernel_sizes'), h.get('resblock_dilation_sizes'), h.get('upsample_initial_channel')
    if not (positive_ints(rates) and positive_ints(kernels) and positive_ints(rk) and isinstance(rd, list)
            and all(positive_ints(d) for d in rd) and type(c0) is int and type(h.get('sampling_rate')) is int):
        problem = ("upsample_rates, upsample_kernel_sizes, resblock_kernel_sizes (lists of positive integers), "
                   "resblock_dilation_sizes (lists of them), upsample_initial_channel and sampling_rate are needed")
    elif len(rates) != len(kernels):
        problem = f"{len(rates)} upsample_rates but {len(kernels)} upsample_kernel_sizes"
    elif any(k < u or (k - u) % 2 for u, k in zip(rates, kernels)):
        problem = f"each upsample kernel minus its rate must be even and >= 0: rates {rates}, kernels {kernels}"
    elif len(rk) != len(rd):
        problem = f"{len(rk)} resblock_kernel_sizes but {len(rd)} resblock_dilation_sizes"
    elif any(k % 2 == 0 for k in rk):
        problem = f"resblock_kernel_sizes must be odd, got {rk}"
    elif str(h.get('resblock')) not in ('1', '2'):
        problem = f"resblock must be '1' or '2', got {h.get('resblock')!r}"
    elif c0 % 2 ** len(rates):
        problem = f"upsample_initial_channel {c0} does not halve {len(rates)} times"
    else:
        return
    raise ValueError(f"{path}: {problem}")

def _hifigan_input(mel, h, cfg):
    """[0, 1] SpecVQGAN mel -> HiFi-GAN's natural-log mel. When the filterbanks differ, go through
    the pseudo-inverse of ours to a linear spectrum and apply HiFi-GAN's (fixed here)."""
    amp = mel_to_amplitude(mel)                                              # (B, n_mels, T)
    same = (h.get('num_mels'), h.get('fmin'), h.get('fmax'), h.get('n_fft')) == (cfg.n_mels, cfg.fmin, cfg.fmax, cfg.n_fft)
    if not same:
        theirs = _mel_filters(h['sampling_rate'], h['n_fft'], h['num_mels'], h['fmin'],
                              h['fmax'] or h['sampling_rate'] / 2)
        lin = np.maximum(np.einsum('fm,bmt->bft', np.linalg.pinv(_mel_basis(cfg)), amp), 0)
        amp = np.einsum('mf,bft->bmt', theirs, lin)
    return torch.from_numpy(np.log(np.maximum(amp, 1e-5))).float()

def tokens_to_mel(tokenizer, ids, frames_per_window):
    """Sound ids, one clip as the model gives it (B, La) or a continued sound's grid (B, h, W), W >= w
    token columns -> mel (B, n_mels, W * frames_per_window / w) numpy in [0, 1], decoded one window of
    the tokenizer's w columns at a time, as it was fitted (the last window padded with its last column,
    the padding's frames cut). The vocoder (load_vocoder) turns it into a wave."""
    h, w = tokenizer.grid
    flat = ids.reshape(len(ids), -1)
    g = getattr(tokenizer, 'global_tokens', 0) if ids.dim() == 2 else 0  # a continued sound's grid has none
    first, cols = flat[:, :g], flat[:, g:].view(len(ids), h, -1)  # cols (B, h, W) frequency x time
    W = cols.shape[2]
    cols = torch.cat([cols, cols[:, :, -1:].expand(-1, -1, -W % w)], 2)  # padded to whole windows
    # a clip's global token (units with global codes) goes with each window it decodes
    mel = torch.cat([tokenizer.decode(torch.cat([first, c.reshape(-1, h * w)], 1))[:, 0] for c in cols.split(w, 2)], 2)
    return mel[:, :, :W * frames_per_window // w].float().clamp(0, 1).cpu().numpy()

def tokens_to_wave(tokenizer, ids, cfg, vocoder, seconds=None, timed=None):
    """Sound ids, as tokens_to_mel takes them -> (mel (B, n_mels, T) numpy in [0, 1], wave (B, T * hop)):
    tokens_to_mel, then the vocoder (load_vocoder); both cut to `seconds` if given (a continuation's
    windows cover whole token columns). timed(part) -> a context manager around each part ('decode',
    'vocoder'): evaluate.py's timings."""
    timed = timed or contextlib.nullcontext  # nullcontext(part): no timing
    with timed('decode'):
        mel = tokens_to_mel(tokenizer, ids, cfg.frames)  # (B, n_mels, T)
    with timed('vocoder'):
        wave = vocoder(mel)  # (B, samples)
    if seconds:
        mel, wave = mel[:, :, :math.ceil(seconds * cfg.frames_per_second)], wave[:, :round(seconds * cfg.sample_rate)]
    return mel, wave

def load_vocoder(spec, cfg):
    """spec None / 'griffinlim' -> Griffin-Lim; else a MelGAN best_netG.pt (or folder) or a HiFi-GAN
    generator (or folder). Returns f(mel (B, n_mels, T) in [0, 1]) -> float32 (B, T*hop), every
    sound within full scale (peak_limit)."""
    if spec is None or str(spec).lower() in ('griffinlim', 'griffin-lim', 'griffin_lim'):
        return lambda mel: peak_limit(griffin_lim(_as_mel_batch(mel, cfg), cfg))
    spec = str(spec)
    if not os.path.exists(spec):
        raise FileNotFoundError(f"{spec}: no such vocoder file or folder")
    is_melgan = (os.path.isfile(os.path.join(spec, 'best_netG.pt')) if os.path.isdir(spec)
                 else 'generator' not in torch_load(spec))
    gen = load_melgan(spec) if is_melgan else load_hifigan(spec)
    sr = cfg.sample_rate if is_melgan else gen.h['sampling_rate']
    if gen.hop_length != cfg.hop_length or sr != cfg.sample_rate:
        raise ValueError(f"{spec}: vocoder hop {gen.hop_length} at {sr} Hz does not match the mel config "
                         f"(hop {cfg.hop_length} at {cfg.sample_rate} Hz)")
    if is_melgan and gen.n_mels != cfg.n_mels:  # (HiFi-GAN inputs are re-mapped to its own bands)
        raise ValueError(f"{spec}: MelGAN takes {gen.n_mels} mel bands, the mel config has {cfg.n_mels}")

    @torch.no_grad()
    def vocode(mel):
        mel = _as_mel_batch(mel, cfg)
        x = torch.from_numpy(mel).float() if is_melgan else _hifigan_input(mel, gen.h, cfg)
        return peak_limit(gen(x).squeeze(1).numpy())                          # (B, T*hop)
    return vocode

def peak_limit(wave, ceiling=0.99):
    """wave (..., T) -> float32, each sound that peaks above full scale (1.0) scaled down to peak at
    `ceiling`; the others unchanged. Griffin-Lim's level is not controlled (a quarter of generated
    sounds peaked above 1.0) and a 16-bit file would clip them. A plain gain (fixed here)."""
    wave = np.asarray(wave, np.float32)
    peak = np.abs(wave).max(-1, keepdims=True)  # (..., 1)
    return wave * np.where(peak > 1.0, ceiling / np.maximum(peak, 1e-12), 1.0).astype(np.float32)

def splice(given, made, a, b, sr, fade=0.02):
    """given (B, T0), made (B, T1) waves -> (B, T1): made inside [a, b] s, given outside,
    with `fade` s linear crossfades centred on a and b."""
    given = np.pad(given, ((0, 0), (0, max(0, made.shape[1] - given.shape[1]))))[:, :made.shape[1]]
    t = np.arange(made.shape[1]) / sr
    inside = np.clip(np.minimum(t - a, b - t) / fade + 0.5, 0, 1)  # 1 inside the range, 0 outside
    return (inside * made + (1 - inside) * given).astype(np.float32)

def _as_mel_batch(mel, cfg):
    mel = np.asarray(mel.detach().cpu() if torch.is_tensor(mel) else mel, dtype=np.float32)
    if mel.ndim == 4 and mel.shape[1] == 1:
        mel = mel[:, 0]  # the tokenizers' (B, 1, n_mels, T) layout
    if mel.ndim != 3 or mel.shape[1] != cfg.n_mels:
        raise ValueError(f"vocoder: expected a mel batch (B, {cfg.n_mels}, T), got {mel.shape}")
    if mel.min() < -1e-3 or mel.max() > 1 + 1e-3:
        raise ValueError(f"vocoder: mel values must be in [0, 1], got [{mel.min():.3g}, {mel.max():.3g}]")
    return mel
