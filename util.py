"""
The plumbing every script shares: one-line errors for bad input, files written whole or not at all,
torch.load without unpickling, paths found from any directory, and the precision (autocast) and
compilation the scripts run the model with. Nothing here knows about the method.
"""
import argparse
import errno
import io
import os
import shutil
import pickle
import re
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import soundfile as sf
import torch


class AtomicFiles:
    """Files written whole or not at all, as a group: `with AtomicFiles() as files:` hands out
    files.path(final), a temporary name beside `final` (template: '{name}.tmp{pid}'); when the block
    ends without an error every temporary is renamed to its final name (files.written lists them),
    on an error none is, and the temporaries are removed. A killed process leaves its temporaries,
    named by its pid: remove_dead_temporaries removes them later."""
    def __init__(self, template='{name}.tmp{pid}'):
        self.template, self.pending, self.written = template, [], []  # written: (final, note, replaced)

    def __enter__(self):
        return self

    def path(self, final, note='', keep=True):
        """The temporary path to write `final` under; note says what it holds. keep=False: a scratch
        file, removed at the end, never renamed."""
        final = Path(final)
        tmp = final.with_name(self.template.format(name=final.name, pid=os.getpid()))
        self.pending.append((tmp, final if keep else None, note))
        return tmp

    def __exit__(self, _, error, __):
        try:
            for tmp, final, note in self.pending if error is None else []:
                if final is not None:
                    self.written.append((final, note, final.exists()))
                    os.replace(tmp, final)
        except OSError as e:  # a rename refused (a read-only folder, say)
            error = e
            raise
        finally:  # on any failure, no partial outputs
            for tmp, _, _ in self.pending:
                tmp.unlink(missing_ok=True)
            cause = machine_write_error(error)
            if cause is not None:  # the machine's fault, not the data's: one line, no traceback
                raise WriteError(f"{self.failed_file(cause)}: cannot write it ({cause.strerror}); the file there "
                                 f"before, if any, is unchanged") from None

    def failed_file(self, cause):
        """The final name of the file whose write failed: the one the OSError names, else the last asked for."""
        named = [final for tmp, final, _ in self.pending if str(tmp) == cause.filename and final is not None]
        finals = [final for _, final, _ in self.pending if final is not None]
        return (named or finals or [cause.filename])[-1]

# write failures that are the machine's, not the data's: a full disk, a quota, no permission, read-only
MACHINE_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS)

class WriteError(ValueError):
    """A file the project writes could not be written for the machine's reason (MACHINE_WRITE_ERRNOS):
    every script reports it as one `error: ...` line, as it does bad input."""

def machine_write_error(error):
    """The OSError of MACHINE_WRITE_ERRNOS in `error` or its chain, or None. torch.save wraps the
    file's own error in a RuntimeError ('unexpected pos ...') whose context holds it."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in MACHINE_WRITE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None

def write_sound(f, wave, sample_rate, subtype='PCM_16', format='WAV'):
    """A sound into the open file f, through memory: libsndfile writing to a path loses a full disk's
    errno ('System error.'), and given a file object it prints every failed write; Python's keeps it."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, subtype=subtype, format=format)
    f.write(buffer.getvalue())

def write_atomic(path, write, mode='wb'):
    """write(f) into a temporary file beside `path`, then rename it to `path`: a killed or failed
    write never leaves half a file (the temporary is removed on any error)."""
    with AtomicFiles() as files, open(files.path(path), mode) as f:
        write(f)

def remove_dead_temporaries(folder, template):
    """The temporary files AtomicFiles(template) left in `folder` for a process that is gone (a
    SIGKILL runs no clean-up), removed. The template must start with a prefix, then '{pid}-'."""
    prefix = template.split('{pid}')[0]
    for f in Path(folder).glob(prefix + '*'):
        m = re.match(re.escape(prefix) + r'(\d+)-', f.name)
        if m and not process_alive(int(m[1])):
            f.unlink(missing_ok=True)

def process_alive(pid):
    """Whether a process with this id runs (on this machine)."""
    try:
        os.kill(pid, 0)  # signal 0: is there such a process
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True

def report_error(e):
    """Every script's answer to bad input: one `error: ...` line on stderr, no traceback. Returns
    the exit code, 2."""
    print('error: ' + ' '.join(str(e).split()), file=sys.stderr)
    return 2

def exit_with_error(e):
    sys.exit(report_error(e))

class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one `error: ...` line and exit code 2, like every other bad
    input (no usage block); `hint` ends each message."""
    def __init__(self, *args, hint='', **kwargs):
        super().__init__(*args, **kwargs)
        self.hint = hint

    def error(self, message):
        exit_with_error(message + self.hint)

def writable_folder(folder, error):
    """`folder` made (with its parents) and a file written there and removed: an output that cannot
    be written is a one-line ValueError (`error`, then the reason) before any work."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise ValueError(f'{error} ({e.strerror})') from None

ROOT = os.path.dirname(os.path.abspath(__file__))  # the repo root

def repo_path(path):
    """`path` when it exists from the current directory (or is absolute), else the same path under the
    repo root: the scripts find data/, out*/ and tokenizer files from any directory."""
    if os.path.isabs(path) or os.path.exists(path) or os.path.abspath(path) == os.path.join(ROOT, path):
        return path
    return os.path.join(ROOT, path)

def torch_load(path):
    """torch.load(weights_only=True) with one-line errors that tell a truncated or corrupt file from
    a whole one that holds pickled objects (only the latter can be fixed by re-saving its tensors)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        # the weights-only unpickler names the class it refused ("Unsupported global: GLOBAL x.Y"); any
        # other failure (a zip without its directory, random bytes, EOF) means the bytes are damaged
        refused = re.search(r'GLOBAL ([\w.]+)', str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if refused is None:
            first = re.split(r'(?<=\w)\. ', str(e).strip())[0][:100]  # its first sentence
            why = f"{type(e).__name__}: {first}" if first else type(e).__name__
            raise ValueError(f"{path}: truncated or corrupt, not a readable torch file ({why}); "
                             f"download or copy it again") from None
        raise ValueError(f"{path}: holds a pickled {refused[1]}, which weights_only=True refuses; if you trust "
                         f"the file, keep only its tensors: torch.save(torch.load(path, weights_only=False)"
                         f"['state_dict'], 'model.ckpt')") from None


# ----------------------------------------------------------------------------------------------
# precision and compilation: one helper each for train.py, sample.py, evaluate.py and bench.py

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def cpu_has_native_bf16():
    """AVX512_BF16 or AMX: the CPU multiplies bf16 in hardware, about twice its float32 rate (bench.py:
    407 vs 179 GFLOP/s on the reference machine). Elsewhere bf16 matmuls are emulated (not measured
    here; assumed no faster than float32)."""
    return any(getattr(torch.cpu, f, lambda: False)() for f in ('_is_avx512_bf16_supported', '_is_amx_tile_supported'))


def autocast_context(device, dtype='auto', cpu_auto='bfloat16'):
    """Returns (dtype name, context to run the model in). 'auto': bf16 on GPUs that have it, else
    float16; on a CPU with native bf16 `cpu_auto` (generation: bf16, measured faster by bench.py;
    train.py passes float32), float32 on other devices. float32 runs plain; bf16 and float16 run
    under torch.autocast: weights, the residual stream and the norms stay float32, matmuls and
    attention run in the low precision. The sampler's logits arithmetic (guidance, log_softmax,
    Gumbel noise, confidences) is float32 whatever the dtype (guided_logits, unmask_step)."""
    device_type = torch.device(device).type
    if dtype == 'auto':
        if device_type == 'cuda':
            dtype = 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        else:
            dtype = cpu_auto if device_type == 'cpu' and cpu_has_native_bf16() else 'float32'
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', not {dtype!r}")
    if device_type == 'cuda':  # TF32 tensor cores for what stays float32 (10-bit mantissa products)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if dtype == 'float32':
        return dtype, nullcontext()
    return dtype, torch.amp.autocast(device_type=device_type, dtype=DTYPES[dtype])


def compile_for_generation(model, device):
    """torch.compile of the model for the unmasking loop. Every step calls it with the same shapes
    (B sequences, 2B with guidance: the conditional and unconditional passes are one batch), so it
    compiles once per batch size; dynamic=False keeps fixed-shape kernels. Where compile cannot run
    (no C++ compiler for CPU kernels, an unsupported Python) it warns and returns the model."""
    cxx = [os.environ.get('CXX'), 'g++', 'clang++', 'c++']  # inductor builds CPU kernels with one
    if not torch._dynamo.is_dynamo_supported():
        why = f'torch.compile does not support Python {sys.version.split()[0]} here'
    elif torch.device(device).type == 'cpu' and not any(c and shutil.which(c) for c in cxx):
        why = 'no C++ compiler found for CPU kernels (set CXX)'
    else:
        return torch.compile(model, dynamic=False)
    print(f'warning: compile skipped: {why}; running eagerly', file=sys.stderr)
    return model
