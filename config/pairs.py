# the recipe for your own paired data on a CPU: start here (README, "Bring your own paired data")
# $ python data.py pairs FOLDER --out data/mine --seconds 2 --size 64   (semantic units, global codes)
# $ python train.py config/pairs.py --dataset=mine
# $ python evaluate.py --out_dir=out-pairs --max_items=200 --tasks=i2a,a2i,cogen --temperature=0.2 --cfg=1
# Choices measured on the digits benchmark (python data.py digits --out data/digits: 4,000 train
# pairs, 64 px, 2 s; README, "A recipe for new data"). Where a choice departs from the paper, the
# paper's setting is the one named in the comment.
out_dir = 'out-pairs'
dataset = 'digits'
eval_interval = 800
eval_iters = 10
log_interval = 20
always_save_checkpoint = True

# the toy's tiny model (4 encoder and 2 decoder blocks of width 128): what 2 cores train in 30 minutes
n_layer = 4
n_head = 4
n_embd = 128
decoder_n_layer = 2
decoder_n_head = 4
decoder_n_embd = 128
dropout = 0.1  # the paper's; with 4,000 pairs the val loss leaves the train loss by step 1000

# token embeddings start from what each id stands for (its k-means centroid or VQ code), not at
# random (the paper: 'random'). Measured at step 500: image masked-token accuracy 0.022 -> 0.066,
# val loss 10.92 -> 10.12.
embedding_init = 'codes'
# guided generation runs two passes the paper's masking (>= 20% of both modalities) never trains:
# the condition whole and the condition fully masked. Measured at step 500: the sound's loss given
# the whole picture was 0.54 nats *worse* than with the picture masked; with these shares, 0.01.
# The paper: 0 and 0.
given_prob = 0.3
null_prob = 0.1
# MAGE's drop: up to half of each modality's positions skip the encoder, masked ones only, so every
# visible token reaches it (the paper drops visible ones too: drop_masked_only = False). It drops as
# many as every sample of the batch has masked, so with given_prob > 0 (nearly every batch of 32
# holds a modality whole) it drops almost nothing: 168.8 of 169 tokens kept on average, measured
# (121.8 with the paper's masking). The run in the README trained with these settings.
drop_ratio = 0.5
drop_masked_only = True
# with global codes (units: data.py --image_tokenizer units --audio_tokenizer units), a known global id
# is also added to every position of its modality, so what the whole item is reaches every token
# (no such token in the paper; without one this does nothing). README, "Global codes".
global_broadcast = True
global_loss_weight = 10.0  # a masked global token's loss weight (1 = a position like the others)
mask_ratio_mu = 0.7  # the paper's (0.9 with given_prob 0.5 was worse: a gain of -0.38 nats at step 800)

batch_size = 32
gradient_accumulation_steps = 1
learning_rate = 1e-3  # a small model takes a larger lr than SPEC 4's rule
# with units (85 tokens a pair, 144-id heads) a step takes 0.27-0.29 s on 2 cores: 4800 steps in 21 min;
# the global ids' mapping was still improving at 2400 (README, "Global codes"). With k-means codes
# (169 tokens, 1024-id heads) a step takes 0.7 s: give --max_iters=2400 --lr_decay_iters=2400 for 30 min.
max_iters = 4800
lr_decay_iters = 4800
warmup_iters = 50
min_lr = 1e-4

compile = False  # compiling takes longer than it saves in a run this short
