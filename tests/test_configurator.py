"""configurator.py: config files then --key=value overrides, type-checked; errors exit with code 2."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = open(os.path.join(ROOT, 'configurator.py')).read()


def configure(argv, monkeypatch):
    """Exec configurator.py as a script would, over a few config globals; return them."""
    scope = dict(batch_size=8, learning_rate=1e-3, compile=True, dataset='toy', init_from='scratch',
                 vocoder=None)
    monkeypatch.setattr(sys, 'argv', ['train.py'] + argv)
    exec(SOURCE, scope)
    return {k: v for k, v in scope.items() if not k.startswith('_') and k != 'sys' and k != 'literal_eval'}


def config_error(argv, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        configure(argv, monkeypatch)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err  # one clear line
    return err


def test_overrides_keep_types(monkeypatch):
    cfg = configure(['--batch_size=32', '--compile=False', '--dataset=random', "--init_from='resume'",
                     '--learning_rate=3e-4'], monkeypatch)
    assert cfg['batch_size'] == 32 and cfg['compile'] is False and cfg['learning_rate'] == 3e-4
    assert cfg['dataset'] == 'random' and cfg['init_from'] == 'resume'


def test_a_bool_key_alone_means_true(monkeypatch):
    scope_default = configure([], monkeypatch)['compile']
    assert scope_default is True and configure(['--compile=False', '--compile'], monkeypatch)['compile'] is True


def test_int_accepted_for_float(monkeypatch):
    cfg = configure(['--learning_rate=1'], monkeypatch)
    assert cfg['learning_rate'] == 1.0 and type(cfg['learning_rate']) is float


def test_str_key_takes_numbers_as_text(monkeypatch):
    assert configure(['--dataset=123'], monkeypatch)['dataset'] == '123'


def test_none_default_accepts_any_literal(monkeypatch):
    assert configure(['--vocoder=griffinlim'], monkeypatch)['vocoder'] == 'griffinlim'


def test_unknown_key(monkeypatch, capsys):
    err = config_error(['--batch_sise=4'], monkeypatch, capsys)
    assert 'unknown config key' in err and 'batch_sise' in err


def test_wrong_type(monkeypatch, capsys):
    assert 'batch_size must be int' in config_error(['--batch_size=0.5'], monkeypatch, capsys)
    assert 'compile must be bool' in config_error(['--compile=false'], monkeypatch, capsys)
    assert 'learning_rate must be float' in config_error(['--learning_rate=True'], monkeypatch, capsys)


def test_malformed_and_missing(monkeypatch, capsys):
    assert 'expected --key=value' in config_error(['--batch_size'], monkeypatch, capsys)
    assert 'cannot read config file' in config_error(['config/nope.py'], monkeypatch, capsys)


def test_config_file_then_overrides(tmp_path, monkeypatch, capsys):
    path = tmp_path / 'c.py'
    path.write_text("# a config\nbatch_size = 4\n_helper = 3  # _names are not settings\n"
                    "learning_rate = 1.5e-4 * batch_size * _helper / 256\n")
    cfg = configure([str(path), '--batch_size=16'], monkeypatch)
    assert cfg['batch_size'] == 16  # the override comes after the file
    assert cfg['learning_rate'] == pytest.approx(1.5e-4 * 12 / 256)
    path.write_text("batch_size = 4\nbatchsize = 5\n")
    assert 'unknown config key' in config_error([str(path)], monkeypatch, capsys)
    path.write_text("compile = 'yes'\n")
    assert 'compile must be bool' in config_error([str(path)], monkeypatch, capsys)


def test_shipped_configs_are_valid(monkeypatch):
    # every config/*.py sets only keys train.py knows, with the right types
    train_source = open(os.path.join(ROOT, 'train.py')).read()
    defaults = train_source.split('# ---', 2)[1]  # the config globals block of train.py
    for name in sorted(os.listdir(os.path.join(ROOT, 'config'))):
        scope = {'torch': __import__('torch')}
        exec(defaults.split('\n', 1)[1], scope)
        monkeypatch.setattr(sys, 'argv', ['train.py', os.path.join(ROOT, 'config', name)])
        exec(SOURCE, scope)
        assert scope['batch_size'] > 0, name
