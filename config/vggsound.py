# the paper's run: Visual Echoes (MAGE ViT-L, ~400M parameters) on VGGSound, 8 GPUs, bf16 + compile
# $ torchrun --standalone --nproc_per_node=8 train.py config/vggsound.py
out_dir = 'out-vggsound'
dataset = 'vggsound'  # data/vggsound, written by `python data.py videos ...` (README)
eval_interval = 2000
eval_iters = 50
log_interval = 10
always_save_checkpoint = True

# model: train.py's defaults are the paper's (SPEC 2: MAGE ViT-L, 24 + 8 blocks of width 1024, dropout
# 0.1, mask ratio mean 0.7); the token layout comes from data/vggsound/meta.json

# 64 clips per GPU: 512 clips per step on 8 GPUs (fixed here: the paper does not give its batch)
batch_size = 64
gradient_accumulation_steps = 1
# the learning rate and the schedule follow the real batch: torchrun's WORLD_SIZE processes (1 without
# torchrun). Names starting with _ are helpers here, not settings.
import os as _os
_gpus = int(_os.environ.get('WORLD_SIZE', 1))
_clips_per_step = batch_size * gradient_accumulation_steps * _gpus
learning_rate = 1.5e-4 * _clips_per_step / 256  # SPEC 4: base lr 1.5e-4 per 256 clips (MAE/MAGE)
min_lr = 0.0
# 1000 epochs (paper) of VGGSound's 182,563 train clips; 40 warmup epochs (MAGE)
_steps_per_epoch = 182_563 // _clips_per_step
max_iters = 1000 * _steps_per_epoch
lr_decay_iters = max_iters
warmup_iters = 40 * _steps_per_epoch
weight_decay = 0.05
beta1, beta2 = 0.9, 0.95
grad_clip = 3.0

# system: bf16 autocast where the GPU supports it (train.py's default), torch.compile
compile = True
