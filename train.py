"""
Train Visual Echoes on pre-tokenized audio-visual data (the on-disk format is in README.md).

Single process (CPU or one GPU):
$ python train.py config/toy.py
Smoke-test the paper-size model for one step on random tokens:
$ python train.py config/vggsound.py --dataset=random --device=cpu --batch_size=1 --max_iters=1 --compile=False
DDP on 8 GPUs of one node (gloo on CPU works too: --device=cpu):
$ torchrun --standalone --nproc_per_node=8 train.py config/vggsound.py
Resume after a crash, SIGKILL or SIGTERM (continues exactly: RNG and data position are saved):
$ python train.py config/toy.py --init_from=resume
"""

import os
import json
import math
import time
import signal
import shutil

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from model import (MODALITIES, ModelConfig, VisualEchoes, cross_modal_losses, init_embeddings_from_codes,
                   majority_codes, masked_token_counts, random_corruption)
from report import log_eval, read_log
from tokenizers import load_tokenizers
from util import ROOT, WriteError, autocast_context, exit_with_error, repo_path, torch_load, write_atomic

# -----------------------------------------------------------------------------
# default config values: the paper's run (SPEC 2 and 4); config/*.py and --key=value override them
# I/O
out_dir = 'out'
eval_interval = 2000  # iters between evaluations (and checkpoints)
log_interval = 1
eval_iters = 50  # batches per split in estimate_loss
eval_only = False  # if True, evaluate once and exit
always_save_checkpoint = True  # if False, only save when val loss improves (SIGTERM always saves)
init_from = 'scratch'  # 'scratch' or 'resume' (from out_dir/ckpt.pt)
# data
dataset = 'vggsound'  # a folder under data/ in the README's format, or 'random' (random tokens, no eval or ckpt)
data_dir = ''  # '' means data/<dataset>
gradient_accumulation_steps = 1  # micro-steps per optimizer step, per process
batch_size = 64  # clips per micro-step, per process; effective batch = this * accumulation * world size
# token layout: used only by dataset='random'; real datasets take it from meta.json
audio_grid_h = 5  # SpecVQGAN: 80 mels / 16 rows by 848 frames / 16 columns
audio_grid_w = 53
audio_codebook_size = 1024
image_grid_h = 16  # taming VQGAN f16: 256 px / 16
image_grid_w = 16
image_codebook_size = 1024
audio_global_codes = 0  # ids naming a whole item's semantic cluster, one position first (ModelConfig); from meta.json
image_global_codes = 0
# model (paper: MAGE ViT-L)
n_layer = 24
n_head = 16
n_embd = 1024
decoder_n_layer = 8
decoder_n_head = 16
decoder_n_embd = 1024
dropout = 0.1  # attention and MLP (fixed here, as MAGE)
bias = True
mask_ratio_mu = 0.7  # paper (0.55 in the ablations)
mask_ratio_std = 0.25
mask_ratio_min = 0.2
mask_ratio_max = 1.0
drop_ratio = 0.5
label_smoothing = 0.1
# extensions (fixed here; these defaults are the paper's, ModelConfig and docs/ say what each does)
given_prob = 0.0  # share of samples with one modality left whole
null_prob = 0.0  # share of samples with one modality fully masked
embedding_init = 'random'  # 'codes': token embeddings start from the tokenizers' code vectors
global_broadcast = False  # True: a known global id is added to every position of its modality
global_loss_weight = 1.0  # the loss weight of a masked global token
# sampling settings stored with the checkpoint: sample.py and evaluate.py use them when not given flags
sample_steps = 30  # paper: N = 30 unmasking steps
sample_uncond_every = 1  # paper: guidance's unconditional pass at every step (docs/sampling.md)
sample_temperature = 1.0  # paper: ids sampled at temperature 1
sample_cfg = 3.0  # paper: guidance scale s = 3
sample_cfg_fade = 0.0  # paper: 0, constant guidance (docs/guidance.md)
# adamw optimizer (SPEC 4, as MAGE)
learning_rate = 3e-4  # peak lr: 1.5e-4 * effective_batch / 256 (SPEC 4), here 8 GPUs x 64
max_iters = 356_000  # total optimizer steps (~1000 epochs of 182,563 clips at 512 per step)
weight_decay = 0.05
beta1 = 0.9
beta2 = 0.95
grad_clip = 3.0  # clip gradients at this norm, or 0.0 to disable
# learning rate schedule: linear warmup, then cosine decay to min_lr
decay_lr = True
warmup_iters = 14_000  # ~40 epochs, as MAGE
lr_decay_iters = 356_000  # ~= max_iters
min_lr = 0.0  # as MAE/MAGE
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda', 'cuda:1', 'mps', ...
dtype = 'auto'  # 'float32', 'bfloat16' or 'float16'; 'auto': bf16 on a GPU that has it, else fp16 (SPEC 4); float32 on CPU
compile = True  # torch.compile the model (PyTorch 2.0+)
seed = 1337  # the model's initial weights, masks and data order; DDP ranks add their rank
peak_flops = 0.0  # FLOP/s the MFU is measured against; 0: an A100's bf16 312e12 on cuda, no MFU on other devices (bench.py measures yours)
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
exec(open(os.path.join(ROOT, 'configurator.py')).read())  # overrides from command line or config file
config = {k: globals()[k] for k in config_keys}  # will be useful for logging and the checkpoint
# -----------------------------------------------------------------------------

# various inits, derived attributes, I/O setup
device_type = device.split(':')[0]  # for autocast, the DDP backend and the optimizer
ddp = int(os.environ.get('RANK', -1)) != -1  # is this a torchrun run?
if ddp:
    dist.init_process_group(backend='nccl' if device_type == 'cuda' else 'gloo')
    ddp_rank = int(os.environ['RANK'])
    ddp_local_rank = int(os.environ['LOCAL_RANK'])
    ddp_world_size = int(os.environ['WORLD_SIZE'])
    if device_type == 'cuda':
        device = f'cuda:{ddp_local_rank}'
        torch.cuda.set_device(device)
    # control messages (stop flag, RNG states) go over gloo on the CPU: they never sync the GPU
    ctrl_group = dist.new_group(backend='gloo')
    master_process = ddp_rank == 0  # this process will do logging, checkpointing etc.
    seed_offset = ddp_rank  # each process gets a different seed, hence different data and masks
else:
    ddp_rank, ddp_world_size, master_process, seed_offset = 0, 1, True, 0
if master_process:
    os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(seed + seed_offset)
try:  # float32 plain, bf16/fp16 under autocast, TF32 on GPUs: the one helper every script uses
    dtype, ctx = autocast_context(device, dtype, cpu_auto='float32')  # CPU training stays float32 (as measured)
except ValueError as e:
    exit_with_error(str(e))

# data: uint16 token arrays read through np.load(mmap_mode='r'), one row per clip
data_dir = data_dir or repo_path(os.path.join('data', dataset))  # from the current directory, else the repo's
meta_path = os.path.join(data_dir, 'meta.json')
if dataset == 'toy' and not os.path.exists(meta_path):  # the embedded dataset makes itself
    if master_process:
        import data  # data/toy/prepare.py: a synthetic dataset and patch k-means tokenizers, no download
        try:
            data.dataset_maker('toy').prepare(data_dir)
        except WriteError as e:
            exit_with_error(e)
    if ddp:
        dist.barrier()  # the other ranks wait for rank 0 to write it
if dataset == 'random':  # random ids of the configured shapes (throughput and smoke tests)
    dataset_meta, frames = None, 1
else:  # the token layout comes from meta.json, whatever the config says
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        (audio_grid_h, audio_grid_w), (image_grid_h, image_grid_w) = meta['audio']['grid'], meta['image']['grid']
        audio_codebook_size, image_codebook_size = meta['audio']['codebook_size'], meta['image']['codebook_size']
        audio_global_codes, image_global_codes = (meta[m].get('global_codes', 0) for m in MODALITIES)
        frames = meta['frames']
    except FileNotFoundError:
        exit_with_error(f"{meta_path} not found: make the dataset with data.py (see README.md)")
    except (ValueError, KeyError, TypeError) as e:  # (a JSONDecodeError is a ValueError)
        exit_with_error(f"{meta_path}: not a valid meta.json ({type(e).__name__}: {e})")
    # the checkpoint carries the metadata minus the per-clip lists, so sample.py and evaluate.py
    # can rebuild the tokenizers and the mel config from the checkpoint alone
    dataset_meta = {**meta, 'splits': {s: {k: v for k, v in d.items() if k not in ('ids', 'labels')}
                                       for s, d in meta.get('splits', {}).items()}}
# model init: the architecture from the config, the token layout from the data
model_args = {k: v for k, v in globals().items() if k in ModelConfig.__dataclass_fields__}
L_a, L_v = (ModelConfig(**model_args).length(m) for m in MODALITIES)  # with a global token where there is one


def load_tokens(split):
    """[audio (N, L_a), image (N, F, L_v)] uint16 memmaps of a split, checked against meta.json."""
    arrays = []
    for name, shape in (('audio', (L_a,)), ('image', (frames, L_v))):
        path = os.path.join(data_dir, f'{split}_{name}.npy')
        try:
            arrays.append(np.load(path, mmap_mode='r'))  # no pickle, pages read on demand
        except (OSError, ValueError) as e:
            exit_with_error(f"{path}: cannot read the token array ({e})")
        a = arrays[-1]
        if a.dtype != np.uint16 or a.shape[1:] != shape or len(a) != len(arrays[0]) or len(a) == 0:
            exit_with_error(f"{path}: expected uint16 (N, {', '.join(map(str, shape))}) with meta.json's layout and "
                 f"N = the rows of {split}_audio.npy, got {a.dtype} {a.shape}")
    return arrays


splits = {} if dataset == 'random' else {split: load_tokens(split) for split in ('train', 'val')}
majority_code = majority_codes(*splits['train']) if splits else {}  # printed beside the masked-token accuracy


def get_batch(split, generator):
    """(audio (B, L_a), image (B, L_v)) int64 ids on device; rows drawn with `generator` (CPU),
    so the data position is a generator state we can save. Train: a random frame of each clip
    (paper); eval: the middle one (fixed here)."""
    if dataset == 'random':
        audio = torch.randint(audio_codebook_size, (batch_size, L_a), generator=generator)
        image = torch.randint(image_codebook_size, (batch_size, L_v), generator=generator)
    else:
        audio_rows, image_rows = splits[split]
        ix = torch.randint(len(audio_rows), (batch_size,), generator=generator).numpy()
        fr = torch.randint(frames, (batch_size,), generator=generator).numpy() if split == 'train' else frames // 2
        audio = torch.from_numpy(audio_rows[ix].astype(np.int64))  # (B, L_a)
        image = torch.from_numpy(image_rows[ix, fr].astype(np.int64))  # (B, L_v): one frame per clip
    if device_type == 'cuda':  # pin arrays, which allows us to move them to GPU asynchronously
        return audio.pin_memory().to(device, non_blocking=True), image.pin_memory().to(device, non_blocking=True)
    return audio.to(device), image.to(device)


# init these up here, can override if init_from='resume' (i.e. from a checkpoint)
iter_num = 0
best_val_loss = 1e9
if init_from == 'scratch':
    print("Initializing a new model from scratch")
    checkpoint = None
elif init_from == 'resume':
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    if not os.path.exists(ckpt_path):
        exit_with_error(f"{ckpt_path} not found: nothing to resume (train with --init_from=scratch first)")
    print(f"Resuming training from {ckpt_path}")
    try:  # a truncated file or one that needs unpickling: one line, not a traceback
        checkpoint = torch_load(ckpt_path)
    except ValueError as e:
        exit_with_error(e)
    resume_keys = ('model', 'optimizer', 'scaler', 'model_args', 'iter_num', 'best_val_loss', 'rng', 'data_state')
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in resume_keys):
        exit_with_error(f"{ckpt_path}: not a train.py checkpoint (it needs {', '.join(resume_keys)})")
    # the checkpoint defines the model; the data must have the same token layout
    for k in ('audio_grid_h', 'audio_grid_w', 'audio_codebook_size', 'image_grid_h', 'image_grid_w', 'image_codebook_size',
              'audio_global_codes', 'image_global_codes'):
        if checkpoint['model_args'][k] != model_args[k]:
            exit_with_error(f"{ckpt_path}: {k} = {checkpoint['model_args'][k]} but {data_dir} has {model_args[k]}")
    model_args = checkpoint['model_args']
    iter_num = checkpoint['iter_num']
    best_val_loss = checkpoint['best_val_loss']
else:
    exit_with_error(f"init_from must be 'scratch' or 'resume', got {init_from!r}")
try:
    model = VisualEchoes(ModelConfig(**model_args))
    if checkpoint is not None:
        model.load_state_dict(checkpoint['model'])
except (TypeError, RuntimeError) as e:  # a checkpoint with other config keys or shapes
    exit_with_error(f"{ckpt_path}: its model does not fit this code ({str(e).strip().splitlines()[0][:160]})")
if checkpoint is None and embedding_init == 'codes':  # rows from what each token id stands for
    if dataset_meta is None:
        exit_with_error(f"embedding_init='codes' needs the dataset's tokenizers; dataset {dataset!r} has none")
    try:
        toks = load_tokenizers(dataset_meta)
    except (KeyError, OSError, ValueError) as e:
        exit_with_error(f"{meta_path}: cannot load the tokenizers for embedding_init='codes' ({e})")
    for m, tok in toks.items():
        init_embeddings_from_codes(model, m, tok.code_vectors())
elif checkpoint is None and embedding_init != 'random':
    exit_with_error(f"embedding_init must be 'random' or 'codes', got {embedding_init!r}")
model.to(device)
if master_process:
    print(f"number of parameters: {model.get_num_params() / 1e6:.2f}M")

# initialize a GradScaler. If enabled=False scaler is a no-op (only float16 needs it)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
if checkpoint is not None:
    optimizer.load_state_dict(checkpoint['optimizer'])
    scaler.load_state_dict(checkpoint['scaler'])

# compile the model, then wrap it into DDP; raw_model (uncompiled, unwrapped) is what we save
raw_model = model
if compile and device_type == 'cpu' and not any(shutil.which(c) for c in (os.environ.get('CXX', 'g++'), 'c++', 'clang++')):
    print("warning: torch.compile on a CPU needs a C++ compiler (g++) and none was found: training uncompiled")
    compile = False
if compile:
    print("compiling the model... (takes a ~minute)")
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)

# the sampler's RNG is its own generator (not the global one, which draws masks and dropout), so
# its state is the data position; a different seed so sampled rows don't correlate with masks
data_generator = torch.Generator().manual_seed(seed + seed_offset + 1_000_000)
if checkpoint is not None and len(checkpoint['rng']) == ddp_world_size:  # continue exactly
    rng = checkpoint['rng'][ddp_rank]  # this rank's RNG states and data position
    torch.set_rng_state(rng['torch'].cpu())
    if device_type == 'cuda' and rng['cuda'] is not None:
        torch.cuda.set_rng_state(rng['cuda'].cpu())
    data_generator.set_state(checkpoint['data_state'][ddp_rank]['generator'].cpu())
elif checkpoint is not None:  # another number of processes: fresh streams, not an exact continuation
    print(f"warning: checkpoint is from {len(checkpoint['rng'])} processes, not {ddp_world_size}: reseeding")
    torch.manual_seed(seed + seed_offset + iter_num)
    data_generator.manual_seed(seed + seed_offset + 1_000_000 + iter_num)
checkpoint = None  # free up memory
# the eval log (report.py): out_dir/log.jsonl and curves.png; a resumed run continues the same log
train_log = read_log(out_dir, until=iter_num) if init_from == 'resume' and master_process else []


@torch.no_grad()
def estimate_loss():
    """Per-modality val loss and masked-token accuracy on both splits, over eval_iters batches.
    The batches and the corruption use a fixed seed (the same for every eval, so the numbers are
    comparable), inside fork_rng so the training RNG streams are left exactly as they were."""
    out = {}
    raw_model.eval()  # rank 0 evaluates alone, so outside DDP; uncompiled: evals are rare, no second graph
    with torch.random.fork_rng(devices=[device] if device_type == 'cuda' else []):
        for split in ('train', 'val'):
            torch.manual_seed(42)
            generator = torch.Generator().manual_seed(42)
            sums = {}
            for _ in range(eval_iters):
                audio, image = get_batch(split, generator)
                audio_in, image_in, keep, targets = random_corruption(audio, image, raw_model.config)
                with ctx:
                    logits, losses = raw_model(audio_in, image_in, keep, targets)
                    crossmodal = cross_modal_losses(raw_model, audio, image) if split == 'val' else {}
                metrics = {k: losses[k].item() for k in ('loss', 'audio', 'image')} | crossmodal
                for name, (hits, major, n) in masked_token_counts(logits, targets, majority_code).items():
                    metrics[f'{name}_acc'], metrics[f'{name}_majority'] = (hits / n, major / n) if n else (math.nan,) * 2
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
            out[split] = {k: v / eval_iters for k, v in sums.items()}
    raw_model.train()
    return out


def get_lr(it):
    """Linear warmup for warmup_iters, then cosine decay to min_lr at lr_decay_iters (SPEC 4)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
    return min_lr + coeff * (learning_rate - min_lr)


def save_checkpoint():
    """Every rank sends its RNG and data-sampler states; rank 0 writes out_dir/ckpt.pt atomically
    (util.write_atomic), so a SIGKILL at any moment leaves a whole checkpoint."""
    state = {'rng': {'torch': torch.get_rng_state(),
                     'cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None},
             'data_state': {'generator': data_state}}
    states = [state]
    if ddp:
        states = [None] * ddp_world_size
        dist.all_gather_object(states, state, group=ctrl_group)
    if not master_process:
        return
    checkpoint = {
        'model': raw_model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'scaler': scaler.state_dict(),
        'model_args': model_args,
        'iter_num': iter_num,
        'best_val_loss': best_val_loss,
        'config': config,
        'rng': [s['rng'] for s in states],  # one per rank
        'data_state': [s['data_state'] for s in states],
        'dataset_meta': dataset_meta,
    }
    path = os.path.join(out_dir, 'ckpt.pt')
    print(f"saving checkpoint to {path} (iter {iter_num})")
    write_atomic(path, lambda f: torch.save(checkpoint, f))


# SIGTERM (schedulers, torchrun) and SIGINT (Ctrl-C) finish the current step, save and exit
stop_signal = None


def request_stop(signum, frame):
    global stop_signal
    stop_signal = signum
    signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once


signal.signal(signal.SIGTERM, request_stop)
signal.signal(signal.SIGINT, request_stop)

# training loop
tokens_per_iter = batch_size * gradient_accumulation_steps * ddp_world_size * (L_a + L_v)
peak_flops = peak_flops or (312e12 if device_type == 'cuda' else 0.0)  # no known peak for a CPU: no MFU
if master_process:
    print(f"tokens per iteration will be: {tokens_per_iter:,} "
          f"({batch_size * gradient_accumulation_steps * ddp_world_size} clips)")
if dataset == 'random' and master_process:
    print("dataset='random': no evaluation and no checkpoints")
data_state = data_generator.get_state()  # the data position: the state before the next batch is drawn
audio, image = get_batch('train', data_generator)  # fetch the very first batch
t0 = time.time()
local_iter_num = 0  # number of iterations in the lifetime of this process
running_mfu = -1.0
while True:

    # determine and set the learning rate for this iteration
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr

    # a signal on any rank stops all of them at the same iteration (one tiny CPU all-reduce per step)
    stop = stop_signal is not None
    if ddp:
        flag = torch.tensor(int(stop))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=ctrl_group)
        stop = bool(flag.item())

    # evaluate the loss on train/val sets and write checkpoints
    if dataset != 'random' and (iter_num % eval_interval == 0 or iter_num == max_iters or stop):
        improved = False
        if master_process and not stop:
            evals = estimate_loss()
            t, v = evals['train'], evals['val']
            print(f"step {iter_num}: train loss {t['loss']:.4f}, val loss {v['loss']:.4f} "
                  f"(audio {v['audio']:.4f} acc {v['audio_acc']:.4f} / majority code {v['audio_majority']:.4f}, "
                  f"image {v['image']:.4f} acc {v['image_acc']:.4f} / majority code {v['image_majority']:.4f})")
            # what each modality learns from the other, in nats per token: ~0 means it is ignored
            print(f"step {iter_num}: cross-modal gain, whole modality masked: audio "
                  f"{v['audio_alone'] - v['audio_given']:+.4f} ({v['audio_alone']:.3f} alone -> {v['audio_given']:.3f} "
                  f"given the image), image {v['image_alone'] - v['image_given']:+.4f} ({v['image_alone']:.3f} alone "
                  f"-> {v['image_given']:.3f} given the sound)")
            improved = v['loss'] < best_val_loss
            best_val_loss = min(best_val_loss, v['loss'])  # never overwritten by a worse value
            try:
                train_log = log_eval(out_dir, train_log, iter_num, lr, evals)
            except WriteError as e:
                exit_with_error(e)
        if ddp:  # rank 0 decides; every rank joins the RNG-state gather
            flag = torch.tensor(int(improved))
            dist.broadcast(flag, 0, group=ctrl_group)
            improved = bool(flag.item())
        if (iter_num > 0 and (improved or always_save_checkpoint)) or stop:
            try:
                save_checkpoint()
            except WriteError as e:  # a full disk, say: one line; the previous checkpoint stays whole
                exit_with_error(e)
    if stop:
        if master_process:
            print(f"stopping on signal {stop_signal} at iter {iter_num}")
        break
    if iter_num == 0 and eval_only:
        break
    if iter_num >= max_iters:
        break

    # forward backward update, with optional gradient accumulation to simulate larger batch size
    # and using the GradScaler if data type is float16
    for micro_step in range(gradient_accumulation_steps):
        if ddp:
            # in DDP training we only need to sync gradients at the last micro step.
            model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
        audio_in, image_in, keep, targets = random_corruption(audio, image, raw_model.config)
        with ctx:
            _, losses = model(audio_in, image_in, keep, targets)
            loss = losses['loss'] / gradient_accumulation_steps  # scale the loss to account for accumulation
        # immediately async prefetch next batch while model is doing the forward pass on the GPU
        data_state = data_generator.get_state()
        audio, image = get_batch('train', data_generator)
        # backward pass, with gradient scaling if training in fp16
        scaler.scale(loss).backward()
    # clip the gradient
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    # step the optimizer and scaler if training in fp16
    scaler.step(optimizer)
    scaler.update()
    # flush the gradients as soon as we can, no need for this memory anymore
    optimizer.zero_grad(set_to_none=True)

    # timing and logging
    t1 = time.time()
    dt = t1 - t0
    t0 = t1
    if iter_num % log_interval == 0 and master_process:
        # get loss as float. note: this is a CPU-GPU sync point
        lossf = loss.item() * gradient_accumulation_steps
        if local_iter_num >= 5 and peak_flops:  # let the training loop settle a bit
            mfu = raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, dt, peak_flops)
            running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
        mfu_text = f", mfu {running_mfu * 100:.2f}%" if running_mfu >= 0 else ''  # only once measured
        print(f"iter {iter_num}: loss {lossf:.4f} (audio {losses['audio'].item():.4f}, image {losses['image'].item():.4f}), "
              f"lr {lr:.2e}, time {dt * 1000:.2f}ms, {tokens_per_iter / dt:,.0f} tok/s{mfu_text}")
    iter_num += 1
    local_iter_num += 1

if ddp:
    dist.destroy_process_group()
