"""
Measurements (as nanoGPT's bench.py), on random weights and random tokens, so nothing is downloaded:
  peak        the device's matmul FLOP/s in float32 and bf16 (what MFU is measured against)
  train       training-step time, tokens/s, clips/s and MFU for the toy, a medium and the paper size
  sample      image->audio seconds per sample at N = 30, with and without guidance, batch 1 and 16, in
              float32 and bf16 (and compiled), and the share of that dtype's matmul peak it reaches
  tokenizers  encoding speed of the real-size VQGANs (taming ImageNet f16, SpecVQGAN codebook)
  video       data.py's video preparation: 10 s clips (ffmpeg test sources) per second per core
$ python bench.py                                  # everything, on this machine's device
$ python bench.py --what=sample,train --device=cuda --dtype=bfloat16
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
import subprocess
import tempfile
import time
import torch

from model import ModelConfig, VisualEchoes, image_to_audio, random_corruption
from util import DTYPES, autocast_context, compile_for_generation

# -----------------------------------------------------------------------------
what = 'peak,train,sample,tokenizers,video'  # a comma-separated subset
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
sample_batches = '1,16'  # image->audio batch sizes
sample_iters = 30  # N decoding steps (paper: 30)
timed_steps = 1  # paper size on a CPU: steps actually timed per setting (after a warm-up step), then scaled to sample_iters
tokenizer_batch = 4  # images / mels per encode call with the real-size VQGANs
video_clips = 16  # 10 s test clips made with ffmpeg's lavfi sources for the video benchmark
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())  # overrides from command line or config file
# -----------------------------------------------------------------------------
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


def bench_train(size, flops_peak):
    model = VisualEchoes(ModelConfig(**SIZES[size])).to(device).train()
    cfg, B = model.config, globals()[f'{size}_batch']
    opt = model.configure_optimizers(0.05, 1e-4, (0.9, 0.95), device_type)
    audio = torch.randint(cfg.audio_codebook_size, (B, cfg.audio_len), device=device)
    image = torch.randint(cfg.image_codebook_size, (B, cfg.image_len), device=device)

    def step():
        audio_in, image_in, keep, targets = random_corruption(audio, image, cfg)
        with ctx:
            loss = model(audio_in, image_in, keep, targets)[1]['loss']
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    dt = timed(step, train_steps)
    mfu = model.estimate_mfu(B, dt, flops_peak)
    print(f'train {size:6s} {model.get_num_params() / 1e6:6.1f}M params, batch {B:2d}: {dt * 1000:9.1f} ms/step, '
          f'{B * cfg.seq_len / dt:9,.0f} tok/s, {B / dt:7.2f} clips/s, MFU {mfu * 100:5.1f}%')


def bench_sample(size, peaks):
    """Seconds per sample for image->audio at N = sample_iters, without (s = 1) and with (s = 3) guidance,
    and the share of the dtype's matmul peak: FLOPs are the N forwards the loop makes (2B sequences
    each with guidance), each an inference forward with no token drop."""
    model = VisualEchoes(ModelConfig(**SIZES[size])).to(device).eval()
    cfg = model.config
    slow = size != 'toy' and device_type == 'cpu'  # minutes a call: time a few steps, warm up once
    n_steps = min(timed_steps, sample_iters) if slow else sample_iters
    how = '' if n_steps == sample_iters else f'  ({n_steps} step(s) timed, x{sample_iters / n_steps:g})'
    variants = [(d, c) for d in sample_dtypes.split(',') for c in (False, True) if not c or size in sample_compile.split(',')]
    for name, compiled in variants:
        precision, ctx = autocast_context(device, name)
        net = compile_for_generation(model, device) if compiled else model
        label, warmed = precision + (' compiled' if compiled else ''), False
        # an outer autocast keeps the weights' low-precision copies across the calls below: cast once,
        # as a 30-step sample.py call does, not once per timed step
        with torch.no_grad(), autocast_context(device, name)[1]:
            for B in map(int, sample_batches.split(',')):
                image = torch.randint(cfg.image_codebook_size, (B, cfg.image_len), device=device)
                for s in (1.0, 3.0):
                    def run(steps):
                        with ctx:  # as sample.py and evaluate.py call it
                            image_to_audio(net, image, num_iter=steps, guidance_scale=s,
                                           generator=torch.Generator(device).manual_seed(seed))
                    if compiled or not (slow and warmed):  # slow: one warm-up step per precision
                        run(1)  # warm-up step: compiles (once per shape), casts weights, picks kernels
                        warmed = True
                    dt = timed(lambda: run(n_steps), warmup=False) * sample_iters / n_steps / B  # s per sample
                    flops = sample_iters * (1 if s == 1 else 2) * model.flops_per_forward(0.0)
                    print(f'sample {size:5s} image->audio N={sample_iters} cfg={s:g} batch {B:2d} {label:18s}: '
                          f'{dt:8.3f} s/sample, {flops / dt / peaks[precision] * 100:5.1f}% of the {precision} peak{how}')


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
        print(f'tokenizer {name} -> {grid:>5}: {dt / B * 1000:8.1f} ms per item, {B / dt:6.2f} items/s (batch {B})')


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
        print(f'video preparation: {video_clips} clips in {dt:.1f} s on {cores} cores (k-means fit included): '
              f'{video_clips / dt:.2f} clips/s, {video_clips / dt / cores:.2f} clips/s per core')
    finally:
        shutil.rmtree(root, ignore_errors=True)


todo = what.split(',')
print(f'device {device}, dtype {dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads')
precisions = ['float32', 'bfloat16'] + [autocast_context(device, d)[0] for d in sample_dtypes.split(',')]
peaks = {name: peak_flops(DTYPES[name]) for name in dict.fromkeys(precisions)}
if 'peak' in todo:
    print('peak matmul: ' + ', '.join(f'{k} {v / 1e9:,.1f} GFLOP/s' for k, v in peaks.items()))
for size in train_sizes.split(',') if 'train' in todo else []:
    bench_train(size, peaks[dtype])
for size in sample_sizes.split(',') if 'sample' in todo else []:
    bench_sample(size, peaks)
if 'tokenizers' in todo:
    bench_tokenizers()
if 'video' in todo:
    bench_video()
