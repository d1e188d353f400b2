"""The model and its training corruption (SPEC 2)."""
import math

import pytest
import torch
import torch.nn.functional as F

from model import (ModelConfig, VisualEchoes, broadcast_global, load_model, masked_cross_entropy, position_weights,
                   random_corruption,
                   truncated_normal)

TINY = dict(n_layer=2, n_head=2, n_embd=32, decoder_n_layer=1, decoder_n_head=2, decoder_n_embd=16,
            audio_grid_h=2, audio_grid_w=5, audio_codebook_size=7,
            image_grid_h=3, image_grid_w=3, image_codebook_size=11, dropout=0.0)


def tiny_model(**overrides):
    torch.manual_seed(0)
    return VisualEchoes(ModelConfig(**{**TINY, **overrides}))


def random_batch(config, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, config.audio_codebook_size, (B, config.audio_len), generator=g),
            torch.randint(0, config.image_codebook_size, (B, config.image_len), generator=g))


def truncated_normal_moments(mu, std, low, high):
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    Phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
    a, b = (low - mu) / std, (high - mu) / std
    Z = Phi(b) - Phi(a)
    mean = mu + std * (phi(a) - phi(b)) / Z
    var = std ** 2 * (1 + (a * phi(a) - b * phi(b)) / Z - ((phi(a) - phi(b)) / Z) ** 2)
    return mean, math.sqrt(var)


@pytest.mark.parametrize('mu', [0.55, 0.7])
def test_mask_ratio_is_the_truncated_gaussian(mu):
    r = truncated_normal(200_000, mu, 0.25, 0.2, 1.0, torch.Generator().manual_seed(1))
    mean, std = truncated_normal_moments(mu, 0.25, 0.2, 1.0)
    assert r.min() >= 0.2 and r.max() <= 1.0
    assert abs(r.mean().item() - mean) < 3e-3 and abs(r.std().item() - std) < 3e-3
    # the bounds really cut the tails: mass just inside each bound as the density predicts
    assert (r < 0.25).float().mean() > 0.01


def test_corruption_counts_are_exact_and_per_sample():
    cfg = ModelConfig(**TINY, mask_ratio_mu=0.6)
    audio, image = random_batch(cfg, B=64)
    audio_in, image_in, keep, (ta, tv) = random_corruption(audio, image, cfg, torch.Generator().manual_seed(0))
    for ids_in, tgt, clean, L, mask_id in ((audio_in, ta, audio, cfg.audio_len, cfg.audio_mask_id),
                                           (image_in, tv, image, cfg.image_len, cfg.image_mask_id)):
        masked = ids_in == mask_id
        assert torch.equal(masked, tgt >= 0)  # loss exactly where masked
        assert torch.equal(tgt[masked], clean[masked]) and torch.equal(ids_in[~masked], clean[~masked])
        counts = masked.sum(1)
        assert counts.min() >= math.ceil(0.2 * L) and counts.max() <= L
        assert counts.unique().numel() > 1  # ratios are drawn per sample, not per batch
    # exactly half of each modality's positions survive the drop, sorted, audio first
    assert keep.shape == (64, 5 - 2 + 9 - 4) or keep.shape == (64, (10 - 5) + (9 - round(4.5)))
    assert (keep[:, :5] < cfg.audio_len).all() and (keep[:, 5:] >= cfg.audio_len).all()
    assert (keep.diff(dim=1) > 0).all()


def test_corruption_is_reproducible_with_a_generator():
    cfg = ModelConfig(**TINY)
    audio, image = random_batch(cfg)
    a = random_corruption(audio, image, cfg, torch.Generator().manual_seed(5))
    b = random_corruption(audio, image, cfg, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a[:3] + a[3], b[:3] + b[3]))


def test_drop_is_independent_of_mask():
    cfg = ModelConfig(**{**TINY, 'audio_grid_w': 50}, mask_ratio_mu=0.7)
    audio, image = random_batch(cfg, B=2000)
    audio_in, _, keep, _ = random_corruption(audio, image, cfg, torch.Generator().manual_seed(0))
    kept = torch.zeros(2000, cfg.seq_len, dtype=torch.bool).scatter(1, keep, True)[:, :cfg.audio_len]
    masked = audio_in == cfg.audio_mask_id
    p_drop_masked = (~kept[masked]).float().mean().item()
    p_drop_visible = (~kept[~masked]).float().mean().item()
    assert abs(p_drop_masked - 0.5) < 0.01 and abs(p_drop_visible - 0.5) < 0.01


def test_decoder_gets_mask_embedding_at_dropped_and_masked_positions():
    model = tiny_model()
    cfg = model.config
    audio, image = random_batch(cfg)
    audio_in, image_in, keep, _ = random_corruption(audio, image, cfg, torch.Generator().manual_seed(3))
    seen = {}
    model.decoder[0].register_forward_pre_hook(lambda mod, args: seen.update(x=args[0]))
    model(audio_in, image_in, keep)
    x = seen['x'] - model.decoder_pos - model.decoder_modality[model.modality_of_position]  # (B, L, Dd)
    masked = torch.cat([audio_in == cfg.audio_mask_id, image_in == cfg.image_mask_id], 1)
    kept = torch.zeros_like(masked).scatter(1, keep, True)
    is_m = torch.isclose(x, model.mask_embedding.expand_as(x), atol=1e-6).all(-1)  # (B, L)
    assert torch.equal(is_m, masked | ~kept)


def test_loss_ignores_logits_at_unmasked_positions():
    logits = torch.randn(2, 6, 5, requires_grad=True)
    targets = torch.tensor([[1, -1, 2, -1, -1, 0], [-1, -1, -1, 4, -1, -1]])
    masked_cross_entropy(logits, targets, 0.1).backward()
    grad_norm = logits.grad.abs().sum(-1)
    assert (grad_norm[targets == -1] == 0).all() and (grad_norm[targets >= 0] > 0).all()


def test_head_is_tied_to_the_embedding_table():
    model = tiny_model()
    cfg = model.config
    # no vocabulary-sized matrix in the heads: only the bias has the codebook's size
    for head, C in ((model.audio_head, cfg.audio_codebook_size), (model.image_head, cfg.image_codebook_size)):
        assert [p.shape for p in head.parameters() if C in p.shape] == [torch.Size([C])]
    audio, image = random_batch(cfg)
    audio = audio.masked_fill(audio == 3, 4)  # id 3 never enters the encoder
    seen = {}
    model.audio_head.ln.register_forward_hook(lambda mod, args, out: seen.update(h=out))
    (la, lv), _ = model(audio, image)
    assert la.shape == (4, cfg.audio_len, cfg.audio_codebook_size)
    assert lv.shape == (4, cfg.image_len, cfg.image_codebook_size)
    # logits = h @ E[:C].T + bias, with E the audio embedding table and [MASK] (row C) excluded
    table = model.audio_embedding.weight[:cfg.audio_codebook_size]
    assert torch.allclose(la, seen['h'] @ table.t() + model.audio_head.bias, atol=1e-5)
    # and the table is detached there (MAGE): row 3 is used by the head but gets no gradient
    la.sum().backward()
    assert model.audio_embedding.weight.grad[3].abs().sum() == 0
    assert model.audio_embedding.weight.grad[4].abs().sum() > 0  # (the input side does train it)


@pytest.mark.parametrize('layout', [dict(), dict(audio_grid_h=5, audio_grid_w=4, image_grid_h=2, image_grid_w=6,
                                                 audio_codebook_size=3, image_codebook_size=30)])
def test_shapes_for_two_layouts_and_every_parameter_learns(layout):
    model = tiny_model(**layout)
    cfg = model.config
    audio, image = random_batch(cfg)
    audio_in, image_in, keep, targets = random_corruption(audio, image, cfg)
    (la, lv), losses = model(audio_in, image_in, keep, targets)
    assert la.shape == (4, cfg.audio_len, cfg.audio_codebook_size)
    assert lv.shape == (4, cfg.image_len, cfg.image_codebook_size)
    assert set(losses) == {'loss', 'audio', 'image'}
    assert torch.isclose(losses['loss'], losses['audio'] + losses['image'])
    losses['loss'].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_tiny_model_overfits_a_fixed_batch():
    model = tiny_model(n_embd=64, decoder_n_embd=64)
    cfg = model.config
    audio, image = random_batch(cfg, B=8)
    batch = random_corruption(audio, image, cfg, torch.Generator().manual_seed(0))  # fixed corruption too
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), 'cpu')
    losses = []
    for _ in range(150):
        _, loss = model(*batch)
        opt.zero_grad(set_to_none=True)
        loss['loss'].backward()
        opt.step()
        losses.append(loss['loss'].item())
    # label smoothing 0.1 keeps a floor of about 2 x 0.35 nats; chance is log(7) + log(11) = 4.3
    assert losses[-1] < losses[0] / 3, (losses[0], losses[-1])


def test_weight_decay_only_on_linear_weights():
    model = tiny_model()
    decay, no_decay = model.configure_optimizers(0.05, 1e-3, (0.9, 0.95), 'cpu').param_groups
    assert decay['weight_decay'] == 0.05 and no_decay['weight_decay'] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith('weight') and p.dim() == 2 for p in decay['params'])
    no_decay_names = {names[id(p)] for p in no_decay['params']}
    assert {'audio_embedding.weight', 'encoder_pos', 'mask_embedding', 'encoder_norm.weight'} <= no_decay_names


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    from dataclasses import asdict
    model = tiny_model().eval()
    path = tmp_path / 'ckpt.pt'
    torch.save({'model': model.state_dict(), 'model_args': asdict(model.config)}, path)
    loaded, _ = load_model(path)
    audio, image = random_batch(model.config)
    assert all(torch.equal(a, b) for a, b in zip(model(audio, image)[0], loaded(audio, image)[0]))
    with pytest.raises(FileNotFoundError, match='nope.pt'):
        load_model(tmp_path / 'nope.pt')


def test_paper_size_parameter_count():
    with torch.device('meta'):
        model = VisualEchoes(ModelConfig())
    n = model.get_num_params()
    assert 380e6 < n < 420e6, n  # SPEC 2: about 400M besides the tokenizers


def test_global_broadcast_adds_a_known_global_id_to_its_modality_only():
    model = tiny_model(audio_global_codes=3, audio_codebook_size=10, global_broadcast=True)
    cfg = model.config
    audio, image = random_batch(cfg, B=2)
    audio[0, 0], audio[1, 0] = 8, cfg.audio_mask_id  # a known global id, then a masked one
    added = broadcast_global(model, audio, image)
    assert torch.equal(added[0, :cfg.audio_len], model.audio_embedding.weight[8].expand(cfg.audio_len, -1))
    assert not added[1].any() and not added[:, cfg.audio_len:].any()  # masked: nothing; the image has none
    plain = tiny_model(audio_global_codes=3, audio_codebook_size=10)
    assert not torch.allclose(model(audio, image)[0][0][0], plain(audio, image)[0][0][0])


def test_global_loss_weight_scales_the_global_positions_term_only():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(3, 5, 7, generator=g), torch.randint(0, 7, (3, 5), generator=g)
    targets[1, 2] = -1
    plain = masked_cross_entropy(logits, targets, 0.1)
    assert torch.allclose(masked_cross_entropy(logits, targets, 0.1, torch.ones(5)), plain)
    w = torch.tensor([4.0, 1, 1, 1, 1])
    first = F.cross_entropy(logits[:, 0], targets[:, 0], label_smoothing=0.1, reduction='sum') / 14
    assert torch.allclose(masked_cross_entropy(logits, targets, 0.1, w), plain + 3 * first)
    model = tiny_model(audio_global_codes=3, audio_codebook_size=10, global_loss_weight=4.0)
    assert position_weights(model.config, 'audio').tolist() == [4.0] + [1.0] * 10
    assert position_weights(model.config, 'image') is None
