# the recipe for your own paired data on a CPU: start here (README, "Bring your own paired data")
# $ python data.py pairs FOLDER --out data/mine --seconds 2 --size 64   (semantic units, global codes)
# $ python train.py config/pairs.py --dataset=mine
# $ python evaluate.py --out_dir=out-pairs --max_items=200 --tasks=i2a,a2i,cogen --temperature=0.2 --cfg=1
# Choices measured on the digits benchmark (python data.py digits --out data/digits: 4,000 train
# pairs, 64 px, 2 s; the numbers: README, "A recipe for new data"). Where a choice departs from the
# paper, the paper's setting is the one named in the comment.
out_dir = 'out-pairs'
dataset = 'digits'
eval_interval = 800
eval_iters = 10
log_interval = 20
always_save_checkpoint = True

# config/toy.py's tiny model (4 encoder and 2 decoder blocks of width 128): a CPU trains it in half an hour
n_layer, n_head, n_embd = 4, 4, 128
decoder_n_layer, decoder_n_head, decoder_n_embd = 2, 4, 128
dropout = 0.1  # the paper's; with 4,000 pairs the val loss leaves the train loss by step 1000

# token embeddings start from what each id stands for (its k-means centroid or VQ code), not at
# random (the paper: 'random'): image tokens are learned 3-5x faster
embedding_init = 'codes'
# guided generation runs two passes the paper's masking (>= 20% of both modalities) never trains:
# the condition whole and the condition fully masked; without these shares the sound's loss was
# worse given the whole picture than with it masked. The paper: 0 and 0.
given_prob = 0.3
null_prob = 0.1
# MAGE's drop: up to half of each modality's positions skip the encoder, masked ones only, so every
# visible token reaches it (the paper drops visible ones too: drop_masked_only = False). It drops as
# many as every sample of the batch has masked, so with given_prob > 0 (nearly every batch of 32
# holds a modality whole) it drops almost nothing.
drop_ratio = 0.5
drop_masked_only = True
# with global codes (units: data.py --image_tokenizer units --audio_tokenizer units), a known global id
# is also added to every position of its modality, so what the whole item is reaches every token
# (no such token in the paper; without one this does nothing). README, "Global codes".
global_broadcast = True
global_loss_weight = 10.0  # a masked global token's loss weight (1 = a position like the others)
mask_ratio_mu = 0.7  # the paper's (0.9 with given_prob 0.5 was worse)

batch_size = 32
gradient_accumulation_steps = 1
learning_rate = 1e-3  # a small model takes a larger lr than SPEC 4's rule
# 4800 steps: the global ids' mapping was still improving at 2400 (README, "Global codes"). A k-means
# code step (169 tokens, 1024-id heads) costs 2.5x a units one (85 tokens, 144-id heads): there the
# README's run gives --max_iters=2400 --lr_decay_iters=2400.
max_iters = 4800
lr_decay_iters = 4800
warmup_iters = 50
min_lr = 1e-4

compile = False  # compiling takes longer than it saves in a run this short
