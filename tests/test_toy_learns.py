"""The embedded toy end to end at a tiny scale, as a user runs it: data/toy/prepare.py, train.py,
evaluate.py. A small model trained for 800 steps turns pictures into sounds of their
class, as the analytic probe hears them, far above chance (1/16)."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import data  # noqa: E402

TOY = data.dataset_maker('toy')  # data/toy/prepare.py

STEPS = 800  # measured: i2a 0.417 (20 of 48) after 800 steps, 0.271 after 600: 3.6 min in all


def test_trained_tiny_toy_model_turns_images_into_their_sounds(tmp_path):
    TOY.prepare(str(tmp_path / 'toy'), n_train=2000, n_val=16, n_test=48, image_codebook=32,
                     audio_codebook=32)
    train = dict(dataset='toy', data_dir=tmp_path / 'toy', out_dir=tmp_path / 'out', n_layer=3, n_head=4,
                 n_embd=128, decoder_n_layer=1, decoder_n_head=4, decoder_n_embd=128, dropout=0.0,
                 drop_ratio=0.0,  # as config/toy.py
                 mask_ratio_mu=0.55,  # learns the picture->sound link sooner than 0.7
                 batch_size=32, learning_rate=2e-3, max_iters=STEPS, lr_decay_iters=STEPS, warmup_iters=20,
                 min_lr=2e-4, eval_interval=STEPS, eval_iters=2, log_interval=100, device='cpu',
                 dtype='float32', compile=False)
    r = subprocess.run([sys.executable, 'train.py', *[f'--{k}={v}' for k, v in train.items()]],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run([sys.executable, 'evaluate.py', f'--out_dir={tmp_path / "out"}', '--tasks=i2a',
                        '--steps=8', '--cfg=3', '--batch_size=48', '--device=cpu'],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(next((tmp_path / 'out').glob('eval_test_*/metrics.json')).read_text())
    assert report['n_items'] == 48 and report['metrics']['real_probe_agreement'] == 1.0
    accuracy = report['metrics']['i2a_probe_acc']
    print(f'tiny toy model, image->audio probe accuracy {accuracy:.3f} (chance 0.0625)')
    assert accuracy >= 0.25, accuracy  # 4x chance
