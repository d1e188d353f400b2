"""Fixtures shared by test modules. The tiny trained toy model that tests/test_evaluate.py and
tests/test_report.py evaluate is made once per session: its probes are fitted (and cached) once."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import data  # noqa: E402

N = 3  # test items: one generation batch per task (Griffin-Lim dominates the time)


@pytest.fixture(scope='session')
def tiny_toy(tmp_path_factory):
    """A tiny toy dataset (data/toy/prepare.py: the probes apply) and a tiny model trained on it briefly."""
    root = tmp_path_factory.mktemp('evaluate')
    data.dataset_maker('toy').prepare(str(root / 'toy'), n_train=128, n_val=8, n_test=N, image_codebook=16,
                                      audio_codebook=16, workers=1)
    args = dict(dataset='toy', data_dir=root / 'toy', out_dir=root / 'out', n_layer=1, n_head=2, n_embd=32,
                decoder_n_layer=1, decoder_n_head=2, decoder_n_embd=32, batch_size=8, max_iters=10,
                lr_decay_iters=10, warmup_iters=2, eval_interval=10, eval_iters=1, device='cpu',
                dtype='float32', compile=False)
    r = subprocess.run([sys.executable, 'train.py', *[f'--{k}={v}' for k, v in args.items()]],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and (root / 'out' / 'ckpt.pt').exists(), r.stdout[-2000:] + r.stderr[-2000:]
    return root
