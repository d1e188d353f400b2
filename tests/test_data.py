# data.py: toy dataset and probes, preprocessing, video decoding, bad inputs, resume, shards.
# Every input file is made here (PIL, soundfile, ffmpeg's lavfi sources). Small sizes throughout.
import os
import json
import shutil
import struct
import subprocess
import sys
import types
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import data  # noqa: E402
TOY = data.dataset_maker('toy')  # data/toy/prepare.py
from tokenizers import MelConfig, mel_spectrogram, load_tokenizer, check_tokenizer_matches  # noqa: E402

try:  # the ffmpeg the project uses: the system's, else the imageio-ffmpeg wheel's binary
    FFMPEG = data.ffmpeg_exe()
except FileNotFoundError:
    FFMPEG = None
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason='no ffmpeg (system or imageio-ffmpeg)')
SMALL = dict(size=32, frames=4, cfg=MelConfig(clip_seconds=1.0, frames=80), image_codebook=8, audio_codebook=8,
             image_patch=(8, 8), audio_patch=(16, 16), workers=2, fit_items=16,
             image_tokenizer='kmeans', audio_tokenizer='kmeans')  # (k-means: fitted in a moment)

def ffmpeg(*args):
    subprocess.run([FFMPEG, '-v', 'error', '-y', *args], check=True)

def wav(path, x, sr=22050):
    sf.write(path, np.asarray(x, np.float32), sr, subtype='FLOAT')

def tone(seconds=1.0, sr=22050, f=440.0):
    return 0.3 * np.sin(2 * np.pi * f * np.arange(int(sr * seconds)) / sr)

def png_header_only(path, w, h):
    """A PNG whose header claims w x h (no pixel data): must be refused before decoding."""
    ihdr = struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    open(path, 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IEND', b''))

# -----------------------------------------------------------------------------
# toy dataset and probes

def test_toy_probes_on_real_pairs():
    rng = np.random.default_rng(0)
    labels = np.arange(160) % 16
    images = torch.from_numpy(np.stack([TOY.toy_image(rng, l) for l in labels])).permute(0, 3, 1, 2) / 127.5 - 1
    waves = np.stack([TOY.toy_wave(rng, l) for l in labels])
    assert (TOY.probe_image(images).numpy() == labels).mean() >= 0.98
    assert (TOY.probe_audio(waves, 22050).numpy() == labels).mean() >= 0.98
    # another sample rate is resampled first
    assert (TOY.probe_audio(waves[:16, ::2], 11025).numpy() == labels[:16]).mean() >= 0.9

@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    d = str(tmp_path_factory.mktemp('toy') / 'toy')
    TOY.prepare(d, n_train=480, n_val=32, n_test=32, image_codebook=64, audio_codebook=64)
    return d

def test_prepare_toy_format(toy):
    meta = json.load(open(f'{toy}/meta.json'))
    assert meta['frames'] == 1 and meta['probe'] == 'toy' and len(meta['classes']) >= 16
    assert meta['image']['grid'] == [8, 8] and meta['audio']['grid'] == [5, 10] and meta['image']['size'] == 64
    assert MelConfig(**meta['audio']['mel']).frames == 160
    for split, n in (('train', 480), ('val', 32), ('test', 32)):
        a, v = np.load(f'{toy}/{split}_audio.npy', mmap_mode='r'), np.load(f'{toy}/{split}_image.npy', mmap_mode='r')
        assert a.dtype == v.dtype == np.uint16 and a.shape == (n, 50) and v.shape == (n, 1, 64)
        assert a.max() < 64 and v.max() < 64 and len(meta['splits'][split]['labels']) == n
    for m in ('audio', 'image'):
        check_tokenizer_matches(meta[m], load_tokenizer(meta[m]['tokenizer']))
    i = meta['splits']['test']['ids'][0]
    w, sr = sf.read(f'{toy}/test_wav/{i}.wav', dtype='float32')
    assert sr == 22050 and w.shape == (44100,) and np.array(Image.open(f'{toy}/test_frame/{i}.png')).shape == (64, 64, 3)
    # what was tokenized is exactly the saved clip's mel
    tok = load_tokenizer(meta['audio']['tokenizer'])
    ids = tok.encode(torch.from_numpy(mel_spectrogram(w, TOY.TOY_MEL)[:, :160])[None, None])
    assert (ids.numpy()[0] == np.load(f'{toy}/test_audio.npy')[0]).all()

def test_prepare_toy_is_idempotent(toy):
    before = {f: os.stat(f'{toy}/{f}').st_mtime_ns for f in os.listdir(toy)}
    TOY.prepare(toy, n_train=480, n_val=32, n_test=32, image_codebook=64, audio_codebook=64)
    assert before == {f: os.stat(f'{toy}/{f}').st_mtime_ns for f in os.listdir(toy)}

def test_toy_probes_after_round_trip(toy):
    # small codebooks here (64): the default 256 keeps more; the README gives those figures
    acc = TOY.bench(toy, 'test', n=16)  # Griffin-Lim is the slow part
    assert acc['image_real'] >= 0.98 and acc['audio_real'] >= 0.98
    assert acc['image_roundtrip'] >= 0.9 and acc['audio_roundtrip'] >= 0.9, acc

# -----------------------------------------------------------------------------
# images

def test_load_image_preprocessing(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)  # wide: crop the sides
    Image.fromarray(a).save(tmp_path / 'x.png')
    x = data.load_image(str(tmp_path / 'x.png'), 32)
    ref = Image.fromarray(a).resize((48, 32), Image.BICUBIC).crop((8, 0, 40, 32))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert torch.allclose(x, torch.from_numpy(np.array(ref)).permute(2, 0, 1).float() / 127.5 - 1)

@pytest.mark.parametrize('mode', ['L', '1', 'P', 'RGBA', 'LA', 'CMYK', 'I;16', 'PT'])
def test_load_image_any_mode(tmp_path, mode):
    g = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (40, 1))
    if mode == 'I;16':
        im = Image.fromarray(g.astype(np.uint16) * 257)  # 16-bit grey: scaled, not clipped
    elif mode == 'PT':  # palette with a transparent entry
        im = Image.fromarray(g).convert('P')
        im.info['transparency'] = 0
    else:
        im = Image.fromarray(np.stack([g] * 3 + [np.full_like(g, 255)], -1), 'RGBA').convert(mode)
    path = str(tmp_path / ('x.jpg' if mode == 'CMYK' else 'x.png'))
    im.save(path)
    x = data.load_image(path, 16)
    assert x.shape == (3, 16, 16) and torch.isfinite(x).all()
    if mode in ('L', 'I;16', 'RGBA', 'LA'):  # a grey ramp stays a grey ramp over the full range
        assert x[0, 0, 0] < -0.8 and x[0, 0, -1] > 0.8 and torch.allclose(x[0], x[1], atol=0.02)

@pytest.mark.parametrize('case', ['1x1', 'huge', 'text', 'truncated', 'missing'])
def test_load_image_bad(tmp_path, case):
    path = str(tmp_path / 'x.png')
    if case == '1x1':
        Image.new('RGB', (1, 1)).save(path)
    elif case == 'huge':
        png_header_only(path, 20000, 20000)
    elif case == 'text':
        open(path, 'w').write('not an image')
    elif case == 'truncated':
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        open(path, 'r+b').truncate(os.path.getsize(path) // 2)
    with pytest.raises(ValueError, match='x.png'):
        data.load_image(path, 32)

# -----------------------------------------------------------------------------
# audio

def test_load_audio_mono_resample_pad(tmp_path):
    st = np.stack([tone(0.5, 44100), np.zeros(22050)], 1)  # stereo: averaged, not summed
    sf.write(tmp_path / 's.wav', st, 44100)
    x = data.load_audio(str(tmp_path / 's.wav'), 22050, 1.0)
    assert x.shape == (22050,) and x.dtype == np.float32
    assert abs(np.abs(x[1000:10000]).max() - 0.15) < 0.01 and not x[11100:].any()  # padded with zeros
    wav(tmp_path / 'long.wav', tone(3.0))
    assert data.load_audio(str(tmp_path / 'long.wav'), 22050, 1.0).shape == (22050,)

@pytest.mark.parametrize('case', ['silent', 'nan', 'short', 'corrupt', 'empty'])
def test_load_audio_bad(tmp_path, case):
    path = str(tmp_path / 'x.wav')
    if case == 'corrupt':
        open(path, 'wb').write(b'RIFF' + os.urandom(2000))
    else:
        x = {'silent': np.zeros(22050), 'nan': np.full(22050, np.nan), 'short': tone(0.05), 'empty': np.zeros(0)}[case]
        wav(path, x)
    with pytest.raises(ValueError, match='x.wav'):
        data.load_audio(path, 22050, 1.0)

def peak_memory(f, *args):
    """(result, peak bytes allocated while f ran): numpy's buffers are traced too."""
    import tracemalloc
    tracemalloc.start()
    try:
        return f(*args), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

def test_load_audio_reads_only_one_clip(tmp_path):
    # 60 s of stereo: the whole file as float32 is 10.6 MB, the 1 s asked for 0.18 MB
    t = np.arange(60 * 22050) / 22050
    sf.write(tmp_path / 'long.wav', 0.3 * np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1), 22050, subtype='PCM_16')
    x, peak = peak_memory(data.load_audio, str(tmp_path / 'long.wav'), 22050, 1.0)
    assert x.shape == (22050,) and peak < 2e6, peak

@needs_ffmpeg
def test_ffmpeg_audio_reads_only_one_clip(tmp_path):
    ffmpeg('-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=22050:duration=60', '-c:a', 'aac', str(tmp_path / 'long.m4a'))
    x, peak = peak_memory(data.load_audio, str(tmp_path / 'long.m4a'), 22050, 1.0)  # libsndfile has no m4a
    assert x.shape == (22050,) and np.abs(x).max() > 0.05 and peak < 2e6, peak

@needs_ffmpeg
def test_skip_reasons_are_accurate(tmp_path):
    open(tmp_path / 'garbage.mp3', 'wb').write(np.random.default_rng(0).bytes(30000))
    os.symlink('b.wav', tmp_path / 'a.wav')  # a symlink loop
    os.symlink('a.wav', tmp_path / 'b.wav')
    with pytest.raises(data.BadInput) as e:
        data.load_audio(str(tmp_path / 'garbage.mp3'), 22050, 1.0)
    assert 'garbage.mp3: ffmpeg failed (' in str(e.value) and 'Invalid' in str(e.value)  # ffmpeg's reason (its wording varies by version)
    assert 'does not exist' not in str(e.value)  # (libsndfile's misleading one)
    with pytest.raises(data.BadInput, match='a.wav: cannot open .Too many levels of symbolic links'):
        data.load_audio(str(tmp_path / 'a.wav'), 22050, 1.0)

@needs_ffmpeg
def test_load_audio_mp3(tmp_path):
    ffmpeg('-f', 'lavfi', '-i', 'sine=frequency=440:duration=1', str(tmp_path / 'x.mp3'))
    x = data.load_audio(str(tmp_path / 'x.mp3'), 22050, 1.0)
    assert x.shape == (22050,) and np.abs(x).max() > 0.05

# -----------------------------------------------------------------------------
# videos

@needs_ffmpeg
def test_video_frame_timing(tmp_path):
    # frame n of a 25 fps, 2 s clip is a flat grey of level 5n; frame i must be the first at or
    # after t_i = (i + 0.5) * 2 / 10 s
    for n in range(50):
        Image.new('RGB', (48, 32), (5 * n,) * 3).save(tmp_path / f'f{n:03d}.png')
    ffmpeg('-framerate', '25', '-i', str(tmp_path / 'f%03d.png'), '-f', 'lavfi', '-i', 'sine=duration=2',
           '-c:v', 'libx264', '-qp', '0', '-pix_fmt', 'yuv444p', '-c:a', 'aac', '-shortest', str(tmp_path / 'v.mp4'))
    frames, wave = data.decode_video(str(tmp_path / 'v.mp4'), 16, 10, MelConfig(clip_seconds=10.0))
    assert frames.shape == (10, 16, 16, 3) and wave.shape == (220500,)
    got = np.round(frames.reshape(10, -1).mean(1) / 5).astype(int)
    want = [int(np.ceil((i + 0.5) * 2 / 10 * 25 - 1e-6)) for i in range(10)]
    assert list(got) == want

@needs_ffmpeg
def test_video_mel_matches_recipe(tmp_path):
    # the recipe fixture's clip, muxed losslessly (ALAC) into an mp4: its mel must be the fixture's
    fx = os.path.join(ROOT, 'tests', 'fixtures', 'mel')
    ffmpeg('-f', 'lavfi', '-i', 'color=gray:size=32x32:rate=5:duration=10', '-i', os.path.join(fx, 'input.wav'),
           '-c:v', 'libx264', '-c:a', 'alac', '-shortest', str(tmp_path / 'v.mp4'))
    cfg = MelConfig()
    _, wave = data.decode_video(str(tmp_path / 'v.mp4'), 16, 2, cfg)
    mel = mel_spectrogram(wave, cfg)  # (the fixture's two edge frames used zero padding: tokenizers tests)
    assert np.abs(mel[:, 2:-2] - np.load(os.path.join(fx, 'mel.npy'))[:, 2:-2]).max() < 1e-4

def make_videos(folder):
    """3 good clips and 6 bad ones; a VGGSound-style CSV."""
    os.makedirs(folder)
    v = lambda name, *inputs: ffmpeg(*inputs, '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-t', '1.5', f'{folder}/{name}.mp4')
    for i, f in enumerate((300, 900, 2000)):
        v(f'good{i}', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-f', 'lavfi', '-i', f'sine=frequency={f}')
    v('noaudio', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10')
    v('silent', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-f', 'lavfi', '-i', 'anullsrc=r=22050:cl=stereo')
    ffmpeg('-f', 'lavfi', '-i', 'sine=duration=1', f'{folder}/novideo.mp4')
    open(f'{folder}/corrupt.mp4', 'wb').write(os.urandom(5000))
    good = open(f'{folder}/good0.mp4', 'rb').read()
    open(f'{folder}/truncated.mp4', 'wb').write(good[:len(good) // 2])
    names = ['good0', 'good1', 'good2', 'noaudio', 'silent', 'novideo', 'corrupt', 'truncated']
    rows = [f'{n},0,{"low" if n == "good0" else "high"},{"test" if n == "good2" else "train"}' for n in names]
    open(f'{folder}/vgg.csv', 'w').write('\n'.join(rows) + '\n')

@needs_ffmpeg
def test_prepare_videos_cli(tmp_path, capsys):
    make_videos(str(tmp_path / 'clips'))
    out = str(tmp_path / 'out')
    args = ['videos', str(tmp_path / 'clips'), '--out', out, '--csv', str(tmp_path / 'clips' / 'vgg.csv'),
            '--size', '32', '--frames', '4', '--seconds', '1', '--mel_frames', '80', '--image_patch', '8',
            '--image_codebook', '8', '--audio_codebook', '8', '--workers', '2', '--image_tokenizer', 'kmeans',
            '--audio_tokenizer', 'kmeans']
    assert data.main(args) == 1  # finished, but something was skipped
    meta = json.load(open(f'{out}/meta.json'))
    assert meta['frames'] == 4 and meta['classes'] == ['high', 'low'] and meta['audio']['grid'] == [5, 10]  # 16 x 8 patches: derived
    assert sum(d['n'] for d in meta['splits'].values()) == 3 and meta['splits']['test']['ids'] == ['good2']
    assert np.load(f'{out}/test_image.npy').shape == (1, 4, 16) and os.path.exists(f'{out}/test_wav/good2.wav')
    assert np.array(Image.open(f'{out}/test_frame/good2.png')).shape == (32, 32, 3)
    skipped = dict(l.split('\t') for l in open(f'{out}/skipped.tsv').read().splitlines()[1:])
    assert sorted(skipped) == ['corrupt', 'noaudio', 'novideo', 'silent', 'truncated']
    assert 'no audio stream' in skipped['noaudio'] and 'no video stream' in skipped['novideo']
    assert 'silent' in skipped['silent'] and 'skipped 5' in capsys.readouterr().out
    # a finished run is not redone, and its exit code still says something was skipped
    assert data.main(args) == 1 and 'already prepared' in capsys.readouterr().out

@needs_ffmpeg
def test_vggsound_clip_namings(tmp_path, capsys):
    """The official vggsound.csv rows (youtube_id,start_seconds,label,split) match clips named the
    common ways: ytid_000010 (the download scripts), ytid_10, and SpecVQGAN's ytid_10000_20000."""
    clips = tmp_path / 'clips'
    clips.mkdir()
    names = {'-0Bxy_z9ABC_000010': 'dog', 'ab_cd-efghi_30': 'cat', 'zz__yy--xx1_30000_40000': 'cow'}
    for i, name in enumerate(names):
        ffmpeg('-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-f', 'lavfi', '-i', f'sine=frequency={300 + 400 * i}',
               '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-t', '1.5', str(clips / f'{name}.mp4'))
    rows = ['-0Bxy_z9ABC,10,dog,train', 'ab_cd-efghi,30,cat,train', 'zz__yy--xx1,30,cow,test', 'other000000,0,owl,train']
    (tmp_path / 'vggsound.csv').write_text('\n'.join(rows) + '\n')
    args = ['videos', str(clips), '--out', str(tmp_path / 'out'), '--csv', str(tmp_path / 'vggsound.csv'), '--size', '32',
            '--frames', '2', '--seconds', '1', '--mel_frames', '80', '--image_patch', '8', '--image_codebook', '8',
            '--audio_codebook', '8', '--workers', '2', '--image_tokenizer', 'kmeans', '--audio_tokenizer', 'kmeans']
    assert data.main(args) == 0, capsys.readouterr().err
    meta = json.load(open(tmp_path / 'out' / 'meta.json'))
    got = {i: meta['classes'][l] for d in meta['splits'].values() for i, l in zip(d['ids'], d['labels'])}
    assert got == names and meta['splits']['test']['ids'] == ['zz__yy--xx1_30000_40000']
    # no clip matches: said so, with the names a row expects, and skipped.tsv lists them
    (tmp_path / 'other.csv').write_text('abcdefghijk,20,owl,train\n')
    args[3:6] = [str(tmp_path / 'out2'), '--csv', str(tmp_path / 'other.csv')]
    assert data.main(args) == 2
    err = capsys.readouterr().err
    assert 'no usable item, 3 skipped' in err and 'abcdefghijk_000020, abcdefghijk_20 or abcdefghijk_20000_30000' in err
    assert len(data.read_skipped(str(tmp_path / 'out2'))) == 3

# -----------------------------------------------------------------------------
# paired files: bad inputs, resume, shards

def make_pairs(folder, n=12):
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(f'{folder}/p{i:02d}.png')
        wav(f'{folder}/p{i:02d}.wav', tone(1.2, f=300 + 100 * i), 22050 if i % 2 else 44100)
        rows.append(f'p{i:02d},c{i % 3},{"train" if i < n - 4 else "val" if i < n - 2 else "test"}')
    # bad ones
    Image.new('RGB', (1, 1)).save(f'{folder}/tiny.png'); wav(f'{folder}/tiny.wav', tone())
    png_header_only(f'{folder}/huge.png', 20000, 20000); wav(f'{folder}/huge.wav', tone())
    open(f'{folder}/text.png', 'w').write('hello'); wav(f'{folder}/text.wav', tone())
    Image.new('RGB', (32, 32)).save(f'{folder}/quiet.png'); wav(f'{folder}/quiet.wav', np.zeros(22050))
    Image.new('RGB', (32, 32)).save(f'{folder}/nan.png'); wav(f'{folder}/nan.wav', np.full(22050, np.nan))
    Image.new('RGB', (32, 32)).save(f'{folder}/short.png'); wav(f'{folder}/short.wav', tone(0.05))
    Image.new('RGB', (32, 32)).save(f'{folder}/lonely.png')
    rows += [f'{b},c0,train' for b in ('tiny', 'huge', 'text', 'quiet', 'nan', 'short', 'lonely')]
    open(f'{folder}/labels.csv', 'w').write('id,label,split\n' + '\n'.join(rows) + '\n')

def test_prepare_pairs_bad_inputs_and_resume(tmp_path, monkeypatch):
    make_pairs(str(tmp_path / 'in'))
    ref = str(tmp_path / 'ref')
    assert data.prepare('pairs', str(tmp_path / 'in'), ref, chunk=4, **SMALL) == 7
    skipped = open(f'{ref}/skipped.tsv').read()
    for name, why in [('tiny', 'too small'), ('huge', 'too large'), ('text', 'not a readable image'),
                      ('quiet', 'silent'), ('nan', 'NaN'), ('short', 'too short'), ('lonely', 'unpaired')]:
        assert any(l.startswith(name + '\t') and why in l for l in skipped.splitlines()), (name, skipped)
    meta = json.load(open(f'{ref}/meta.json'))
    assert [meta['splits'][s]['n'] for s in ('train', 'val', 'test')] == [8, 2, 2] and meta['frames'] == 1
    assert data.prepare('pairs', str(tmp_path / 'in'), ref, chunk=4, **SMALL) == 7  # a rerun: done, 7 skipped
    # interrupted after two chunks: the rerun keeps them, does the rest, and gives the same dataset
    out, calls = str(tmp_path / 'out'), []
    real = data.encode_mels
    def flaky(tok, mels, batch=64):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(tok, mels, batch)
    monkeypatch.setattr(data, 'encode_mels', flaky)
    with pytest.raises(KeyboardInterrupt):
        data.prepare('pairs', str(tmp_path / 'in'), out, chunk=4, **SMALL)
    assert not os.path.exists(f'{out}/meta.json')
    parts = {f: os.stat(f'{out}/parts/{f}').st_mtime_ns for f in os.listdir(f'{out}/parts') if f.endswith('.npz')}
    assert len(parts) == 2
    monkeypatch.setattr(data, 'encode_mels', real)
    # a pair added before the rerun: the parts were made from other inputs, never joined with new ones
    shutil.copy(tmp_path / 'in' / 'p00.png', tmp_path / 'in' / 'a00.png')
    shutil.copy(tmp_path / 'in' / 'p01.wav', tmp_path / 'in' / 'a00.wav')
    labels = open(tmp_path / 'in' / 'labels.csv').read()
    open(tmp_path / 'in' / 'labels.csv', 'a').write('a00,c0,train\n')
    for d in (out, ref):  # interrupted, and finished
        with pytest.raises(ValueError, match='made from other inputs .18 items then, 19 now'):
            data.prepare('pairs', str(tmp_path / 'in'), d, chunk=4, **SMALL)
    with pytest.raises(ValueError, match=r'made from other settings \(size\)'):
        data.prepare('pairs', str(tmp_path / 'in'), out, chunk=4, **{**SMALL, 'size': 64})
    os.remove(tmp_path / 'in' / 'a00.png')
    os.remove(tmp_path / 'in' / 'a00.wav')
    open(tmp_path / 'in' / 'labels.csv', 'w').write(labels)
    assert not os.path.exists(f'{out}/meta.json')
    data.prepare('pairs', str(tmp_path / 'in'), out, chunk=4, **SMALL)
    assert all(os.stat(f'{out}/parts/{f}').st_mtime_ns == t for f, t in parts.items())
    m2 = json.load(open(f'{out}/meta.json'))
    for s in ('train', 'val', 'test'):
        assert m2['splits'][s] == meta['splits'][s]
        for mod in ('audio', 'image'):
            assert (np.load(f'{out}/{s}_{mod}.npy') == np.load(f'{ref}/{s}_{mod}.npy')).all()

DYING_WORKER = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import data
from tokenizers import MelConfig
decode = data._decode_item
def dying(job):  # as the OOM killer would: SIGKILL in the middle of one item (a test one: not in the k-means fit)
    if job[0]['id'] == 'p10':
        os.kill(os.getpid(), signal.SIGKILL)
    return decode(job)
data._decode_item = dying
try:
    data.prepare('pairs', sys.argv[2], sys.argv[3], chunk=4, size=32, cfg=MelConfig(clip_seconds=1.0, frames=80),
                 image_codebook=8, audio_codebook=8, image_patch=(8, 8), audio_patch=(16, 16), workers=2, fit_items=16,
                 image_tokenizer='kmeans', audio_tokenizer='kmeans')  # as SMALL, so the rerun resumes
except ValueError as e:
    sys.exit(str(e))
"""

def test_a_dead_worker_ends_the_run(tmp_path):
    """A worker killed mid-item (the OOM killer) ends the run with a clear error instead of hanging
    (Pool.map waited forever); the chunks written are kept, and the rerun resumes from them."""
    make_pairs(str(tmp_path / 'in'))
    out = str(tmp_path / 'out')
    (tmp_path / 'probe.py').write_text(DYING_WORKER)
    r = subprocess.run([sys.executable, str(tmp_path / 'probe.py'), ROOT, str(tmp_path / 'in'), out],
                       capture_output=True, text=True, timeout=120)  # (the old Pool.map: forever)
    assert r.returncode == 1 and 'a worker process died' in r.stderr and 'rerun to resume' in r.stderr, r.stderr
    parts = sorted(f for f in os.listdir(f'{out}/parts') if f.endswith('.npz'))
    assert len(parts) == 3  # the chunks before p10's
    assert data.prepare('pairs', str(tmp_path / 'in'), out, chunk=4, **SMALL) == 7
    assert sorted(f for f in os.listdir(f'{out}/parts') if f.endswith('.npz'))[:3] == parts

def test_shards_and_merge(tmp_path):
    make_pairs(str(tmp_path / 'in'))
    ref = str(tmp_path / 'ref')
    data.prepare('pairs', str(tmp_path / 'in'), ref, **SMALL)
    for k in (0, 1):
        data.prepare('pairs', str(tmp_path / 'in'), str(tmp_path / f's{k}'), shard=(k, 2), **SMALL)
    assert data.merge([str(tmp_path / 's0'), str(tmp_path / 's1')], str(tmp_path / 'm')) == 7
    a, b = json.load(open(f'{ref}/meta.json')), json.load(open(tmp_path / 'm' / 'meta.json'))
    assert a['image']['tokenizer']['fingerprint'] == b['image']['tokenizer']['fingerprint']
    for s in ('train', 'val', 'test'):
        assert sorted(a['splits'][s]['ids']) == sorted(b['splits'][s]['ids'])  # nothing lost, nothing twice
        order = [b['splits'][s]['ids'].index(i) for i in a['splits'][s]['ids']]
        assert (np.load(tmp_path / 'm' / f'{s}_audio.npy')[order] == np.load(f'{ref}/{s}_audio.npy')).all()
    assert sorted(os.listdir(tmp_path / 'm' / 'test_wav')) == sorted(os.listdir(f'{ref}/test_wav'))
    with pytest.raises(ValueError, match='share items'):
        data.merge([str(tmp_path / 's0'), str(tmp_path / 's0')], str(tmp_path / 'm2'))

def test_odd_file_names_are_handled_per_item(tmp_path, capsys):
    """A name that is not valid UTF-8 is skipped with its reason, not the end of the run; tabs and
    newlines in names stay in their row of skipped.tsv, and merge counts rows, not lines."""
    make_pairs(str(tmp_path / 'in'), n=4)
    d = os.fsencode(str(tmp_path / 'in'))
    shutil.copy(d + b'/p00.png', d + b'/bad\xff.png')  # Latin-1 bytes: not UTF-8
    shutil.copy(d + b'/p00.wav', d + b'/bad\xff.wav')
    open(tmp_path / 'in' / 'tab\tname.png', 'w').write('not an image')
    shutil.copy(tmp_path / 'in' / 'p01.wav', tmp_path / 'in' / 'tab\tname.wav')
    shutil.copy(tmp_path / 'in' / 'p02.png', tmp_path / 'in' / 'new\nline.png')  # unpaired
    os.remove(tmp_path / 'in' / 'labels.csv')
    for k in (0, 1):
        data.prepare('pairs', str(tmp_path / 'in'), str(tmp_path / f's{k}'), shard=(k, 2), **SMALL)
    rows = {r[0]: r[1] for k in (0, 1) for r in data.read_skipped(str(tmp_path / f's{k}'))}
    assert 'not valid UTF-8' in rows['bad\\xff'] and 'not a readable image' in rows['tab\tname']
    assert 'unpaired' in rows['new\nline'] and len(rows) == 10  # + the 7 bad ones of make_pairs
    capsys.readouterr()
    assert data.merge([str(tmp_path / 's0'), str(tmp_path / 's1')], str(tmp_path / 'm')) == 10
    summary = capsys.readouterr().out.strip().splitlines()[-1]  # one line, grouped by reason
    assert summary.startswith('skipped 10') and 'unpaired or ambiguous' in summary and 'not valid UTF-8' in summary
    assert sorted(r[0] for r in data.read_skipped(str(tmp_path / 'm'))) == sorted(rows)
    assert json.load(open(tmp_path / 'm' / 'meta.json'))['source']['skipped'] == 10

# -----------------------------------------------------------------------------
# command-line errors: one line on stderr, exit code 2

def test_cli_errors(tmp_path, capsys):
    os.makedirs(tmp_path / 'empty')
    open(tmp_path / 'afile', 'w').write('x')
    make_pairs(str(tmp_path / 'in'), n=2)
    for args, msg in [(['pairs', str(tmp_path / 'empty'), '--out', str(tmp_path / 'o')], 'no '),
                      (['pairs', str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'o')], 'no such folder'),
                      (['pairs', str(tmp_path / 'in'), '--out', str(tmp_path / 'afile' / 'o')], 'cannot write'),
                      (['pairs', str(tmp_path / 'in'), '--out', str(tmp_path / 'o'), '--shard', '3/2'], '--shard'),
                      (['merge', str(tmp_path / 'in'), '--out', str(tmp_path / 'o')], 'not a finished dataset')]:
        assert data.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith('error:') and msg in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as e:  # argparse's own errors are one line too
        data.main(['pairs'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith('error:') and len(err.strip().splitlines()) == 1
    # the real entry point: exit code and stderr of a separate process
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'data.py'), 'pairs', str(tmp_path / 'empty'), '--out',
                        str(tmp_path / 'o')], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith('error:') and len(r.stderr.strip().splitlines()) == 1

def test_ffmpeg_missing_and_wheel_fallback(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    monkeypatch.setitem(sys.modules, 'imageio_ffmpeg', None)  # import fails
    with pytest.raises(FileNotFoundError, match='ffmpeg not found'):
        data.ffmpeg_exe()
    os.makedirs(tmp_path / 'clips')
    open(tmp_path / 'clips' / 'a.mp4', 'wb').write(b'x')
    assert data.main(['videos', str(tmp_path / 'clips'), '--out', str(tmp_path / 'o')]) == 2
    assert 'ffmpeg not found' in capsys.readouterr().err
    fake = types.SimpleNamespace(get_ffmpeg_exe=lambda: '/opt/wheel/ffmpeg')
    monkeypatch.setitem(sys.modules, 'imageio_ffmpeg', fake)
    assert data.ffmpeg_exe() == '/opt/wheel/ffmpeg'

@needs_ffmpeg
def test_video_with_the_wheels_ffmpeg(tmp_path, monkeypatch):
    imageio_ffmpeg = pytest.importorskip('imageio_ffmpeg')
    ffmpeg('-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-f', 'lavfi', '-i', 'sine', '-t', '1',
           '-c:v', 'libx264', '-pix_fmt', 'yuv420p', str(tmp_path / 'v.mp4'))
    monkeypatch.setattr(shutil, 'which', lambda name: None)  # no system ffmpeg: the wheel's binary
    assert data.ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()
    frames, wave = data.decode_video(str(tmp_path / 'v.mp4'), 16, 4, MelConfig(clip_seconds=1.0))
    assert frames.shape == (4, 16, 16, 3) and np.abs(wave).max() > 0.05
