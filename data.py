"""
Turns audio-visual material into the token format train.py reads (README, "Your own data"):
  python data.py videos CLIPS/ --out data/vggsound [--csv vggsound.csv] [--shard K/N]
  python data.py pairs FOLDER/ --out data/mine           # <id>.png + <id>.wav pairs
  python data.py merge data/vgg.0 data/vgg.1 --out data/vggsound
The embedded toy and the digits benchmark have their makers beside their data: data/<name>/prepare.py.
1) preprocessing (SPEC 1): load_image, load_audio, ffmpeg video decoding
2) writing the token format: arrays first, meta.json last, all via temporary names
3) real material: parallel decoding, shard-wise resumable writes, skipped.tsv, merge
"""
import os
import io
import importlib.util
import argparse
import re
import sys
import csv
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

import numpy as np
import soundfile as sf
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from model import MODALITIES
from tokenizers import (MelConfig, PatchKMeansTokenizer, UnitTokenizer, load_tokenizer, mel_spectrogram,
                        pixels_to_tensor, tokenized_mel)
from util import ROOT, ArgumentParser, WriteError, report_error, writable_folder, write_atomic, write_sound

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.webp')
AUDIO_EXTS = ('.wav', '.flac', '.ogg', '.mp3')
MIN_SIDE, MAX_PIXELS = 16, 8192 * 8192   # fixed here: smaller/larger images are skipped as unusable
MIN_AUDIO_SECONDS = 0.1
SPLITS = ('train', 'val', 'test')
# what data.py fits on the train items when no tokenizer file is given: 'kmeans' (patch k-means, seconds)
# or 'units' (semantic units, docs/units.md: minutes)
TOKENIZER_KINDS = {'kmeans': PatchKMeansTokenizer, 'units': UnitTokenizer}
UNIT_CODES = 128  # units a modality (tokenizers.UnitTokenizer): measured on the digits (docs/units.md)
# fewer train pairs than this and units fall back to k-means (fixed here): the pair encoder learns by
# telling each pair from the others of a batch of 128, and on fewer than two batches' worth it learns noise
UNIT_MIN_PAIRS = 256
DEFAULT_TOKENIZER = 'kmeans'  # prepare()'s and `data.py videos`' default
# `data.py pairs` and the digits: semantic units with global codes, the tokenizers the recipe for own
# data was measured with; k-means codes learn each modality there but not the mapping between them
PAIRS_TOKENIZER = 'units'

_MAKERS = {}  # name -> its prepare.py, loaded once

def dataset_maker(name):
    """data/<name>/prepare.py as a module: the embedded toy and the digits benchmark keep their makers
    beside their data, as nanoGPT does (train.py makes the toy with it, evaluate.py reads its probes)."""
    path = os.path.join(ROOT, 'data', name, 'prepare.py')
    if name not in _MAKERS:
        spec = importlib.util.spec_from_file_location(f'prepare_{name}', path)
        _MAKERS[name] = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its workers find it by name
        spec.loader.exec_module(_MAKERS[name])
    return _MAKERS[name]

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
# 2) writing the token format: arrays first, meta.json last, all via temporary names

def save_npy(path, a):
    write_atomic(path, lambda f: np.save(f, a))

def save_wav(path, wave, sr):  # float samples: exactly what was tokenized
    write_atomic(path, lambda f: write_sound(f, wave, sr, subtype='FLOAT'))

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
    global_codes = {'global_codes': tok.global_codes} if getattr(tok, 'global_codes', 0) else {}  # one id first
    return {'grid': list(tok.grid), 'codebook_size': tok.codebook_size, **global_codes,
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
            imgs = image_array(item['paths'][0], size)[None]  # a pair's picture is its one frame
            wave = load_audio(item['paths'][1], cfg.sample_rate, cfg.clip_seconds)
        mel = tokenized_mel(wave, cfg)
        if item['split'] != 'train':  # evaluation compares against exactly these
            save_wav(f"{out}/{item['split']}_wav/{item['id']}.wav", wave, cfg.sample_rate)
            save_png(f"{out}/{item['split']}_frame/{item['id']}.png", imgs[len(imgs) // 2])
        return item['id'], imgs, mel, None
    except (BadInput, FileNotFoundError) as e:
        return item['id'], None, None, str(e)
    except WriteError:  # a full disk is not the item's fault: the run stops
        raise
    except Exception as e:  # a surprise in one file must not stop the other 200k
        return item['id'], None, None, f"{item['paths'][0]}: {type(e).__name__}: {str(e)[:120]}"

# token layout defaults for any clip length and picture size (fixed here): every flag that is not
# given is derived, every flag is checked before any work

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
    round trip where 16 frames kept 67-71% (docs/LOG.md), unless that makes over `most_tokens` tokens
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
    """spec 'kmeans' or 'units' (TOKENIZER_KINDS): fitted on train items once and
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
            progress = f'{out}/parts/units_fit.pt'  # an interrupted fit resumes after its last finished part
            units = UnitTokenizer.fit_pair(x['image'], x['audio'], codebooks, seed=seed, global_codes=global_codes,
                                           progress=progress)
            for m in todo:
                if specs[m] == 'units':
                    toks[m] = units[m]
                    toks[m].save(f'{out}/tokenizer_{m}.pt')
            os.remove(progress)
            print(f"unit tokenizers: {codebooks['image']} picture units on {units['image'].grid[0]}x{units['image'].grid[1]}, "
                  f"{codebooks['audio']} sound units on 1x{units['audio'].grid[1]}, fitted on {len(got)} train pairs "
                  f"in {time.time() - t0:.0f} s")
        for m in (m for m in todo if specs[m] != 'units'):
            kind = TOKENIZER_KINDS[specs[m]]
            t0 = time.time()
            toks[m] = kind.fit(x[m].float(), codebooks[m], patch=patches[m], seed=seed)
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

def units_or_kmeans(n_train, image_tokenizer, audio_tokenizer, folder):
    """The tokenizers to fit: 'units' becomes 'kmeans' below UNIT_MIN_PAIRS train pairs, said in one line."""
    if 'units' in (image_tokenizer, audio_tokenizer) and n_train < UNIT_MIN_PAIRS:
        print(f"{folder}: {n_train} train pairs are too few for semantic units (the pair encoder needs at least "
              f"{UNIT_MIN_PAIRS}, two batches of pairs to tell apart); fitting patch k-means codes instead")
        return tuple('kmeans' if t == 'units' else t for t in (image_tokenizer, audio_tokenizer))
    return image_tokenizer, audio_tokenizer

def global_codes_for(n_train, n_classes=0):
    """Global codes when --global_codes is not given (fixed here): about sqrt(n_train / 16), so each
    gathers about 4 sqrt(n_train) items (16 codes for the digits' 4,000 pairs), and at least one per
    labelled class; between 2 and 1024."""
    return int(np.clip(max(round(math.sqrt(n_train / 16)), n_classes), 2, 1024))

def _global_codes(given, image_tokenizer, audio_tokenizer, n_train=0, n_classes=0):
    """--global_codes: global_codes_for the data by default with units for both modalities, else 0;
    only units have them."""
    units = image_tokenizer == audio_tokenizer == 'units'
    if given is None:
        return global_codes_for(n_train, n_classes) if units else 0
    if given and not units:
        raise ValueError(f"--global_codes {given}: only unit tokenizers have global codes "
                         f"(--image_tokenizer units --audio_tokenizer units), or give 0")
    if not 0 <= given <= 1024:
        raise ValueError(f"--global_codes {given}: must be between 0 and 1024, e.g. 16")
    return given

def prepare(kind, folder, out, labels_csv=None, size=256, frames=10, cfg=None, image_tokenizer=DEFAULT_TOKENIZER,
            audio_tokenizer=DEFAULT_TOKENIZER, image_codebook=None, audio_codebook=None, image_patch=None,
            audio_patch=None, shard=(0, 1), workers=None, chunk=64, fit_items=4096, seed=1337,
            global_codes=None):
    """Prepare a folder of videos or image+audio pairs into `out`. cfg: the MelConfig (clip length,
    mel frames); patches and codebooks left None are derived (layout, codebook_for). Returns the
    number of skipped items."""
    frames = frames if kind == 'videos' else 1  # a pair's picture is its one frame
    _global_codes(global_codes, image_tokenizer, audio_tokenizer)  # a bad flag: an error before any work
    cfg, image_patch, audio_patch = layout(size, cfg.clip_seconds, cfg.frames, image_patch, audio_patch) if cfg \
        else layout(size, MelConfig().clip_seconds, None, image_patch, audio_patch)
    items, skipped = list_items(kind, folder, labels_csv)
    n_fit = min(fit_items, sum(it['split'] == 'train' for it in items))  # the pairs the tokenizers are fitted on
    fitted = units_or_kmeans(n_fit, image_tokenizer, audio_tokenizer, folder)
    if fitted != (image_tokenizer, audio_tokenizer):  # no units: no global codes
        image_tokenizer, audio_tokenizer, global_codes = *fitted, 0
    global_codes = _global_codes(global_codes, image_tokenizer, audio_tokenizer, n_fit,
                                 len({it['label'] for it in items if it['label'] is not None}))
    settings = dict(kind=kind, size=size, frames=frames, mel=asdict(cfg), image_tokenizer=image_tokenizer,
                    audio_tokenizer=audio_tokenizer, image_codebook=image_codebook, audio_codebook=audio_codebook,
                    image_patch=image_patch, audio_patch=audio_patch, shard=shard, chunk=chunk, fit_items=fit_items, seed=seed,
                    **({'global_codes': global_codes} if global_codes else {}))
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
        if spec == 'units' and not given:
            codebooks[m] = UNIT_CODES
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
        raise ValueError("the inputs differ in frames, classes or tokenizers: fit the tokenizers once and "
                         "pass the files to every shard (--image_tokenizer, --audio_tokenizer)")
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

def prepare_benchmark(folder, out, size, seconds, workers=None, seed=1337):
    """A benchmark's folder of pairs -> its tokens in `out`, exactly as a user's own pairs are
    (`data.py pairs FOLDER --out OUT --seconds S --size N`). Returns the skipped count."""
    return prepare('pairs', folder, out, size=size, cfg=layout(size, seconds)[0], image_tokenizer=PAIRS_TOKENIZER,
                   audio_tokenizer=PAIRS_TOKENIZER, workers=workers, seed=seed)

def benchmark_command(make, description, default_out):
    """The command line of a data/<name>/prepare.py: --out, --workers, --seed; exit 1 if items were
    skipped, 2 with one line on a missing package or bad input."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--out', default=default_out, help='output dataset folder (the pairs go to OUT/pairs)')
    p.add_argument('--workers', type=int, default=None, help='processes (default: all cores)')
    p.add_argument('--seed', type=int, default=1337)
    a = p.parse_args()
    try:
        sys.exit(int(make(a.out, seed=a.seed, workers=a.workers) > 0))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(report_error(e))

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
    p.add_argument('command', choices=['videos', 'pairs', 'merge'])
    p.add_argument('inputs', nargs='*', help='the input folder (videos, pairs) or the shard outputs (merge)')
    p.add_argument('--out', required=True, help='output dataset folder, e.g. data/vggsound')
    p.add_argument('--csv', default=None, help='labels: VGGSound csv (videos) or id,label[,split] (pairs; default FOLDER/labels.csv)')
    p.add_argument('--shard', default='0/1', help='K/N: prepare every N-th item from the K-th; then `merge` the N outputs')
    p.add_argument('--workers', type=int, default=None, help='decoding processes (default: all cores)')
    p.add_argument('--size', type=int, default=256, help='image size (square)')
    p.add_argument('--frames', type=int, default=10, help='frames per video clip')
    p.add_argument('--seconds', type=float, default=10.0, help='audio clip length, s')
    p.add_argument('--mel_frames', type=int, default=None, help='mel frames kept for tokenization (default: all whole token columns)')
    for m in ('image', 'audio'):
        p.add_argument(f'--{m}_tokenizer', default=None,
                       help="'kmeans' or 'units' (fitted on train), or a tokenizer file / VQGAN folder "
                            f"(default: {PAIRS_TOKENIZER} for pairs, {DEFAULT_TOKENIZER} for videos)")
        p.add_argument(f'--{m}_codebook', type=int, default=None, help='codes of a fitted tokenizer (default: from the data size)')
        p.add_argument(f'--{m}_patch', default=None, help='patch of a fitted tokenizer, H or HxW (default: from the size)')
    p.add_argument('--global_codes', type=int, default=None,
                   help='units only: codes of the one global token first in each item (default: from the data size and '
                        'the classes, data.global_codes_for; 0: none)')
    p.add_argument('--seed', type=int, default=1337)
    a = p.parse_args(argv)
    try:
        if a.command == 'merge':
            return int(merge(a.inputs, a.out) > 0)
        for m in ('image', 'audio'):
            if getattr(a, f'{m}_tokenizer') is None:
                setattr(a, f'{m}_tokenizer', PAIRS_TOKENIZER if a.command == 'pairs' else DEFAULT_TOKENIZER)
        shard = re.fullmatch(r'(\d+)/(\d+)', a.shard)
        if len(a.inputs) != 1 or not shard or not int(shard[1]) < int(shard[2]):
            raise ValueError(f"{a.command} takes one input folder and --shard K/N with 0 <= K < N")
        ip, ap = (parse_patch(f'--{m}_patch', s) for m, s in (('image', a.image_patch), ('audio', a.audio_patch)))
        for m, v in (('image', a.image_codebook), ('audio', a.audio_codebook)):
            if v is not None and not 2 <= v <= 65536:
                raise ValueError(f"--{m}_codebook {v}: must be between 2 and 65536 codes, e.g. 512")
        if a.frames < 1 or (a.workers is not None and a.workers < 1):
            raise ValueError("--frames and --workers must be at least 1")
        cfg, ip, ap = layout(a.size, a.seconds, a.mel_frames, ip, ap)  # every layout flag checked before any work
        n_skipped = prepare(a.command, a.inputs[0], a.out, a.csv, a.size, a.frames, cfg,
                            a.image_tokenizer, a.audio_tokenizer, a.image_codebook, a.audio_codebook, ip, ap,
                            (int(shard[1]), int(shard[2])), a.workers, seed=a.seed,
                            global_codes=a.global_codes)
        return int(n_skipped > 0)
    except (ValueError, FileNotFoundError) as e:
        return report_error(e)

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
