"""
Measurements (as nanoGPT's bench.py), on random weights and random tokens, so nothing is downloaded:
  peak        the device's matmul FLOP/s in float32 and bf16 (what MFU is measured against)
  train       training-step time, tokens/s, clips/s and MFU for the toy, a medium and the paper size
  sample      image->audio seconds per sample with and without guidance, batch 1 and 16, in float32 and
              bf16 (and compiled), for the paper's loop (N = 30) and the fast sampler (docs/sampling.md),
              with the forwards per sample and the share of that dtype's matmul peak it reaches
  ddp         a training step under DistributedDataParallel over every GPU present (gloo processes on a CPU)
  tokenizers  encoding speed of the real-size VQGANs (taming ImageNet f16, SpecVQGAN codebook)
  video       data.py's video preparation: 10 s clips (ffmpeg test sources) per second per core
$ python bench.py                                  # everything, on this machine's device
$ python bench.py --what=sample,train --device=cuda --dtype=bfloat16
$ python bench.py --device=cuda --quick             # every GPU figure the project claims, one table (~8 min, H100)
Sampling runs sample.py's and evaluate.py's code path: util.autocast_context, optionally
util.compile_for_generation, then model.image_to_audio, each setting after a one-step warm-up
(compiling, kernel choice, the weights' bf16 copies: one-time costs a 30-step call pays once).
Paper-size sampling on a CPU is slow (a 400M model, 30 full passes, twice with guidance): there the
warm-up is one step at batch 1 per precision, and the time per step is measured over `timed_steps`
steps and multiplied by N, which is exact for this loop up to those one-time costs (every step is
one forward of the same shape plus the same sampler arithmetic); such lines say so.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from model import ModelConfig, VisualEchoes, forwards_per_sample, image_to_audio, random_corruption
from sample import SAMPLING
from util import DTYPES, autocast_context, compile_for_generation

# -----------------------------------------------------------------------------
what = 'peak,train,sample,tokenizers,video'  # a comma-separated subset (ddp: only where asked, or --quick)
quick = False  # the GPU run: what='peak,train,sample,ddp' at quick_size, bf16 and compiled, one table at the end
train_sizes = 'toy,medium,paper'  # model sizes for training throughput (SIZES below)
sample_sizes = 'toy,paper'  # model sizes for sampling speed
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'float32'  # 'float32' or 'bfloat16' (autocast) for train and tokenizers
sample_dtypes = 'float32,bfloat16'  # the precisions sampling is timed in ('auto' allowed)
sample_compile = 'toy'  # sizes whose sampling is also timed compiled (compile_for_generation)
seed = 1337
toy_batch = 32  # clips per training step, as config/toy.py
medium_batch = 4  # clips per step for the medium and paper sizes (small enough for a CPU)
paper_batch = 1
train_steps = 3  # timed training steps (after one warm-up step)
train_compile = ''  # sizes whose training step is also timed compiled (torch.compile, as train.py)
samplers = 'paper,fast'  # the unmasking loops timed (SAMPLERS below)
ddp_size = 'paper'  # the model size of the DDP step
ddp_world = 0  # processes for the DDP step: 0 = every GPU present (2 gloo processes on a CPU)
quick_size = 'paper'  # --quick: the model size every measurement uses (the tests use toy)
quick_dtype = 'bfloat16'  # --quick: the precision of every measurement (the tests use float32)
sample_batches = '1,16'  # image->audio batch sizes
timed_steps = 1  # paper size on a CPU: steps actually timed per setting (after a warm-up step), then scaled to N
tokenizer_batch = 4  # images / mels per encode call with the real-size VQGANs
video_clips = 16  # 10 s test clips made with ffmpeg's lavfi sources for the video benchmark
_quiet_overrides = True  # the header line below says the settings that matter
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())  # overrides from command line or config file
# -----------------------------------------------------------------------------
if device.startswith('cuda') and not torch.cuda.is_available():
    print(f'bench.py: --device={device} but CUDA is not available here (torch {torch.__version__}): nothing measured')
    sys.exit(0)
if quick:  # every GPU figure in one run: paper size, bf16, compiled, DDP over the GPUs present
    what, dtype, sample_dtypes = 'peak,train,sample,ddp', quick_dtype, quick_dtype
    train_sizes = sample_sizes = sample_compile = train_compile = ddp_size = quick_size
torch.manual_seed(seed)
device_type = device.split(':')[0]
dtype, ctx = autocast_context(device, dtype, cpu_auto='float32')
TOY_LAYOUT = dict(audio_grid_h=5, audio_grid_w=10, audio_codebook_size=32, image_grid_h=8, image_grid_w=8,
                  image_codebook_size=32)  # data/toy's token layout
_toy = {}  # config/toy.py's settings, read as the configurator reads a config file
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config', 'toy.py')).read(), {}, _toy)
SIZES = {
    'toy': dict(TOY_LAYOUT, **{k: _toy[k] for k in ('n_layer', 'n_head', 'n_embd', 'decoder_n_layer', 'decoder_n_head',
                                                  'decoder_n_embd', 'dropout', 'drop_ratio')}),
    'medium': dict(n_layer=8, n_head=8, n_embd=512, decoder_n_layer=4, decoder_n_head=8,
                   decoder_n_embd=512),  # the paper's token layout (265 + 256), a ViT-S-like width
    'paper': {},  # ModelConfig's defaults are the paper's model (SPEC 2): ViT-L, ~400M parameters
}
_pairs = {}  # config/pairs.py's sampling: the fast sampler the own-data recipe ships (docs/sampling.md)
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config', 'pairs.py')).read(), {}, _pairs)
SAMPLERS = {  # model.generate's keyword arguments
    'paper': dict(num_iter=SAMPLING['steps'], uncond_every=SAMPLING['uncond_every']),
    'fast': dict(num_iter=_pairs['sample_steps'], uncond_every=_pairs['sample_uncond_every']),
}
RESULTS = []  # (what, figure) of every measurement, printed as one table at the end


def record(what_was_measured, figure):
    """Print a measurement as it is made, and keep it for the table at the end."""
    print(f'{what_was_measured}: {figure}', flush=True)
    RESULTS.append((what_was_measured, figure))


def sync():
    if device_type == 'cuda':
        torch.cuda.synchronize()


def timed(fn, repeat=1, warmup=True):
    """Seconds per call of fn, after one untimed warm-up call (skipped where one call takes minutes)."""
    if warmup:
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeat


def peak_flops(matmul_dtype):
    """Achieved FLOP/s of a large square matmul: the ceiling MFU is measured against."""
    n = 4096 if device_type == 'cuda' else 1024
    a, b = (torch.randn(n, n, device=device, dtype=matmul_dtype) for _ in range(2))
    return 2 * n ** 3 / timed(lambda: a @ b, repeat=10)


def training_step(model, opt, cfg, B, seed_offset=0):
    """A function making one training step on random tokens (as train.py: corrupt, forward, backward, step)."""
    g = torch.Generator().manual_seed(seed + seed_offset)
    audio = torch.randint(cfg.audio_codebook_size, (B, cfg.audio_len), generator=g).to(device)
    image = torch.randint(cfg.image_codebook_size, (B, cfg.image_len), generator=g).to(device)

    def step():
        audio_in, image_in, keep, targets = random_corruption(audio, image, cfg)
        with ctx:
            loss = model(audio_in, image_in, keep, targets)[1]['loss']
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def bench_train(size, flops_peak):
    for compiled in (False, True) if size in train_compile.split(',') else (False,):
        model = VisualEchoes(ModelConfig(**SIZES[size])).to(device).train()
        cfg, B = model.config, globals()[f'{size}_batch']
        opt = model.configure_optimizers(0.05, 1e-4, (0.9, 0.95), device_type)
        net = torch.compile(model) if compiled else model  # as train.py (which checks for a C++ compiler first)
        dt = timed(training_step(net, opt, cfg, B), train_steps)  # the warm-up step compiles
        mfu = model.estimate_mfu(B, dt, flops_peak)
        record(f'train {size} ({model.get_num_params() / 1e6:.1f}M params), batch {B}, {dtype}' + (' compiled' if compiled else ''),
               f'{dt * 1000:.1f} ms/step, {B * cfg.seq_len / dt:,.0f} tok/s, {B / dt:.2f} clips/s, MFU {mfu * 100:.1f}%')


def ddp_worker(rank, world, port, size, compiled, flops_peak, results):
    """One DDP process (as train.py under torchrun: compile, then wrap): times training steps; rank 0
    puts (seconds per step, MFU per process) in `results`."""
    global device
    device = f'cuda:{rank}' if device_type == 'cuda' else 'cpu'
    if device_type == 'cuda':
        torch.cuda.set_device(device)
    dist.init_process_group('nccl' if device_type == 'cuda' else 'gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world)
    try:
        torch.manual_seed(seed)  # the same initial weights on every rank, as train.py
        model = VisualEchoes(ModelConfig(**SIZES[size])).to(device).train()
        cfg, B = model.config, globals()[f'{size}_batch']
        opt = model.configure_optimizers(0.05, 1e-4, (0.9, 0.95), device_type)
        net = DDP(torch.compile(model) if compiled else model, device_ids=[rank] if device_type == 'cuda' else None)
        dt = timed(training_step(net, opt, cfg, B, seed_offset=rank), train_steps)
        if rank == 0:
            results.put((dt, model.estimate_mfu(B, dt, flops_peak)))
    finally:
        dist.destroy_process_group()


def bench_ddp(size, flops_peak):
    """A training step under DistributedDataParallel over every GPU present (ddp_world processes of
    gloo on a CPU, where it checks the code path, not the speed), compiled where train_compile says."""
    world = ddp_world or (torch.cuda.device_count() if device_type == 'cuda' else 2)
    compiled = size in train_compile.split(',')
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    results = mp.get_context('spawn').SimpleQueue()
    mp.spawn(ddp_worker, args=(world, port, size, compiled, flops_peak, results), nprocs=world)
    dt, mfu = results.get()
    B = globals()[f'{size}_batch']
    record(f'train {size} under DDP, {world} {"GPUs" if device_type == "cuda" else "processes"}, batch {B} each, {dtype}'
           + (' compiled' if compiled else ''), f'{dt * 1000:.1f} ms/step, {world * B / dt:.2f} clips/s, MFU {mfu * 100:.1f}% per process')


def bench_sample(size, peaks):
    """Seconds per sample for image->audio, without (s = 1) and with (s = 3) guidance, for each sampler
    of SAMPLERS, and the share of the dtype's matmul peak: FLOPs are the forwards the loop makes, each
    an inference forward with no token drop."""
    model = VisualEchoes(ModelConfig(**SIZES[size])).to(device).eval()
    cfg = model.config
    slow = size != 'toy' and device_type == 'cpu'  # minutes a call: time a few steps, warm up once
    variants = [(d, c) for d in sample_dtypes.split(',') for c in (False, True) if not c or size in sample_compile.split(',')]
    for name, compiled in variants:
        precision, ctx = autocast_context(device, name)
        net = compile_for_generation(model, device) if compiled else model
        label, warmed = precision + (' compiled' if compiled else ''), False
        # an outer autocast keeps the weights' low-precision copies across the calls below: cast once,
        # as a sample.py call does, not once per timed step
        with torch.no_grad(), autocast_context(device, name)[1]:
            for B in map(int, sample_batches.split(',')):
                image = torch.randint(cfg.image_codebook_size, (B, cfg.image_len), device=device)
                for sampler in samplers.split(','):
                    loop = SAMPLERS[sampler]
                    N, every = loop['num_iter'], loop.get('uncond_every', 1)
                    n_steps = min(max(timed_steps, every), N) if slow else N  # slow: whole cycles of the reuse
                    for s in (1.0, 3.0):
                        def run(steps):
                            with ctx:  # as sample.py and evaluate.py call it
                                image_to_audio(net, image, **dict(loop, num_iter=steps), guidance_scale=s,
                                               generator=torch.Generator(device).manual_seed(seed))
                        if compiled or not (slow and warmed):  # slow: one warm-up step per precision
                            run(1)  # warm-up step: compiles (once per shape), casts weights, picks kernels
                            warmed = True
                        # slow: a few steps timed and scaled by the forwards they make (every forward has the
                        # same shape, so this is exact up to the sampler's own arithmetic)
                        forwards = forwards_per_sample(**loop, guided=s != 1)
                        scale = forwards / forwards_per_sample(**dict(loop, num_iter=n_steps), guided=s != 1)
                        how = '' if n_steps == N else f'  ({n_steps} step(s) timed, x{scale:g})'
                        dt = timed(lambda: run(n_steps), warmup=False) * scale / B  # s per sample
                        flops = forwards * model.flops_per_forward(0.0)
                        record(f'sample {size} image->audio, {sampler} loop (N={N}), cfg={s:g}, batch {B}, {label}',
                               f'{dt:.3f} s/sample, {forwards} forwards/sample, '
                               f'{flops / dt / peaks[precision] * 100:.1f}% of the {precision} peak{how}')


def bench_tokenizers():
    """Encoding speed of the real-size VQGANs (random weights): taming ImageNet f16 and SpecVQGAN."""
    from tokenizers import VQGANTokenizer
    dd = dict(double_z=False, z_channels=256, ch=128, ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, dropout=0.0)
    vqgan = lambda **kw: VQGANTokenizer({'model': {'params': {'embed_dim': 256, 'n_embed': 1024,
                                                              'ddconfig': dict(dd, **kw)}}}).to(device)
    B = tokenizer_batch
    for name, tok, x in (
            ('image 3x256x256', vqgan(resolution=256, in_channels=3, out_ch=3, attn_resolutions=[16]),
             torch.rand(B, 3, 256, 256, device=device) * 2 - 1),
            ('mel 1x80x848   ', vqgan(resolution=848, in_channels=1, out_ch=1, attn_resolutions=[53]),
             torch.rand(B, 1, 80, 848, device=device))):
        with ctx:
            dt = timed(lambda: tok.encode(x))
        grid = 'x'.join(map(str, tok.grid))
        record(f'tokenizer {name.strip()} -> {grid}, batch {B}', f'{dt / B * 1000:.1f} ms per item, {B / dt:.2f} items/s')


def bench_video():
    """data.py's `videos` path end to end (decode 10 frames + 10 s of audio, mel, k-means tokens)
    on 10 s, 640x360, 25 fps clips with stereo 44.1 kHz sound, like VGGSound's."""
    import data
    ffmpeg, root = data.ffmpeg_exe(), tempfile.mkdtemp()
    try:
        os.makedirs(f'{root}/clips')
        for i in range(video_clips):
            subprocess.run([ffmpeg, '-nostdin', '-y', '-loglevel', 'error', '-f', 'lavfi', '-i',
                            'testsrc2=size=640x360:rate=25:duration=10', '-f', 'lavfi', '-i',
                            f'sine=frequency={200 + 50 * i}:sample_rate=44100:duration=10', '-ac', '2',
                            '-c:v', 'libx264', '-preset', 'ultrafast', '-c:a', 'aac', '-shortest',
                            f'{root}/clips/clip{i:03d}.mp4'], check=True)
        t0 = time.perf_counter()
        data.prepare('videos', f'{root}/clips', f'{root}/out', image_codebook=64, audio_codebook=64, fit_items=8)
        dt, cores = time.perf_counter() - t0, os.cpu_count()
        record(f'video preparation ({video_clips} clips, k-means fit included)',
               f'{video_clips / dt:.2f} clips/s on {cores} cores, {video_clips / dt / cores:.2f} clips/s per core')
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    todo = what.split(',')
    print(f'device {device}, dtype {dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads')
    precisions = ['float32', 'bfloat16'] + [autocast_context(device, d)[0] for d in sample_dtypes.split(',')]
    peaks = {name: peak_flops(DTYPES[name]) for name in dict.fromkeys(precisions)}
    if 'peak' in todo:
        record('peak matmul', ', '.join(f'{k} {v / 1e9:,.1f} GFLOP/s' for k, v in peaks.items()))
    for size in train_sizes.split(',') if 'train' in todo else []:
        bench_train(size, peaks[dtype])
    for size in sample_sizes.split(',') if 'sample' in todo else []:
        bench_sample(size, peaks)
    if 'ddp' in todo:
        bench_ddp(ddp_size, peaks[dtype])
    if 'tokenizers' in todo:
        bench_tokenizers()
    if 'video' in todo:
        bench_video()
    width = max(len(w) for w, _ in RESULTS)
    print('\n'.join([f"\n| {'measurement':<{width}} | figure |", f"|{'-' * (width + 2)}|---|"]
                    + [f'| {w:<{width}} | {f} |' for w, f in RESULTS]))
