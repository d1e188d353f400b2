"""
The digits benchmark, made from real material offline: a printed digit paired with the same digit
spoken, 10 classes. The class is a small part of what varies: the picture's font (56 Debian font
packages: book, display, mono, handwriting), size, position, rotation and colours over a plain,
gradient or photographic background (scikit-image's photographs); the sound's voice (flite and
festival speech synthesisers), speed, pitch, onset, loudness, channel colour and noise floor. Test
items use only fonts, voices and photographs that train never uses, so the test split measures
generalisation to unseen sources. The nuisances are drawn independently of each other and of the
class. It is written as a folder of pairs (<id>.png + <id>.flac, labels.csv) and then tokenized by
data.prepare('pairs', ...), exactly as a user's own pairs are.
$ python data/digits/prepare.py         # -> data/digits/pairs (the pairs), data/digits (their tokens)
"""
import importlib.util
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run as a script from anywhere: the repo's modules
from data import SPLITS, benchmark_command, load_audio, prepare_benchmark, save_png, save_text  # noqa: E402
from tokenizers import MelConfig  # noqa: E402
from util import repo_path, write_atomic, write_sound  # noqa: E402

DEFAULT_OUT = repo_path(os.path.join('data', 'digits'))  # data/digits from the repo root, else its full path

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
    sr = MelConfig().sample_rate
    rows = []
    for j, digit in enumerate(labels):
        rng = np.random.default_rng([seed, SPLITS.index(split), start + j])
        id_ = f'{split}{start + j:05d}'
        voice, si, fi = voices[rng.integers(len(voices))], rng.integers(len(DIGIT_STRETCH)), rng.integers(len(DIGIT_F0))
        speech = load_audio(f'{speech_dir}/{voice}_{digit}_{si}_{fi}.wav', sr, DIGIT_SECONDS)
        speech = np.trim_zeros(speech)  # the synthesiser's own silence; the onset is drawn here
        save_png(f'{folder}/{id_}.png', _digit_image(rng, digit, fonts, photos))
        write_atomic(f'{folder}/{id_}.flac', lambda f: write_sound(f, _digit_wave(rng, speech, sr), sr, format='FLAC'))
        rows.append(f'{id_},{DIGIT_WORDS[digit]},{split},{voice}')
    return rows

def make(out=DEFAULT_OUT, seed=1337, n_train=4000, n_val=400, n_test=500, workers=None):
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
    return prepare_benchmark(folder, out, DIGIT_SIZE, DIGIT_SECONDS, workers, seed)


if __name__ == '__main__':
    benchmark_command(make, 'the digits benchmark: pairs, then their tokens', DEFAULT_OUT)
