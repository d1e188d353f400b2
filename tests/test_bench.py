"""bench.py: the one-command GPU run refuses cleanly without CUDA, and every code path it takes
(compiled sampling of both loops, a compiled training step, DDP) runs on a CPU at the toy's size."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(*flags):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, 'bench.py', *flags], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=1200)


def test_gpu_run_on_a_machine_without_cuda_says_so_in_one_line_and_exits_0():
    if __import__('torch').cuda.is_available():
        return  # a GPU machine runs it for real
    run = bench("--device=cuda", "--quick")  # as the README says it
    assert run.returncode == 0, run.stderr
    assert run.stdout.count('\n') == 1 and 'CUDA is not available' in run.stdout


def test_quick_run_takes_every_gpu_code_path_on_a_cpu_at_toy_size():
    run = bench('--quick=True', '--device=cpu', '--quick_size=toy', '--quick_dtype=float32', '--toy_batch=4',
                '--train_steps=1', '--sample_batches=2', '--ddp_world=2')
    assert run.returncode == 0, run.stderr[-2000:]
    table = run.stdout[run.stdout.index('| measurement'):]
    rows = {line.split('|')[1].strip(): line.split('|')[2].strip() for line in table.splitlines()[2:]}
    assert 'train toy (1.3M params), batch 4, float32 compiled' in rows
    assert any(w.startswith('train toy under DDP, 2 processes') and w.endswith('compiled') for w in rows)
    for loop, forwards_guided in (('paper loop (N=30)', 60), ('fast loop (N=8)', 12)):
        for compiled in ('', ' compiled'):
            guided = rows[f'sample toy image->audio, {loop}, cfg=3, batch 2, float32{compiled}']
            plain = rows[f'sample toy image->audio, {loop}, cfg=1, batch 2, float32{compiled}']
            assert f'{forwards_guided} forwards/sample' in guided
            assert re.match(r'\d+\.\d+ s/sample', plain) and float(plain.split()[0]) > 0
    mfu = float(re.search(r'MFU ([\d.]+)%', rows['train toy (1.3M params), batch 4, float32']).group(1))
    assert mfu > 0
