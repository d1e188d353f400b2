# the embedded CPU run: a tiny Visual Echoes on the synthetic toy dataset (data/toy/prepare.py); its time: README
# $ python train.py config/toy.py
out_dir = 'out-toy'
dataset = 'toy'  # data/toy (8x8 image and 5x10 audio tokens, 32 codes each), made on first use, no download
eval_interval = 500
eval_iters = 10
log_interval = 20
always_save_checkpoint = True  # ckpt.pt is the latest state: --init_from=resume continues exactly

# a tiny model: 4 encoder and 2 decoder blocks of width 128 (1.3M parameters; ~0.95 GFLOP per clip
# per training step without token drop)
n_layer, n_head, n_embd = 4, 4, 128
decoder_n_layer, decoder_n_head, decoder_n_embd = 2, 4, 128
dropout = 0.0  # small data, short run: no dropout
# No token drop here (the paper drops 50% of positions before the encoder to speed up training): with
# drop, the encoder trains on half the tokens but sees all of them at inference, and this tiny model's
# late unmasking steps (sound mostly known, picture fully given) got worse than its early ones (docs/LOG.md).
drop_ratio = 0.0
# An extension (0 = the paper; docs/training.md): 30% of the samples leave one modality whole, as the
# condition is at inference: without it some training seeds stall with only part of the classes mapped across.
given_prob = 0.3

batch_size = 32
gradient_accumulation_steps = 1
learning_rate = 1e-3  # a small model takes a larger lr than SPEC 4's rule (1.2e-5 at 32 clips)
max_iters = 1600  # 13 epochs of the 4,000 train clips
lr_decay_iters = 1600
warmup_iters = 50
min_lr = 1e-4

compile = False  # in a run this short the compile costs about what it saves (docs/LOG.md)
