# Metric math and the PANNs / VGGish networks against the golden fixtures of
# tests/fixtures/metrics (see its README.md: weights filled by a formula of key name and shape).
import hashlib
import json
import math
import os
import sys
import zlib

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import evaluate as ev  # noqa: E402

D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "metrics")
EXPECTED = json.load(open(os.path.join(D, "metrics_expected.json")))
CNN14_SHA = "e1ff8f7740ac30dee04d1aad857858e1eee9f81d0edd4eff0652514487b88aad"
VGGISH_SHA = "68b466a649fab726f23f78f5b43613b8630f04a3e24f6e5a4c9dcdbff833a22d"


def load(name):
    return np.load(os.path.join(D, name))


def fixture_tensor(key, shape, dtype=torch.float32):
    """The README's weight formula, verbatim."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    shape = tuple(int(s) for s in shape)
    f64 = torch.float64
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        w = torch.randn(shape, generator=g, dtype=f64) * (1.0 / math.sqrt(fan_in))
    elif key.endswith("running_var"):
        w = 1.0 + 0.1 * torch.rand(shape, generator=g, dtype=f64)
    elif key.endswith("running_mean"):
        w = 0.1 * torch.randn(shape, generator=g, dtype=f64)
    elif key.endswith(".weight"):
        w = 1.0 + 0.1 * torch.randn(shape, generator=g, dtype=f64)
    else:
        w = 0.1 * torch.randn(shape, generator=g, dtype=f64)
    return w.to(dtype)


def fixture_state(net, manifest, cache=None, frontend=("spectrogram_extractor.", "logmel_extractor.")):
    """net's state_dict filled by the formula; checks keys, order, shapes and the README checksum."""
    sd, man = net.state_dict(), json.load(open(os.path.join(D, manifest)))
    assert list(sd) == [k for k, _, _ in man]
    sha = hashlib.sha256()
    for key, shape, dtype in man:
        assert list(sd[key].shape) == shape and str(sd[key].dtype) == "torch." + dtype, key
        if dtype == "float32" and not key.startswith(frontend):
            sd[key] = cache[key] if cache else fixture_tensor(key, shape)
            sha.update(sd[key].numpy().tobytes())
    return sd, sha.hexdigest()


def close(got, want, rel=1e-5):  # README: max |error| <= 1e-5 * max |expected|
    got = got.detach().numpy() if torch.is_tensor(got) else got
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= rel * np.abs(want).max()

# ----------------------------------------------------------------------------- metric math

def test_frechet_distance_fixtures():
    fd = EXPECTED["frechet_distance_fd_sets"]
    a, b = load("fd_set_a.npy"), load("fd_set_b.npy")
    assert ev.frechet_distance(a, b) == pytest.approx(fd["panns_fd_float32_inputs"], rel=1e-12)
    assert ev.frechet_distance(a.astype(np.float64), b.astype(np.float64)) == pytest.approx(
        fd["panns_fd_float64_inputs"], rel=1e-12)
    small = ev.frechet_distance(load("fd_small_a.npy"), load("fd_small_b.npy"))  # singular covariances
    assert small == pytest.approx(fd["rank_deficient_small_sets"], rel=5e-9)


def test_frechet_distance_hand_checkable():
    x = np.random.RandomState(0).randn(300, 8).astype(np.float32)
    assert abs(ev.frechet_distance(x, x)) < 1e-9  # identical sets
    shift = np.arange(8, dtype=np.float32) / 4
    assert ev.frechet_distance(x + shift, x) == pytest.approx(float(shift @ shift), rel=1e-5)  # |shift|^2
    assert ev.frechet_distance(x[:5], x[5:12]) >= 0  # fewer rows than dimensions still works


def test_inception_score():
    want = EXPECTED["inception_score"]
    logits = load("is_kl_logits_gen.npy")
    assert ev.inception_score(logits) == pytest.approx(want["shuffle_seed2020_splits10"], rel=1e-12)
    assert ev.inception_score(logits, splits=1)[0] == pytest.approx(want["no_shuffle_splits1"][0], rel=1e-12)
    assert list(np.random.RandomState(2020).permutation(50)) == want["permutation_seed2020_n50"]
    # hand-checkable: confident and evenly spread over C classes -> C; all alike -> 1
    assert ev.inception_score(100 * np.eye(7), splits=1)[0] == pytest.approx(7, rel=1e-6)
    assert ev.inception_score(np.ones((20, 7)))[0] == pytest.approx(1.0)


def test_paired_kl():
    g, r = load("is_kl_logits_gen.npy"), load("is_kl_logits_ref.npy")
    assert ev.paired_kl(g, r) == pytest.approx(EXPECTED["kl"]["kl_softmax"], rel=1e-6)
    assert ev.paired_kl(g, r, "sigmoid") == pytest.approx(EXPECTED["kl"]["kl_sigmoid"], rel=1e-6)
    assert abs(ev.paired_kl(r, r)) < 1e-4  # identical -> 0 up to the 1e-6 offset

# ----------------------------------------------------------------------------- loader

@pytest.mark.parametrize("rate", [16000, 32000])
def test_loader(rate):
    x = ev.load_eval_audio(os.path.join(D, "loader_input_44k1_stereo.wav"), rate)
    close(x, load(f"loader_expected_{rate // 1000}k.npy"))
    wave = torch.zeros(33075)  # the file's length at 44.1 kHz
    assert len(ev.sinc_resample(wave, 44100, rate)) == EXPECTED["loader"][f"{rate // 1000}k_len_before_pad"]


def test_loader_bad_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    with pytest.raises(ValueError, match="bad.wav"):
        ev.load_eval_audio(str(bad), 16000)

# ----------------------------------------------------------------------------- networks

def check_cnn14(net, k):
    close(net.logmel_extractor.melW, load(k + "melW.npy"), rel=1e-6)
    embeddings, logits = [], []
    with torch.no_grad():
        for clip in "ab":
            wave = torch.from_numpy(load(k + f"input_{clip}.npy"))[None]
            close(net.logmel(wave)[0, 0], load(k + f"logmel_{clip}.npy"))
            e, l = net(wave)
            embeddings.append(e[0])
            logits.append(l[0])
    close(torch.stack(embeddings), load(k + "embedding.npy"))
    close(torch.stack(logits), load(k + "logits.npy"))
    close(torch.stack(logits).sigmoid(), load(k + "sigmoid.npy"))


def test_cnn14():
    net = ev.Cnn14(16000)
    sd, sha = fixture_state(net, "cnn14_16k_manifest.json")
    assert sha == CNN14_SHA
    net.load_state_dict(sd, strict=True)  # the public files carry exactly these keys
    check_cnn14(net.eval(), "cnn14_16k_")
    # 32 kHz: the same formula tensors, only the front-end differs, so swap it in rather than
    # building and filling 80M weights again
    net.spectrogram_extractor, net.logmel_extractor = ev.Spectrogram(1024, 320), ev.LogMel(32000, 1024, 14000)
    sd32, sha = fixture_state(net, "cnn14_32k_manifest.json", cache=sd)
    assert sha == CNN14_SHA
    net.load_state_dict(sd32, strict=True)
    check_cnn14(net.eval(), "cnn14_32k_")


def test_vggish():
    net = ev.VGGish()
    sd, sha = fixture_state(net, "vggish_manifest.json")
    assert sha == VGGISH_SHA
    net.load_state_dict(sd, strict=True)
    net.eval()
    outs = []
    with torch.no_grad():
        for clip in "ab":
            examples = ev.vggish_examples(load(f"cnn14_16k_input_{clip}.npy"))
            close(examples[:, 0], load(f"vggish_examples_{clip}.npy"))
            outs.append(net(examples))
            close(outs[-1], load(f"vggish_embedding_{clip}.npy"))
    close(torch.cat(outs), load("vggish_embedding_all.npy"))


def test_missing_metric_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="Cnn14_16k_mAP=0.438.pth.*zenodo"):
        ev.load_metric_net("panns16k", str(tmp_path / "nope.pth"))
