"""
The sounds benchmark, made from real material offline: a picture of a thing paired with a real recording
of the sound it makes, 26 classes (farm animals, birds, weather, water, tools, weapons, vehicles, drums,
guitar, door, glass, footsteps). The sounds are recorded sound effects shipped by 18 Debian packages of
games and music tools (each package's spoken lines and music are left out); the pictures are glyphs of
four icon fonts and drawings or photographs from two clip-art packages. A pair is one sound and one
picture of the same class, each drawn independently; the sound is cropped where it is loud, shifted in
pitch and speed, coloured, levelled, placed and given a noise floor; the picture is sized, placed,
turned, mirrored and coloured over a plain or gradient background. Test items use only packages that
train never uses, for the sounds (megaglest, tuxpaint-stamps, OpenTTD's OpenSFX, simutrans, UFO:AI,
Sonic Pi, 7kaa, freedink, supertux; train and val use 0 A.D., widelands, wesnoth, lincity-ng, minetest,
flightgear, LMMS, hydrogen and warzone2100) and for the pictures (Material Design Icons and Tux Paint's
stamps; train and val use Font Awesome 5, Phosphor, Remix Icon and Openclipart), so the test split
measures generalisation to unseen sources. It is written as a folder of pairs (<id>.png + <id>.flac,
labels.csv, and sources.csv naming each pair's sources) and then tokenized by data.prepare('pairs', ...),
exactly as a user's own pairs are. Everything comes from Debian main (see NEEDS for the install line).
$ python data/sounds/prepare.py         # -> data/sounds/pairs (the pairs), data/sounds (their tokens)
"""
import csv
import fnmatch
import functools
import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import struct
import sys
import tempfile
import time
import zipfile

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run as a script from anywhere: the repo's modules
from data import SPLITS, benchmark_command, load_audio, prepare_benchmark, save_png, save_text  # noqa: E402
from tokenizers import MelConfig  # noqa: E402
from util import repo_path, write_atomic, write_sound  # noqa: E402

DEFAULT_OUT = repo_path(os.path.join('data', 'sounds'))  # data/sounds from the repo root, else its full path

G, U = '/usr/share/games/', '/usr/share/'
SOUND_SOURCES = {  # short name -> (side, Debian package, its recordings: a folder, a zip archive or OpenTTD's .cat)
    '0ad': ('train', '0ad-data', G + '0ad/mods/public/public.zip'), 'wl': ('train', 'widelands-data', G + 'widelands/data'),
    'wes': ('train', 'wesnoth-1.16-data', G + 'wesnoth/1.16/data/core/sounds'),
    'lc': ('train', 'lincity-ng-data', G + 'lincity-ng/sounds'), 'fg': ('train', 'flightgear-data-base', G + 'flightgear'),
    'mt': ('train', 'minetest-data', G + 'minetest/games/minetest_game/mods'),
    'lmms': ('train', 'lmms-common', U + 'lmms/samples'), 'h2': ('train', 'hydrogen-drumkits', U + 'hydrogen/data/drumkits'),
    'wz': ('train', 'warzone2100-data', G + 'warzone2100/base.wz'), 'mg': ('test', 'megaglest-data', G + 'megaglest'),
    'tux': ('test', 'tuxpaint-stamps-default', U + 'tuxpaint/stamps'),
    'sfx': ('test', 'openttd-opensfx', G + 'openttd/baseset/opensfx/opensfx.cat'),
    'st': ('test', 'simutrans-pak64', G + 'simutrans/pak/sound'), 'ufo': ('test', 'ufoai-sound', G + 'ufoai/base/0snd.pk3'),
    'spi': ('test', 'sonic-pi-samples', U + 'sonic-pi/samples'), '7k': ('test', '7kaa-data', G + '7kaa/SOUND'),
    'dink': ('test', 'freedink-data', G + 'dink/dink/Sound'), 'stx': ('test', 'supertux-data', G + 'supertux2/sounds'),
}
SOUNDS = {  # class -> 'source:glob ...', globs inside the source (OpenSFX's sounds are named 'NN Title.wav')
    'cow': '0ad:audio/*/cattle_* wl:sound/farm/ox_* mg:*/cow_* mg:*/mudchute_cow_* mg:*/bull_[as]* sfx:37* '
           'tux:*/bovines/cow*.ogg tux:*/bovines/bull.ogg',
    'pig': '0ad:audio/*/pig_* mg:*/pig_* tux:animals/mammals/pig*.ogg',
    'chicken': '0ad:audio/*/chicken_* mg:*/chicken*.wav mg:*/rooster.ogg tux:*/birds/hen.ogg tux:*/birds/rooster.ogg',
    'horse': '0ad:audio/actor/fauna/*horse* wes:horse-* wl:sound/farm/horse_* mg:*/horseman_walk* sfx:38* '
             'st:horse.wav tux:*/equines/horse.ogg',
    'sheep': '0ad:audio/*/sheep_* wl:sound/farm/sheep_* mg:*/units/sheep/sounds/* sfx:36* tux:*/bovines/sheep*.ogg',
    'bird': 'wl:sound/animals/bird* wes:ambient/birds* mg:*/hawk.ogg mg:*/owl.ogg sfx:66* sfx:72* st:seagulls.wav '
            'dink:bird1.wav spi:misc_crow.flac tux:*/birds/blackbird.ogg tux:*/birds/lark.ogg tux:*/birds/cuckoo.ogg '
            'tux:*/birds/crow.ogg tux:*/birds/seagull.ogg',
    'thunder': '0ad:audio/*/thunder_* fg:Sounds/thunder* ufo:*/thunder* 7k:THUNDER.WAV tux:*/lightningbolt.ogg '
               'stx:thunder.wav stx:lightning.wav',
    'rain': '0ad:audio/*/rain_* fg:Sounds/rain.wav mg:tilesets/*/rain.* 7k:RAIN.WAV stx:rain.wav',
    'wind': '0ad:audio/ambient/weather/wind* fg:Sounds/wind* mg:tilesets/*/wind.ogg sfx:52* sfx:57* 7k:WIND.WAV '
            'ufo:*/arcticwind.ogg',
    'fire': 'wes:ambient/campfire.ogg wes:fire.wav lc:Fire?.wav mt:fire/sounds/fire_[fls][ima]* ufo:*/ambience/*fire* '
            '7k:FIRE.WAV dink:fire.wav dink:burn.wav stx:fire.ogg stx:flame.wav',
    'water': '0ad:audio/ambient/water/* lc:Water?.wav mt:*/env_sounds_water* fg:Sounds/wave.wav '
             'mg:data/core/water_sounds/* ufo:*/ambience/water* st:Water.wav stx:waterfall.wav',
    'saw': '0ad:audio/*/con_saw_* wl:sound/atlanteans/saw/* wl:sound/sawmill/* sfx:40* sfx:56* st:buzzsaw.wav '
           'tux:*/tools/saw.ogg stx:saw.wav',
    'hammer': 'wl:sound/hammering/* wl:sound/smiths/*smith_* lc:Blacksmith* mg:*/anvil* sfx:39* tux:*/tools/hammer.ogg '
              'tux:*/tools/mallet_metal.ogg',
    'axe': '0ad:audio/*/lumber_tree_[0-9]* wl:sound/woodcutting/*woodcutting* wes:axe.ogg mt:*/default_dig_choppy* '
           'mg:*/worker_harvest_wood* sfx:55* st:tree-cutting.wav dink:axe.wav',
    'sword': '0ad:audio/*/swordhit_* 0ad:audio/*/sword_attack_* wes:sword-1.ogg mg:*/swordman_attack* '
             'ufo:*/sword-hit.ogg dink:sword2.wav',
    'gun': '0ad:audio/*/Musket_* wes:gunshot.wav wes:thunderstick.ogg wz:audio/sfx/weapons/mg* ufo:*/weapons/bullet-*',
    'explosion': 'wz:audio/sfx/explons/*expl.ogg wes:explosion.ogg mt:*/tnt_explode* lc:RocketExplosion* '
                 'ufo:*/weapons/explosion* st:explosion.wav sfx:18* stx:explosion.wav',
    'train': 'lc:RailTrain* sfx:04* sfx:05* sfx:10* sfx:65* sfx:71* st:steam.wav st:diesel.wav',
    'car': 'lc:Trafic* sfx:25* sfx:26* sfx:27* sfx:28* st:bus.wav st:truck.wav',
    'airplane': 'fg:Sounds/jet.wav fg:Sounds/*prop.wav fg:Sounds/turbo* fg:Sounds/p51d_rpm1.wav fg:Sounds/R-1535* '
                'sfx:08* sfx:09* sfx:59* sfx:61* sfx:69* st:planelow.wav st:comet-jet.wav',
    'ship': '0ad:audio/actor/ship/*move* lc:Harbor* wes:ambient/ship.ogg sfx:06* sfx:07* st:boat-horn.wav',
    'drum': 'h2:[CMTV]*/*[Kk]ick* h2:[CMTV]*/*[Ss]nare* h2:[CMTV]*/*[Tt]om* h2:[CMTV]*/b[da]* lmms:drums/kick0* '
            'lmms:drums/snare0* lmms:drums/tom* lmms:drums/bassdrum* spi:drum_* tux:*/percussion/*.ogg',
    'guitar': 'lmms:instruments/steel_guitar* lmms:latin/latin_guitar* spi:guit_*',
    'door': 'mt:doors/sounds/doors_*door_* mt:doors/sounds/doors_fencegate_* fg:Sounds/door_close.wav '
            'fg:Aircraft/c172p/Sounds/door-* ufo:sound/doors/door* stx:door.wav spi:perc_door.flac',
    'glass': 'mt:*/default_break_glass* ufo:*/breakglass* tux:*/dishes/glass.ogg',
    'footsteps': '0ad:audio/actor/human/movement/* mt:*/default_*_footstep* ufo:sound/footsteps/[a-z]*[0-9].ogg',
}
FONTS = U + 'python-qtawesome/fonts/'
PICTURE_SOURCES = {  # short name -> (side, Debian package, an icon font (+ its charmap of names) or a folder of drawings)
    'fa5': ('train', 'python-qtawesome-common', FONTS + 'fontawesome5-solid-webfont'),
    'ph': ('train', 'python-qtawesome-common', FONTS + 'phosphor'),
    'ri': ('train', 'python-qtawesome-common', FONTS + 'remixicon'), 'oc': ('train', 'openclipart-png', U + 'openclipart/png'),
    'mdi': ('test', 'python-qtawesome-common', FONTS + 'materialdesignicons6-webfont'),
    'tux': ('test', 'tuxpaint-stamps-default', U + 'tuxpaint/stamps'),
}
PICTURES = {  # class -> 'source:glob ...' over icon names or drawing files
    'cow': 'oc:animals/mammals/vacca_* oc:animals/mammals/bull_* mdi:cow tux:*/bovines/cow*.png tux:*/bovines/bull.png',
    'pig': 'oc:animals/mammals/*pig_* oc:animals/mammals/porcinet* mdi:pig mdi:pig-variant tux:animals/mammals/pig*.png',
    'chicken': 'oc:animals/birds/rooster* oc:animals/birds/hen_* oc:animals/birds/gallo_* tux:*/birds/hen.png '
               'tux:*/birds/rooster.png tux:*/birds/chicken_profile.png',
    'horse': 'ph:horse* oc:animals/mammals/horses/[ch][ao]* mdi:horse mdi:horse-variant* tux:*/equines/horse.png',
    'sheep': 'oc:animals/mammals/sheep* oc:animals/mammals/pecora* oc:animals/mammals/dall_sheep* mdi:sheep '
             'tux:*/bovines/sheep*.png',
    'bird': 'ph:bird* oc:animals/birds/uccello* oc:animals/birds/*gull* oc:animals/birds/owl* mdi:bird mdi:owl '
            'tux:*/birds/blackbird.png tux:*/birds/crow.png tux:*/birds/cuckoo.png tux:*/birds/lark.png '
            'tux:*/birds/magpie.png tux:*/birds/*gull.png tux:*/birds/owl.png',
    'thunder': 'fa5:bolt ph:*lightning* ri:thunderstorms* oc:*/weather/lightning_jon* oc:*/weather/storm.png '
               'mdi:weather-lightning mdi:lightning-bolt tux:*/lightningbolt.png',
    'rain': 'ph:cloud-rain* ri:rainy* ri:*showers* oc:*/weather/rain.png mdi:weather-rainy mdi:weather-pouring',
    'wind': 'ph:wind ph:wind-[bflt]* ri:windy* ri:cloud-windy* mdi:weather-windy*',
    'fire': 'fa5:fire ph:fire* ph:flame* ri:fire-[fl]* oc:*/fire_valessio* oc:*/fuoco_da_campeggio* mdi:fire mdi:campfire '
            'tux:naturalforces/fire.png',
    'water': 'fa5:tint ph:waves* ph:drop ph:drop-[bflt]* ri:drop-* oc:*/weather/drop_* mdi:water mdi:waves mdi:wave '
             'mdi:waterfall',
    'saw': 'oc:tools/saw_* oc:tools/utensile_sega* mdi:hand-saw mdi:circular-saw tux:*/tools/saw.png',
    'hammer': 'ri:hammer* oc:tools/*hammer* oc:tools/blacksmith_anvil* mdi:hammer mdi:anvil tux:*/tools/hammer*.png '
              'tux:*/tools/mallet_metal.png',
    'axe': 'oc:tools/axe_* mdi:axe mdi:axe-battle',
    'sword': 'ph:sword* ri:sword* oc:tools/weapons/*sword_01* oc:tools/weapons/katana* mdi:sword mdi:sword-cross '
             'tux:*/sword_in_the_stone.png',
    'gun': 'oc:tools/weapons/9_mm_gun* oc:tools/weapons/blue_gun* oc:tools/weapons/ak47* oc:tools/weapons/m16* mdi:pistol',
    'explosion': 'fa5:bomb oc:tools/weapons/bomb_* mdi:bomb',
    'train': 'fa5:train fa5:subway ph:train* ri:train-[fl]* oc:transportation/roadsigns/train* oc:*/kiddy_train* '
             'mdi:train mdi:train-variant mdi:tram tux:*/locomotive/cartoon/toy_train.png',
    'car': 'fa5:car fa5:bus fa5:truck ph:car ph:car-[bflst]* ph:bus* ph:truck* ri:car-[fl]* ri:bus-[fl2]* ri:truck-* '
           'oc:transportation/vehicles/[bcrs][aiku]* oc:transportation/*truck* mdi:car mdi:car-hatchback mdi:bus '
           'mdi:bus-side mdi:truck tux:vehicles/auto/*.png tux:*/masstransit/*.png tux:vehicles/garbagetruck.png',
    'airplane': 'fa5:plane ph:airplane ph:airplane-[bflt]* ph:airplane-tilt* ri:plane-* oc:*/vehicles/aircraft_* '
                'oc:*/vehicles/airplane_* oc:*/vehicles/departing_plane* mdi:airplane tux:vehicles/flight/planes/*.png '
                'tux:vehicles/flight/planes/cartoon/*.png',
    'ship': 'fa5:ship ph:boat* ri:ship* ri:sailboat* oc:transportation/boating/boat_* oc:*/vehicles/trawler* mdi:ferry '
            'mdi:sail-boat tux:vehicles/ship/chineseJunk.png tux:vehicles/ship/cartoon/tugboat.png',
    'drum': 'oc:recreation/music/*drum* oc:recreation/music/djambf* tux:*/percussion/*.png',
    'guitar': 'oc:recreation/music/*guitar* mdi:guitar-acoustic mdi:guitar-electric tux:*/string/guitar*.png',
    'door': 'ph:door* ri:door-[fl]i* ri:door-open* ri:door-closed* mdi:door mdi:door-open mdi:door-closed',
    'glass': 'fa5:glass-martini ph:wine* oc:food/beverages/glass* oc:*/wine_glass* mdi:glass-wine mdi:glass-fragile '
             'mdi:glass-tulip mdi:glass-flute tux:*/dishes/glass.png',
    'footsteps': 'ri:footprint* oc:signs_and_symbols/*foot_print* mdi:shoe-print mdi:foot-print',
}
SOUND_SECONDS, PICTURE_SIZE, CANVAS = 2.0, 64, 128  # clip length; picture side (drawn at 128, then shrunk)
RECORDING_SECONDS, MIN_SOUNDS = 10.0, 3  # the part of a recording that is read; recordings a class needs per side
NEEDS = ('apt-get install --no-install-recommends '
         + ' '.join(sorted({s[1] for s in list(SOUND_SOURCES.values()) + list(PICTURE_SOURCES.values())})))
_is_sound = lambda name: name.lower().endswith(('.ogg', '.wav', '.flac', '.aiff')) and '_desc' not in name  # not speech
_is_picture = lambda name: '.' not in name or name.endswith('.png')  # an icon's name or a drawing's file

_zip = functools.cache(zipfile.ZipFile)  # an archive's index is read once

@functools.cache
def _charmap(root):
    """An icon font's {icon name: code point (hex)}."""
    with open(root + '-charmap.json') as f:
        return json.load(f)

@functools.cache
def _cat(root):
    """OpenTTD's sound archive -> {'NN Title.wav': RIFF bytes}: a table of (offset, size), then per sound its
    description ('"Cow". Original ... License: ...', length-prefixed) and its wave."""
    with open(root, 'rb') as f:
        data = f.read()
    out = {}
    for i in range((struct.unpack('<I', data[:4])[0] & 0x7fffffff) // 8):
        off, size = struct.unpack('<II', data[8 * i:8 * i + 8])
        off &= 0x7fffffff
        title = re.sub(r'[^A-Za-z0-9 ()-]+', '-', data[off + 1:off + 1 + data[off]].decode('latin1').split('"')[1])
        out[f'{i:02d} {title}.wav'] = data[off + 1 + data[off]:off + size]
    return out

@functools.cache
def _members(root):
    """Names inside a source: files under a folder, members of a zip or of a .cat, icons of a font."""
    if root.startswith(FONTS):
        return sorted(_charmap(root)) if os.path.exists(root + '.ttf') else []
    if not os.path.exists(root):
        return []
    if root.endswith('.cat') or zipfile.is_zipfile(root):
        return sorted(_cat(root) if root.endswith('.cat') else _zip(root).namelist())
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)

def _drawn(root, names):
    """The icons that the font really draws (its charmap also names icons that this build of it lacks)."""
    codes, font = _charmap(root), ImageFont.truetype(root + '.ttf', 48)
    def draw(char):
        im = Image.new('L', (64, 64))
        ImageDraw.Draw(im).text((32, 32), char, font=font, fill=255, anchor='mm')
        return im.tobytes()
    missing = draw(chr(0x10FFFD))  # a code point that no icon font has: its "missing glyph" box
    return [n for n in names if draw(chr(int(codes[n], 16))) != missing]

def _resolve(table, sources, keep):
    """{class: {side: [(source, item), ...]}} for a table of 'source:glob' patterns, items that `keep` accepts."""
    out = {c: {'train': [], 'test': []} for c in table}
    for c, patterns in table.items():
        for src, glob in (p.split(':', 1) for p in patterns.split()):
            side, _, root = sources[src]
            found = [m for m in fnmatch.filter(_members(root), glob) if keep(m) and (src, m) not in out[c][side]]
            out[c][side] += [(src, m) for m in (_drawn(root, found) if root.startswith(FONTS) else found)]
    return out

def _check_material():
    """Everything the benchmark needs, checked before any work: one error naming what is missing."""
    missing = sorted({s[1] for s in list(SOUND_SOURCES.values()) + list(PICTURE_SOURCES.values())
                      if not os.path.exists(s[2] + ('.ttf' if s[2].startswith(FONTS) else ''))})
    if not missing:
        for table, sources, keep, least in ((SOUNDS, SOUND_SOURCES, _is_sound, MIN_SOUNDS),
                                            (PICTURES, PICTURE_SOURCES, _is_picture, 1)):
            missing += [f"{c}'s {side} {'sounds' if least > 1 else 'pictures'}" for c, sides in
                        _resolve(table, sources, keep).items() for side, items in sides.items() if len(items) < least]
    if missing:
        raise FileNotFoundError(f"the sounds benchmark needs {', '.join(missing)}: {NEEDS}")

def _load_recording(job):
    """Worker: one recording -> (source, name, float32 at the clip rate, its silences trimmed), or None."""
    import librosa
    src, name, path = job
    try:
        x, _ = librosa.effects.trim(load_audio(path, MelConfig().sample_rate, RECORDING_SECONDS), top_db=45)
    except ValueError:  # data.BadInput: too short (a few drum hits) or silent
        return None
    return (src, name, x) if len(x) >= 0.05 * MelConfig().sample_rate and np.abs(x).max() > 1e-3 else None

def _recordings(workers):
    """{class: {side: [(source, name, wave)]}}: every recording loaded once, exact duplicates dropped."""
    jobs = [(c, side, src, name) for c, sides in _resolve(SOUNDS, SOUND_SOURCES, _is_sound).items()
            for side, items in sides.items() for src, name in items]
    with tempfile.TemporaryDirectory() as tmp, mp.get_context('fork').Pool(workers) as pool:
        paths = []
        for _, _, src, name in jobs:  # a member of an archive is written out for load_audio
            root = SOUND_SOURCES[src][2]
            paths.append(os.path.join(root, name) if os.path.isdir(root) else os.path.join(tmp, src, name))
            if not os.path.isdir(root):
                os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
                with open(paths[-1], 'wb') as f:
                    f.write(_cat(root)[name] if root.endswith('.cat') else _zip(root).read(name))
        waves = list(tqdm(pool.imap(_load_recording, [(j[2], j[3], p) for j, p in zip(jobs, paths)], chunksize=8),
                          total=len(jobs), desc='recordings'))
    out, seen = {c: {'train': [], 'test': []} for c in SOUNDS}, set()
    for (c, side, _, _), w in zip(jobs, waves):
        if w is not None and hashlib.md5(w[2].tobytes()).digest() not in seen:  # the same file in two places
            seen.add(hashlib.md5(w[2].tobytes()).digest())
            out[c][side].append(w)
    few = [f'{c} ({side})' for c, sides in out.items() for side, ws in sides.items() if len(ws) < 2]
    if few:
        raise ValueError(f"fewer than 2 usable recordings for {', '.join(few)}")
    return out

def _pick(rng, items):
    """One item, its source drawn with weight sqrt(its item count) so that no source swamps a class."""
    srcs = sorted({i[0] for i in items})
    w = np.sqrt([sum(i[0] == s for i in items) for s in srcs])
    src = srcs[rng.choice(len(srcs), p=w / w.sum())]
    mine = [i for i in items if i[0] == src]
    return mine[rng.integers(len(mine))]

def _sound_wave(rng, rec, sr):
    """A recording -> SOUND_SECONDS of sound: a crop of it where it is loud, pitch and speed shifted together
    (a resampling, +-2 semitones), faded at its ends, channel tilt, level, onset, noise floor."""
    import librosa
    n = int(SOUND_SECONDS * sr)
    shift = 2 ** (rng.uniform(-2, 2) / 12)
    want = int(rng.uniform(0.45, 0.9) * n * shift)  # samples of the recording to take
    x = rec
    if len(rec) > want:
        energy = np.concatenate([[0], np.cumsum(rec.astype(np.float64) ** 2)])
        energy = energy[want:] - energy[:-want]  # of every crop of `want` samples
        starts = np.flatnonzero(energy >= 0.5 * energy.max())
        x = rec[(s := starts[rng.integers(len(starts))]):s + want]
    x = librosa.resample(x, orig_sr=sr * shift, target_sr=sr)[:int(0.9 * n)]  # played `shift` x faster
    x = x * np.minimum(1, np.minimum(np.arange(len(x)), np.arange(len(x))[::-1]) / (0.01 * sr))  # 10 ms fades
    f = np.fft.rfftfreq(len(x), 1 / sr)
    x = np.fft.irfft(np.fft.rfft(x) * ((f + 100) / 1000) ** rng.uniform(-0.6, 0.6), len(x))  # microphone/room colour
    x *= 10 ** (rng.uniform(-26, -4) / 20) / (np.abs(x).max() + 1e-9)                       # peak level, dBFS
    start = int(rng.uniform(0, 0.9 * n - len(x)))  # the sound ends inside the tokenized frames
    noise = np.cumsum(rng.normal(size=n)) if rng.random() < 0.5 else rng.normal(size=n)  # brown or white
    wave = (noise - noise.mean()) / (noise.std() + 1e-9) * 10 ** (rng.uniform(-70, -38) / 20)
    wave[start:start + len(x)] += x
    return wave.astype(np.float32)

def _sprite(rng, src, item):
    """-> RGBA image cropped to its ink, mirrored at random: an icon's glyph (white) or a drawing."""
    root = PICTURE_SOURCES[src][2]
    if root.startswith(FONTS):
        glyph = Image.new('L', (320, 320))
        ImageDraw.Draw(glyph).text((160, 160), chr(int(_charmap(root)[item], 16)),
                                   font=ImageFont.truetype(root + '.ttf', 200), fill=255, anchor='mm')
        im = Image.merge('RGBA', [glyph] * 4)
    else:
        with Image.open(os.path.join(root, item)) as im:
            im = im.convert('RGBA')
        im.thumbnail((320, 320))
    im = im.crop(im.getchannel('A').getbbox())
    return im.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else im

def _background(rng):
    """-> float (128, 128, 3) in [0, 1]: a plain colour or a two-colour gradient."""
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    if rng.random() < 0.5:
        return np.broadcast_to(a, (CANVAS, CANVAS, 3)).astype(np.float32)
    t, angle = np.linspace(0, 1, CANVAS), rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]) / 2 + 0.5  # (128, 128) in [0, 1]
    return (a + (b - a) * ramp[..., None]).astype(np.float32)

def _picture(rng, src, item):
    """-> uint8 (64, 64, 3): the icon or drawing at a random size, place and angle over a background; an
    icon in a random colour that stands out from what is behind it, a drawing in its own colours."""
    sprite = _sprite(rng, src, item).rotate(rng.uniform(-15, 15), Image.BICUBIC, expand=True)
    side = rng.uniform(0.45, 0.9) * CANVAS / max(sprite.size)
    sprite = sprite.resize((max(1, round(sprite.width * side)), max(1, round(sprite.height * side))), Image.BICUBIC)
    x0, y0 = rng.integers(CANVAS - sprite.width + 1), rng.integers(CANVAS - sprite.height + 1)
    layer = np.zeros((CANVAS, CANVAS, 4), np.float32)
    layer[y0:y0 + sprite.height, x0:x0 + sprite.width] = np.asarray(sprite, np.float32) / 255
    bg, mask = _background(rng), layer[..., 3:]
    if PICTURE_SOURCES[src][2].startswith(FONTS):
        luma = lambda c: c @ np.array([0.299, 0.587, 0.114], np.float32)
        back = luma(bg[mask[..., 0] > 0.5].mean(0)) if (mask > 0.5).any() else 0.5
        while True:  # an ink colour that stands out from what is behind it
            ink = rng.uniform(0, 1, 3).astype(np.float32)
            if abs(luma(ink) - back) > 0.3:
                break
        layer[..., :3] = ink
    img = np.clip(bg * (1 - mask) + layer[..., :3] * mask, 0, 1)
    img = Image.fromarray((img * 255).round().astype(np.uint8)).resize((PICTURE_SIZE, PICTURE_SIZE), Image.LANCZOS)
    return np.asarray(img)

def _batch(args):
    """Worker: items of one split -> <id>.png and <id>.flac written into `folder`, and their sources.csv rows."""
    seed, split, start, labels, folder, recordings, pictures = args
    side, sr, rows = 'test' if split == 'test' else 'train', MelConfig().sample_rate, []
    for j, c in enumerate(labels):
        rng = np.random.default_rng([seed, SPLITS.index(split), start + j])
        id_ = f'{split}{start + j:05d}'
        src, name, rec = _pick(rng, recordings[c][side])
        psrc, item = _pick(rng, pictures[c][side])
        save_png(f'{folder}/{id_}.png', _picture(rng, psrc, item))
        write_atomic(f'{folder}/{id_}.flac', lambda f: write_sound(f, _sound_wave(rng, rec, sr), sr, format='FLAC'))
        proot = PICTURE_SOURCES[psrc][2]  # an icon font is named by itself, a folder of drawings by its package
        rows.append([id_, c, split, SOUND_SOURCES[src][1], name,
                     os.path.basename(proot) if proot.startswith(FONTS) else PICTURE_SOURCES[psrc][1], item])
    return rows

def write_pairs(folder, seed=1337, n_train=4000, n_val=400, n_test=500, workers=None):
    """Write the benchmark's pairs into `folder`: <id>.png + <id>.flac, labels.csv, and sources.csv that names
    the package and file each pair's sound comes from, and the icon font or package and icon or file of its picture."""
    _check_material()
    t0, classes = time.time(), sorted(SOUNDS)
    os.makedirs(folder, exist_ok=True)
    labels = {s: [classes[k] for k in np.random.default_rng([seed, i]).permutation(np.arange(n) % len(classes))]
              for i, (s, n) in enumerate(zip(SPLITS, (n_train, n_val, n_test)))}  # balanced
    recordings, pictures = _recordings(workers or os.cpu_count()), _resolve(PICTURES, PICTURE_SOURCES, _is_picture)
    jobs = [(seed, s, i, labels[s][i:i + 100], folder, recordings, pictures)
            for s in SPLITS for i in range(0, len(labels[s]), 100)]
    with mp.get_context('fork').Pool(workers or os.cpu_count()) as pool:
        rows = [r for rs in tqdm(pool.imap(_batch, jobs), total=len(jobs), desc='pairs') for r in rs]
    table = io.StringIO()
    csv.writer(table, lineterminator='\n').writerows(
        [['id', 'label', 'split', 'sound_package', 'sound', 'picture_source', 'picture']] + rows)
    save_text(f'{folder}/sources.csv', table.getvalue())
    save_text(f'{folder}/labels.csv', 'id,label,split\n' + '\n'.join(','.join(r[:3]) for r in rows) + '\n')
    print(f"sounds: {len(rows)} pairs written to {folder} in {time.time() - t0:.0f} s")

def make(out=DEFAULT_OUT, seed=1337, n_train=4000, n_val=400, n_test=500, workers=None):
    """Write the sounds benchmark's pairs into out/pairs, then tokenize them into `out` as
    `data.py pairs out/pairs --out out --seconds 2 --size 64` would. Returns the skipped count."""
    _check_material()
    folder = f'{out}/pairs'
    if not os.path.exists(f'{folder}/labels.csv'):
        write_pairs(folder, seed, n_train, n_val, n_test, workers)
    return prepare_benchmark(folder, out, PICTURE_SIZE, SOUND_SECONDS, workers, seed)


if __name__ == '__main__':
    benchmark_command(make, 'the sounds benchmark: pairs, then their tokens', DEFAULT_OUT)
