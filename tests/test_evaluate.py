"""evaluate.py end to end: a tiny model trained briefly on a tiny embedded toy dataset, evaluated
as a subprocess (as a user would) and in-process (resume, the metric networks' path, errors)."""
import json
import shutil
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import evaluate  # noqa: E402
import util  # noqa: E402
from util import autocast_context  # noqa: E402

from conftest import N  # noqa: E402  (the test items of the shared tiny toy model)

PRECISION = autocast_context('cpu')[0]  # what dtype='auto' (the default) runs the model in here
FP32_RUN = 'eval_test_s3_n3_T9_t1_seed1337_griffinlim'  # evaluate.py's folder for these settings in float32
RUN = FP32_RUN + ('' if PRECISION == 'float32' else f'_{PRECISION}')  # and in the default precision


@pytest.fixture(scope='module')
def env(tiny_toy):
    """The tiny toy dataset and model (tests/conftest.py; shared with tests/test_report.py)."""
    return tiny_toy


def run(env, *args):
    cmd = [sys.executable, str(REPO / 'evaluate.py'), f'--out_dir={env / "out"}', '--steps=3',
           '--batch_size=4', '--device=cpu', *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)


def test_evaluate_writes_table_and_json(env):
    r = run(env)
    assert r.returncode == 0, r.stderr
    run_dir = env / 'out' / RUN
    report = json.loads((run_dir / 'metrics.json').read_text())
    m = report['metrics']
    for k in ('audio_val_loss', 'audio_token_acc', 'image_val_loss', 'image_token_acc',
              'i2a_logmel_stats_FD_proxy', 'a2i_pixel_8x8_FD_proxy', 'i2a_probe_acc', 'a2i_probe_acc',
              'cogen_probe_agreement', 'inpaint_probe_acc', 'real_probe_agreement',
              'i2a_acc', 'i2a_acc_features', 'i2a_acc_lower', 'a2i_acc_lower', 'probe_audio_acc_real_features'):
        assert math.isfinite(m[k]), k
    assert m['i2a_acc_lower'] == min(m['i2a_acc'], m['i2a_acc_features'])  # two judges: the lower is the result
    for k in ('i2a_audio', 'a2i_image', 'cogen_audio', 'cogen_image', 'inpaint_audio', 'roundtrip_audio',
              'roundtrip_image', 'vocoder_audio'):  # fidelity: how often generated files are told from real ones
        assert 0 <= m[f'{k}_two_sample_acc'] <= 1, k
    assert sorted(os.listdir(run_dir / 'vocoded')) == [f'test{i:05d}.wav' for i in range(N)]  # its reference
    assert report['n_items'] == N and report['throughput']['i2a_items_per_min'] > 0
    assert report['settings']['dtype'] == PRECISION
    seconds = report['seconds']  # where the time went, per task and part
    assert set(seconds['i2a']) == {'model', 'decode', 'vocoder', 'write', 'score'}
    assert set(seconds['a2i']) == {'model', 'decode', 'write', 'score'} and 'reference' in seconds
    assert all(v >= 0 for parts in seconds.values() for v in parts.values())
    assert 'seconds, i2a: model' in r.stdout
    assert '| audio_val_loss' in r.stdout and (run_dir / 'metrics.md').exists()
    assert (run_dir / 'index.html').exists() and 'gallery pages in' in r.stdout  # the page: tests/test_report.py
    assert sorted(os.listdir(run_dir / 'i2a')) == [f'test{i:05d}.wav' for i in range(N)]
    assert len(os.listdir(run_dir / 'a2i')) == N and len(os.listdir(run_dir / 'cogen')) == 2 * N
    assert sorted(os.listdir(run_dir / 'inpaint')) == [f'test{i:05d}.wav' for i in range(N)]
    c0, c1, w = report['inpaint_columns']  # the middle half of the 5x10 toy grid, one column more each side
    assert (c0, c1, w) == (1, 9, 10)
    # resumable: a second run (in-process, to save a start-up) reuses every generated file and scores them the same
    stamp = os.stat(run_dir / 'i2a' / 'test00000.wav').st_mtime_ns
    configure(env)
    evaluate.main()
    again = json.loads((run_dir / 'metrics.json').read_text())
    assert os.stat(run_dir / 'i2a' / 'test00000.wav').st_mtime_ns == stamp
    assert again['metrics'] == pytest.approx(m) and again['throughput']['i2a_items_per_min'] is None
    # the model's seconds per item are kept across the resumed run
    assert again['throughput']['i2a_model_s_per_item'] == report['throughput']['i2a_model_s_per_item'] > 0


def configure(env, **kw):  # evaluate.py's config globals, as the configurator would set them
    settings = dict(out_dir=str(env / 'out'), steps=3, batch_size=4, device='cpu', split='test', panns='', vggish='',
                    max_items=0, tasks='i2a,a2i,cogen,inpaint', dtype='auto', cfg_fade=0.0)
    for k, v in {**settings, **kw}.items():
        setattr(evaluate, k, v)


def test_bad_input_is_a_clear_error(env):
    configure(env, panns='/nowhere/Cnn14_16k_mAP=0.438.pth')
    with pytest.raises(FileNotFoundError, match=r'/nowhere/Cnn14_16k_mAP=0.438.pth: no such file .*zenodo'):
        evaluate.main()
    configure(env, split='nosuch')
    with pytest.raises(ValueError, match="cannot read split 'nosuch'"):
        evaluate.main()
    configure(env, out_dir=str(env / 'nothing'))
    with pytest.raises(FileNotFoundError, match='no such checkpoint'):
        evaluate.main()
    configure(env, dtype='half')
    with pytest.raises(ValueError, match="dtype must be 'auto', 'float32', 'bfloat16' or 'float16'"):
        evaluate.main()
    configure(env, cfg_fade=-1.0)
    with pytest.raises(ValueError, match='--cfg_fade -1.0: must be a finite number >= 0'):
        evaluate.main()
    truncated = env / 'truncated_vggish.pth'
    truncated.write_bytes((env / 'out' / 'ckpt.pt').read_bytes()[:1000])
    with pytest.raises(ValueError, match='truncated or corrupt'):
        evaluate.load_metric_net('vggish', str(truncated))


@pytest.mark.parametrize('arg, says', [('--temperature=-1', '--temperature -1: must be a finite number >= 0'),
                                       ('--max_items=-3', '--max_items -3: must be a finite number >= 0'),
                                       ('--steps=0', '--steps 0: must be a finite number >= 1'),
                                       ('--cfg=inf', '--cfg inf: must be a finite number >= 0')])
def test_every_number_is_checked_before_any_work(tmp_path, arg, says):
    """The same ranges and messages as sample.py's (one table, sample.LIMITS), before the checkpoint
    is even looked for: there is none here."""
    r = subprocess.run([sys.executable, str(REPO / 'evaluate.py'), f'--out_dir={tmp_path}', arg],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == f'error: {says}\n', r.stderr
    assert os.listdir(tmp_path) == []


def test_float32_has_its_own_folder(env):
    # on a CPU without native bf16 'auto' is float32 too: start that folder afresh, so i2a runs here
    shutil.rmtree(env / 'out' / FP32_RUN, ignore_errors=True)
    configure(env, dtype='float32', tasks='i2a')
    evaluate.main()
    report = json.loads((env / 'out' / FP32_RUN / 'metrics.json').read_text())
    assert report['settings']['dtype'] == 'float32' and report['throughput']['i2a_items_per_min'] > 0


def test_faded_guidance_has_its_own_folder_and_is_recorded(env):
    configure(env, cfg_fade=8.0, tasks='i2a')
    evaluate.main()
    [run] = [p for p in (env / 'out').iterdir() if '_fade8_' in p.name]
    report = json.loads((run / 'metrics.json').read_text())
    assert report['settings']['cfg_fade'] == 8.0 and report['metrics']['i2a_acc'] >= 0


def test_the_recipes_sampling_settings_travel_with_its_checkpoint(env, tmp_path, capsys):
    """A checkpoint trained with config/pairs.py is evaluated with the recipe's temperature and
    guidance when none is given, and says so; a given setting wins."""
    scope = {}
    exec((REPO / 'config' / 'pairs.py').read_text(), scope)  # its sample_* settings, as train.py stores them
    out = tmp_path / 'out'
    out.mkdir()
    ckpt = torch.load(env / 'out' / 'ckpt.pt', weights_only=True)
    ckpt['config'].update({k: v for k, v in scope.items() if k.startswith('sample_')})
    torch.save(ckpt, out / 'ckpt.pt')
    configure(env, out_dir=str(out), tasks='a2i', cfg=None, cfg_fade=None, temperature=None)
    evaluate.main()
    assert ('sampling: steps 3 (flag), temperature 0.1 (checkpoint), cfg 3 (checkpoint), cfg_fade 8 (checkpoint), '
            'uncond_every 2 (checkpoint)') in capsys.readouterr().out
    [run] = [p for p in out.iterdir() if p.name.startswith('eval_')]
    assert run.name.startswith('eval_test_s3_fade8_n3_u2_T9_t0.1_')
    settings = json.loads((run / 'metrics.json').read_text())['settings']
    assert (settings['temperature'], settings['cfg'], settings['cfg_fade']) == (0.1, 3.0, 8.0)
    configure(env, out_dir=str(out), tasks='a2i', cfg=1.0, cfg_fade=None, temperature=None)
    evaluate.main()
    assert 'cfg 1 (flag)' in capsys.readouterr().out
    configure(env, cfg=None, temperature=None)  # the other tests: the checkpoint's (the paper's)


def test_sampling_is_chosen_on_val_and_kept_beside_the_checkpoint(env, tmp_path, capsys, monkeypatch):
    """--choose_sampling: every setting of the grid on the val split, the best kept in sampling.json,
    which sample.py and evaluate.py then use where no flag is given; never chosen on test."""
    out = tmp_path / 'out'
    out.mkdir()
    shutil.copy(env / 'out' / 'ckpt.pt', out / 'ckpt.pt')
    grid = [dict(temperature=1.0, cfg=1.0, cfg_fade=0.0), dict(temperature=0.0, cfg=3.0, cfg_fade=8.0)]
    monkeypatch.setattr(evaluate, 'SAMPLING_GRID', grid)
    scores = iter([0.25, 0.5])  # what each setting's evaluation gives, in the grid's order
    monkeypatch.setattr(evaluate, 'alignment', lambda metrics: next(scores))
    configure(env, out_dir=str(out), split='test', cfg=None, cfg_fade=None, temperature=None)
    with pytest.raises(ValueError, match='chooses on the val split'):
        evaluate.choose_sampling_on_val()
    configure(env, out_dir=str(out), split='val', cfg=None, cfg_fade=None, temperature=None)
    evaluate.choose_sampling_on_val()
    assert sorted(p.name.split('_n3')[0] for p in out.iterdir() if p.name.startswith('eval_')) == [
        'eval_val_s1', 'eval_val_s3_fade8']  # both settings evaluated on val
    chosen = json.loads((out / 'sampling.json').read_text())
    assert {k: chosen[k] for k in ('temperature', 'cfg', 'cfg_fade')} == grid[1]
    configure(env, out_dir=str(out), split='test', cfg=None, cfg_fade=None, temperature=None, tasks='a2i')
    capsys.readouterr()
    evaluate.main()
    assert 'temperature 0 (chosen on val), cfg 3 (chosen on val), cfg_fade 8 (chosen on val)' in capsys.readouterr().out
    with pytest.raises(ValueError, match='no class accuracy'):  # the real alignment needs labels
        monkeypatch.undo()
        evaluate.alignment({'audio_token_acc': 0.5})
    configure(env, cfg=None, temperature=None)


def test_results_of_another_checkpoint_are_not_resumed(env, tmp_path):
    """A results folder records what made it; after the checkpoint is replaced (or the tokenizers
    refitted), evaluate refuses to score the old files as the new model's."""
    out = tmp_path / 'out'
    out.mkdir()
    shutil.copy(env / 'out' / 'ckpt.pt', out / 'ckpt.pt')
    configure(env, out_dir=str(out), dtype='float32', tasks='a2i')
    evaluate.main()
    source = json.loads((out / FP32_RUN / 'source.json').read_text())
    assert source['checkpoint'][0] == str(out / 'ckpt.pt') and set(source['tokenizers']) == {'audio', 'image'}
    evaluate.main()  # the same checkpoint: resumed
    os.utime(out / 'ckpt.pt', ns=(1, 1))  # as if trained again
    with pytest.raises(ValueError, match=f'{FP32_RUN}: its files were made with another checkpoint; delete'):
        evaluate.main()
    shutil.rmtree(out / FP32_RUN)
    evaluate.main()
    assert (out / FP32_RUN / 'metrics.json').exists()


def test_network_metrics_path(env, monkeypatch, tmp_path):
    """FD / IS / KL / FAD through the command, with untrained PANNs and VGGish standing in for the
    public weights (tests/test_metrics.py proves the networks; this proves the plumbing)."""
    fake = tmp_path / 'weights.pth'
    fake.write_bytes(b'')
    torch.manual_seed(0)
    nets = {'panns16k': evaluate.Cnn14(16000).eval(), 'vggish': evaluate.VGGish().eval()}
    monkeypatch.setattr(evaluate, 'load_metric_net', lambda kind, path: nets[kind])
    configure(env, panns=str(fake), vggish=str(fake), tasks='i2a')
    evaluate.main()
    m = json.loads((env / 'out' / RUN / 'metrics.json').read_text())['metrics']
    for k in ('FD_panns', 'IS_panns', 'IS_panns_std', 'KL_softmax', 'KL_sigmoid', 'FAD_vggish'):
        assert math.isfinite(m[k]), k
    assert m['IS_panns'] >= 1.0 - 1e-9 and 'a2i_probe_acc' not in m  # only the task asked for
    configure(env, tasks='i2a,nothing')
    with pytest.raises(ValueError, match='tasks must be'):
        evaluate.main()


def test_runs_from_any_directory(env, monkeypatch, tmp_path):
    """A checkpoint trained with dataset='toy' (data/toy, tokenizer paths relative to the repo root)
    evaluated from another directory: data/<dataset> and the tokenizers are found in the repo."""
    import shutil
    repo = tmp_path / 'repo'  # stands in for the repo root
    shutil.copytree(env / 'toy', repo / 'data' / 'toy')
    meta = json.loads((repo / 'data' / 'toy' / 'meta.json').read_text())
    for m in ('audio', 'image'):
        meta[m]['tokenizer']['path'] = f'data/toy/tokenizer_{m}.pt'  # as data.py records it from the root
    (repo / 'data' / 'toy' / 'meta.json').write_text(json.dumps(meta))
    ckpt = torch.load(env / 'out' / 'ckpt.pt', weights_only=True)
    ckpt['config'].update(dataset='toy', data_dir='')
    ckpt['dataset_meta'] = {**meta, 'splits': {}}
    os.makedirs(repo / 'out')
    torch.save(ckpt, repo / 'out' / 'ckpt.pt')
    monkeypatch.setattr(util, 'ROOT', str(repo), raising=False)
    monkeypatch.chdir(tmp_path)  # not the root: data/toy is not here
    configure(env, out_dir=str(repo / 'out'), tasks='a2i', data_dir='')
    evaluate.main()
    report = json.loads((repo / 'out' / RUN / 'metrics.json').read_text())
    assert report['data_dir'] == str(repo / 'data' / 'toy') and report['n_items'] == N


def test_steps_table_evaluates_every_loop_at_every_n_over_sampling_seeds(env, tmp_path):
    """--steps_table: the paper's loop without and with guidance and the reuse of the unconditional
    pass, at each N, each an ordinary evaluation over sampling_seeds seeds; one markdown table."""
    out = tmp_path / 'out'
    out.mkdir()
    shutil.copy(env / 'out' / 'ckpt.pt', out / 'ckpt.pt')
    configure(env, out_dir=str(out), max_items=4, steps_table='2,3', sampling_seeds=2, seed=5, cfg=None)
    try:
        evaluate.steps_vs_accuracy()
    finally:
        configure(env, steps_table='', seed=1337, cfg=None, uncond_every=None, steps=3, ceilings=True)
    runs = sorted(p.name.split('_T9')[0] + p.name.split('_t1')[1].split('_griffinlim')[0]
                  for p in out.iterdir() if p.name.startswith('eval_'))
    assert runs == sorted(f'eval_test_{s}_n{n}{u}_seed{seed}' for s, u in (('s1', ''), ('s3', ''), ('s3', '_u4'))
                          for n in (2, 3) for seed in (5, 6))
    lines = (out / 'steps_table.md').read_text().splitlines()
    rows = [line.split('|')[1:-1] for line in lines[2:8]]
    assert [(r[0].strip(), r[2].strip()) for r in rows] == [('s = 1', '2'), ('s = 1', '3'), ('s = 3', '2'),
                                                            ('s = 3', '3'), ('s = 3', '2'), ('s = 3', '3')]
    assert 'unconditional pass every 4' in rows[4][1] and "the paper's" in rows[0][1]
    assert [int(r[3]) for r in rows] == [2, 3, 4, 6, 3, 4]  # N, 2N, N + ceil(N / 4)
    for r in rows:
        for cell in r[4:6]:  # mean ± half the range of the two seeds, accuracies
            mean, spread = (float(x) for x in cell.split('±'))
            assert 0 <= mean <= 1 and 0 <= spread <= 0.5
        assert float(r[6]) > 0  # the model's seconds per sample
    assert '4 items, 2 sampling seeds from 5' in lines[-1]
    for folder in out.glob('eval_*'):  # the ceilings are the same for every setting: left out
        assert not list((folder / 'roundtrip').iterdir())
        assert 'probe_audio_acc_roundtrip' not in json.loads((folder / 'metrics.json').read_text())['metrics']


def test_the_two_sample_test_tells_blurred_sounds_and_pictures_not_two_halves_of_one_set():
    """Fidelity: logistic regression on hand-made statistics, on held-out folds. Two halves of one
    real set cannot be told apart (near 0.5); the real set against a blurred copy of its other half
    always can (near 1), as generated sounds rendering only the average of the detail are."""
    import torch.nn.functional as F
    from data import dataset_maker, mel_spectrogram
    toy, rng = dataset_maker('toy'), np.random.default_rng(0)
    labels = rng.integers(0, 16, 400)  # two halves of 200: fewer items and held-out folds lean below 0.5
    mels = torch.as_tensor(mel_spectrogram(np.stack([toy.toy_wave(rng, int(l)) for l in labels]), toy.TOY_MEL))
    pictures = torch.as_tensor(np.stack([toy.toy_image(rng, int(l)) for l in labels]))  # (N, S, S, 3) uint8
    blurred_mels = F.avg_pool2d(mels[1::2, None], 7, stride=1, padding=3, count_include_pad=False)[:, 0]
    blurred_pictures = F.avg_pool2d(pictures[1::2].permute(0, 3, 1, 2).float(), 5, stride=1, padding=2,
                                    count_include_pad=False).round().byte().permute(0, 2, 3, 1)
    for stats, real, blurred in ((evaluate.band_statistics, mels, blurred_mels),
                                 (evaluate.picture_statistics, pictures, blurred_pictures)):
        halves = evaluate.two_sample_accuracy(stats(real[::2]), stats(real[1::2]))
        told = evaluate.two_sample_accuracy(stats(real[::2]), stats(blurred))
        assert abs(halves - 0.5) < 0.1 and told >= 0.95, (stats.__name__, halves, told)
        assert evaluate.two_sample_accuracy(stats(real[::2]), stats(blurred)) == told  # the same folds every time
