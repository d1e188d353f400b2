"""util.py: files written whole or not at all, and a write the machine refuses (a full disk, a quota,
no permission, a read-only disk) reported as one line naming the file."""
import errno
import io
import os

import pytest
import torch

import util


class FullDisk(io.RawIOBase):
    """A file whose disk fills up after `room` bytes: ENOSPC arrives mid-write."""

    def __init__(self, f, room=1024):
        self.f, self.room = f, room

    def writable(self):
        return True

    def write(self, b):
        self.room -= len(b)
        if self.room < 0:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return self.f.write(b)


def test_write_atomic_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / 'x.txt'
    util.write_atomic(str(path), lambda f: f.write('whole'), 'w')
    assert path.read_text() == 'whole'

    def half(f):
        f.write('half')
        raise RuntimeError('killed mid-write')
    with pytest.raises(RuntimeError):
        util.write_atomic(str(path), half, 'w')
    assert path.read_text() == 'whole' and os.listdir(tmp_path) == ['x.txt']


def test_a_full_disk_under_torch_save_is_one_line_naming_the_file(tmp_path):
    """torch.save hides the file's ENOSPC in a RuntimeError ('unexpected pos'): found in its chain."""
    path = tmp_path / 'ckpt.pt'
    util.write_atomic(str(path), lambda f: torch.save({'w': torch.ones(3)}, f))
    with pytest.raises(util.WriteError) as e:
        util.write_atomic(str(path), lambda f: torch.save({'w': torch.zeros(10_000)}, FullDisk(f)))
    assert str(e.value) == f'{path}: cannot write it (No space left on device); the file there before, if any, is unchanged'
    assert torch.equal(torch.load(path, weights_only=True)['w'], torch.ones(3))  # the old file, whole
    assert os.listdir(tmp_path) == ['ckpt.pt']  # no temporary left


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS])
def test_every_machine_write_error_is_a_write_error_and_others_are_not(tmp_path, code):
    def refused(f):
        raise OSError(code, os.strerror(code))
    with pytest.raises(util.WriteError, match=rf'^{tmp_path}/a.wav: cannot write it \({os.strerror(code)}\)'):
        util.write_atomic(str(tmp_path / 'a.wav'), refused)
    with pytest.raises(OSError) as e:  # a bug's error (here EBADF) is not dressed up as the machine's
        util.write_atomic(str(tmp_path / 'a.wav'), lambda f: os.close(-1))
    assert not isinstance(e.value, util.WriteError) and os.listdir(tmp_path) == []


def test_write_sound_keeps_the_errno_that_libsndfile_loses(tmp_path):
    """A sound written through write_sound meets a full disk as OSError(ENOSPC), so as a WriteError."""
    with pytest.raises(util.WriteError, match='No space left on device'):
        util.write_atomic(str(tmp_path / 's.wav'), lambda f: util.write_sound(FullDisk(f), torch.zeros(22050).numpy(), 22050))
    assert os.listdir(tmp_path) == []


def test_report_error_is_one_line(capsys):
    assert util.report_error(ValueError('x.wav: not a sound\n   (expected a wav)')) == 2
    assert capsys.readouterr().err == 'error: x.wav: not a sound (expected a wav)\n'
