# the recipe for your own paired data on a CPU: start here (README, "Bring your own paired data")
# $ python data.py pairs FOLDER --out data/mine --seconds 2 --size 64
# $ python train.py config/pairs.py --dataset=mine
# Every choice below was measured on the digits benchmark (python data.py digits --out data/digits:
# 4,000 train pairs, 64 px, 2 s, test voices and fonts unseen in train); README, "A recipe for new data".
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
dropout = 0.1  # the paper's: with 4,000 pairs the val loss leaves the train loss by step 1000 without it

# token embeddings start from what each id stands for (its k-means centroid or VQ code): with 512
# image codes and 4,000 pictures, random rows learned image tokens 4x slower (masked-token accuracy
# 0.024 -> 0.111 at step 1000). The paper's random init: embedding_init = 'random'.
embedding_init = 'codes'
# guided generation runs two passes the paper's masking rarely trains: the condition whole (the
# paper masks >= 20% of it) and the condition fully masked. 30% and 10% of samples train them.
given_prob = 0.3
null_prob = 0.1
# MAGE's drop: half of each modality's positions skip the encoder, masked ones only, so every
# visible token reaches it (the paper drops visible ones too); the encoder then costs half.
drop_ratio = 0.5
drop_masked_only = True
mask_ratio_mu = 0.7  # the paper's

batch_size = 32
gradient_accumulation_steps = 1
learning_rate = 1e-3  # a small model takes a larger lr than SPEC 4's rule
max_iters = 2400  # about 30 minutes on 2 cores (0.7 s a step)
lr_decay_iters = 2400
warmup_iters = 50
min_lr = 1e-4

compile = False  # compiling takes longer than it saves in a run this short
