"""evaluate.py end to end as a subprocess: a tiny dataset in the on-disk format (meta.json, token
arrays, {split}_wav/ and {split}_frame/) with tiny patch k-means tokenizers and a tiny model."""
import json
import math
import os
import subprocess
import sys
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
import evaluate  # noqa: E402

MEL = MelConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16, fmin=60.0, fmax=4000.0,
                clip_seconds=1.0, frames=120)  # 1 s clips -> 16 x 120 mels -> 4 x 15 tokens
SIZE, N = 32, 6  # 32 x 32 images -> 4 x 4 tokens; 6 test items
RUN = 'eval_test_s3_n3_T9_t1_seed1337_griffinlim'  # evaluate.py's folder for these settings


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp('evaluate')
    data = root / 'data'
    (data / 'test_wav').mkdir(parents=True)
    (data / 'test_frame').mkdir()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(N, 3, SIZE, SIZE, generator=g) * 2 - 1
    t = np.arange(MEL.num_samples) / MEL.sample_rate
    waves = np.stack([0.5 * np.sin(2 * np.pi * (300 + 400 * i) * t) for i in range(N)]).astype(np.float32)
    mels = torch.from_numpy(mel_spectrogram(waves, MEL)[:, :, :MEL.frames])[:, None]
    tok = {m: PatchKMeansTokenizer.fit(x, 16, patch=p, iters=2) for m, x, p in
           (('audio', mels, (4, 8)), ('image', images, (8, 8)))}
    for m in tok:
        tok[m].save(str(root / f'{m}_tok.pt'))
    ids = [f'clip{i}' for i in range(N)]
    meta = {'name': 'tiny', 'frames': 2, 'classes': None, 'probe': None,
            'audio': {'grid': [4, 15], 'codebook_size': 16, 'tokenizer': tok['audio'].describe(), 'mel': asdict(MEL)},
            'image': {'grid': [4, 4], 'codebook_size': 16, 'tokenizer': tok['image'].describe(), 'size': SIZE},
            'splits': {'test': {'n': N, 'ids': ids, 'labels': [None] * N}}}
    (data / 'meta.json').write_text(json.dumps(meta))
    np.save(data / 'test_audio.npy', tok['audio'].encode(mels).numpy().astype(np.uint16))
    frames = tok['image'].encode(images).numpy().astype(np.uint16)
    np.save(data / 'test_image.npy', np.stack([frames, frames], 1))  # (N, F=2, L_v)
    for i, name in enumerate(ids):
        sf.write(data / 'test_wav' / f'{name}.wav', waves[i], MEL.sample_rate)
        Image.fromarray(((images[i] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(data / 'test_frame' / f'{name}.png')
    torch.manual_seed(0)
    model = VisualEchoes(ModelConfig(audio_grid_h=4, audio_grid_w=15, audio_codebook_size=16, image_grid_h=4,
                                     image_grid_w=4, image_codebook_size=16, n_layer=1, n_head=2, n_embd=32,
                                     decoder_n_layer=1, decoder_n_head=2, decoder_n_embd=32, dropout=0.0))
    (root / 'out').mkdir()
    torch.save({'model': model.state_dict(), 'model_args': asdict(model.config), 'iter_num': 0,
                'best_val_loss': 0.0, 'config': {'data_dir': str(data)}, 'dataset_meta': meta},
               root / 'out' / 'ckpt.pt')
    return root


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
              'i2a_logmel_stats_FD_proxy', 'a2i_pixel_8x8_FD_proxy'):
        assert math.isfinite(m[k]), k
    assert report['n_items'] == N and report['throughput']['i2a_items_per_min'] > 0
    assert '| audio_val_loss' in r.stdout and (run_dir / 'metrics.md').exists()
    assert sorted(os.listdir(run_dir / 'i2a')) == [f'clip{i}.wav' for i in range(N)]
    assert len(os.listdir(run_dir / 'a2i')) == N and len(os.listdir(run_dir / 'cogen')) == 2 * N
    # resumable: a second run (in-process, to save a start-up) reuses every generated file and scores them the same
    stamp = os.stat(run_dir / 'i2a' / 'clip0.wav').st_mtime_ns
    configure(env)
    evaluate.main()
    again = json.loads((run_dir / 'metrics.json').read_text())
    assert os.stat(run_dir / 'i2a' / 'clip0.wav').st_mtime_ns == stamp
    assert again['metrics'] == pytest.approx(m) and again['throughput']['i2a_items_per_min'] is None


def configure(env, **kw):  # evaluate.py's config globals, as the configurator would set them
    settings = dict(out_dir=str(env / 'out'), steps=3, batch_size=4, device='cpu', split='test', panns='', vggish='',
                    max_items=0)
    for k, v in {**settings, **kw}.items():
        setattr(evaluate, k, v)


def test_bad_input_is_a_clear_error(env):
    configure(env, panns='/nowhere/Cnn14_16k_mAP=0.438.pth')
    with pytest.raises(FileNotFoundError, match=r'/nowhere/Cnn14_16k_mAP=0.438.pth: no such file .*zenodo'):
        evaluate.main()
    configure(env, split='val')
    with pytest.raises(ValueError, match="cannot read split 'val'"):
        evaluate.main()
    configure(env, out_dir=str(env / 'nothing'))
    with pytest.raises(FileNotFoundError, match='no such checkpoint'):
        evaluate.main()


def test_network_metrics_path(env, monkeypatch, tmp_path):
    """FD / IS / KL / FAD through the command, with untrained PANNs and VGGish standing in for the
    public weights (tests/test_metrics.py proves the networks; this proves the plumbing)."""
    test_evaluate_writes_table_and_json(env) if not (env / 'out' / RUN).exists() else None
    fake = tmp_path / 'weights.pth'
    fake.write_bytes(b'')
    torch.manual_seed(0)
    nets = {'panns16k': evaluate.Cnn14(16000).eval(), 'vggish': evaluate.VGGish().eval()}
    monkeypatch.setattr(evaluate, 'load_metric_net', lambda kind, path: nets[kind])
    configure(env, panns=str(fake), vggish=str(fake), max_items=3)  # 3 items: big nets are slow on CPU
    evaluate.main()
    m = json.loads((env / 'out' / RUN / 'metrics.json').read_text())['metrics']
    for k in ('FD_panns', 'IS_panns', 'IS_panns_std', 'KL_softmax', 'KL_sigmoid', 'FAD_vggish'):
        assert math.isfinite(m[k]), k
    assert m['IS_panns'] >= 1.0
