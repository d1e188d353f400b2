# the recipe for your own paired data on a CPU (README, "Your own data"); the defaults it departs from are the paper's
# $ python data.py pairs FOLDER --out data/mine --seconds 2 --size 64   (semantic units with global codes)
# $ python train.py config/pairs.py --dataset=mine --out_dir=out-mine
out_dir = 'out-pairs'
dataset = 'digits'  # python data/digits/prepare.py makes it (4,000 train pairs, 64 px, 2 s)
eval_interval = 800
eval_iters = 10
log_interval = 20
always_save_checkpoint = True

# config/toy.py's tiny model (4 encoder and 2 decoder blocks of width 128)
n_layer, n_head, n_embd = 4, 4, 128
decoder_n_layer, decoder_n_head, decoder_n_embd = 2, 4, 128
dropout = 0.1  # the paper's; with 4,000 pairs the val loss leaves the train loss by step 1000
drop_ratio = 0.0  # no token drop (the paper: 0.5), as config/toy.py: the encoder trains on what generation shows it
mask_ratio_mu = 0.7  # the paper's

# extensions (docs/training.md, docs/units.md): train the two passes guided generation runs, start the
# embeddings from what each id stands for, and let the one token that names the whole item reach every position
given_prob = 0.3
null_prob = 0.1
embedding_init = 'codes'
global_broadcast = True
global_loss_weight = 10.0

batch_size = 32
gradient_accumulation_steps = 1
learning_rate = 1e-3  # a small model takes a larger lr than SPEC 4's rule
max_iters = 4800
lr_decay_iters = 4800
warmup_iters = 50
min_lr = 1e-4
compile = False  # compiling takes longer than it saves in a run this short

# how sample.py and evaluate.py sample from this model when not told otherwise (docs/guidance.md):
# chosen on the digits' val split
sample_temperature = 0.1
sample_cfg = 3.0
sample_cfg_fade = 8.0
# the fast sampler (docs/sampling.md), chosen on the digits' val split (the fewest forwards within a point of the
# best): 8 steps, guidance's unconditional pass every 2nd, 12 forwards a sample instead of 60
sample_steps = 8
sample_uncond_every = 2
