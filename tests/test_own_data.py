"""Learning from a user's own pairs: derived token layouts and up-front checks, the cross-modal
diagnostic, the learned class probes, the unit tokenizers, the given/null masking."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import data
import evaluate
from data import dataset_maker
from model import ModelConfig, VisualEchoes, cross_modal_losses, init_embeddings_from_codes, random_corruption
import tokenizers
from tokenizers import UnitTokenizer, check_tokenizer_matches, load_tokenizer

TOY = dataset_maker('toy')  # data/toy/prepare.py: the toy's pictures and sounds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -----------------------------------------------------------------------------
# the token layout of `data.py pairs --seconds S --size P`


@pytest.mark.parametrize('seconds, size, frames, image_patch, audio_patch', [
    (2.0, 64, 168, 8, 8), (10.0, 256, 848, 16, 16), (1.0, 32, 80, 4, 8), (3.7, 100, 312, 10, 8), (0.5, 48, 40, 6, 8),
    (6.0, 128, 512, 16, 16)])
def test_layout_is_derived_for_any_length_and_size(seconds, size, frames, image_patch, audio_patch):
    cfg, ip, ap = data.layout(size, seconds)
    assert (cfg.frames, ip, ap) == (frames, (image_patch, image_patch), (16, audio_patch))
    assert cfg.frames % ap[1] == 0 and cfg.frames <= cfg.frames_all  # whole token columns inside the clip
    assert cfg.n_mels % ap[0] == 0 and size % ip[0] == 0
    assert cfg.frames_all - cfg.frames < ap[1]  # no whole column left out


def test_codebook_grows_with_the_data():
    assert data.codebook_for(4000, 64) == 512
    assert data.codebook_for(200, 64) == 64  # few items: the smallest codebook
    assert data.codebook_for(182_563, 256) == 1024  # VGGSound: the paper's


@pytest.mark.parametrize('args, flag, valid', [
    (['--seconds', '2', '--mel_frames', '171'], '--mel_frames 171', 'e.g. 168'),
    (['--seconds', '2', '--mel_frames', '848'], '--mel_frames 848', 'e.g. 168'),
    (['--seconds', '0.1'], '--seconds 0.1', 'at least'),
    (['--seconds', 'nan'], '--seconds nan', 'e.g. 2'),
    (['--size', '67'], '--size 67', 'e.g. 64'),
    (['--size', '64', '--image_patch', '12'], '--image_patch 12x12', 'e.g. 8'),
    (['--audio_patch', '15x16'], '--audio_patch 15x16', '16x16'),
    (['--image_codebook', '1'], '--image_codebook 1', 'e.g. 512')])
def test_bad_layout_flags_fail_before_any_work(tmp_path, capsys, args, flag, valid):
    folder = tmp_path / 'pairs'
    folder.mkdir()
    out = tmp_path / 'out'
    assert data.main(['pairs', str(folder), '--out', str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: {flag}') and valid in err and '\n' not in err
    assert not out.exists()  # nothing was made


@pytest.mark.parametrize('command, given, expected', [
    ('pairs', [], ('units', 'units')), ('videos', [], ('kmeans', 'kmeans')),
    ('pairs', ['--image_tokenizer', 'kmeans'], ('kmeans', 'units'))])
def test_default_tokenizers_are_the_recipes(tmp_path, monkeypatch, command, given, expected):
    """data.py pairs fits semantic units (with global codes) unless told otherwise, the tokenizers
    the recipe for new data was measured with; videos keep the k-means default."""
    seen = {}
    monkeypatch.setattr(data, 'prepare', lambda kind, folder, out, csv, size, frames, cfg, image_tokenizer,
                        audio_tokenizer, *rest, **kw: seen.update(tokenizers=(image_tokenizer, audio_tokenizer)) or 0)
    assert data.main([command, str(tmp_path), '--out', str(tmp_path / 'out'), '--seconds', '2', '--size', '64', *given]) == 0
    assert seen['tokenizers'] == expected


# -----------------------------------------------------------------------------
# training corruption: the given/null shares (fixed here; 0 and 0 are the paper's)

def test_given_and_null_shares():
    cfg = ModelConfig(audio_grid_h=2, audio_grid_w=5, audio_codebook_size=8, image_grid_h=3, image_grid_w=3,
                      image_codebook_size=8, given_prob=0.3, null_prob=0.2)
    a, v = torch.randint(8, (20_000, 10)), torch.randint(8, (20_000, 9))
    a_in, v_in, _, (ta, tv) = random_corruption(a, v, cfg, torch.Generator().manual_seed(0))
    na, nv = (a_in == 8).sum(1), (v_in == 8).sum(1)
    assert abs((na == 0).float().mean() - 0.15) < 0.01 and abs((nv == 0).float().mean() - 0.15) < 0.01
    assert not ((na == 0) & (nv == 0)).any()  # one modality at most is given whole
    assert ((na == 10).float().mean() > 0.1) and ((nv == 9).float().mean() > 0.1)  # null share + the paper's r ~ 1
    assert ((ta >= 0) == (a_in == 8)).all()  # loss exactly on the masked positions


def test_paper_setting_draws_exactly_as_before():
    """given_prob = null_prob = 0 draws the same random numbers as the paper's corruption always
    did (per modality: B ratios, B x L mask noise, B x L drop noise), so old runs reproduce."""
    cfg = ModelConfig(audio_grid_h=2, audio_grid_w=5, audio_codebook_size=8, image_grid_h=3, image_grid_w=3,
                      image_codebook_size=8)
    a, v = torch.randint(8, (64, 10)), torch.randint(8, (64, 9))
    g = torch.Generator().manual_seed(3)
    random_corruption(a, v, cfg, g)
    expected = torch.Generator().manual_seed(3)
    for L in (10, 9):
        torch.rand(64, generator=expected), torch.rand(64, L, generator=expected), torch.rand(64, L, generator=expected)
    assert torch.equal(g.get_state(), expected.get_state())


# -----------------------------------------------------------------------------
# the cross-modal gain: ~0 for a model that ignores the other modality, > 0 for one that uses it

TINY = dict(n_layer=2, n_head=2, n_embd=32, decoder_n_layer=1, decoder_n_head=2, decoder_n_embd=32,
            audio_grid_h=1, audio_grid_w=4, audio_codebook_size=8, image_grid_h=2, image_grid_w=2,
            image_codebook_size=8, dropout=0.0, drop_ratio=0.0)


def train_tiny(coupled, steps=600, seed=0):
    """Audio = image (coupled) or independent of it; returns the model and a fresh batch."""
    torch.manual_seed(seed)
    model = VisualEchoes(ModelConfig(**TINY))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)

    def batch(n=128):
        image = torch.randint(8, (n, 4), generator=g)
        audio = image.clone() if coupled else torch.randint(8, (n, 4), generator=g)
        return audio, image
    for _ in range(steps):
        audio, image = batch()
        a_in, v_in, keep, targets = random_corruption(audio, image, model.config, g)
        loss = model(a_in, v_in, keep, targets)[1]['loss']
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), batch(512)


def test_cross_modal_gain_tells_a_model_that_uses_the_other_modality():
    model, (audio, image) = train_tiny(coupled=True)
    x = cross_modal_losses(model, audio, image)
    assert x['audio_alone'] - x['audio_given'] > 1.0  # log 8 = 2.08 nats at most
    assert x['image_alone'] - x['image_given'] > 1.0
    model, (audio, image) = train_tiny(coupled=False)
    x = cross_modal_losses(model, audio, image)
    assert abs(x['audio_alone'] - x['audio_given']) < 0.05 and abs(x['image_alone'] - x['image_given']) < 0.05
    assert abs(x['audio_alone'] - np.log(8)) < 0.1  # independent uniform codes: nothing to learn


# -----------------------------------------------------------------------------
# learned class probes on a tiny labelled set, fitted once and cached

def test_probes_learn_and_are_cached(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(240) % 4  # four toy classes: red/yellow/green/blue squares with their tones
    images = np.stack([TOY.toy_image(rng, int(l)) for l in labels])
    mels = data.mel_spectrogram(np.stack([TOY.toy_wave(rng, int(l)) for l in labels]), TOY.TOY_MEL)[:, :, :160]
    data.save_probe_set(str(tmp_path), images[:200], mels[:200], labels[:200])
    nets = evaluate.load_probes(str(tmp_path), 4)
    for kind, x in (('audio', data.probe_mel_input(mels[200:])), ('image', data.probe_image_input(images[200:]))):
        with torch.no_grad():
            pred = nets[kind](evaluate.probe_tensor(x, kind)).argmax(1).numpy()
        assert (pred == labels[200:]).mean() >= 0.9, kind
        assert os.path.isfile(tmp_path / f'probe_{kind}.pt')
    again = evaluate.load_probes(str(tmp_path), 4)  # from the cache: the same weights
    assert all(torch.equal(a, b) for a, b in zip(nets['image'].state_dict().values(), again['image'].state_dict().values()))


def test_the_second_judge_learns_from_hand_made_features():
    """Logistic regression on MFCC statistics / gradient histograms: another kind of probe than the
    CNNs. It tells the toy's classes apart on held-out items, not labels shuffled against the items,
    and is the same fit every time."""
    rng = np.random.default_rng(0)
    labels = (np.arange(240) % 4) * 5  # classes 0, 5, 10, 15: each its own shape and colour, pitch and timbre
    images = data.probe_image_input(np.stack([TOY.toy_image(rng, int(l)) for l in labels]))
    mels = data.probe_mel_input(data.mel_spectrogram(np.stack([TOY.toy_wave(rng, int(l)) for l in labels]),
                                                     TOY.TOY_MEL)[:, :, :160])
    y = torch.from_numpy(labels)
    for kind, x in (('audio', mels), ('image', images)):
        features = evaluate.PROBE_FEATURES[kind]
        probe = evaluate.FeatureProbe(x[:200], y[:200], 16, features)
        assert (probe(x[200:]) == labels[200:]).mean() >= 0.9, kind
        assert np.array_equal(evaluate.FeatureProbe(x[:200], y[:200], 16, features)(x[200:]), probe(x[200:]))
        shuffled = evaluate.FeatureProbe(x[:200], y[torch.randperm(200, generator=torch.Generator().manual_seed(0))], 16, features)
        assert (shuffled(x[200:]) == labels[200:]).mean() < 0.6, kind
    assert evaluate.sound_features(mels).shape == (240, 60 + 32 + 6 * 256 + 16 * 12)
    assert evaluate.picture_features(images).shape == (240, 9 + 8 * 81 + 9 * 11 * 6 + 9 * 21)


# -----------------------------------------------------------------------------
# the recipe's options (fixed here; model.py's defaults are the paper's)

def test_code_vectors_are_what_the_ids_stand_for():
    x = torch.rand(40, 3, 16, 16) * 2 - 1
    km = data.PatchKMeansTokenizer.fit(x, 8, patch=(8, 8))
    assert torch.equal(km.code_vectors(), km.codebook) and km.code_vectors().shape == (8, 192)


def test_embeddings_from_codes_start_alike_for_codes_alike():
    """Codes 0 and 1 stand for nearly the same patch, code 2 for another: their rows say so; the
    [MASK] row keeps its random init, and the std is the table's usual 0.02."""
    cfg = ModelConfig(**{**TINY, 'image_codebook_size': 3, 'n_embd': 32})
    model = VisualEchoes(cfg)
    mask_row = model.image_embedding.weight[3].clone()
    vectors = torch.tensor([[1.0, 0, 0, 0], [1.0, 0.05, 0, 0], [-1.0, 0, 1, 0]])
    init_embeddings_from_codes(model, 'image', vectors)
    e = model.image_embedding.weight.detach()
    cos = torch.nn.functional.cosine_similarity
    k = 3  # principal directions of 3 vectors; the other columns keep their random init
    assert cos(e[0, :k], e[1, :k], dim=0) > 0.95 and cos(e[0, :k], e[2, :k], dim=0) < 0.5
    assert torch.equal(e[3], mask_row) and abs(e[:3, :k].std() - 0.02) < 0.01
    with pytest.raises(ValueError, match=r'expected \(3, d\)'):
        init_embeddings_from_codes(model, 'image', torch.zeros(5, 4))


def train_tiny_from_codes(data_dir, out_dir):
    """Two steps of a tiny model on data_dir with embedding_init='codes' (train.py as a user runs it)."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), f'--data_dir={data_dir}', '--dataset=mine',
                        f'--out_dir={out_dir}', '--n_layer=1', '--n_head=2', '--n_embd=16', '--decoder_n_layer=1',
                        '--decoder_n_head=2', '--decoder_n_embd=16', '--batch_size=4', '--max_iters=2', '--eval_interval=2',
                        '--eval_iters=1', '--compile=False', '--device=cpu', "--embedding_init=codes"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]


# -----------------------------------------------------------------------------
# the unit tokenizers (semantic units: a pair encoder's k-means, a decoder per modality)

def _toy_pairs(n, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = torch.from_numpy(np.stack([TOY.toy_image(rng, l) for l in labels])).permute(0, 3, 1, 2) / 127.5 - 1
    waves = np.stack([TOY.toy_wave(rng, l) for l in labels])
    mels = torch.from_numpy(data.mel_spectrogram(waves, TOY.TOY_MEL)[:, None, :, :TOY.TOY_MEL.frames])
    return images, mels, torch.from_numpy(labels)


def test_units_learn_what_pairs_share_and_round_trip_through_a_file(tmp_path):
    """Fitted on pairs alone (no labels), a held-out picture's nearest sound in the pair encoder's
    space is of its class; the units decode to the input's shape and range; a file gives them back."""
    images, mels, labels = _toy_pairs(160)
    toks = UnitTokenizer.fit_pair(images[:128], mels[:128], {'image': 16, 'audio': 16}, steps=80, decoder_steps=20, batch=32)
    with torch.no_grad():
        zi = toks['image'].encoder.embed(toks['image'].encoder.pool((images[128:] + 1) / 2))
        za = toks['audio'].encoder.embed(toks['audio'].encoder.pool(mels[128:]))
    nearest = (zi @ za.t()).argmax(1)
    assert (labels[128:][nearest] == labels[128:]).float().mean() >= 0.8
    for m, x in (('image', images), ('audio', mels)):
        tok = toks[m]
        ids = tok.encode(x)
        assert ids.shape == (160, tok.grid[0] * tok.grid[1]) and 0 <= ids.min() and ids.max() < 16
        out = tok.decode(ids)
        lo, hi = tok.value_range
        assert out.shape == x.shape and lo <= out.min() and out.max() <= hi
        tok.save(str(tmp_path / f'{m}.pt'))
        again = load_tokenizer(tok.describe())
        assert torch.equal(again.encode(x), ids) and torch.equal(again.decode(ids), out)
        check_tokenizer_matches({'grid': list(tok.grid), 'codebook_size': 16, 'tokenizer': tok.describe()}, again)
    assert toks['image'].grid == (8, 8) and toks['audio'].grid == (1, TOY.TOY_MEL.frames // 8)
    assert torch.equal(toks['audio'].code_vectors(), toks['audio'].centroids)


def test_an_interrupted_units_fit_resumes_after_its_last_finished_part(tmp_path, monkeypatch):
    """fit_pair(progress=FILE) keeps each finished part; interrupted in the sound's decoder, a rerun on
    the same inputs fits neither the encoder nor the picture's part again, and ends with the weights
    an uninterrupted fit gives. Other inputs start over."""
    images, mels, _ = _toy_pairs(64)
    args = (images, mels, {'image': 8, 'audio': 8})
    kw = dict(steps=6, decoder_steps=3, batch=16, global_codes=2)
    whole = UnitTokenizer.fit_pair(*args, **kw)
    progress, fit_decoder = str(tmp_path / 'units_fit.pt'), tokenizers._fit_unit_decoder

    def interrupted(tok, *a, **k):
        if tok.modality == 'audio':
            raise KeyboardInterrupt
        fit_decoder(tok, *a, **k)
    monkeypatch.setattr(tokenizers, '_fit_unit_decoder', interrupted)
    with pytest.raises(KeyboardInterrupt):
        UnitTokenizer.fit_pair(*args, **kw, progress=progress)
    assert torch.load(progress, weights_only=True)['done'] == ['encoder', 'image']
    refit = []
    monkeypatch.setattr(tokenizers, '_fit_unit_decoder', lambda tok, *a, **k: (refit.append(tok.modality),
                                                                               fit_decoder(tok, *a, **k)))
    monkeypatch.setattr(tokenizers, '_fit_pair_encoder', lambda *a: pytest.fail('the encoder was fitted again'))
    resumed = UnitTokenizer.fit_pair(*args, **kw, progress=progress)
    assert refit == ['audio']
    for m in ('image', 'audio'):
        assert all(torch.equal(a, b) for a, b in zip(whole[m].state_dict().values(), resumed[m].state_dict().values()))
    with pytest.raises(pytest.fail.Exception, match='fitted again'):  # another seed: nothing kept applies
        UnitTokenizer.fit_pair(*args, **{**kw, 'seed': 1}, progress=progress)


def test_global_codes_name_what_a_pair_shares_and_round_trip_through_a_file(tmp_path):
    """global_codes: one id first, the cluster of the item's pair embedding; fitted on pairs alone, a
    held-out picture's global id and its sound's each pick out the class; decode draws the grid
    alone, from either form; a file gives them back."""
    images, mels, labels = _toy_pairs(160)
    toks = UnitTokenizer.fit_pair(images[:128], mels[:128], {'image': 16, 'audio': 16}, steps=80, decoder_steps=2,
                                  batch=32, global_codes=4)
    for m, x in (('image', images), ('audio', mels)):
        tok = toks[m]
        ids = tok.encode(x)
        n = tok.grid[0] * tok.grid[1]
        assert tok.codebook_size == 20 and tok.global_tokens == 1 and ids.shape == (160, 1 + n)
        assert (ids[:, 0] >= 16).all() and (ids[:, 0] < 20).all() and (ids[:, 1:] < 16).all()
        held_out, test_labels = ids[128:, 0], labels[128:]
        # each held-out global id stands for the class most of its train items have
        train_ids, train_labels = ids[:128, 0], labels[:128]
        majority = {int(g): int(train_labels[train_ids == g].mode().values) for g in train_ids.unique()}
        guessed = torch.tensor([majority.get(int(g), -1) for g in held_out])
        assert (guessed == test_labels).float().mean() >= 0.8, m
        assert tok.decode(ids).shape == tok.decode(ids[:, 1:]).shape == x.shape  # with the global id or without
        with pytest.raises(ValueError, match='unit ids'):
            tok.decode(ids[:, :n].clone().fill_(16))  # a global id on the grid
        tok.save(str(tmp_path / f'{m}.pt'))
        again = load_tokenizer(tok.describe())
        assert again.global_codes == 4 and torch.equal(again.encode(x), ids)
        assert tok.code_vectors().shape == (20, tok.centroids.shape[1] + tok.global_centroids.shape[1])
    ids = toks['audio'].encode(mels[:2])
    mel = tokenizers.tokens_to_mel(toks['audio'], ids, mels.shape[-1])  # a clip decodes with its global id
    assert np.array_equal(mel, toks['audio'].decode(ids)[:, 0].clamp(0, 1).numpy())


def test_unit_decoder_draws_what_the_global_id_says():
    """With global codes the decoder also reads the item's global id: fitted on units that say
    nothing (one id everywhere), it still draws each item's class from the global id alone, and
    draws worse when the global id is hidden."""
    images, mels, labels = _toy_pairs(96)
    tok = UnitTokenizer.fit_pair(images, mels, {'image': 8, 'audio': 8}, steps=80, decoder_steps=0, batch=32,
                                 global_codes=4)['audio']
    ids = tok.encode(mels)
    blank = torch.zeros_like(ids[:, 1:])
    g = torch.Generator().manual_seed(0)
    tokenizers._fit_unit_decoder(tok, blank, mels, g, steps=150, global_ids=ids[:, 0] - tok.unit_codes)
    with_global = tok.decode(torch.cat([ids[:, :1], blank], 1))
    without = tok.decode(blank)
    err = lambda out: (out - mels).abs().mean().item()
    assert err(with_global) < 0.8 * err(without)
    # the drawn mels are nearer their own class's mean mel than any other class's
    means = torch.stack([mels[labels == c].mean(0) for c in range(4)])
    nearest = torch.cdist(with_global.flatten(1), means.flatten(1)).argmin(1)
    assert (nearest == labels).float().mean() >= 0.8


def test_picture_palette_names_a_pictures_colours_not_their_places():
    """picture_palette: the main colours, largest share first, and their shares; shuffling the
    pixels changes nothing (it cannot say where anything is)."""
    picture = torch.zeros(1, 3, 8, 8)
    picture[0, 0] = 1.0                 # red ground
    picture[0, :, 2:6, 2:6] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]  # a blue square, a quarter
    palette = tokenizers.picture_palette(picture, k=2)
    assert palette.shape == (1, 2 * 4)
    assert torch.allclose(palette[0, :6], torch.tensor([1.0, 0, 0, 0, 0, 1.0]))
    assert torch.allclose(palette[0, 6:], torch.tensor([0.75, 0.25]))
    shuffled = picture.flatten(2)[:, :, torch.randperm(64, generator=torch.Generator().manual_seed(0))].view(1, 3, 8, 8)
    assert torch.allclose(tokenizers.picture_palette(shuffled, k=2), palette)


def _plain_pictures(n, seed=0):
    """Pictures of one random colour with a square of another: what units leave out is the colour."""
    g = torch.Generator().manual_seed(seed)
    pictures = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, 64, 64).clone()
    pictures[:, :, 24:40, 24:40] = torch.rand(n, 3, 1, 1, generator=g)
    return pictures * 2 - 1


def test_unit_picture_decoder_draws_the_palette_it_is_given():
    """With appearances the picture decoder reads a palette: fitted on units that say nothing, it
    draws each picture's own colours from its palette, far better than from another picture's."""
    pictures = _plain_pictures(96)
    _, mels, _ = _toy_pairs(96)
    tok = UnitTokenizer.fit_pair(pictures, mels, {'image': 8, 'audio': 8}, steps=2, decoder_steps=0)['image']
    x01 = (pictures + 1) / 2
    palettes = tokenizers.picture_palette(x01)
    blank = torch.zeros(96, 64, dtype=torch.long)
    tokenizers._fit_unit_decoder(tok, blank, x01, torch.Generator().manual_seed(0), steps=400, appearance=palettes)
    with torch.no_grad():
        err = lambda p: (tok.decoder(blank, None, p) - x01).abs().mean().item()
        assert err(palettes) < 0.3 * err(palettes.roll(1, 0))


def test_unit_picture_decode_draws_a_stored_palette_of_the_same_global_code(tmp_path):
    """decode() draws a stored train picture's palette of the item's global code, the same for the
    same ids (decoding is a function), spread over the palettes for different ids; a file keeps
    them, and a file from before appearances loads without."""
    images, mels, _ = _toy_pairs(64)
    tok = UnitTokenizer.fit_pair(images, mels, {'image': 8, 'audio': 8}, steps=20, decoder_steps=2,
                                 global_codes=2, appearance_items=40)['image']
    assert tok.appearance_items == 40 and tok.appearances.shape == (40, 16)
    ids = tok.encode(images)
    global_ids = ids[:, 0] - tok.unit_codes
    drawn = tok.draw_appearance(ids[:, 1:], global_ids)
    for palette, g in zip(drawn, global_ids):  # each one a stored palette of the item's global code
        assert ((tok.appearances == palette).all(1) & (tok.appearance_globals == g)).any()
    assert len(drawn.unique(dim=0)) > 5
    assert torch.equal(tok.decode(ids), tok.decode(ids))
    tok.save(str(tmp_path / 'new.pt'))
    again = load_tokenizer(str(tmp_path / 'new.pt'))
    assert torch.equal(again.appearances, tok.appearances) and torch.equal(again.decode(ids), tok.decode(ids))
    with pytest.raises(ValueError, match='palette'):
        UnitTokenizer('audio', 1, (80, 80), 8, (0.0, 1.0), appearance_items=4)


def test_units_decoder_learns_to_render_its_units():
    images, mels, _ = _toy_pairs(64)
    toks = UnitTokenizer.fit_pair(images, mels, {'image': 8, 'audio': 8}, steps=2, decoder_steps=0)
    untrained = (toks['audio'].decode(toks['audio'].encode(mels)) - mels).abs().mean()
    g = torch.Generator().manual_seed(0)
    tokenizers._fit_unit_decoder(toks['audio'], toks['audio'].encode(mels), mels, g, steps=60)
    assert (toks['audio'].decode(toks['audio'].encode(mels)) - mels).abs().mean() < 0.5 * untrained


@pytest.mark.parametrize('global_codes', [0, 3])
def test_pairs_with_unit_tokenizers_train_from_their_codes(tmp_path, monkeypatch, global_codes):
    """data.py pairs --image_tokenizer units --audio_tokenizer units: one pair encoder for both,
    meta.json records them, sample/evaluate's load_tokenizers rebuilds them, train.py starts the
    embeddings from the units' centroids."""
    from functools import partial
    from test_data import make_pairs
    fit_pair = UnitTokenizer.fit_pair
    monkeypatch.setattr(UnitTokenizer, 'fit_pair', staticmethod(partial(fit_pair, steps=3, decoder_steps=3)))
    monkeypatch.setattr(data, 'UNIT_MIN_PAIRS', 0)  # units on 8 train pairs: a quick check, not a fit
    make_pairs(str(tmp_path / 'in'))
    out = str(tmp_path / 'mine')
    assert data.prepare('pairs', str(tmp_path / 'in'), out, size=32, cfg=data.MelConfig(clip_seconds=1.0, frames=80),
                        image_tokenizer='units', audio_tokenizer='units', image_codebook=8, audio_codebook=8,
                        workers=2, fit_items=16, global_codes=global_codes) == 7
    import json
    meta = json.load(open(f'{out}/meta.json'))
    assert meta['image']['grid'] == [8, 8] and meta['audio']['grid'] == [1, 10]
    assert meta['audio']['codebook_size'] == 8 + global_codes and meta['audio'].get('global_codes', 0) == global_codes
    audio = np.load(f'{out}/train_audio.npy')
    assert audio.shape[1] == (global_codes > 0) + 10 and np.load(f'{out}/train_image.npy').shape[2] == (global_codes > 0) + 64
    toks = tokenizers.load_tokenizers(meta)
    assert toks['audio'].decode(torch.from_numpy(audio[:2].astype(np.int64))).shape == (2, 1, 80, 80)
    train_tiny_from_codes(out, tmp_path / 'out')
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args']['audio_global_codes'] == ckpt['model_args']['image_global_codes'] == global_codes


def test_the_units_fit_follows_the_data_size():
    """Passes over the pairs, capped at the digits' 4,000 pairs' steps: a small folder takes seconds."""
    assert [tokenizers.unit_steps(p, 4000, b) for p, b in (('encoder', 128), ('image', 32), ('audio', 32))] == [600, 16000, 1200]
    assert [tokenizers.unit_steps(p, 300, b) for p, b in (('encoder', 128), ('image', 32), ('audio', 32))] == [45, 1200, 90]
    assert [tokenizers.unit_steps(p, 10 ** 6, b) for p, b in (('encoder', 128), ('image', 32), ('audio', 32))] == [600, 16000, 1200]


def test_global_codes_follow_the_data_and_the_classes():
    assert data.global_codes_for(4000) == data.global_codes_for(4000, 10) == 16  # the digits: as measured
    assert data.global_codes_for(4000, 20) == 20  # at least one a labelled class
    assert data.global_codes_for(300) == 4 and data.global_codes_for(10) == 2 and data.global_codes_for(10 ** 9) == 1024
    assert data._global_codes(None, 'units', 'units', 1000, 3) == 8 and data._global_codes(None, 'kmeans', 'units', 1000) == 0
    assert data._global_codes(5, 'units', 'units', 1000) == 5  # the flag wins


def test_a_small_folder_falls_back_to_kmeans_and_says_why(tmp_path, capsys):
    from test_data import make_pairs
    make_pairs(str(tmp_path / "in"))  # 14 train pairs listed, 8 of them usable
    out = str(tmp_path / 'small')
    assert data.prepare('pairs', str(tmp_path / 'in'), out, size=32, cfg=data.MelConfig(clip_seconds=1.0, frames=80),
                        image_tokenizer='units', audio_tokenizer='units', workers=1) == 7
    said = [line for line in capsys.readouterr().out.splitlines() if 'too few' in line]
    assert said == [f"{tmp_path / 'in'}: 14 train pairs are too few for semantic units (the pair encoder needs at least "
                    f"256, two batches of pairs to tell apart); fitting patch k-means codes instead"]
    import json
    meta = json.load(open(f'{out}/meta.json'))
    assert [meta[m]['tokenizer']['type'] for m in ('audio', 'image')] == ['patch_kmeans'] * 2
    assert 'global_codes' not in meta['audio'] and 'global_codes' not in meta['image']


def test_global_codes_need_units():
    with pytest.raises(ValueError, match='--global_codes 4: only unit tokenizers'):
        data.prepare('pairs', 'nowhere', 'nowhere_out', image_tokenizer='units', audio_tokenizer='kmeans', global_codes=4)
