"""
Sample from a trained Visual Echoes model (SPEC 3); every task is one call into model.py.

$ python sample.py --image cat.jpg                     # -> cat.wav, cat_mel.png (image | mel)
$ python sample.py --image cat.jpg --duration 30       # 30 s: continued window by window
$ python sample.py --audio dog.wav                     # -> dog.png, dog_mel.png
$ python sample.py --cogen --num_samples 4             # -> cogen_0.wav, cogen_0.png, cogen_0_mel.png, ...
$ python sample.py --audio x.wav --image y.jpg --inpaint 3.0:5.5   # -> x_inpaint.wav, x_inpaint_mel.png
$ python sample.py --audio x.wav --image y.jpg --duration 30       # -> x_continued.wav: x.wav, continued
The checkpoint is out/ckpt.pt (--out_dir), else the one trained out*/ckpt.pt here or in the repo. Files
go to the current directory (--output); an existing one is replaced only with --overwrite, an input never.
--steps, --temperature, --cfg, --cfg_fade and --uncond_every default to the checkpoint's sampling
settings (its config's sample_steps, sample_temperature, ...), else the paper's; what is used, and from where,
is printed.
"""
import glob, json, math, os, subprocess, sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import model as M
from data import ffmpeg_exe, load_audio, load_image
from tokenizers import (MelConfig, load_tokenizers, load_vocoder, peak_limit, splice, tensor_to_pixels, tokenized_mel,
                        tokens_to_wave)
from util import (ROOT, ArgumentParser, AtomicFiles, autocast_context, compile_for_generation, remove_dead_temporaries,
                  report_error, writable_folder, write_sound)

p = ArgumentParser(description='Visual Echoes: image->audio, audio->image, co-generation, audio inpainting')
p.add_argument('--image', nargs='+', default=[], help='condition image(s): generate their sounds')
p.add_argument('--audio', nargs='+', default=[], help='condition sound(s): generate their images')
p.add_argument('--cogen', action='store_true', help='generate image and sound pairs together')
p.add_argument('--inpaint', metavar='A:B', help='regenerate seconds A to B of --audio, guided by --image')
p.add_argument('--duration', type=float, help='seconds of sound: longer than a clip = continuation (of --audio if given)')
p.add_argument('--out_dir', default=None, help='directory holding ckpt.pt (or the file); default out, else the one out*/ckpt.pt')
p.add_argument('--output', default='.', help='directory the files are written to')
p.add_argument('--overwrite', action='store_true', help='replace existing output files (inputs are never replaced)')
p.add_argument('--num_samples', type=int, default=1, help='samples per input (pairs for --cogen)')
p.add_argument('--seed', type=int, default=1337)
p.add_argument('--steps', type=int, help='decoding iterations N (default: the checkpoint\'s, else the paper\'s 30)')
p.add_argument('--temperature', type=float, help='sampling temperature (default: the checkpoint\'s, else the paper\'s 1)')
p.add_argument('--cfg', type=float, help='guidance scale s (default: the checkpoint\'s, else the paper\'s 3; 1 = none)')
p.add_argument('--cfg_fade', type=float, help='guidance fades as the target fills: s_t = 1 + (s - 1) * share '
               'still masked ** cfg_fade (default: the checkpoint\'s, else the paper\'s 0, constant)')
p.add_argument('--choice_temperature', type=float, default=9.0, help='Gumbel noise T on confidences (paper: 9)')
p.add_argument('--uncond_every', type=int, help='run guidance\'s unconditional pass every k-th step and reuse it '
               'between (default: the checkpoint\'s, else 1: every step, the paper\'s; docs/sampling.md)')
p.add_argument('--vocoder', default='griffinlim', help='griffinlim, or a MelGAN / HiFi-GAN generator file')
p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
p.add_argument('--dtype', default='auto', help='float32, bfloat16, float16, or auto: bf16 on GPUs that have it '
               '(else float16) and on CPUs with native bf16 (else float32)')
p.add_argument('--compile', action='store_true', help='torch.compile the model for the unmasking loop')
p.add_argument('--video', action='store_true', help='also write NAME.mp4, the still image with its sound (ffmpeg)')
MAX_SECONDS = 600  # --duration cap (fixed here): 10 minutes of sound is already ~120 windows of the paper's model
# the ranges of every number sample.py and evaluate.py take (temperature 0: argmax; cfg 0: the unconditional pass)
LIMITS = dict(cfg=(0, math.inf), cfg_fade=(0, math.inf), temperature=(0, math.inf), choice_temperature=(0, math.inf),
              steps=(1, math.inf), uncond_every=(1, math.inf), seed=(0, 2 ** 63 - 1), num_samples=(1, math.inf), max_items=(0, math.inf),
              batch_size=(1, math.inf), inpaint_fraction=(0, 1))
# the paper's sampling (SPEC 3), where neither a flag nor the checkpoint says
SAMPLING = {'steps': 30, 'temperature': 1.0, 'cfg': 3.0, 'cfg_fade': 0.0, 'uncond_every': 1}
TMP = '.sample-{pid}-{name}'  # this run's temporary files in the output folder (a dead run's are removed)

@torch.no_grad()
def main(args):
    n, dur = args.num_samples, args.duration
    # ---- check the request before any work
    names, makes_wave, ctx = check_request(args)
    ffmpeg = ffmpeg_exe() if args.video else None  # raises if there is none
    ckpt_path = find_checkpoint(args.out_dir)
    model, ckpt, meta, mel_cfg, toks = load_trained(ckpt_path, args.device)
    sampling, said = sampling_settings({k: getattr(args, k) for k in SAMPLING}, ckpt, ckpt_path)  # flag, val, checkpoint, paper
    vocoder = load_vocoder(args.vocoder, mel_cfg) if makes_wave else None
    clip_s = mel_cfg.tokenized_seconds  # what one window of tokens covers
    gap = time_range(args, clip_s)
    # ---- inputs, preprocessed as in training; n samples of every condition
    images = [load_image(f, meta['image']['size']) for f in args.image]  # (3, S, S) in [-1, 1] each
    waves = [load_audio(f, mel_cfg.sample_rate, mel_cfg.clip_seconds) for f in args.audio]  # (T,) each, finite
    mels = np.stack([tokenized_mel(wv, mel_cfg) for wv in waves]).repeat(n, 0) if waves else None  # (B, n_mels, frames)
    images = torch.stack(images).to(args.device).repeat_interleave(n, dim=0) if images else None
    image_ids = toks['image'].encode(images) if images is not None else None  # (B, Lv)
    audio_ids = toks['audio'].encode(torch.from_numpy(mels)[:, None].to(args.device)) if waves else None  # (B, La)
    # ---- generate
    print(said)
    torch.manual_seed(args.seed)
    net = compile_for_generation(model, args.device) if args.compile else model
    with ctx:  # the model only: the tokenizers and the vocoder below stay float32
        audio, image = run_task(args, sampling, net, image_ids, audio_ids, toks['audio'].grid, clip_s, gap)
    # ---- tokens -> mel -> wave; tokens -> image
    if vocoder is None:  # audio->image: the given sound is shown, no wav written
        mel, wave = mels, None
    else:  # a continuation's windows cover whole token columns: cut to the duration asked for
        mel, wave = tokens_to_wave(toks['audio'], audio, mel_cfg, vocoder, seconds=dur)  # (B, n_mels, T), (B, samples)
    if wave is not None and args.audio:  # the given sound outside [a, b], the generated one inside (fixed here);
        # the vocoder's part is within full scale, a float input may not be
        wave = peak_limit(splice(np.stack(waves).repeat(n, 0), wave, *gap, mel_cfg.sample_rate))
    shown = tensor_to_pixels(images if images is not None else toks['image'].decode(image))  # (B, S, S, 3)
    span = tuple(t * mel_cfg.frames_per_second for t in gap) if args.inpaint else None  # outlined in the panel
    write_samples(args.output, names, TMP, mel_cfg.sample_rate, wave, shown, mel, shown if image is not None else None,
                  span, ffmpeg)

def check_request(args):
    """Every flag, input file and output name checked before any work. Returns the output names (one
    per sample), whether a sound is made (audio->image shows the given one) and the model's precision."""
    img_in, aud_in, n, dur = args.image, args.audio, args.num_samples, args.duration
    if args.cogen == bool(img_in or aud_in):
        raise ValueError('give --image, --audio, both (with --inpaint A:B or --duration S), or --cogen alone')
    # a sound and an image: regenerate a time range (--inpaint) or continue the sound (--duration)
    pair = bool(img_in and aud_in)
    if pair != bool(args.inpaint or aud_in and dur) or pair and (len(img_in), len(aud_in)) != (1, 1) or args.inpaint and dur:
        raise ValueError('--audio with --image needs one of each and one of --inpaint A:B or --duration S')
    if dur is not None and not (0 < dur <= MAX_SECONDS and img_in):  # (False for nan)
        raise ValueError(f'--duration {dur}: takes seconds, more than 0 and at most {MAX_SECONDS} (a cap, '
                         f'fixed here), and an --image to guide the sound')
    check_numbers({k: getattr(args, k) for k in LIMITS if getattr(args, k, None) is not None})  # the flags given
    _, ctx = autocast_context(args.device, args.dtype)  # raises on an unknown --dtype
    for f in img_in + aud_in:
        if not os.path.isfile(f):
            raise FileNotFoundError(f'{f}: no such file')
    stems = [Path(f).stem for f in (aud_in or img_in)] or ['cogen']
    if len(set(stems)) < len(stems):
        raise ValueError(f'two inputs have the same name ({" ".join(stems)}): their outputs would collide')
    suffix = '_inpaint' if args.inpaint else '_continued' if aud_in and dur else ''
    names = [s + suffix if n == 1 else f'{s}{suffix}_{j}' for s in stems for j in range(n)]
    makes_wave = bool(img_in or args.cogen)
    exts = ['.wav'] * makes_wave + ['.png'] * (not img_in) + ['_mel.png'] + ['.mp4'] * (args.video and makes_wave)
    # the output folder: writable (temporary files of killed runs removed), no input or existing file replaced
    if (out := Path(args.output)).exists() and not out.is_dir():
        raise ValueError(f'--output {out}: is a file, not a folder')
    writable_folder(out, f'--output {out}: cannot write files there')
    remove_dead_temporaries(out, TMP)
    given = {os.path.realpath(f) for f in img_in + aud_in}
    for f in (out / (name + e) for name in names for e in exts):
        if os.path.realpath(f) in given:
            raise ValueError(f'{f}: is an input and would be replaced by an output; choose another --output')
        if f.exists() and not args.overwrite:
            raise ValueError(f'{f}: exists; --overwrite replaces it, or choose another --output')
    return names, makes_wave, ctx

def time_range(args, clip_s):
    """Seconds (a, b) the generated sound fills: --inpaint A:B, a continuation's all after the clip, or None."""
    if args.inpaint:
        try:
            a, b = (float(s) for s in args.inpaint.split(':'))
        except ValueError:
            raise ValueError(f'--inpaint {args.inpaint}: expected A:B in seconds, e.g. 3.0:5.5') from None
        if not 0 <= a < b <= clip_s:
            raise ValueError(f'--inpaint {args.inpaint}: need 0 <= A < B <= {clip_s:.2f} s')
        return a, b
    if args.audio and args.duration:
        if args.duration <= clip_s:
            raise ValueError(f'--duration {args.duration}: continuing a sound needs more than one clip ({clip_s:.2f} s)')
        return clip_s, math.inf  # for splice: the given clip first
    return None

def run_task(args, sampling, net, image_ids, audio_ids, audio_grid, clip_s, gap):
    """One call into model.py per task (they differ only in which tokens start as [MASK]) -> (audio, image) ids or None."""
    h, w = audio_grid
    kw = dict(generation_settings(sampling), choice_temperature=args.choice_temperature,
              generator=torch.Generator(args.device).manual_seed(args.seed), progress=True)
    if args.inpaint:  # seconds -> token columns, one more each side: boundary tokens carry the gap
        c0, c1 = time_range_to_columns(*gap, clip_s / w, w, margin=1)
        return M.inpaint_audio(net, audio_ids, image_ids, c0, c1, **kw), None
    if args.duration and args.duration > clip_s:  # window by window, each starting with the end of the previous one
        overlap = w // 2  # half a window of context (fixed here)
        n_windows = 1 + math.ceil((args.duration - clip_s) / ((w - overlap) * clip_s / w))
        windows = M.continue_audio(net, image_ids, n_windows, overlap, first_window=audio_ids, **kw)
        return torch.cat([x[:, -h * w:].view(-1, h, w)[:, :, overlap if k else 0:] for k, x in enumerate(windows)], 2), None
    if args.image:
        return M.image_to_audio(net, image_ids, **kw), None
    if args.audio:
        return None, M.audio_to_image(net, audio_ids, **kw)
    return M.cogenerate(net, args.num_samples, device=args.device, **kw)

def check_numbers(values):
    """Every number of `values` ({name: value}) finite and within LIMITS[name], else a one-line ValueError
    naming it (argparse's float takes nan and inf). sample.py's flags and evaluate.py's settings."""
    for name, value in values.items():
        low, high = LIMITS[name]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
            raise ValueError(f'--{name} {value}: must be a finite number >= {low}' + (f' and <= {high}' if high < math.inf else ''))

CHOSEN = 'sampling.json'  # beside ckpt.pt: the sampling settings evaluate.py --choose_sampling chose on val

def sampling_settings(given, checkpoint, ckpt_path):
    """SAMPLING's settings (steps, temperature, ...): each from its flag when given, else as chosen on val for this
    checkpoint (CHOSEN beside it), else from its training config (sample_<name>: config/pairs.py sets
    the recipe's), else the paper's; checked. Returns (settings, a line saying each and where it came from)."""
    chosen_path = os.path.join(os.path.dirname(ckpt_path), CHOSEN)
    try:
        with open(chosen_path) as f:
            chosen = json.load(f)
    except FileNotFoundError:
        chosen = {}
    except (OSError, ValueError) as e:
        raise ValueError(f'{chosen_path}: not readable sampling settings ({e})') from None
    trained, settings, said = checkpoint.get('config') or {}, {}, []
    for name, paper in SAMPLING.items():
        for source, value in (('flag', given.get(name)), ('chosen on val', chosen.get(name)),
                              ('checkpoint', trained.get(f'sample_{name}')), ('paper', paper)):
            if value is not None:
                settings[name] = value
                break
        said.append(f'{name} {settings[name]:g} ({source})')
    check_numbers(settings)
    return {k: type(SAMPLING[k])(v) for k, v in settings.items()}, 'sampling: ' + ', '.join(said)

def generation_settings(sampling):
    """sampling_settings' result as model.generate's keyword arguments."""
    return dict(num_iter=sampling['steps'], temperature=sampling['temperature'], guidance_scale=sampling['cfg'],
                guidance_fade=sampling['cfg_fade'], uncond_every=sampling['uncond_every'])

def time_range_to_columns(start_s, end_s, seconds_per_column, grid_w, margin=1):
    """Audio token columns [first, last) covering a time range, widened by `margin` columns on each
    side: the boundary tokens' receptive fields overlap the gap, so they must be regenerated too."""
    if not 0 <= start_s < end_s:
        raise ValueError(f'bad time range {start_s}:{end_s} (need 0 <= start < end)')
    first = max(0, math.floor(start_s / seconds_per_column) - margin)
    last = min(grid_w, math.ceil(end_s / seconds_per_column) + margin)
    if first >= grid_w:
        raise ValueError(f'time range {start_s}:{end_s} starts after the clip ends')
    return first, last

# -----------------------------------------------------------------------------
# a trained checkpoint read back for generation (sample.py, evaluate.py)

def find_checkpoint(out_dir):
    """out_dir's ckpt.pt (or out_dir, a file), as nanoGPT; without one, out/ckpt.pt, else the one
    trained out*/ckpt.pt here or in the repo (the quick start writes out-toy/), said aloud."""
    if out_dir is not None:
        return out_dir if os.path.isfile(out_dir) else os.path.join(out_dir, 'ckpt.pt')
    if os.path.isfile(os.path.join('out', 'ckpt.pt')):
        return os.path.join('out', 'ckpt.pt')
    found = {os.path.realpath(f): os.path.normpath(f) for d in ('.', ROOT) for f in glob.glob(os.path.join(d, 'out*', 'ckpt.pt'))}
    if len(found) > 1:
        raise ValueError(f'{len(found)} trained checkpoints, choose one with --out_dir: {", ".join(sorted(found.values()))}')
    if not found:
        raise FileNotFoundError('out/ckpt.pt: no such checkpoint (train one, e.g. python train.py config/toy.py, or give --out_dir)')
    path = found.popitem()[1]
    print(f'using {path}, the only trained checkpoint (--out_dir to choose)')
    return path

def load_trained(path, device='cpu'):
    """A train.py checkpoint and what generation needs from it: (model in eval mode, checkpoint dict,
    dataset meta, MelConfig, {'audio': tokenizer, 'image': tokenizer}). The tokenizers are rebuilt
    from the copy of meta.json the checkpoint carries, the one source sample.py and evaluate.py use,
    and checked against the model's grids and codebook sizes."""
    try:
        model, ckpt = M.load_model(path, device)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as e:  # truncated file, wrong shapes: name the file, no traceback
        raise ValueError(f'{path}: cannot load the checkpoint ({type(e).__name__}: {str(e)[:200]})') from None
    meta = ckpt.get('dataset_meta')
    if not meta:
        raise ValueError(f'{path}: no dataset_meta in the checkpoint, cannot rebuild the tokenizers')
    toks = load_tokenizers(meta, device)
    for m, tok in toks.items():
        want = [ckpt['model_args'][f'{m}_{k}'] for k in ('grid_h', 'grid_w', 'codebook_size')]
        if [*tok.grid, tok.codebook_size] != want:
            raise ValueError(f'{path}: the model wants {m} grid {want[:2]} and {want[2]} codes, '
                             f'tokenizer {meta[m]["tokenizer"].get("path")} has {list(tok.grid)} and {tok.codebook_size}')
    return model, ckpt, meta, MelConfig(**meta['audio']['mel']), toks

# -----------------------------------------------------------------------------
# sample.py's files: the picture beside its mel, a still video, all written whole

# magma-like colormap, 6 anchors linearly interpolated: no matplotlib (fixed here)
MEL_COLORS = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]],
                      np.float32)

def mel_image(mel):
    """mel (n_mels, T) in [0, 1] -> a PIL image (n_mels x T) in MEL_COLORS, low frequencies at the bottom."""
    x = np.clip(mel[::-1], 0, 1) * (len(MEL_COLORS) - 1)
    i = np.minimum(x.astype(int), len(MEL_COLORS) - 2)
    f = (x - i)[..., None]
    return Image.fromarray(((1 - f) * MEL_COLORS[i] + f * MEL_COLORS[i + 1]).astype(np.uint8))

def mel_panel(image, mel, span=None, height=256):
    """image (S, S, 3) uint8 beside mel (n_mels, T) in [0, 1], both `height` px tall; span (a, b)
    in mel frames is outlined (the inpainted range). Returns a PIL image."""
    spec = mel_image(mel).resize((max(mel.shape[1], 2 * height), height), Image.BILINEAR)  # >= 2:1 for short clips
    out = Image.new('RGB', (height + 8 + spec.width, height), 'white')
    out.paste(Image.fromarray(image).resize((height, height), Image.BICUBIC), (0, 0))
    out.paste(spec, (height + 8, 0))
    if span is not None:
        a, b = (height + 8 + round(s * spec.width / mel.shape[1]) for s in span)
        ImageDraw.Draw(out).rectangle([a, 0, b - 1, height - 1], outline='white', width=2)
    return out

def still_video(ffmpeg, picture, still, wav, seconds, out):
    """sample.py's --video: an mp4 at `out`, the picture (S, S, 3) uint8 shown at 256 px (written to the
    png `still` first: toy pictures are tiny) with the sound of the file `wav`, `seconds` long (-t, as
    -shortest overshoots a looped picture). Returns whether ffmpeg succeeded."""
    Image.fromarray(picture).resize((256, 256), Image.BICUBIC).save(still, format='PNG')
    cmd = [ffmpeg, '-y', '-loglevel', 'error', '-loop', '1', '-i', str(still), '-i', str(wav), '-c:v', 'libx264',
           '-tune', 'stillimage', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-t', f'{seconds:.3f}', '-f', 'mp4', str(out)]
    return subprocess.run(cmd, capture_output=True).returncode == 0

def write_samples(folder, names, template, sr, waves, shown, mels, images=None, span=None, ffmpeg=None):
    """sample.py's files, one set per name: NAME.wav (waves (B, T), 16-bit; None: none), NAME.png
    (images, generated pictures (B, S, S, 3) uint8), NAME_mel.png (shown (B, S, S, 3) uint8 beside
    mels (B, n_mels, T), span outlined) and, given ffmpeg, NAME.mp4. Every file is written under a
    temporary name first (util.AtomicFiles(template)); all are renamed once all exist."""
    out = Path(folder)
    with AtomicFiles(template) as files:
        still = files.path(out / 'still.png', keep=False)  # the video's picture
        for j, name in enumerate(names):
            if waves is not None:
                wav = files.path(out / f'{name}.wav', f'sound, {len(waves[j]) / sr:.2f} s at {sr} Hz')
                with open(wav, 'wb') as f:
                    write_sound(f, waves[j], sr)
            if images is not None:
                Image.fromarray(images[j]).save(files.path(out / f'{name}.png', 'generated image'), format='PNG')
            mel_panel(shown[j], mels[j], span).save(files.path(out / f'{name}_mel.png', 'image | mel-spectrogram'), format='PNG')
            if ffmpeg and waves is not None and not still_video(ffmpeg, shown[j], still, wav, len(waves[j]) / sr,
                                                                files.path(out / f'{name}.mp4', 'video')):
                raise ValueError(f'ffmpeg failed to write {out / name}.mp4')
    for final, what, replaced in files.written:
        print(f'wrote {final} ({what}{"; replaced the old file, --overwrite" if replaced else ""})')

def cli(argv=None):
    """The command line: 0 on success, 2 with a one-line `error: ...` on bad input (no traceback)."""
    try:
        main(p.parse_args(argv))
    except (ValueError, FileNotFoundError) as e:
        return report_error(e)
    return 0

if __name__ == '__main__':
    sys.exit(cli())
