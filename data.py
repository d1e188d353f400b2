"""
Turns audio-visual material into the token format train.py reads (see README, "Data"):
  python data.py toy --out data/toy                      # the embedded synthetic dataset
  python data.py videos CLIPS/ --out data/vggsound [--csv vggsound.csv] [--shard K/N]
  python data.py pairs FOLDER/ --out data/mine           # <id>.png + <id>.wav pairs
  python data.py merge data/vgg.0 data/vgg.1 --out data/vggsound
1) preprocessing (SPEC 1): load_image, load_audio, ffmpeg video decoding; 1b) a trained checkpoint read
   back with its dataset's tokenizers (sample.py, evaluate.py); 1c) sample.py's files (mel panel, video)
2) the embedded toy dataset and its analytic probes (no learned weights)
3) real material: parallel decoding, shard-wise resumable writes, skipped.tsv, merge
"""
import os
import io
import argparse
import re
import sys
import csv
import glob
import json
import math
import shutil
import hashlib
import tempfile
import time
import subprocess
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image, ImageDraw, ImageOps
from tqdm import tqdm

from model import MODALITIES, load_model
from tokenizers import (ROOT, ArgumentParser, AtomicFiles, ConvVQTokenizer, MelConfig, PatchGainShapeTokenizer,
                        PatchKMeansTokenizer, UnitTokenizer, load_tokenizer, load_tokenizers, mel_spectrogram,
                        pixels_to_tensor, report_error, tokenized_mel, writable_folder, write_atomic)

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.webp')
AUDIO_EXTS = ('.wav', '.flac', '.ogg', '.mp3')
MIN_SIDE, MAX_PIXELS = 16, 8192 * 8192   # fixed here: smaller/larger images are skipped as unusable
MIN_AUDIO_SECONDS = 0.1
SPLITS = ('train', 'val', 'test')
# what data.py fits on the train items when no tokenizer file is given: 'kmeans' (patch k-means), 'gainshape'
# (patch gain-shape codes, whose ids factor into shape x gain) or 'vq' (a conv VQ autoencoder); README
TOKENIZER_KINDS = {'kmeans': PatchKMeansTokenizer, 'gainshape': PatchGainShapeTokenizer, 'vq': ConvVQTokenizer,
                   'units': UnitTokenizer}
UNIT_CODES = 128  # units a modality (tokenizers.UnitTokenizer): measured on the digits, README
UNIT_GLOBAL_CODES = 16  # global codes a modality with units: one id first naming the item's cluster (README)
DEFAULT_TOKENIZER = 'kmeans'  # prepare()'s and `data.py videos`' default
# `data.py pairs` and `data.py digits`: semantic units with global codes, the tokenizers the recipe for
# new data was measured with (README, "Bring your own paired data"); k-means codes learn each modality
# there but not the mapping between them
PAIRS_TOKENIZER = 'units'
GAIN_CODES = 16  # a gain-shape tokenizer's mean-and-contrast codes (fixed here)

class BadInput(ValueError):
    """An item that cannot be used: skipped and listed in skipped.tsv, never fatal."""

# -----------------------------------------------------------------------------
# 1) preprocessing (SPEC 1)

def _to_rgb(im):
    """Any PIL mode -> RGB. 16-bit and float greys are scaled, transparency is composited on white."""
    if im.mode in ('I;16', 'I;16L', 'I;16B', 'I', 'F'):
        a = np.asarray(im, dtype=np.float32)
        a = a / 257.0 if im.mode.startswith('I;16') or a.max() > 255 else a * (255.0 if a.max() <= 1 else 1)
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), 'L')
    if im.mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa') or 'transparency' in im.info:
        im = im.convert('RGBA')
        bg = Image.new('RGBA', im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert('RGB')
    return im.convert('RGB')  # L, 1, P, CMYK, YCbCr, ...

def image_array(path, size):
    """Image file -> uint8 (size, size, 3): shorter side resized to `size` (bicubic, antialiased),
    centre crop (SPEC 1). Raises BadInput naming the file."""
    try:
        with Image.open(path) as im:
            w, h = im.size  # read from the header: a huge image is refused before decoding it
            if min(w, h) < MIN_SIDE:
                raise BadInput(f"{path}: image too small ({w}x{h}, need at least {MIN_SIDE} px a side)")
            if w * h > MAX_PIXELS:
                raise BadInput(f"{path}: image too large ({w}x{h} > {MAX_PIXELS} pixels)")
            im = _to_rgb(ImageOps.exif_transpose(im))
    except BadInput:
        raise
    except Image.DecompressionBombError as e:  # PIL's own size check at open
        raise BadInput(f"{path}: image too large ({str(e)[:80]})") from None
    except Exception as e:  # truncated, not an image, unsupported mode
        raise BadInput(f"{path}: not a readable image ({type(e).__name__}: {str(e)[:100]})") from None
    w, h = im.size
    s = size / min(w, h)
    W, H = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((W, H), Image.BICUBIC)  # PIL widens the kernel when shrinking: antialiased
    left, top = (W - size) // 2, (H - size) // 2
    return np.array(im.crop((left, top, left + size, top + size)))

PAIR_VIEWS = 1  # image views stored per pair: 1 = the picture alone; more, an option (README, "Bring your own paired data")

def image_views(path, size, n, seed):
    """n views of a picture, uint8 (n, size, size, 3). The middle one (n // 2) is image_array's; the
    others are random crops of 70-100% of its centre square's area (aspect 3/4 to 4/3, no flips: they
    would mirror text) resized to `size`. A pair has one picture where a video has frames; training
    picks one of them per step, as the paper picks a frame (an option, fixed here: no gain measured
    in 800 steps on the digits benchmark; README)."""
    plain = image_array(path, size)
    if n == 1:
        return plain[None]
    big = Image.fromarray(image_array(path, 2 * size))  # crops keep detail: cut from twice the size
    rng, S, views = np.random.default_rng(seed), 2 * size, []
    for _ in range(n - 1):
        area, aspect = rng.uniform(0.7, 1.0), np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w, h = min(S, round(S * np.sqrt(area * aspect))), min(S, round(S * np.sqrt(area / aspect)))
        x, y = rng.integers(S - w + 1), rng.integers(S - h + 1)
        views.append(np.array(big.crop((x, y, x + w, y + h)).resize((size, size), Image.BICUBIC)))
    return np.stack(views[:n // 2] + [plain] + views[n // 2:])

def load_image(path, size):
    """Image file -> float tensor (3, size, size) in [-1, 1] (SPEC 1)."""
    return pixels_to_tensor(image_array(path, size)[None])[0]

def load_audio(path, sample_rate, seconds):
    """Audio file -> float32 (round(sample_rate * seconds),): channels averaged (SPEC 1), resampled,
    zero-padded or cut. Only the first `seconds` are read: an hour-long file costs one clip.
    Raises BadInput for a missing or undecodable file, too short, silent or non-finite audio."""
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            x = f.read(frames=int(np.ceil(seconds * sr)), dtype='float32', always_2d=True)  # (T, C)
    except Exception as e:
        try:
            os.stat(path)  # a missing file, a broken link or a symlink loop: say which
        except OSError as err:
            raise BadInput(f"{path}: cannot open ({err.strerror})") from None
        x, sr = _ffmpeg_audio(path, seconds, str(e))  # formats libsndfile lacks (some mp3, m4a)
    if x.shape[0] < MIN_AUDIO_SECONDS * sr:
        raise BadInput(f"{path}: audio too short ({x.shape[0] / sr:.3f} s < {MIN_AUDIO_SECONDS} s)")
    x = x.mean(1)  # mono by averaging, as the released VGGSound mels
    if not np.all(np.isfinite(x)):
        raise BadInput(f"{path}: audio contains NaN or infinite samples")
    if not np.any(x):
        raise BadInput(f"{path}: audio is silent (all samples are zero)")
    if sr != sample_rate:
        import librosa
        x = librosa.resample(x, orig_sr=sr, target_sr=sample_rate)
    n = int(round(sample_rate * seconds))
    return np.pad(x[:n], (0, max(0, n - len(x)))).astype(np.float32)

def ffmpeg_exe():
    """The system ffmpeg, else the binary the imageio-ffmpeg wheel ships (a pip-only install)."""
    exe = shutil.which('ffmpeg')
    if exe is None:
        try:
            import imageio_ffmpeg
            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except Exception:
            raise FileNotFoundError("ffmpeg not found: install it (apt-get install ffmpeg) "
                                    "or `pip install imageio-ffmpeg`") from None
    return exe

def _ffmpeg(args, what):
    r = subprocess.run([ffmpeg_exe(), '-nostdin', '-hide_banner', '-y', *args], capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or ['no output'])[-1]
        raise BadInput(f"{what}: ffmpeg failed ({msg[:160]})")
    return r

def _ffmpeg_audio(path, seconds, why):
    """The first `seconds` of any audio ffmpeg decodes; ffmpeg's own error when it cannot (libsndfile's
    can mislead, e.g. "File does not exist" for a garbage mp3)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _ffmpeg(['-v', 'error', '-i', path, '-vn', '-t', f'{seconds}', '-c:a', 'pcm_f32le', f'{tmp}/a.wav'], path)
            return sf.read(f'{tmp}/a.wav', dtype='float32', always_2d=True)
        except (FileNotFoundError, RuntimeError):  # no ffmpeg, or no audio in what it wrote
            raise BadInput(f"{path}: cannot decode audio ({why[:100]})") from None

def probe_video(path):
    """-> (duration seconds, has_video, has_audio) from ffmpeg's stream listing (no ffprobe in pip's build)."""
    err = subprocess.run([ffmpeg_exe(), '-nostdin', '-hide_banner', '-i', path],
                         capture_output=True, text=True).stderr
    m = re.search(r'Duration: (\d+):(\d+):(\d+(?:\.\d+)?)', err)
    has_video = re.search(r'Stream #.*: Video:', err) is not None
    has_audio = re.search(r'Stream #.*: Audio:', err) is not None
    if m is None:
        last = (err.strip().splitlines() or ['no output'])[-1].replace(f'{path}: ', '')
        raise BadInput(f"{path}: not a readable video ({last[:120]})")
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]), has_video, has_audio

def decode_video(path, size, frames, cfg):
    """Clip -> (frames uint8 (F, size, size, 3), wave float32 (cfg.num_samples,)).
    Frame i is the first frame at or after t_i = (i + 0.5) * D / F, D = min(duration, clip length)."""
    duration, has_video, has_audio = probe_video(path)
    if not has_video:
        raise BadInput(f"{path}: no video stream")
    if not has_audio:
        raise BadInput(f"{path}: no audio stream")
    D = min(duration, cfg.clip_seconds)
    if D <= 0:
        raise BadInput(f"{path}: zero duration")
    k = f'{frames}/{D:.6f}'  # targets passed by time t: floor(t*F/D + 0.5); select when it grows
    sel = (f"select='if(isnan(prev_pts),gte(floor(t*{k}+0.5),1),"
           f"gt(floor(t*{k}+0.5),floor(prev_pts*TB*{k}+0.5)))'")
    with tempfile.TemporaryDirectory() as tmp:
        _ffmpeg(['-v', 'error', '-i', path, '-map', '0:v:0', '-vf', f'setpts=PTS-STARTPTS,{sel}',
                 '-fps_mode', 'passthrough', '-frames:v', str(frames), f'{tmp}/%03d.png',
                 '-map', '0:a:0', '-t', f'{cfg.clip_seconds}', '-c:a', 'pcm_f32le', f'{tmp}/a.wav'], path)
        names = sorted(f for f in os.listdir(tmp) if f.endswith('.png'))
        if not names:
            raise BadInput(f"{path}: no video frame could be decoded")
        imgs = [image_array(os.path.join(tmp, f), size) for f in names]
        imgs += imgs[-1:] * (frames - len(imgs))  # very low frame rates: repeat the last frame
        try:
            wave = load_audio(f'{tmp}/a.wav', cfg.sample_rate, cfg.clip_seconds)
        except BadInput as e:
            raise BadInput(f"{path}: {str(e).split(': ', 1)[1]}") from None
    return np.stack(imgs), wave

# -----------------------------------------------------------------------------
# 1b) a trained checkpoint read back for generation (sample.py, evaluate.py)

def find_checkpoint(out_dir):
    """out_dir's ckpt.pt (or out_dir, a file), as nanoGPT; without one, out/ckpt.pt, else the one
    trained out*/ckpt.pt here or in the repo (the quick start writes out-toy/), said aloud."""
    if out_dir is not None:
        return out_dir if os.path.isfile(out_dir) else os.path.join(out_dir, 'ckpt.pt')
    if os.path.isfile(os.path.join('out', 'ckpt.pt')):
        return os.path.join('out', 'ckpt.pt')
    found = {os.path.realpath(f): os.path.normpath(f) for d in ('.', ROOT) for f in glob.glob(os.path.join(d, 'out*', 'ckpt.pt'))}
    if len(found) > 1:
        raise ValueError(f'{len(found)} trained checkpoints, choose one with --out_dir: {", ".join(sorted(found.values()))}')
    if not found:
        raise FileNotFoundError('out/ckpt.pt: no such checkpoint (train one, e.g. python train.py config/toy.py, or give --out_dir)')
    path = found.popitem()[1]
    print(f'using {path}, the only trained checkpoint (--out_dir to choose)')
    return path

def load_trained(path, device='cpu'):
    """A train.py checkpoint and what generation needs from it: (model in eval mode, checkpoint dict,
    dataset meta, MelConfig, {'audio': tokenizer, 'image': tokenizer}). The tokenizers are rebuilt
    from the copy of meta.json the checkpoint carries, the one source sample.py and evaluate.py use,
    and checked against the model's grids and codebook sizes."""
    try:
        model, ckpt = load_model(path, device)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as e:  # truncated file, wrong shapes: name the file, no traceback
        raise ValueError(f'{path}: cannot load the checkpoint ({type(e).__name__}: {str(e)[:200]})') from None
    meta = ckpt.get('dataset_meta')
    if not meta:
        raise ValueError(f'{path}: no dataset_meta in the checkpoint, cannot rebuild the tokenizers')
    toks = load_tokenizers(meta, device)
    for m, tok in toks.items():
        want = [ckpt['model_args'][f'{m}_{k}'] for k in ('grid_h', 'grid_w', 'codebook_size')]
        if [*tok.grid, tok.codebook_size] != want:
            raise ValueError(f'{path}: the model wants {m} grid {want[:2]} and {want[2]} codes, '
                             f'tokenizer {meta[m]["tokenizer"].get("path")} has {list(tok.grid)} and {tok.codebook_size}')
    return model, ckpt, meta, MelConfig(**meta['audio']['mel']), toks

# -----------------------------------------------------------------------------
# 1c) sample.py's files: the picture beside its mel, a still video, all written whole

# magma-like colormap, 6 anchors linearly interpolated: no matplotlib (fixed here)
MEL_COLORS = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]],
                      np.float32)

def mel_panel(image, mel, span=None, height=256):
    """image (S, S, 3) uint8 beside mel (n_mels, T) in [0, 1], both `height` px tall; span (a, b)
    in mel frames is outlined (the inpainted range). Returns a PIL image."""
    x = np.clip(mel[::-1], 0, 1) * (len(MEL_COLORS) - 1)  # (n_mels, T), low frequencies at the bottom
    i = np.minimum(x.astype(int), len(MEL_COLORS) - 2)
    f = (x - i)[..., None]
    spec = Image.fromarray(((1 - f) * MEL_COLORS[i] + f * MEL_COLORS[i + 1]).astype(np.uint8))  # (n_mels, T, 3)
    spec = spec.resize((max(mel.shape[1], 2 * height), height), Image.BILINEAR)  # >= 2:1 for short clips
    out = Image.new('RGB', (height + 8 + spec.width, height), 'white')
    out.paste(Image.fromarray(image).resize((height, height), Image.BICUBIC), (0, 0))
    out.paste(spec, (height + 8, 0))
    if span is not None:
        a, b = (height + 8 + round(s * spec.width / mel.shape[1]) for s in span)
        ImageDraw.Draw(out).rectangle([a, 0, b - 1, height - 1], outline='white', width=2)
    return out

def still_video(ffmpeg, picture, still, wav, seconds, out):
    """sample.py's --video: an mp4 at `out`, the picture (S, S, 3) uint8 shown at 256 px (written to the
    png `still` first: toy pictures are tiny) with the sound of the file `wav`, `seconds` long (-t, as
    -shortest overshoots a looped picture). Returns whether ffmpeg succeeded."""
    Image.fromarray(picture).resize((256, 256), Image.BICUBIC).save(still, format='PNG')
    cmd = [ffmpeg, '-y', '-loglevel', 'error', '-loop', '1', '-i', str(still), '-i', str(wav), '-c:v', 'libx264',
           '-tune', 'stillimage', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-t', f'{seconds:.3f}', '-f', 'mp4', str(out)]
    return subprocess.run(cmd, capture_output=True).returncode == 0

def write_samples(folder, names, template, sr, waves, shown, mels, images=None, span=None, ffmpeg=None):
    """sample.py's files, one set per name: NAME.wav (waves (B, T), 16-bit; None: none), NAME.png
    (images, generated pictures (B, S, S, 3) uint8), NAME_mel.png (shown (B, S, S, 3) uint8 beside
    mels (B, n_mels, T), span outlined) and, given ffmpeg, NAME.mp4. Every file is written under a
    temporary name first (tokenizers.AtomicFiles(template)); all are renamed once all exist."""
    out = Path(folder)
    with AtomicFiles(template) as files:
        still = files.path(out / 'still.png', keep=False)  # the video's picture
        for j, name in enumerate(names):
            if waves is not None:
                wav = files.path(out / f'{name}.wav', f'sound, {len(waves[j]) / sr:.2f} s at {sr} Hz')
                sf.write(wav, waves[j], sr, format='WAV', subtype='PCM_16')
            if images is not None:
                Image.fromarray(images[j]).save(files.path(out / f'{name}.png', 'generated image'), format='PNG')
            mel_panel(shown[j], mels[j], span).save(files.path(out / f'{name}_mel.png', 'image | mel-spectrogram'), format='PNG')
            if ffmpeg and waves is not None and not still_video(ffmpeg, shown[j], still, wav, len(waves[j]) / sr,
                                                                files.path(out / f'{name}.mp4', 'video')):
                raise ValueError(f'ffmpeg failed to write {out / name}.mp4')
    for final, what, replaced in files.written:
        print(f'wrote {final} ({what}{"; replaced the old file, --overwrite" if replaced else ""})')

# -----------------------------------------------------------------------------
# 2) the embedded toy dataset: the picture decides the sound (fixed here)
# Class = (shape, colour). Colour sets the pitch, shape sets the timbre: a pure tone (square), or
# the tone with a second, quieter partial 5 mel bands above it (ring), below it (hbar) or both
# (vbar). The four pitches sit at the centres of mel bands 8, 24, 40, 56, one per 16-band row of
# audio patches, with their partials inside the same row, so every audio token shows the class.
# The class must explain most of every token, or a tiny model spends its few minutes on nuisance
# detail and never learns to use the other modality; and the sound must not need all its tokens
# right to be heard as its class (README, "Why the toy looks the way it does": the designs that
# failed). So the shapes fill most of the picture near its middle on a plain grey, the sound is one
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

# -----------------------------------------------------------------------------
# writing the token format (README, "Data"): arrays first, meta.json last, all via temporary names

def save_npy(path, a):
    write_atomic(path, lambda f: np.save(f, a))

def save_wav(path, wave, sr):  # float samples: exactly what was tokenized
    write_atomic(path, lambda f: sf.write(f, wave, sr, subtype='FLOAT', format='WAV'))

def save_png(path, img):
    write_atomic(path, lambda f: Image.fromarray(img).save(f, format='PNG'))

def save_text(path, text):
    write_atomic(path, lambda f: f.write(text), 'w')

def save_skipped(out, rows):
    # item<TAB>reason, quoted as the csv module does: a tab or newline in a file name stays in its row
    buf = io.StringIO()
    csv.writer(buf, delimiter='\t', lineterminator='\n').writerows([('item', 'reason'), *rows])
    save_text(f'{out}/skipped.tsv', buf.getvalue())

def read_skipped(d):
    if not os.path.exists(f'{d}/skipped.tsv'):
        return []
    with open(f'{d}/skipped.tsv', newline='') as f:
        return [tuple(r) for r in list(csv.reader(f, delimiter='\t'))[1:]]

def save_meta(out, meta):
    write_atomic(f'{out}/meta.json', lambda f: json.dump(meta, f, indent=1), 'w')

def is_complete(out):
    """meta.json is written last, so its presence (with every array) means a finished dataset."""
    try:
        meta = json.load(open(os.path.join(out, 'meta.json')))
        return all(os.path.exists(f'{out}/{s}_{m}.npy') for s in meta['splits'] for m in MODALITIES)
    except (OSError, ValueError, KeyError, TypeError):
        return False

# what the learned class probes (evaluate.py) see: at most PROBE_ITEMS labelled train items, pictures
# shrunk to 64 px and mels pooled to at most 256 frames, so they stay small even for VGGSound
PROBE_ITEMS, PROBE_SIZE, PROBE_FRAMES = 5000, 64, 256

def probe_image_input(images):
    """uint8 (N, S, S, 3) -> uint8 (N, 64, 64, 3) (bicubic, antialiased when shrinking)."""
    if images.shape[1] == PROBE_SIZE or len(images) == 0:
        return np.asarray(images, np.uint8).reshape(-1, PROBE_SIZE, PROBE_SIZE, 3)
    return np.stack([np.asarray(Image.fromarray(im).resize((PROBE_SIZE, PROBE_SIZE), Image.BICUBIC)) for im in images])

def probe_mel_input(mels):
    """float (N, n_mels, T) in [0, 1] -> float16 (N, n_mels, T // k), k = ceil(T / 256) frames averaged."""
    k = -(-mels.shape[-1] // PROBE_FRAMES)
    T = mels.shape[-1] // k * k
    return mels[..., :T].reshape(*mels.shape[:-1], T // k, k).mean(-1).astype(np.float16)

def save_probe_set(out, images, mels, labels):
    """The probes' training set: probe_image.npy, probe_mel.npy, probe_labels.npy (class ids)."""
    save_npy(f'{out}/probe_image.npy', probe_image_input(images))
    save_npy(f'{out}/probe_mel.npy', probe_mel_input(mels))
    save_npy(f'{out}/probe_labels.npy', np.asarray(labels, np.int16))

def modality_meta(tok, **extra):
    factors = {'factors': list(tok.factors)} if getattr(tok, 'factors', None) else {}  # model.py sums their embeddings
    global_codes = {'global_codes': tok.global_codes} if getattr(tok, 'global_codes', 0) else {}  # one id first
    return {'grid': list(tok.grid), 'codebook_size': tok.codebook_size, **factors, **global_codes,
            'tokenizer': tok.describe(), **extra}

def token_count(tok):
    """Ids per item: a global token (units with global codes) and the grid."""
    return getattr(tok, 'global_tokens', 0) + math.prod(tok.grid)

@torch.no_grad()
def encode_images(tok, frames, batch=64):
    """uint8 (N, F, S, S, 3) -> uint16 ids (N, F, h*w)."""
    N, F = frames.shape[:2]
    x = frames.reshape(N * F, *frames.shape[2:])
    ids = [tok.encode(pixels_to_tensor(x[i:i + batch]))
           for i in range(0, N * F, batch)]
    return torch.cat(ids).numpy().astype(np.uint16).reshape(N, F, -1) if N else np.zeros((0, F, token_count(tok)), np.uint16)

@torch.no_grad()
def encode_mels(tok, mels, batch=64):
    """float (N, n_mels, frames) in [0, 1] -> uint16 ids (N, h*w)."""
    ids = [tok.encode(torch.from_numpy(mels[i:i + batch])[:, None].float()) for i in range(0, len(mels), batch)]
    return torch.cat(ids).numpy().astype(np.uint16) if len(mels) else np.zeros((0, token_count(tok)), np.uint16)

def _map(pool, fn, jobs, out):
    """pool.map on forked workers. A worker that dies (as the OOM killer's SIGKILL leaves it) breaks
    a ProcessPoolExecutor, where multiprocessing.Pool.map would wait for it forever: a clear error."""
    try:
        return list(pool.map(fn, jobs))
    except BrokenProcessPool:
        raise ValueError(f"{out}: a worker process died (killed by the system: out of memory?); the chunks "
                         f"written are kept, rerun to resume (fewer --workers use less memory)") from None

def _warm_up(cfg):
    # librosa sets itself up lazily on first use (seconds): do it once here, before forking workers
    import librosa
    mel_spectrogram(np.zeros(4096, np.float32), cfg)
    librosa.resample(np.zeros(4410, np.float32), orig_sr=44100, target_sr=cfg.sample_rate)

# -----------------------------------------------------------------------------
# the toy dataset on disk

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

def prepare_toy(data_dir='data/toy', seed=1337, n_train=4000, n_val=400, n_test=400,
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

def bench_toy(data_dir='data/toy', split='test', n=160):
    """Probe accuracy on real pairs and on tokenize -> decode round trips (audio through Griffin-Lim)."""
    from tokenizers import griffin_lim
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

# -----------------------------------------------------------------------------
# 2b) "digits": a realistic benchmark made from real material (fixed here). A printed digit paired
# with the same digit spoken, 10 classes. The class is a small part of what varies: the picture's
# font (56 Debian font packages: book, display, mono, handwriting), size, position, rotation and
# colours over a plain, gradient or photographic background (scikit-image's photographs); the
# sound's voice (flite and festival speech synthesisers), speed, pitch, onset, loudness, channel
# colour and noise floor. Test items use only fonts, voices and photographs that train never uses,
# so the test split measures generalisation to unseen sources. The nuisances are drawn independently
# of each other and of the class. It is written as a folder of pairs (<id>.png + <id>.flac,
# labels.csv) and then tokenized by `prepare('pairs', ...)`, exactly as a user's own pairs are.

DIGIT_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
DIGIT_VOICES = {'kal16': 'flite', 'awb': 'flite', 'slt': 'flite', 'cmu_us_slt_arctic_hts': 'festival',
                'rms': 'flite', 'ked_diphone': 'festival'}             # voice -> synthesiser
DIGIT_TEST_VOICES = ('rms', 'ked_diphone')                              # unseen in train: two male voices
DIGIT_FONT_PACKAGES = (  # Debian packages; a package (one designer or foundry) is one source
    'fonts-dejavu-core fonts-liberation fonts-cantarell fonts-open-sans fonts-comfortaa fonts-quicksand '
    'fonts-cabin fonts-tuffy fonts-league-spartan fonts-sora fonts-adf-gillius fonts-adf-switzera '
    'fonts-adf-verana fonts-go fonts-bebas-neue fonts-f500 fonts-crosextra-caladea fonts-ebgaramond '
    'fonts-oldstandard fonts-adf-accanthis fonts-adf-baskervald fonts-adf-berenis fonts-adf-libris '
    'fonts-adf-romande fonts-adf-tribun fonts-adf-universalis fonts-gfs-didot fonts-gfs-baskerville '
    'fonts-levien-museum fonts-prociono fonts-linuxlibertine fonts-inconsolata fonts-hermit fonts-monoid '
    'fonts-mononoki fonts-agave fonts-humor-sans fonts-breip fonts-femkeklaver fonts-isabella '
    'fonts-tomsontalks fonts-dkg-handwriting fonts-comic-neue fonts-kristi fonts-rufscript fonts-staypuft '
    'fonts-radisnoir fonts-blankenburg fonts-lindenhill fonts-yanone-kaffeesatz fonts-beteckna '
    'fonts-averia-gwf fonts-adf-mekanus fonts-adf-oldania fonts-adf-ikarius fonts-adf-irianis').split()
DIGIT_TEST_FONTS = ('fonts-liberation fonts-ebgaramond fonts-mononoki fonts-comic-neue fonts-adf-verana '
                    'fonts-kristi fonts-gfs-didot fonts-sora fonts-dkg-handwriting fonts-yanone-kaffeesatz '
                    'fonts-adf-romande fonts-averia-gwf').split()               # 12 of 56, every style
DIGIT_PHOTOS = ('astronaut.png brick.png camera.png chelsea.png coffee.png coins.png grass.png gravel.png '
                'hubble_deep_field.jpg ihc.png moon.png rocket.jpg').split()
DIGIT_TEST_PHOTOS = ('motorcycle_left.png', 'retina.jpg', 'cell.png', 'clock_motion.png')
DIGIT_SECONDS, DIGIT_SIZE, DIGIT_CANVAS = 2.0, 64, 128   # clip length; picture side (drawn at 128, then shrunk)
DIGIT_STRETCH, DIGIT_F0 = (0.85, 1.0, 1.25), (0.85, 1.0, 1.2)  # synthesised speed and pitch variants
DIGIT_NEEDS = ("apt-get install flite festival festvox-kdlpc16k festvox-us-slt-hts " + ' '.join(DIGIT_FONT_PACKAGES)
               + "; pip install scikit-image")

def _digit_sources(split):
    """(voices, font files by package, photo paths) of a split ('test' or the others)."""
    import importlib.util
    test = split == 'test'
    voices = [v for v in DIGIT_VOICES if (v in DIGIT_TEST_VOICES) == test]
    fonts = {}
    for pkg in DIGIT_FONT_PACKAGES:
        if (pkg in DIGIT_TEST_FONTS) == test:
            files = subprocess.run(['dpkg', '-L', pkg], capture_output=True, text=True).stdout.split('\n')
            fonts[pkg] = sorted(f for f in files if f.lower().endswith(('.ttf', '.otf')) and os.path.isfile(f))
    spec = importlib.util.find_spec('skimage')
    photo_dir = os.path.join(spec.submodule_search_locations[0], 'data') if spec else ''
    photos = [os.path.join(photo_dir, p) for p in (DIGIT_TEST_PHOTOS if test else DIGIT_PHOTOS)]
    return voices, fonts, photos

def _check_digit_material():
    """Everything the benchmark needs, checked before any work: one error naming what is missing."""
    missing = [e for e in ('flite', 'text2wave', 'dpkg') if shutil.which(e) is None]
    for split in ('train', 'test'):
        _, fonts, photos = _digit_sources(split)
        missing += [pkg for pkg, files in fonts.items() if not files]
        missing += [os.path.basename(p) for p in photos if not os.path.isfile(p)][:1]
    if missing:
        raise FileNotFoundError(f"the digits benchmark needs {', '.join(missing)}: {DIGIT_NEEDS}")

def _usable_fonts(files):
    """Font files that draw ten distinct digits (some decorative fonts lack them or share shapes)."""
    from PIL import ImageFont, ImageDraw
    ok = []
    for f in files:
        try:
            font = ImageFont.truetype(f, 48)
        except OSError:
            continue
        shapes = set()
        for d in '0123456789\ue000':  # a private-use char draws the font's "missing glyph" box
            im = Image.new('L', (96, 96))
            ImageDraw.Draw(im).text((48, 48), d, font=font, fill=255, anchor='mm')
            shapes.add(im.tobytes())
        if len(shapes) == 11:
            ok.append(f)
    return ok

def _speak(job):
    """Worker: one voice -> wavs of every word at every speed (and, for flite, pitch) variant."""
    voice, speech_dir = job
    variants = [(d, si, fi) for d in range(10) for si in range(len(DIGIT_STRETCH)) for fi in range(len(DIGIT_F0))]
    path = lambda d, si, fi: f'{speech_dir}/{voice}_{d}_{si}_{fi}.wav'
    if DIGIT_VOICES[voice] == 'flite':
        base_f0 = {'kal16': 105, 'awb': 100, 'slt': 165, 'rms': 100}[voice]  # their own mean pitch, Hz
        for d, si, fi in variants:
            subprocess.run(['flite', '-voice', voice, '--setf', f'duration_stretch={DIGIT_STRETCH[si]}',
                            '--setf', f'int_f0_target_mean={base_f0 * DIGIT_F0[fi]:.0f}', '-t', DIGIT_WORDS[d],
                            '-o', path(d, si, fi)], check=True, capture_output=True)
        return voice
    # festival, one process per voice: speed here; its voices ignore an f0 target, so every pitch
    # variant is the same file and the pitch varies by the resampling in _digit_wave only
    script = [f'(voice_{voice})']
    for d, si, fi in variants:
        script += [f"(Parameter.set 'Duration_Stretch {DIGIT_STRETCH[si]})",
                   f'(utt.save.wave (utt.synth (Utterance Text "{DIGIT_WORDS[d]}")) "{path(d, si, fi)}" \'riff)']
    with open(f'{speech_dir}/{voice}.scm', 'w') as f:
        f.write('\n'.join(script) + '\n')
    subprocess.run(['festival', '-b', f'{speech_dir}/{voice}.scm'], check=True, capture_output=True)
    return voice

def _digit_wave(rng, speech, sr):
    """A spoken word (float, any rate already resampled to sr) -> DIGIT_SECONDS of sound: pitch and
    speed shifted together (a resampling, +-2 semitones), channel tilt, level, onset, noise floor."""
    import librosa
    n = int(DIGIT_SECONDS * sr)
    shift = 2 ** (rng.uniform(-2, 2) / 12)
    x = librosa.resample(speech, orig_sr=sr * shift, target_sr=sr)[:int(0.9 * n)]  # played `shift` x faster
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sr)
    x = np.fft.irfft(spec * ((f + 100) / 1000) ** rng.uniform(-0.6, 0.6), len(x))  # microphone/room colour
    x *= 10 ** (rng.uniform(-26, -4) / 20) / (np.abs(x).max() + 1e-9)               # peak level, dBFS
    start = int(rng.uniform(0, 0.9 * n - len(x)))  # the word ends inside the tokenized frames
    noise = np.cumsum(rng.normal(size=n)) if rng.random() < 0.5 else rng.normal(size=n)  # brown or white
    noise = (noise - noise.mean()) / (noise.std() + 1e-9) * 10 ** (rng.uniform(-70, -38) / 20)
    wave = noise
    wave[start:start + len(x)] += x
    return wave.astype(np.float32)

def _digit_background(rng, photos):
    """-> float (128, 128, 3) in [0, 1]: a photograph crop, a plain colour or a two-colour gradient."""
    kind = rng.choice(['photo', 'plain', 'gradient'], p=[0.4, 0.3, 0.3])
    if kind == 'photo':
        with Image.open(photos[rng.integers(len(photos))]) as im:
            im = im.convert('RGB')
            side = int(rng.uniform(0.25, 1.0) * min(im.size))
            x0, y0 = rng.integers(im.size[0] - side + 1), rng.integers(im.size[1] - side + 1)
            im = im.crop((x0, y0, x0 + side, y0 + side)).resize((DIGIT_CANVAS, DIGIT_CANVAS), Image.BICUBIC)
        return np.asarray(im, np.float32) / 255 * rng.uniform(0.6, 1.1)
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3) if kind == 'gradient' else None
    if b is None:
        return np.broadcast_to(a, (DIGIT_CANVAS, DIGIT_CANVAS, 3)).astype(np.float32)
    t = np.linspace(0, 1, DIGIT_CANVAS)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]) / 2 + 0.5  # (128, 128) in [0, 1]
    return (a + (b - a) * ramp[..., None]).astype(np.float32)

def _digit_image(rng, digit, fonts, photos):
    """-> uint8 (64, 64, 3): the digit in a random font, size, place, angle and colour on a background."""
    from PIL import ImageFont, ImageDraw
    pkg = sorted(fonts)[rng.integers(len(fonts))]
    font = ImageFont.truetype(fonts[pkg][rng.integers(len(fonts[pkg]))], 160)
    glyph = Image.new('L', (320, 320))
    ImageDraw.Draw(glyph).text((160, 160), str(digit), font=font, fill=255, anchor='mm')
    glyph = glyph.rotate(rng.uniform(-15, 15), Image.BICUBIC)
    glyph = glyph.crop(glyph.getbbox())
    h = rng.uniform(0.45, 0.85) * DIGIT_CANVAS                       # glyph height, px
    w = min(h * glyph.width / glyph.height, 0.9 * DIGIT_CANVAS)
    glyph = glyph.resize((max(1, round(w)), max(1, round(h))), Image.BICUBIC)
    x0, y0 = rng.integers(DIGIT_CANVAS - glyph.width + 1), rng.integers(DIGIT_CANVAS - glyph.height + 1)
    mask = np.zeros((DIGIT_CANVAS, DIGIT_CANVAS, 1), np.float32)
    mask[y0:y0 + glyph.height, x0:x0 + glyph.width, 0] = np.asarray(glyph, np.float32) / 255
    bg = _digit_background(rng, photos)
    luma = lambda c: c @ np.array([0.299, 0.587, 0.114], np.float32)
    back = luma(bg[mask[..., 0] > 0.5].mean(0))                      # the background behind the glyph
    while True:  # an ink colour that stands out from what is behind it
        ink = rng.uniform(0, 1, 3).astype(np.float32)
        if abs(luma(ink) - back) > 0.3:
            break
    img = np.clip(bg * (1 - mask) + ink * mask, 0, 1)
    img = Image.fromarray((img * 255).round().astype(np.uint8)).resize((DIGIT_SIZE, DIGIT_SIZE), Image.LANCZOS)
    return np.asarray(img)

def _digit_batch(args):
    """Worker: items of one split -> <id>.png and <id>.flac written into `folder`."""
    seed, split, start, labels, folder, speech_dir, fonts = args
    voices, _, photos = _digit_sources(split)
    sr = TOY_MEL.sample_rate
    rows = []
    for j, digit in enumerate(labels):
        rng = np.random.default_rng([seed, SPLITS.index(split), start + j])
        id_ = f'{split}{start + j:05d}'
        voice, si, fi = voices[rng.integers(len(voices))], rng.integers(len(DIGIT_STRETCH)), rng.integers(len(DIGIT_F0))
        speech = load_audio(f'{speech_dir}/{voice}_{digit}_{si}_{fi}.wav', sr, DIGIT_SECONDS)
        speech = np.trim_zeros(speech)  # the synthesiser's own silence; the onset is drawn here
        save_png(f'{folder}/{id_}.png', _digit_image(rng, digit, fonts, photos))
        write_atomic(f'{folder}/{id_}.flac', lambda f: sf.write(f, _digit_wave(rng, speech, sr), sr, format='FLAC'))
        rows.append(f'{id_},{DIGIT_WORDS[digit]},{split},{voice}')
    return rows

def make_digits(out, seed=1337, n_train=4000, n_val=400, n_test=500, workers=None):
    """Write the digits benchmark's pairs into out/pairs, then tokenize them into `out` as
    `data.py pairs out/pairs --out out --seconds 2 --size 64` would. Returns the skipped count."""
    _check_digit_material()
    folder = f'{out}/pairs'
    if not os.path.exists(f'{folder}/labels.csv'):
        t0 = time.time()
        os.makedirs(folder, exist_ok=True)
        labels = {s: np.random.default_rng([seed, i]).permutation(np.arange(n) % 10)  # balanced
                  for i, (s, n) in enumerate(zip(SPLITS, (n_train, n_val, n_test)))}
        with tempfile.TemporaryDirectory() as speech_dir, mp.get_context('fork').Pool(workers or os.cpu_count()) as pool:
            list(tqdm(pool.imap_unordered(_speak, [(v, speech_dir) for v in DIGIT_VOICES]), total=len(DIGIT_VOICES), desc='voices'))
            fonts = {s: _digit_sources(s)[1] for s in ('train', 'test')}
            fonts = {s: {p: fs for p, fs in zip(f, pool.map(_usable_fonts, f.values())) if fs} for s, f in fonts.items()}
            jobs = [(seed, s, i, labels[s][i:i + 100], folder, speech_dir, fonts['test' if s == 'test' else 'train'])
                    for s in SPLITS for i in range(0, len(labels[s]), 100)]
            rows = [r for rs in tqdm(pool.imap(_digit_batch, jobs), total=len(jobs), desc='pairs') for r in rs]
        save_text(f'{folder}/sources.csv', 'id,label,split,voice\n' + '\n'.join(rows) + '\n')
        save_text(f'{folder}/labels.csv', 'id,label,split\n' + '\n'.join(r.rsplit(',', 1)[0] for r in rows) + '\n')
        print(f"digits: {len(rows)} pairs written to {folder} in {time.time() - t0:.0f} s")
    return prepare('pairs', folder, out, size=DIGIT_SIZE, cfg=layout(DIGIT_SIZE, DIGIT_SECONDS)[0],
                   image_tokenizer=PAIRS_TOKENIZER, audio_tokenizer=PAIRS_TOKENIZER, workers=workers, seed=seed)

# -----------------------------------------------------------------------------
# 3) real material: list items, decode in parallel, tokenize, write shard-wise, resume, merge

VIDEO_EXTS = ('.mp4', '.mkv', '.webm', '.avi', '.mov')

def _split_of(id_, val_pct=5, test_pct=5):
    """Deterministic split from a hash of the id (fixed here), when no CSV gives one."""
    h = int(hashlib.sha1(id_.encode()).hexdigest()[:8], 16) % 100
    return 'val' if h < val_pct else 'test' if h < val_pct + test_pct else 'train'

def _read_labels(path, kind):
    """videos: VGGSound rows `youtube_id,start_seconds,label,split`; pairs: `id,label[,split]`.
    -> {id: (label, split or None)}, keyed as clips are named (`ytid_000030`, `ytid_30`, `ytid`;
    list_items looks SpecVQGAN's `ytid_30000_40000` up as `ytid_30`)."""
    try:
        rows = [[c.strip() for c in r] for r in csv.reader(open(path, newline='')) if r]
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read the labels CSV ({e.strerror})") from None
    table, want = {}, 'youtube_id,start_seconds,label,split' if kind == 'videos' else 'id,label[,split]'
    for r in rows[1:] if rows and rows[0][0] in ('id', 'youtube_id') else rows:  # optional header
        if len(r) < (3 if kind == 'videos' else 2) or kind == 'videos' and not re.fullmatch(r'\d+(\.\d+)?', r[1]):
            raise ValueError(f"{path}: expected rows {want}, got {','.join(r)[:80]!r}")
        if kind == 'videos':
            for key in (f'{r[0]}_{int(float(r[1])):06d}', f'{r[0]}_{int(float(r[1]))}', r[0]):
                table.setdefault(key, (r[2], r[3] if len(r) > 3 else None))
        else:
            table[r[0]] = (r[1], r[2] if len(r) > 2 else None)
    return table

def list_items(kind, folder, labels_csv=None):
    """-> (items, skipped): items are dicts id, paths, label (name or None), split."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such folder")
    exts = VIDEO_EXTS if kind == 'videos' else IMAGE_EXTS + AUDIO_EXTS
    by_id = {}
    for f in sorted(os.listdir(folder)):
        if f.lower().endswith(exts):
            by_id.setdefault(os.path.splitext(f)[0], []).append(os.path.join(folder, f))
    if not by_id:
        raise ValueError(f"{folder}: no {'/'.join(exts)} files in it")
    if labels_csv is None and kind == 'pairs' and os.path.exists(f'{folder}/labels.csv'):
        labels_csv = f'{folder}/labels.csv'
    table = _read_labels(labels_csv, kind) if labels_csv else None
    hint = ''
    if table and kind == 'videos':  # how clips must be named, from the CSV's first row (ytid_000030)
        ytid, s = next(iter(table)).rsplit('_', 1)
        s = int(s)
        hint = f" (a row {ytid},{s} names the clip {ytid}_{s:06d}, {ytid}_{s} or {ytid}_{s * 1000}_{s * 1000 + 10000})"
    items, skipped = [], []
    for id_, paths in by_id.items():
        shown = os.fsencode(id_).decode('utf-8', 'backslashreplace')  # bad\xff for a non-UTF-8 name
        if shown != id_:  # ids are text: the part names, skipped.tsv and meta.json are UTF-8
            skipped.append((shown, f"{os.path.join(folder, shown)}: file name is not valid UTF-8 (rename it)"))
            continue
        if kind == 'pairs':
            imgs, auds = [p for p in paths if p.lower().endswith(IMAGE_EXTS)], [p for p in paths if p.lower().endswith(AUDIO_EXTS)]
            paths = imgs + auds
        if (len(imgs) != 1 or len(auds) != 1) if kind == 'pairs' else len(paths) > 1:
            skipped.append((id_, f"{paths[0]}: unpaired or ambiguous ({', '.join(os.path.basename(p) for p in paths)})"))
            continue
        ms = re.fullmatch(r'(.+)_(\d+)_(\d+)', id_)  # SpecVQGAN's <ytid>_<start ms>_<end ms>: <ytid>_<start s>
        keys = [id_] + ([f'{ms[1]}_{int(ms[2]) // 1000}'] if ms and kind == 'videos' else [])
        label, split = next((table[k] for k in keys if k in table), (None, None)) if table else (None, None)
        if table and label is None:
            skipped.append((id_, f"{paths[0]}: no row for {id_} in {labels_csv}{hint}"))
            continue
        if not split:
            split = _split_of(id_)
        elif split == 'train' and kind == 'videos':
            split = _split_of(id_, 5, 0)  # VGGSound has no val split: 5% of train (fixed here)
        if split not in SPLITS:
            raise ValueError(f"{labels_csv}: split {split!r} of {id_} is not one of {', '.join(SPLITS)}")
        items.append({'id': id_, 'paths': paths, 'label': label, 'split': split})
    return items, skipped

def _decode_item(job):
    """Worker: one item -> (id, frames uint8 (F, S, S, 3), mel (n_mels, frames), None) or (id, None, None, reason)."""
    item, size, frames, cfg, out = job
    try:
        if len(item['paths']) == 1:
            imgs, wave = decode_video(item['paths'][0], size, frames, cfg)
        else:
            seed = int(hashlib.sha1(item['id'].encode()).hexdigest()[:8], 16)  # the same views on every run
            imgs = image_views(item['paths'][0], size, frames, seed)
            wave = load_audio(item['paths'][1], cfg.sample_rate, cfg.clip_seconds)
        mel = tokenized_mel(wave, cfg)
        if item['split'] != 'train':  # evaluation compares against exactly these
            save_wav(f"{out}/{item['split']}_wav/{item['id']}.wav", wave, cfg.sample_rate)
            save_png(f"{out}/{item['split']}_frame/{item['id']}.png", imgs[len(imgs) // 2])
        return item['id'], imgs, mel, None
    except (BadInput, FileNotFoundError) as e:
        return item['id'], None, None, str(e)
    except Exception as e:  # a surprise in one file must not stop the other 200k
        return item['id'], None, None, f"{item['paths'][0]}: {type(e).__name__}: {str(e)[:120]}"

# token layout defaults for any clip length and picture size (fixed here; README, "Bring your own
# paired data"): every flag that is not given is derived, every flag is checked before any work

AUDIO_PATCH_ROWS = 16  # mel bands per audio token row: 80 mels -> 5 rows, as the SpecVQGAN codebook

def image_patch_for(size):
    """The patch side for pictures of `size` px: a divisor in 2..16 whose grid is closest to 8 x 8
    (16 x 16 for 256 px, the paper's grid), the larger patch on ties."""
    sides = [p for p in range(16, 1, -1) if size % p == 0]
    if not sides:
        raise ValueError(f"--size {size}: no patch of 2 to 16 px divides it; use a multiple of 8, e.g. {max(16, round(size / 8) * 8)}")
    return min(sides, key=lambda p: abs(size // p - 8))

def audio_patch_for(cfg, most_tokens=300):
    """(rows, columns) of mel bins per audio token: 16 rows, as the SpecVQGAN codebook; 8 frames
    (93 ms) a column, which kept the class of 86% of the digits benchmark's words through a k-means
    round trip where 16 frames kept 67-71% (README), unless that makes over `most_tokens` tokens
    (a 10 s clip: 16 frames, 5 x 53 tokens, the paper's grid)."""
    rows = cfg.n_mels // AUDIO_PATCH_ROWS
    return (AUDIO_PATCH_ROWS, 8 if rows * (cfg.frames_all // 8) <= most_tokens else 16)

def codebook_for(n_train, tokens_per_item):
    """Codes for a learned codebook: a power of two with about 500 train tokens per code (a code
    seen fewer times is fitted to noise), between 64 and 1024 (the paper's)."""
    return int(2 ** np.clip(round(np.log2(max(1, n_train * tokens_per_item) / 500)), 6, 10))

def layout(size, seconds, mel_frames=None, image_patch=None, audio_patch=None):
    """Check the flags and derive what is not given -> (MelConfig, image_patch, audio_patch).
    Raises ValueError naming the flag and a valid value."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"--seconds {seconds}: must be a positive number of seconds, e.g. 2")
    if size < MIN_SIDE:
        raise ValueError(f"--size {size}: pictures need at least {MIN_SIDE} px a side, e.g. 64")
    cfg = MelConfig(clip_seconds=float(seconds))
    ip = tuple(image_patch) if image_patch else (image_patch_for(size),) * 2
    ap = tuple(audio_patch) if audio_patch else audio_patch_for(cfg)
    if size % ip[0] or size % ip[1]:
        raise ValueError(f"--image_patch {ip[0]}x{ip[1]} does not divide --size {size}: use e.g. {image_patch_for(size)}")
    if cfg.n_mels % ap[0]:
        raise ValueError(f"--audio_patch {ap[0]}x{ap[1]}: its rows must divide the {cfg.n_mels} mel bands, e.g. 16x{ap[1]}")
    most = cfg.frames_all // ap[1] * ap[1]  # whole token columns inside the clip
    if most == 0:
        need = (ap[1] + 2) * cfg.hop_length / cfg.sample_rate
        raise ValueError(f"--seconds {seconds}: too short for one {ap[1]}-frame token column, use at least {need:.2f}")
    frames = most if mel_frames is None else mel_frames
    if frames % ap[1] or not 0 < frames <= cfg.frames_all:
        raise ValueError(f"--mel_frames {frames}: must be a multiple of the audio patch's {ap[1]} columns and at most "
                         f"the {cfg.frames_all} frames that {seconds:g} s give, e.g. {most}")
    return MelConfig(clip_seconds=float(seconds), frames=frames), ip, ap

def _tokenizers(specs, out, fit, pool, job_args, codebooks, patches, seed, global_codes=0):
    """spec 'kmeans', 'gainshape', 'vq' or 'units' (TOKENIZER_KINDS): fitted on train items once and
    saved, so a resumed run reuses them; else a tokenizer file or VQGAN folder."""
    toks, todo = {}, []
    for m in ('image', 'audio'):
        if specs[m] not in TOKENIZER_KINDS:
            toks[m] = load_tokenizer(specs[m])
        elif os.path.exists(f'{out}/tokenizer_{m}.pt'):
            toks[m] = load_tokenizer(f'{out}/tokenizer_{m}.pt')
        else:
            todo.append(m)
    if todo:
        res = _map(pool, _decode_item, [(it, *job_args) for it in fit], out)
        got = [r for r in res if r[3] is None]
        if not got:
            raise ValueError(f"no usable train item to fit the tokenizers on ({len(fit)} tried; "
                             f"{res[0][3] if res else 'no item is in the train split'})")
        x = {'image': pixels_to_tensor(np.stack([r[1][len(r[1]) // 2] for r in got])),
             'audio': torch.from_numpy(np.stack([r[2] for r in got]))[:, None]}  # middle frames; mels
        if any(specs[m] == 'units' for m in todo):  # both modalities' units come from one pair encoder
            t0 = time.time()
            units = UnitTokenizer.fit_pair(x['image'], x['audio'], codebooks, seed=seed, global_codes=global_codes)
            for m in todo:
                if specs[m] == 'units':
                    toks[m] = units[m]
                    toks[m].save(f'{out}/tokenizer_{m}.pt')
            print(f"unit tokenizers: {codebooks['image']} picture units on {units['image'].grid[0]}x{units['image'].grid[1]}, "
                  f"{codebooks['audio']} sound units on 1x{units['audio'].grid[1]}, fitted on {len(got)} train pairs "
                  f"in {time.time() - t0:.0f} s")
        for m in (m for m in todo if specs[m] != 'units'):
            kind = TOKENIZER_KINDS[specs[m]]
            t0 = time.time()
            extra = {'gains': GAIN_CODES} if specs[m] == 'gainshape' else {}
            toks[m] = kind.fit(x[m].float(), codebooks[m], patch=patches[m], seed=seed, **extra)
            toks[m].save(f'{out}/tokenizer_{m}.pt')
            print(f"{m} tokenizer: {specs[m]}, {codebooks[m]} codes, grid {toks[m].grid[0]}x{toks[m].grid[1]} "
                  f"({patches[m][0]}x{patches[m][1]} patches), fitted on {len(got)} train items in {time.time() - t0:.0f} s")
    return toks

def _source(items, settings):
    """What the parts are made from: every item (id, label, split, and each file's name, size and
    mtime, so a replaced file counts) and the settings, with a fingerprint of it all."""
    def stamp(p):
        st = os.stat(p) if os.path.exists(p) else os.lstat(p)  # (a broken link is skipped later, by its reader)
        return os.path.basename(p), st.st_size, st.st_mtime_ns
    listing = [(it['id'], it['label'], it['split'], [stamp(p) for p in it['paths']]) for it in items]
    settings = json.loads(json.dumps(settings))  # tuples as lists, as they are read back
    return {'fingerprint': hashlib.sha1(json.dumps([listing, settings]).encode()).hexdigest()[:16],
            'items': len(items), 'settings': settings}

def _check_source(out, source, write):
    """Parts are joined only when made from the same inputs and settings: the first run writes
    parts/source.json, a rerun must match it or stop (nothing of the user's is deleted)."""
    path = f'{out}/parts/source.json'
    if os.path.exists(path):
        old = json.load(open(path))
        if old['fingerprint'] != source['fingerprint']:
            changed = [k for k, v in source['settings'].items() if old['settings'].get(k) != v]
            why = (f"other settings ({', '.join(changed)})" if changed else
                   f"other inputs ({old['items']} items then, {source['items']} now, or changed files)")
            raise ValueError(f"{out}: made from {why}; delete {out} to redo it, or choose another --out")
    elif write:  # a fresh run; parts without source.json (an older version's) cannot be checked
        if any(f.endswith('.npz') for f in os.listdir(f'{out}/parts')):
            raise ValueError(f"{out}/parts: parts of unknown inputs (no source.json); delete {out} to redo it")
        save_text(path, json.dumps(source, indent=1))

def _global_codes(given, image_tokenizer, audio_tokenizer):
    """--global_codes: UNIT_GLOBAL_CODES by default with units for both modalities, else 0; only units have them."""
    units = image_tokenizer == audio_tokenizer == 'units'
    if given is None:
        return UNIT_GLOBAL_CODES if units else 0
    if given and not units:
        raise ValueError(f"--global_codes {given}: only unit tokenizers have global codes "
                         f"(--image_tokenizer units --audio_tokenizer units), or give 0")
    if not 0 <= given <= 1024:
        raise ValueError(f"--global_codes {given}: must be between 0 and 1024, e.g. 16")
    return given

def _check_gain_shape_codebook(modality, spec, given):
    if spec == 'gainshape' and given is not None and (given % GAIN_CODES or given < 2 * GAIN_CODES):
        raise ValueError(f"--{modality}_codebook {given}: a gain-shape codebook is shapes x {GAIN_CODES} gains, "
                         f"e.g. {GAIN_CODES * 256}")

def prepare(kind, folder, out, labels_csv=None, size=256, frames=10, cfg=None, image_tokenizer=DEFAULT_TOKENIZER,
            audio_tokenizer=DEFAULT_TOKENIZER, image_codebook=None, audio_codebook=None, image_patch=None,
            audio_patch=None, shard=(0, 1), workers=None, chunk=64, fit_items=4096, seed=1337, views=PAIR_VIEWS,
            global_codes=None):
    """Prepare a folder of videos or image+audio pairs into `out`. cfg: the MelConfig (clip length,
    mel frames); patches and codebooks left None are derived (layout, codebook_for).
    views: image views per pair (image_views). Returns the number of skipped items."""
    frames = frames if kind == 'videos' else views
    global_codes = _global_codes(global_codes, image_tokenizer, audio_tokenizer)
    cfg, image_patch, audio_patch = layout(size, cfg.clip_seconds, cfg.frames, image_patch, audio_patch) if cfg \
        else layout(size, MelConfig().clip_seconds, None, image_patch, audio_patch)
    items, skipped = list_items(kind, folder, labels_csv)
    settings = dict(kind=kind, size=size, frames=frames, mel=asdict(cfg), image_tokenizer=image_tokenizer,
                    audio_tokenizer=audio_tokenizer, image_codebook=image_codebook, audio_codebook=audio_codebook,
                    image_patch=image_patch, audio_patch=audio_patch, shard=shard, chunk=chunk, fit_items=fit_items, seed=seed,
                    **({'global_codes': global_codes} if global_codes else {}))  # (as before global codes existed)
    source = _source(items, settings)
    if is_complete(out):  # its skipped items still count: exit code 1, as the first run
        _check_source(out, source, write=False)
        skipped = json.load(open(f'{out}/meta.json')).get('source', {}).get('skipped', 0)
        print(f"{out}: already prepared (delete it to redo)" + (f"; {skipped} skipped, see {out}/skipped.tsv" if skipped else ''))
        return skipped
    for sub in ('', 'parts', 'val_wav', 'val_frame', 'test_wav', 'test_frame'):  # unwritable: an error before any work
        writable_folder(os.path.join(out, sub), f"{out}: cannot write the output folder")
    if not items:  # nothing usable (say, no clip matches the CSV): list them all, and say why
        save_skipped(out, skipped)
        raise ValueError(f"{folder}: no usable item, {len(skipped)} skipped (see {out}/skipped.tsv): {skipped[0][1]}")
    _check_source(out, source, write=True)
    if kind == 'videos':
        ffmpeg_exe()  # missing ffmpeg is a clear error up front
    classes = sorted({it['label'] for it in items if it['label'] is not None}) or None
    train = [it for it in items if it['split'] == 'train']  # the same fit sample in every shard
    fit_items = min(fit_items, 2 ** 30 // (4 * max(3 * size * size, cfg.n_mels * cfg.frames)))  # <= 1 GB of floats
    grids = {'image': (size // image_patch[0]) * (size // image_patch[1]),
             'audio': (cfg.n_mels // audio_patch[0]) * (cfg.frames // audio_patch[1])}
    codebooks = {'image': image_codebook or codebook_for(len(train), grids['image']),
                 'audio': audio_codebook or codebook_for(len(train), grids['audio'])}
    for m, spec, given in (('image', image_tokenizer, image_codebook), ('audio', audio_tokenizer, audio_codebook)):
        _check_gain_shape_codebook(m, spec, given)
        if spec == 'units' and not given:
            codebooks[m] = UNIT_CODES
        if spec == 'gainshape' and not given:  # shapes as many as plain codes would be (at most 256) x 16 gains
            codebooks[m] = GAIN_CODES * min(256, codebooks[m])
    fit = [train[i] for i in np.random.default_rng(seed).permutation(len(train))[:fit_items]]
    labelled = [it for it in train if it['label'] is not None]  # the learned probes' training set
    for i in np.random.default_rng(seed + 1).permutation(len(labelled))[:PROBE_ITEMS]:
        labelled[i]['probe'] = True
    items, skipped, job_args = items[shard[0]::shard[1]], skipped[shard[0]::shard[1]], (size, frames, cfg, out)
    _warm_up(cfg)
    with ProcessPoolExecutor(workers or os.cpu_count(), mp_context=mp.get_context('fork')) as pool:
        toks = _tokenizers({'image': image_tokenizer, 'audio': audio_tokenizer}, out, fit, pool, job_args,
                           codebooks, {'image': image_patch, 'audio': audio_patch}, seed, global_codes)
        bar = tqdm(total=len(items), desc=f'{kind} -> {out}', unit='clip' if kind == 'videos' else 'pair')
        for c in range(0, len(items), chunk):
            batch = items[c:c + chunk]
            part = f"{out}/parts/{c // chunk:06d}-{hashlib.sha1(' '.join(it['id'] for it in batch).encode()).hexdigest()[:8]}.npz"
            if not os.path.exists(part):  # a chunk is written whole or not at all: resume skips done ones
                res = _map(pool, _decode_item, [(it, *job_args) for it in batch], out)
                ok = [(r, it) for r, it in zip(res, batch) if r[3] is None]
                image = np.stack([r[1] for r, _ in ok]) if ok else np.zeros((0, frames, size, size, 3), np.uint8)
                audio = np.stack([r[2] for r, _ in ok]) if ok else np.zeros((0, cfg.n_mels, cfg.frames), np.float32)
                in_probe = np.array([it.get('probe', False) for _, it in ok], bool)
                arrays = {'ids': [it['id'] for _, it in ok], 'splits': [it['split'] for _, it in ok],
                          'labels': [it['label'] or '' for _, it in ok],
                          'image': encode_images(toks['image'], image), 'audio': encode_mels(toks['audio'], audio),
                          'probe_image': probe_image_input(image[in_probe, frames // 2]),
                          'probe_mel': probe_mel_input(audio[in_probe]),
                          'probe_labels': [it['label'] for _, it in ok if it.get('probe')],
                          'skipped': np.array([(r[0], r[3]) for r in res if r[3] is not None], dtype=str).reshape(-1, 2)}
                write_atomic(part, lambda f: np.savez(f, **{k: np.asarray(v, dtype=str) if isinstance(v, list) else v
                                                        for k, v in arrays.items()}))
            bar.update(len(batch))
        bar.close()
    return _assemble(out, kind, skipped, classes, frames, size, cfg, toks, shard)

def _assemble(out, kind, skipped, classes, frames, size, cfg, toks, shard):
    """Join the parts into the split arrays, skipped.tsv and meta.json (last)."""
    parts = [np.load(f'{out}/parts/{f}') for f in sorted(os.listdir(f'{out}/parts')) if f.endswith('.npz')]
    skipped = skipped + [tuple(s) for p in parts for s in p['skipped']]
    save_skipped(out, skipped)
    cat = lambda key: np.concatenate([p[key] for p in parts])
    ids, splits, labels = (cat(k) for k in ('ids', 'splits', 'labels')) if parts else [np.zeros(0, str)] * 3
    if len(ids) == 0:
        raise ValueError(f"every item was skipped, nothing to prepare (see {out}/skipped.tsv)")
    audio, image = cat('audio'), cat('image')  # (N, h*w), (N, F, h*w)
    meta = {'name': os.path.basename(os.path.normpath(out)), 'frames': frames, 'classes': classes, 'probe': None,
            'audio': modality_meta(toks['audio'], mel=asdict(cfg)), 'image': modality_meta(toks['image'], size=size),
            'splits': {}, 'source': {'kind': kind, 'shard': list(shard), 'skipped': len(skipped)}}
    for s in SPLITS:
        sel = splits == s
        save_npy(f'{out}/{s}_audio.npy', audio[sel].reshape(-1, audio.shape[-1]))
        save_npy(f'{out}/{s}_image.npy', image[sel].reshape(-1, frames, image.shape[-1]))
        meta['splits'][s] = {'n': int(sel.sum()), 'ids': ids[sel].tolist(),
                             'labels': [classes.index(l) if classes and l else None for l in labels[sel]]}
    if classes and sum(len(p['probe_labels']) for p in parts):
        save_npy(f'{out}/probe_image.npy', cat('probe_image'))
        save_npy(f'{out}/probe_mel.npy', cat('probe_mel'))
        save_npy(f'{out}/probe_labels.npy', np.array([classes.index(l) for l in cat('probe_labels')], np.int16))
    save_meta(out, meta)
    _summary(out, meta, skipped)
    return len(skipped)

def _summary(out, meta, skipped):
    n = {s: d['n'] for s, d in meta['splits'].items()}
    print(f"{out}: {sum(n.values())} items ({', '.join(f'{s} {v}' for s, v in n.items())})")
    why = {}
    for _, r in skipped:  # grouped by the reason without the file name and details
        key = re.sub(r'\s*\(.*', '', r.split(': ', 1)[-1], flags=re.S)  # (a name may hold a newline)
        why[key] = why.get(key, 0) + 1
    if skipped:
        print(f"skipped {len(skipped)} (see {out}/skipped.tsv): " + '; '.join(f'{v} {k}' for k, v in why.items()))

def merge(inputs, out):
    """Join the outputs of `--shard K/N` runs into one dataset (they must share the tokenizers)."""
    metas = []
    for d in inputs:
        if not is_complete(d):
            raise ValueError(f"{d}: not a finished dataset (no complete meta.json)")
        metas.append(json.load(open(f'{d}/meta.json')))
    same = lambda m: (m['frames'], m['classes'], *[(m[x]['grid'], m[x]['codebook_size'], m[x].get('mel'), m[x].get('size'),
                      m[x]['tokenizer'].get('fingerprint')) for x in MODALITIES])
    if any(same(m) != same(metas[0]) for m in metas):
        raise ValueError(f"the inputs differ in frames, classes or tokenizers: fit the tokenizers once and "
                         f"pass the files to every shard (--image_tokenizer, --audio_tokenizer)")
    meta = {**metas[0], 'name': os.path.basename(os.path.normpath(out)), 'splits': {},
            'source': {**metas[0].get('source', {}), 'shard': None, 'merged': [os.path.abspath(d) for d in inputs]}}
    for s in SPLITS:
        ids = [i for m in metas for i in m['splits'][s]['ids']]
        if len(set(ids)) != len(ids):
            raise ValueError(f"the inputs share items of split {s}: were they made with different --shard K/N?")
        meta['splits'][s] = {'n': len(ids), 'ids': ids, 'labels': [l for m in metas for l in m['splits'][s]['labels']]}
    rows = [r for d in inputs for r in read_skipped(d)]
    meta['source']['skipped'] = len(rows)
    for s in SPLITS:
        for sub in ('wav', 'frame'):
            os.makedirs(f'{out}/{s}_{sub}', exist_ok=True)
            for d in inputs:
                for f in os.listdir(f'{d}/{s}_{sub}') if os.path.isdir(f'{d}/{s}_{sub}') else []:
                    shutil.copy2(f'{d}/{s}_{sub}/{f}', f'{out}/{s}_{sub}/{f}')
        for m in MODALITIES:
            save_npy(f'{out}/{s}_{m}.npy', np.concatenate([np.load(f'{d}/{s}_{m}.npy') for d in inputs]))
    for name in ('probe_image', 'probe_mel', 'probe_labels'):  # the probes' train set: every shard's share
        parts = [np.load(f'{d}/{name}.npy') for d in inputs if os.path.exists(f'{d}/{name}.npy')]
        if parts:
            save_npy(f'{out}/{name}.npy', np.concatenate(parts))
    save_skipped(out, rows)
    save_meta(out, meta)
    _summary(out, meta, rows)
    return len(rows)

# -----------------------------------------------------------------------------
# command line: errors are one line on stderr and exit code 2; exit code 1 means some items were skipped

def parse_patch(flag, text):
    """'16x8' or '16' -> (16, 8) / (16, 16); None stays None (derived)."""
    if text is None:
        return None
    m = re.fullmatch(r'(\d+)(?:x(\d+))?', text)
    if not m or int(m[1]) < 1 or int(m[2] or m[1]) < 1:
        raise ValueError(f"{flag} {text}: expected H or HxW in pixels, e.g. 16x16")
    return int(m[1]), int(m[2] or m[1])

def main(argv):
    p = ArgumentParser(description=__doc__.split('\n1)')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                       hint=' (see --help)')
    p.add_argument('command', choices=['toy', 'digits', 'videos', 'pairs', 'merge'])
    p.add_argument('inputs', nargs='*', help='the input folder (videos, pairs) or the shard outputs (merge)')
    p.add_argument('--out', required=True, help='output dataset folder, e.g. data/vggsound')
    p.add_argument('--csv', default=None, help='labels: VGGSound csv (videos) or id,label[,split] (pairs; default FOLDER/labels.csv)')
    p.add_argument('--shard', default='0/1', help='K/N: prepare every N-th item from the K-th; then `merge` the N outputs')
    p.add_argument('--workers', type=int, default=None, help='decoding processes (default: all cores)')
    p.add_argument('--size', type=int, default=256, help='image size (square)')
    p.add_argument('--frames', type=int, default=10, help='frames per video clip')
    p.add_argument('--views', type=int, default=PAIR_VIEWS, help='image views per pair: the picture and random crops of it (1: the picture alone)')
    p.add_argument('--seconds', type=float, default=10.0, help='audio clip length, s')
    p.add_argument('--mel_frames', type=int, default=None, help='mel frames kept for tokenization (default: all whole token columns)')
    for m in ('image', 'audio'):
        p.add_argument(f'--{m}_tokenizer', default=None,
                       help="'kmeans', 'gainshape', 'vq' or 'units' (fitted on train), or a tokenizer file / VQGAN folder "
                            f"(default: {PAIRS_TOKENIZER} for pairs, {DEFAULT_TOKENIZER} for videos)")
        p.add_argument(f'--{m}_codebook', type=int, default=None, help='codes of a fitted tokenizer (default: from the data size)')
        p.add_argument(f'--{m}_patch', default=None, help='patch of a fitted tokenizer, H or HxW (default: from the size)')
    p.add_argument('--global_codes', type=int, default=None,
                   help=f'units only: codes of the one global token first in each item (default {UNIT_GLOBAL_CODES}; 0: none)')
    p.add_argument('--seed', type=int, default=1337)
    a = p.parse_args(argv)
    try:
        if a.command == 'toy':
            print(f"{prepare_toy(a.out, seed=a.seed)}: ready")
            return 0
        if a.command == 'digits':
            return int(make_digits(a.out, seed=a.seed, workers=a.workers) > 0)
        if a.command == 'merge':
            return int(merge(a.inputs, a.out) > 0)
        for m in ('image', 'audio'):
            if getattr(a, f'{m}_tokenizer') is None:
                setattr(a, f'{m}_tokenizer', PAIRS_TOKENIZER if a.command == 'pairs' else DEFAULT_TOKENIZER)
        shard = re.fullmatch(r'(\d+)/(\d+)', a.shard)
        if len(a.inputs) != 1 or not shard or not int(shard[1]) < int(shard[2]):
            raise ValueError(f"{a.command} takes one input folder and --shard K/N with 0 <= K < N")
        ip, ap = (parse_patch(f'--{m}_patch', s) for m, s in (('image', a.image_patch), ('audio', a.audio_patch)))
        for m, v, kind in (('image', a.image_codebook, a.image_tokenizer), ('audio', a.audio_codebook, a.audio_tokenizer)):
            if v is not None and not 2 <= v <= 65536:
                raise ValueError(f"--{m}_codebook {v}: must be between 2 and 65536 codes, e.g. 512")
            _check_gain_shape_codebook(m, kind, v)
        if a.frames < 1 or a.views < 1 or (a.workers is not None and a.workers < 1):
            raise ValueError(f"--frames, --views and --workers must be at least 1")
        cfg, ip, ap = layout(a.size, a.seconds, a.mel_frames, ip, ap)  # every layout flag checked before any work
        n_skipped = prepare(a.command, a.inputs[0], a.out, a.csv, a.size, a.frames, cfg,
                            a.image_tokenizer, a.audio_tokenizer, a.image_codebook, a.audio_codebook, ip, ap,
                            (int(shard[1]), int(shard[2])), a.workers, seed=a.seed, views=a.views,
                            global_codes=a.global_codes)
        return int(n_skipped > 0)
    except (ValueError, FileNotFoundError) as e:
        return report_error(e)

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
