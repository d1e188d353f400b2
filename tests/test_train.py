"""train.py end to end on CPU with a tiny model and random tokens in the on-disk format: exact resume
after SIGKILL, SIGTERM/SIGINT checkpoints, DDP with torchrun (gloo), torch.compile, bf16 autocast,
dataset='random', clear errors. Each test runs train.py as a subprocess, as a user would."""
import json
import math
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# one thread: deterministic float sums and light on a shared machine
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
MAX_ITERS = 40  # long enough that the kills below land mid-run


def write_token_dataset(folder, n_train=64, n_val=16, frames=3, audio_grid=(2, 3), image_grid=(2, 2),
                        audio_codebook=16, image_codebook=12, seed=0):
    """Random ids in the on-disk format train.py reads (README: meta.json + uint16 arrays)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    La, Lv = math.prod(audio_grid), math.prod(image_grid)
    meta = {'name': 'test', 'frames': frames,
            'audio': {'grid': list(audio_grid), 'codebook_size': audio_codebook, 'tokenizer': None, 'mel': None},
            'image': {'grid': list(image_grid), 'codebook_size': image_codebook, 'tokenizer': None, 'size': 16},
            'classes': None, 'probe': None, 'splits': {}}
    for split, n in (('train', n_train), ('val', n_val)):
        np.save(os.path.join(folder, f'{split}_audio.npy'), rng.integers(0, audio_codebook, (n, La), dtype=np.uint16))
        np.save(os.path.join(folder, f'{split}_image.npy'), rng.integers(0, image_codebook, (n, frames, Lv), dtype=np.uint16))
        meta['splits'][split] = {'n': n, 'ids': [f'{split}{i}' for i in range(n)], 'labels': [None] * n}
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    return str(folder)


def tiny_args(data_dir, out_dir, **overrides):
    """A 1+1 block model of width 32 with dropout and 2 accumulation micro-steps, so resuming has
    to restore the RNG, the optimizer and the data position."""
    cfg = dict(dataset='test', data_dir=data_dir, out_dir=out_dir, n_layer=1, n_head=2, n_embd=32,
               decoder_n_layer=1, decoder_n_head=2, decoder_n_embd=32, dropout=0.1, batch_size=4,
               gradient_accumulation_steps=2, learning_rate=1e-3, warmup_iters=3, max_iters=MAX_ITERS,
               lr_decay_iters=MAX_ITERS, eval_interval=1, eval_iters=1, log_interval=1, device='cpu',
               dtype='float32', compile=False)
    cfg.update(overrides)
    return [f'--{k}={v}' for k, v in cfg.items()]


def run(args, launcher=(sys.executable, '-u'), script='train.py', timeout=600):
    out = subprocess.run([*launcher, script, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=timeout)
    return out.returncode, out.stdout + out.stderr


def start(args):
    return subprocess.Popen([sys.executable, '-u', 'train.py', *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(proc, pattern):
    """Read the process's output until a line matches pattern; return the match."""
    for line in proc.stdout:
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f'train.py ended (code {proc.wait()}) without printing {pattern!r}')


def load(out_dir):
    return torch.load(os.path.join(out_dir, 'ckpt.pt'), map_location='cpu', weights_only=True)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f'{k} differs'


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return write_token_dataset(tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='module')
def reference(data_dir, tmp_path_factory):
    """The uninterrupted run's final checkpoint (and its log under 'log')."""
    out_dir = str(tmp_path_factory.mktemp('reference'))
    code, log = run(tiny_args(data_dir, out_dir))
    assert code == 0, log
    ckpt = load(out_dir)
    assert ckpt['iter_num'] == MAX_ITERS
    return {**ckpt, 'log': log}


def test_checkpoint_contents(reference):
    assert {'model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss', 'config', 'rng',
            'data_state', 'dataset_meta'} <= reference.keys()
    meta = reference['dataset_meta']
    assert meta['audio']['grid'] == [2, 3] and meta['frames'] == 3
    assert 'ids' not in meta['splits']['train'] and 'labels' not in meta['splits']['train']
    assert meta['splits']['train']['n'] == 64
    assert reference['model_args']['audio_codebook_size'] == 16  # the layout comes from meta.json
    assert reference['config']['batch_size'] == 4 and len(reference['rng']) == 1


def test_resume_after_sigkill_is_exact(data_dir, reference, tmp_path):
    out_dir = str(tmp_path)
    args = tiny_args(data_dir, out_dir)
    # kill 1: just as a checkpoint is being written (the write is atomic: tmp file, then rename)
    proc = start(args)
    wait_for(proc, r'saving checkpoint .*\(iter ([4-9]|\d\d)\)')
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = load(out_dir)['iter_num']
    assert 3 <= first < MAX_ITERS
    # kill 2: in the middle of a training step, after resuming
    proc = start(args + ['--init_from=resume'])
    resumed = int(wait_for(proc, r'^step (\d+):').group(1))
    assert resumed == first  # it continues where the checkpoint left off
    wait_for(proc, rf'^iter {resumed + 3}:')
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    second = load(out_dir)['iter_num']
    assert first < second < MAX_ITERS
    # the last resume runs to the end
    code, log = run(args + ['--init_from=resume'])
    assert code == 0, log
    final = load(out_dir)
    assert final['iter_num'] == MAX_ITERS
    assert_same_weights(final['model'], reference['model'])
    assert final['best_val_loss'] == reference['best_val_loss']


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_checkpoint(signum, data_dir, reference, tmp_path):
    out_dir = str(tmp_path)
    args = tiny_args(data_dir, out_dir, eval_interval=1000)  # no periodic checkpoint: only the signal's
    proc = start(args)
    wait_for(proc, r'^iter 5:')
    proc.send_signal(signum)
    wait_for(proc, rf'stopping on signal {int(signum)} at iter')
    assert proc.wait(timeout=60) == 0
    stopped = load(out_dir)['iter_num']
    assert 6 <= stopped < MAX_ITERS
    if signum == signal.SIGTERM:  # its checkpoint resumes exactly too (eval doesn't touch the RNG)
        code, log = run(args + ['--init_from=resume'])
        assert code == 0, log
        assert_same_weights(load(out_dir)['model'], reference['model'])


DDP_PROBE = '''
import os, sys, runpy, torch
root, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
os.chdir(root)
import model
forward, batches = model.VisualEchoes.forward, []
def recording_forward(self, audio, image, keep=None, targets=None):
    if self.training:  # the clean audio rows this rank trains on: masked ids come back from targets
        batches.append(torch.where(targets[0] >= 0, targets[0], audio).tolist())
    return forward(self, audio, image, keep, targets)
model.VisualEchoes.forward = recording_forward
sys.argv = ['train.py'] + sys.argv[3:]
scope = runpy.run_path('train.py', run_name='__main__')
torch.save({'batches': batches, 'params': scope['raw_model'].state_dict()},
           os.path.join(out, 'rank%s.pt' % os.environ['RANK']))
'''


def test_ddp_two_ranks_on_cpu(data_dir, tmp_path):
    """torchrun --nproc_per_node=2 with gloo: the ranks draw different batches, and the gradient
    all-reduce keeps their parameters identical."""
    probe = tmp_path / 'probe.py'
    probe.write_text(DDP_PROBE)
    out_dir = str(tmp_path / 'out')
    args = [ROOT, str(tmp_path)] + tiny_args(data_dir, out_dir, max_iters=4, eval_interval=2)
    code, log = run(args, launcher=(sys.executable, '-m', 'torch.distributed.run', '--standalone',
                                    '--nproc_per_node=2'), script=str(probe))
    assert code == 0, log
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in (0, 1))
    assert len(r0['batches']) == len(r1['batches']) == 4 * 2  # 4 steps of 2 micro-steps
    assert all(a != b for a, b in zip(r0['batches'], r1['batches']))
    assert_same_weights(r0['params'], r1['params'])
    ckpt = load(out_dir)
    assert ckpt['iter_num'] == 4 and len(ckpt['rng']) == 2  # each rank's RNG and data states
    assert not torch.equal(ckpt['data_state'][0]['generator'], ckpt['data_state'][1]['generator'])
    assert_same_weights(ckpt['model'], r0['params'])


def first_losses(log):
    """(train loss of the first step, train-split eval loss at step 0) from a train.py log."""
    step = re.search(r'^iter 0: loss (\S+) ', log, re.M).group(1)
    evaluation = re.search(r'^step 0: train loss (\S+),', log, re.M).group(1)
    return float(step), float(evaluation)


def test_bf16_autocast_on_cpu(data_dir, reference, tmp_path):
    """dtype='bfloat16' on CPU runs under torch.autocast('cpu'): same seed, same batch and masks as
    the float32 reference, so its first losses match float32's to bf16 precision."""
    code, log = run(tiny_args(data_dir, str(tmp_path), dtype='bfloat16', max_iters=1))
    assert code == 0, log
    for bf16, fp32 in zip(first_losses(log), first_losses(reference['log'])):
        assert math.isfinite(bf16) and bf16 == pytest.approx(fp32, rel=0.02)

    def numbers(log):  # every figure of the step 0, iter 0 and step 1 lines, but the timings
        lines = re.findall(r'^(?:step [01]|iter 0):.*?(?=, time|$)', log, re.M)
        return re.findall(r'\d+\.\d+', '\n'.join(lines))
    assert numbers(log) != numbers(reference['log'])  # autocast really ran in bf16


def test_compile_on_cpu(data_dir, tmp_path):
    out_dir = str(tmp_path)
    code, log = run(tiny_args(data_dir, out_dir, compile=True, max_iters=1, eval_interval=1000))
    assert code == 0, log
    assert all(math.isfinite(x) for x in first_losses(log))
    ckpt = load(out_dir)
    assert not any(k.startswith('_orig_mod.') for k in ckpt['model'])  # the raw module is saved
    assert ckpt['iter_num'] == 1


def test_random_dataset(tmp_path):
    out_dir = str(tmp_path / 'out')
    code, log = run(tiny_args('', out_dir, dataset='random', max_iters=7, audio_grid_h=3, audio_grid_w=4,
                              image_grid_h=2, image_grid_w=2, peak_flops=1e9))
    assert code == 0, log
    assert re.search(r'number of parameters: [\d.]+M', log) and re.search(r'^iter 1: loss', log, re.M)
    assert not os.path.exists(os.path.join(out_dir, 'ckpt.pt'))  # random tokens: nothing to save
    # MFU against the given peak, and only once measured (after 5 settling steps): never -100%
    mfu = re.findall(r'^iter (\d+):.*?(?:mfu (\S+)%)?$', log, re.M)
    assert [(int(i), bool(m)) for i, m in mfu] == [(i, i >= 5) for i in range(7)], log
    assert all(float(m) > 0 for _, m in mfu[5:])


def test_no_mfu_without_a_peak_for_the_device(reference):
    # on a CPU with no --peak_flops there is nothing fair to measure against (not an A100's peak)
    assert re.search(r'^iter 10: loss', reference['log'], re.M) and 'mfu' not in reference['log']


def test_runs_from_any_directory(tmp_path, monkeypatch):
    # from another directory: configurator.py and config/toy.py are the repo's, data/<dataset> is found
    # from the current directory (explicit paths keep working)
    write_token_dataset(tmp_path / 'data' / 'mine')
    args = tiny_args('', str(tmp_path / 'out'), dataset='mine', max_iters=1, eval_interval=1000)
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), 'config/toy.py', *args], cwd=tmp_path,
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and 'Overriding config with ' + os.path.join(ROOT, 'config/toy.py') in r.stdout, r.stderr
    assert os.path.exists(tmp_path / 'out' / 'ckpt.pt')
    from util import repo_path  # data/<dataset> not there: the repo's, as config/
    monkeypatch.chdir(tmp_path)
    assert repo_path('data/mine') == 'data/mine' and repo_path('data/other') == os.path.join(ROOT, 'data/other')


def test_clear_errors(data_dir, tmp_path):
    code, log = run(tiny_args(str(tmp_path / 'nowhere'), str(tmp_path / 'out')))
    assert code == 2 and re.search(r'^error: .*nowhere/meta.json not found', log, re.M)
    code, log = run(tiny_args(data_dir, str(tmp_path / 'out'), init_from='resume'))
    assert code == 2 and re.search(r'^error: .*ckpt.pt not found', log, re.M)
    # a truncated checkpoint and a foreign one (a vocoder's weights): one line, exit 2, no traceback
    os.makedirs(tmp_path / 'trunc')
    whole = open(os.path.join(ROOT, 'tests', 'fixtures', 'hifigan', 'generator'), 'rb').read()
    (tmp_path / 'trunc' / 'ckpt.pt').write_bytes(whole[:len(whole) // 2])
    os.makedirs(tmp_path / 'foreign')
    (tmp_path / 'foreign' / 'ckpt.pt').write_bytes(whole)
    for out, says in (('trunc', 'truncated or corrupt'), ('foreign', 'not a train.py checkpoint')):
        code, log = run(tiny_args(data_dir, str(tmp_path / out), init_from='resume'))
        assert code == 2 and re.search(rf'^error: .*{out}/ckpt.pt: {says}', log, re.M) and 'Traceback' not in log, log
    bad = write_token_dataset(tmp_path / 'bad')
    np.save(os.path.join(bad, 'val_image.npy'), np.zeros((16, 3, 5), dtype=np.uint16))  # wrong grid
    code, log = run(tiny_args(bad, str(tmp_path / 'out')))
    assert code == 2 and re.search(r'^error: .*val_image.npy: expected uint16 \(N, 3, 4\)', log, re.M)


TOY_PROBE = '''
import os, sys, runpy, types
root = sys.argv[1]
sys.path[:0] = [root, os.path.join(root, 'tests')]
os.chdir(root)
from test_train import write_token_dataset
calls = []
# a stand-in for data/toy/prepare.py: the real one takes minutes
toy = types.SimpleNamespace(prepare=lambda d: calls.append(write_token_dataset(d)))
sys.modules['data'] = types.SimpleNamespace(dataset_maker={'toy': toy}.__getitem__)
sys.argv = ['train.py'] + sys.argv[2:]
runpy.run_path('train.py', run_name='__main__')
assert len(calls) == 1, calls
'''


def test_toy_dataset_is_prepared_on_first_use(tmp_path):
    probe = tmp_path / 'probe.py'
    probe.write_text(TOY_PROBE)
    toy_dir = str(tmp_path / 'toy')
    args = [ROOT] + tiny_args(toy_dir, str(tmp_path / 'out'), dataset='toy', max_iters=1)
    code, log = run(args, script=str(probe))
    assert code == 0, log
    assert os.path.exists(os.path.join(toy_dir, 'meta.json')) and re.search(r'^iter 0: loss', log, re.M)


def test_seed_sets_the_initial_weights_and_the_run(data_dir, tmp_path):
    # --seed: another seed is another run (weights, masks, data order); the same seed the same run
    ckpts = {}
    for name, seed in (('a', 7), ('b', 7), ('c', 8)):
        code, log = run(tiny_args(data_dir, str(tmp_path / name), max_iters=2, seed=seed))
        assert code == 0, log
        ckpts[name] = load(str(tmp_path / name))['model']
    assert_same_weights(ckpts['a'], ckpts['b'])
    assert not torch.equal(ckpts['a']['encoder_pos'], ckpts['c']['encoder_pos'])


FULL_DISK = '''
import errno, io, os, runpy, sys, torch
sys.path.insert(0, sys.argv[1])
os.chdir(sys.argv[1])
real_save, saves = torch.save, []


class FullDisk(io.RawIOBase):  # a file on a disk that fills up after 4 KB, as ENOSPC arrives mid-write
    def __init__(self, f):
        self.f, self.written = f, 0

    def writable(self):
        return True

    def write(self, b):
        self.written += len(b)
        if self.written > 4096:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return self.f.write(b)


def save(obj, f, *args, **kw):  # the first checkpoint is written, the second meets a full disk
    saves.append(1)
    return real_save(obj, f if len(saves) == 1 else FullDisk(f), *args, **kw)


torch.save = save
sys.argv = ['train.py'] + sys.argv[2:]
runpy.run_path('train.py', run_name='__main__')
'''


def test_a_full_disk_is_one_line_and_the_last_checkpoint_stays(data_dir, tmp_path):
    probe = tmp_path / 'probe.py'
    probe.write_text(FULL_DISK)
    out = str(tmp_path / 'out')
    code, log = run([ROOT] + tiny_args(data_dir, out, max_iters=4, eval_interval=2), script=str(probe))
    errors = [line for line in log.splitlines() if line.startswith('error: ')]
    assert code == 2 and 'Traceback' not in log, log
    assert errors == [f'error: {out}/ckpt.pt: cannot write it (No space left on device); the file there before, '
                      f'if any, is unchanged'], log
    assert load(out)['iter_num'] == 2  # the step-2 checkpoint, whole
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'curves.png', 'log.jsonl']  # no temporary file left
