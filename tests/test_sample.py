"""sample.py end to end: a tiny random model and tiny patch k-means tokenizers built on the fly,
sample.py run as a subprocess (image->audio and the error path), every other task and every kind of
bad input in-process through sample.cli, the command line's own entry point (a torch import takes
seconds on a loaded machine)."""
import errno
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model import ModelConfig, VisualEchoes  # noqa: E402
from tokenizers import MelConfig, PatchKMeansTokenizer, mel_spectrogram  # noqa: E402
import data  # noqa: E402
import sample  # noqa: E402

MEL = MelConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16, fmin=60.0, fmax=4000.0,
                clip_seconds=1.0, frames=120)  # 1 s clips -> 16 x 120 mels -> 4 x 15 tokens
SIZE = 32  # images 32 x 32 -> 4 x 4 tokens
PANEL = (256 + 8 + 512, 256)  # image 256 px, gap 8, mel at least 512 px wide
WAVE_LEN = MEL.frames * MEL.hop_length  # Griffin-Lim of 120 frames


def recipe_sampling():
    """config/pairs.py's sampling settings, as train.py stores them in a checkpoint's config."""
    scope = {}
    exec((REPO / 'config' / 'pairs.py').read_text(), scope)
    return {k: v for k, v in scope.items() if k.startswith('sample_')}


def save_checkpoint(out_dir, meta, config=None, **model_overrides):
    args = dict(audio_grid_h=4, audio_grid_w=15, audio_codebook_size=16, image_grid_h=4, image_grid_w=4,
                image_codebook_size=16, n_layer=1, n_head=2, n_embd=32, decoder_n_layer=1,
                decoder_n_head=2, decoder_n_embd=32, dropout=0.0)
    args.update(model_overrides)
    torch.manual_seed(0)
    model = VisualEchoes(ModelConfig(**args))
    os.makedirs(out_dir, exist_ok=True)
    torch.save({'model': model.state_dict(), 'model_args': asdict(model.config), 'iter_num': 0,
                'best_val_loss': 0.0, 'config': config or {}, 'dataset_meta': meta}, os.path.join(out_dir, 'ckpt.pt'))


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp('sample')
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, SIZE, SIZE, generator=g) * 2 - 1
    t = np.arange(MEL.num_samples) / MEL.sample_rate
    waves = np.stack([np.sin(2 * np.pi * f * t) * (t < 0.5 + 0.05 * i) for i, f in enumerate(range(200, 3400, 400))])
    mels = torch.from_numpy(mel_spectrogram(waves.astype(np.float32), MEL)[:, :, :MEL.frames])[:, None]
    tok = {}
    for name, x, patch, seed in (('audio', mels, (4, 8), 0), ('image', images, (8, 8), 0), ('other', images, (8, 8), 1)):
        tok[name] = PatchKMeansTokenizer.fit(x, 16, patch=patch, seed=seed, iters=2)
        tok[name].save(str(root / f'{name}_tok.pt'))
    meta = {'name': 'tiny', 'frames': 1, 'classes': None, 'probe': None, 'splits': {},
            'audio': {'grid': [4, 15], 'codebook_size': 16, 'tokenizer': tok['audio'].describe(), 'mel': asdict(MEL)},
            'image': {'grid': [4, 4], 'codebook_size': 16, 'tokenizer': tok['image'].describe(), 'size': SIZE}}
    save_checkpoint(root / 'ckpt', meta)
    save_checkpoint(root / 'ckpt_recipe', meta, config=recipe_sampling())  # as config/pairs.py trains it
    # the tokenizer file is not the one the data was tokenized with (same shapes, other codebook)
    bad = {**meta, 'image': {**meta['image'], 'tokenizer': {**meta['image']['tokenizer'], 'path': str(root / 'other_tok.pt')}}}
    save_checkpoint(root / 'ckpt_tok', bad)
    save_checkpoint(root / 'ckpt_grid', meta, image_grid_h=2, image_grid_w=2)  # model and tokenizer disagree
    os.makedirs(root / 'ckpt_junk')
    (root / 'ckpt_junk' / 'ckpt.pt').write_bytes(b'not a checkpoint')
    # inputs of several kinds: sizes, modes, sample rates, channels
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / 'cat.jpg')
    Image.fromarray(rng.integers(0, 255, (70, 30), dtype=np.uint8)).save(root / 'gray.png')
    Image.fromarray(rng.integers(0, 255, (33, 33, 4), dtype=np.uint8), 'RGBA').save(root / 'rgba.png')
    Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).convert('CMYK').save(root / 'cmyk.jpg')
    t16 = np.arange(24000) / 16000
    sf.write(root / 'dog.wav', np.stack([np.sin(2 * np.pi * 440 * t16), 0.5 * np.sin(2 * np.pi * 900 * t16)], 1), 16000)
    sf.write(root / 'x.wav', (0.3 * rng.standard_normal(MEL.num_samples)).astype(np.float32), MEL.sample_rate)
    (root / 'notimg.jpg').write_text('hello')
    (root / 'sub').mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / 'sub' / 'cat.png')
    sf.write(root / 'empty.wav', np.zeros((0,), np.float32), 8000)
    sf.write(root / 'nan.wav', np.full(8000, np.nan, np.float32), 8000, subtype='FLOAT')
    return root


def argv(env, *args, out='out', ckpt='ckpt'):
    return ['--out_dir', str(env / ckpt), '--output', str(env / out), '--steps', '4', '--device', 'cpu', *args]


def run(env, *args, **kw):
    cmd = [sys.executable, str(REPO / 'sample.py'), *argv(env, *args, **kw)]
    return subprocess.run(cmd, cwd=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli(env, capsys, monkeypatch):
    """sample.cli in-process (the command line's own code path without another torch import):
    returns (exit code, stderr)."""
    monkeypatch.chdir(env)
    def call(*args, **kw):
        try:
            code = sample.cli(argv(env, *args, **kw))
        except SystemExit as e:  # argparse's own errors
            code = e.code
        return code, capsys.readouterr().err
    return call


def files(d):
    return sorted(p.name for p in Path(d).iterdir()) if Path(d).exists() else []


def check_wav(path, n_samples):
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames) == (MEL.sample_rate, 1, n_samples)


def assert_within_full_scale(path):
    # the untrained model's mels are loud: Griffin-Lim alone peaks far above 1.0 on them
    x = sf.read(str(path), dtype='int16')[0].astype(int)
    assert np.abs(x).max() <= 0.99 * 32768 + 1  # 16-bit: no sample at the rails, nothing clipped


def test_image_to_audio_many_inputs(env):
    r = run(env, '--image', 'cat.jpg', 'gray.png', 'rgba.png', 'cmyk.jpg', '--num_samples', '2', out='i2a')
    assert r.returncode == 0, r.stderr
    names = [f'{s}_{j}' for s in ('cat', 'gray', 'rgba', 'cmyk') for j in range(2)]
    assert files(env / 'i2a') == sorted([f'{n}.wav' for n in names] + [f'{n}_mel.png' for n in names])
    for n in names:
        check_wav(env / 'i2a' / f'{n}.wav', WAVE_LEN)
        assert Image.open(env / 'i2a' / f'{n}_mel.png').size == PANEL
        assert_within_full_scale(env / 'i2a' / f'{n}.wav')
    assert f'wrote {env / "i2a" / "cat_0.wav"}' in r.stdout


def test_audio_to_image(env, cli):
    code, err = cli('--audio', 'dog.wav', '--out_dir', str(env / 'ckpt' / 'ckpt.pt'), out='a2i')  # a file works too
    assert code == 0, err
    assert files(env / 'a2i') == ['dog.png', 'dog_mel.png']
    assert Image.open(env / 'a2i' / 'dog.png').size == (SIZE, SIZE)
    assert Image.open(env / 'a2i' / 'dog_mel.png').size == PANEL


def test_cogeneration(env, cli):
    code, err = cli('--cogen', '--num_samples', '2', out='cogen')
    assert code == 0, err
    assert files(env / 'cogen') == sorted(f'cogen_{j}{e}' for j in range(2) for e in ('.wav', '.png', '_mel.png'))
    check_wav(env / 'cogen' / 'cogen_1.wav', WAVE_LEN)
    assert Image.open(env / 'cogen' / 'cogen_1.png').size == (SIZE, SIZE)


def test_inpaint_keeps_the_sound_outside_the_range(env, cli):
    code, err = cli('--audio', 'x.wav', '--image', 'cat.jpg', '--inpaint', '0.3:0.5', out='inpaint')
    assert code == 0, err
    assert files(env / 'inpaint') == ['x_inpaint.wav', 'x_inpaint_mel.png']
    check_wav(env / 'inpaint' / 'x_inpaint.wav', WAVE_LEN)
    made, given = sf.read(env / 'inpaint' / 'x_inpaint.wav')[0], sf.read(env / 'x.wav')[0][:WAVE_LEN]
    outside = np.r_[:int(0.28 * MEL.sample_rate), int(0.52 * MEL.sample_rate):WAVE_LEN]
    assert np.abs(made[outside] - given[outside]).max() < 1e-3  # 16-bit PCM rounding only
    assert np.abs(made - given).max() > 0.05  # the range was regenerated


def test_a_loud_given_sound_is_not_clipped(env, cli, tmp_path):
    # a float wav above full scale, inpainted: the whole written sound is scaled down, not clipped
    sf.write(tmp_path / 'loud.wav', 2 * np.sin(np.arange(MEL.num_samples) * 0.05).astype(np.float32),
             MEL.sample_rate, subtype='FLOAT')
    code, err = cli('--audio', str(tmp_path / 'loud.wav'), '--image', 'cat.jpg', '--inpaint', '0.3:0.5', out='loud')
    assert code == 0, err
    x = sf.read(env / 'loud' / 'loud_inpaint.wav', dtype='int16')[0].astype(int)
    assert np.abs(x).max() <= 0.99 * 32768 + 1  # scaled to peak at 0.99


def test_long_duration_by_continuation(env, cli):
    code, err = cli('--image', 'cat.jpg', '--duration', '2.5', out='long')
    assert code == 0, err
    check_wav(env / 'long' / 'cat.wav', round(2.5 * MEL.sample_rate))
    assert Image.open(env / 'long' / 'cat_mel.png').size == PANEL  # 5 windows: 376 frames < 512 px


def test_continue_a_given_sound(env, cli):
    code, err = cli('--audio', 'x.wav', '--image', 'cat.jpg', '--duration', '2', out='cont')
    assert code == 0, err
    assert files(env / 'cont') == ['x_continued.wav', 'x_continued_mel.png']
    check_wav(env / 'cont' / 'x_continued.wav', 2 * MEL.sample_rate)
    made, given = sf.read(env / 'cont' / 'x_continued.wav')[0], sf.read(env / 'x.wav')[0]
    first = int(0.9 * MEL.sample_rate)  # the given clip's tokens cover 0.96 s
    assert np.abs(made[:first] - given[:first]).max() < 1e-3


def test_seed_determinism(env, cli):
    runs = [cli('--image', 'cat.jpg', '--seed', str(s), out=f'seed{k}') for k, s in enumerate((7, 7, 8))]
    assert [code for code, _ in runs] == [0, 0, 0], runs
    wav = [(env / f'seed{k}' / 'cat.wav').read_bytes() for k in range(3)]
    assert wav[0] == wav[1] and wav[0] != wav[2]


def has_ffmpeg():  # as the project finds it: the system's, else the imageio-ffmpeg wheel's binary
    try:
        return bool(data.ffmpeg_exe())
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not has_ffmpeg(), reason='no ffmpeg (system or imageio-ffmpeg)')
def test_video(env, cli):
    code, err = cli('--image', 'cat.jpg', '--video', out='video')
    assert code == 0, err
    assert 'cat.mp4' in files(env / 'video') and (env / 'video' / 'cat.mp4').stat().st_size > 0
    duration, has_video, has_audio = data.probe_video(str(env / 'video' / 'cat.mp4'))  # ffmpeg's listing, no ffprobe
    assert has_video and has_audio and abs(duration - WAVE_LEN / MEL.sample_rate) < 0.05  # as long as its sound


@pytest.mark.parametrize('args, ckpt, says', [
    (['--image', 'nope.jpg'], 'ckpt', 'nope.jpg'),                  # missing file
    (['--image', 'notimg.jpg'], 'ckpt', 'notimg.jpg'),              # not an image
    (['--audio', 'empty.wav'], 'ckpt', 'empty.wav'),                # no samples
    (['--audio', 'nan.wav'], 'ckpt', 'nan.wav'),                    # NaN samples
    (['--image', 'cat.jpg'], 'ckpt_tok', 'tokenizer'),              # tokenizer file is not the data's
    (['--image', 'cat.jpg'], 'ckpt_grid', 'grid'),                  # model and tokenizer grids differ
    (['--image', 'cat.jpg'], 'ckpt_junk', 'ckpt.pt'),               # not a checkpoint
    (['--image', 'cat.jpg'], 'nowhere', 'ckpt.pt'),                 # no checkpoint
    (['--audio', 'x.wav', '--image', 'cat.jpg', '--inpaint', '0.5:3'], 'ckpt', '--inpaint'),  # past the clip
    (['--audio', 'x.wav', '--image', 'cat.jpg'], 'ckpt', '--inpaint'),  # both inputs, no task
    (['--audio', 'x.wav', '--image', 'cat.jpg', '--duration', '0.5'], 'ckpt', 'more than one clip'),
    (['--audio', 'x.wav', 'dog.wav', '--image', 'cat.jpg', '--inpaint', '0:0.5'], 'ckpt', 'one of each'),
    (['--image', 'cat.jpg', 'sub/cat.png'], 'ckpt', 'same name'),
    (['--image', 'cat.jpg', '--vocoder', 'nope.pt'], 'ckpt', 'nope.pt'),
    (['--image', 'cat.jpg', '--num_samples', '0'], 'ckpt', '--num_samples'),
    (['--cogen', '--duration', '3'], 'ckpt', '--duration'),
    (['--image', 'cat.jpg', '--duration', '-1'], 'ckpt', '--duration'),
    (['--image', 'cat.jpg', '--steps', 'many'], 'ckpt', '--steps'),  # argparse, same one-line form
    (['--image', 'cat.jpg', '--dtype', 'half'], 'ckpt', 'dtype'),
    ([], 'ckpt', '--cogen'),
])
def test_bad_input_one_line_error_and_no_output(env, cli, args, ckpt, says):
    code, err = cli(*args, ckpt=ckpt, out='bad')
    err = err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith('error: ') and says in err[0], err
    assert files(env / 'bad') == []


def test_dtype_and_compile(env, cli):
    # float32 compiled writes the same sound as float32 eager; bf16 (the default on CPUs that have it) runs too
    for out, args in (('f32', ['--dtype', 'float32']), ('f32c', ['--dtype', 'float32', '--compile']),
                      ('bf16', ['--dtype', 'bfloat16'])):
        assert cli('--image', 'cat.jpg', *args, out=out)[0] == 0
    assert np.array_equal(sf.read(env / 'f32' / 'cat.wav')[0], sf.read(env / 'f32c' / 'cat.wav')[0])
    check_wav(env / 'bf16' / 'cat.wav', WAVE_LEN)


def test_bad_input_from_the_command_line(env):
    for args in (['--image', 'notimg.jpg'], ['--image', 'cat.jpg', '--steps', 'many']):
        r = run(env, *args, out='bad_cli')
        assert r.returncode == 2 and r.stdout == '', r
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith('error: '), r.stderr
        assert files(env / 'bad_cli') == []


@pytest.mark.parametrize('args, says', [
    (['--image', 'cat.jpg', '--duration', 'inf'], '--duration inf'),
    (['--image', 'cat.jpg', '--duration', 'nan'], '--duration nan'),
    (['--image', 'cat.jpg', '--duration', '1e9'], 'at most 600'),  # capped, and the cap is said
    (['--image', 'cat.jpg', '--cfg', 'nan'], '--cfg nan'),
    (['--image', 'cat.jpg', '--cfg=-inf'], '--cfg -inf'),
    (['--image', 'cat.jpg', '--cfg_fade=-1'], '--cfg_fade -1'),
    (['--image', 'cat.jpg', '--temperature', '-1'], '--temperature -1'),
    (['--image', 'cat.jpg', '--choice_temperature', 'nan'], '--choice_temperature nan'),
    (['--image', 'cat.jpg', '--seed', '-1'], '--seed -1'),
    (['--image', 'cat.jpg', '--output', 'cat.jpg'], 'is a file'),   # the output is a file
    (['--image', 'cat.jpg', '--output', 'cat.jpg/sub'], 'cannot write'),  # under a file: unwritable
])
def test_every_number_and_the_output_checked_before_any_work(env, capsys, monkeypatch, args, says):
    monkeypatch.chdir(env)
    monkeypatch.setattr(sample, 'load_trained', lambda *args: pytest.fail('the model was loaded before the check'))
    args = ['--out_dir', str(env / 'ckpt'), '--output', str(env / 'checked'), *args]  # a later --output wins
    assert sample.cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and says in err[0], err
    assert files(env / 'checked') == []


def test_existing_files_need_overwrite_and_inputs_are_never_replaced(env, cli):
    out = env / 'keep'
    out.mkdir()
    (out / 'cat.wav').write_bytes(b'the user\'s own sound')  # beside the image, a user's own file
    Image.open(env / 'cat.jpg').save(out / 'cat.png')
    Image.open(env / 'cat.jpg').save(out / 'cat_mel.png')
    sf.write(out / 'cat_sound.wav', sf.read(env / 'x.wav')[0], MEL.sample_rate)
    code, err = cli('--image', str(out / 'cat.png'), out='keep')
    assert code == 2 and 'cat.wav: exists; --overwrite replaces it' in err
    assert (out / 'cat.wav').read_bytes() == b'the user\'s own sound'
    code, err = cli('--audio', str(out / 'cat_sound.wav'), '--overwrite', out='keep')  # -> cat_sound.png: new
    assert code == 0, err
    # cat.png's panel would be cat_mel.png, an input of this run: refused even with --overwrite
    before = (out / 'cat_mel.png').read_bytes()
    code, err = cli('--image', str(out / 'cat.png'), str(out / 'cat_mel.png'), '--overwrite', out='keep')
    assert code == 2 and 'cat_mel.png: is an input' in err
    assert (out / 'cat_mel.png').read_bytes() == before and (out / 'cat.wav').read_bytes() == b'the user\'s own sound'
    code, err = cli('--image', str(out / 'cat.png'), '--overwrite', out='keep')  # asked for: replaced, and said
    assert code == 0 and (out / 'cat.wav').read_bytes() != b'the user\'s own sound'


FAKE_FFMPEG = '''#!/bin/sh
echo $$ > "{mark}"
exec sleep 60
'''


def test_sigkill_while_writing_leaves_nothing_behind(env, cli, tmp_path):
    """sample.py killed while ffmpeg writes the video: nothing in the system temp folder, and the
    temporary files it left in the output folder are removed by the next run."""
    bin_dir, tmp_dir, mark = tmp_path / 'bin', tmp_path / 'tmp', tmp_path / 'started'
    bin_dir.mkdir()
    tmp_dir.mkdir()
    (bin_dir / 'ffmpeg').write_text(FAKE_FFMPEG.format(mark=mark))  # hangs, as a slow encode would
    (bin_dir / 'ffmpeg').chmod(0o755)
    run_env = {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'TMPDIR': str(tmp_dir), 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen([sys.executable, str(REPO / 'sample.py'), *argv(env, '--image', 'cat.jpg', '--video', out='killed')],
                            cwd=env, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            if mark.exists() and mark.read_text().strip():
                break
            assert proc.poll() is None, 'sample.py ended before it called ffmpeg'
            time.sleep(0.1)
        proc.kill()  # SIGKILL: no finally clause runs
        proc.wait()
    finally:
        if mark.exists() and mark.read_text().strip():
            os.kill(int(mark.read_text()), 9)
    left = files(env / 'killed')
    assert left and all(f.startswith(f'.sample-{proc.pid}-') for f in left), left  # named by the dead run
    assert os.listdir(tmp_dir) == []  # no scratch folder in the system temp dir
    code, err = cli('--image', 'cat.jpg', out='killed')  # the next run, without --video
    assert code == 0 and files(env / 'killed') == ['cat.wav', 'cat_mel.png'], err


def test_finds_the_one_trained_checkpoint(env, capsys, monkeypatch, tmp_path):
    """Right after the quick start (out-toy/ckpt.pt, no out/), the bare command finds and names it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sample, 'ROOT', str(tmp_path / 'repo'), raising=False)  # the repo root's out*/ too
    (tmp_path / 'repo' / 'out-toy').mkdir(parents=True)
    (tmp_path / 'repo' / 'out-toy' / 'ckpt.pt').write_bytes((env / 'ckpt' / 'ckpt.pt').read_bytes())
    args = ['--image', str(env / 'cat.jpg'), '--steps', '2', '--device', 'cpu']
    assert sample.cli(args) == 0, capsys.readouterr().err
    assert f"using {tmp_path / 'repo' / 'out-toy' / 'ckpt.pt'}, the only trained checkpoint" in capsys.readouterr().out
    (tmp_path / 'out-small').mkdir()
    (tmp_path / 'out-small' / 'ckpt.pt').write_bytes((env / 'ckpt' / 'ckpt.pt').read_bytes())
    assert sample.cli(args + ['--output', 'two']) == 2
    err = capsys.readouterr().err
    assert '2 trained checkpoints' in err and 'out-small/ckpt.pt' in err and 'out-toy/ckpt.pt' in err, err
    assert sample.cli(args + ['--output', 'two', '--out_dir', 'out-small']) == 0  # --out_dir as nanoGPT's


def test_a_full_disk_is_one_line_and_the_old_files_stay(env, cli, monkeypatch):
    """The sound meets a full disk mid-write (ENOSPC, as libsndfile would hit it): one line naming
    the file and the cause, exit 2; the files there before are unchanged and no temporary is left."""
    out = env / 'full'
    out.mkdir()
    (out / 'cat.wav').write_bytes(b'the sound from before')

    def full_disk(f, *args, **kw):
        f.write(b'RIFF')
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(sample, 'write_sound', full_disk)
    code, err = cli('--image', 'cat.jpg', '--overwrite', out='full')
    errors = [line for line in err.splitlines() if line.startswith('error: ')]  # (tqdm's bar is on stderr too)
    assert code == 2 and 'Traceback' not in err and errors == [
        f'error: {out}/cat.wav: cannot write it (No space left on device); the file there before, if any, is unchanged']
    assert files(out) == ['cat.wav'] and (out / 'cat.wav').read_bytes() == b'the sound from before'


def test_the_recipes_sampling_settings_travel_with_its_checkpoint(env, capsys, monkeypatch):
    """A checkpoint trained with config/pairs.py samples with the recipe's temperature and guidance
    when no flag is given, and says so; a flag wins; a checkpoint that says nothing gets the paper's."""
    monkeypatch.chdir(env)
    seen, real = [], sample.M.image_to_audio
    monkeypatch.setattr(sample.M, 'image_to_audio', lambda net, ids, **kw: seen.append(kw) or real(net, ids, **kw))

    def said(*args, ckpt='ckpt_recipe'):
        assert sample.cli(argv(env, '--image', 'cat.jpg', '--overwrite', *args, out='recipe', ckpt=ckpt)) == 0
        kw = seen[-1]
        return ([line for line in capsys.readouterr().out.splitlines() if line.startswith('sampling: ')],
                (kw['num_iter'], kw['temperature'], kw['guidance_scale'], kw['guidance_fade'], kw['uncond_every']))
    assert recipe_sampling() == {'sample_temperature': 0.1, 'sample_cfg': 3.0, 'sample_cfg_fade': 8.0,
                                 'sample_steps': 8, 'sample_uncond_every': 2}
    recipe = 'temperature 0.1 (checkpoint), {} (checkpoint), cfg_fade 8 (checkpoint)'
    assert said() == ([f'sampling: steps 4 (flag), {recipe.format("cfg 3")}, uncond_every 2 (checkpoint)'],
                      (4, 0.1, 3.0, 8.0, 2))
    assert said('--cfg', '1', '--uncond_every', '1') == (
        [f'sampling: steps 4 (flag), {recipe.format("cfg 1").replace("cfg 1 (checkpoint)", "cfg 1 (flag)")}, '
         'uncond_every 1 (flag)'], (4, 0.1, 1.0, 8.0, 1))
    assert said(ckpt='ckpt') == (['sampling: steps 4 (flag), temperature 1 (paper), cfg 3 (paper), cfg_fade 0 (paper), '
                                  'uncond_every 1 (paper)'], (4, 1.0, 3.0, 0.0, 1))
