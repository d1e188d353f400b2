"""
Look and listen: an evaluation as a page in the browser, and the training curves as a picture.

$ python report.py out-toy/eval_test_s3_n30_T9_t1_seed1337_griffinlim   # rewrites its index.html

evaluate.py calls write_pages(run) at the end of every evaluation. index.html in the results folder
shows the settings, the metrics with their ceilings beside each accuracy, the accuracy per class and,
per task, a gallery: the condition, the generated result, the real counterpart, the label and each
probe's verdict. A long split shows its first FIRST items and links to pages of PAGE items. Plain
HTML and CSS, no script, relative links only: it works from file:// and when the folder is copied
elsewhere (the real items, the mel pictures and the training curves are copied into it).
train.py calls log_eval at every eval: out_dir/log.jsonl (one JSON line per eval) and
out_dir/curves.png, drawn with Pillow (no matplotlib).
"""
import functools
import html
import json
import math
import os
import sys
import time
from urllib.parse import quote

import soundfile as sf
from PIL import Image, ImageDraw, ImageFont

from tokenizers import MelConfig, mel_spectrogram
from util import ArgumentParser, AtomicFiles, report_error, write_atomic

# -----------------------------------------------------------------------------
# the training log: one JSON line per eval, rewritten whole at each, and its curves

LOG, CURVES = 'log.jsonl', 'curves.png'  # in train.py's out_dir


def read_log(out_dir, until):
    """The records of out_dir/log.jsonl up to step `until`: a resumed run drops what a killed
    process logged after its last checkpoint, which the resumed run logs again."""
    try:
        with open(os.path.join(out_dir, LOG)) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:  # not JSON (edited by hand?): dropped, a log never stops a resume
            continue
    return [r for r in records if isinstance(r, dict) and r.get('step', math.inf) <= until]


def finite(x):
    """x with every NaN or infinity (an eval with no masked token) as None: strict JSON has no NaN."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    return None if isinstance(x, float) and not math.isfinite(x) else x


def log_eval(out_dir, records, step, lr, evals):
    """train.py's eval at `step` (evals: estimate_loss's {'train': {...}, 'val': {...}}) added to
    records, replacing any of the same or a later step (an eval rerun after a resume); then
    log.jsonl and curves.png rewritten whole (temporary file + rename). Returns the records."""
    gain = {m: evals['val'][f'{m}_alone'] - evals['val'][f'{m}_given'] for m in ('audio', 'image')}
    record = finite({'step': step, 'time': round(time.time(), 3), 'lr': lr, **evals, 'cross_modal_gain': gain})
    records = [r for r in records if r['step'] < step] + [record]
    text = ''.join(json.dumps(r) + '\n' for r in records)
    write_atomic(os.path.join(out_dir, LOG), lambda f: f.write(text), 'w')
    write_atomic(os.path.join(out_dir, CURVES), lambda f: draw_curves(records).save(f, format='PNG'))
    return records


AUDIO, IMAGE = ('#c2410c', '#fdba74'), ('#1d4ed8', '#93c5fd')  # (dark, light) colour of each modality
PANELS = [  # title, then each line: label, where in a record (split, key), colour
    ('masked-token loss (nats)', [
        ('train audio', ('train', 'audio'), AUDIO[1]), ('val audio', ('val', 'audio'), AUDIO[0]),
        ('train image', ('train', 'image'), IMAGE[1]), ('val image', ('val', 'image'), IMAGE[0])]),
    ('val masked-token accuracy', [
        ('audio', ('val', 'audio_acc'), AUDIO[0]), ('majority code', ('val', 'audio_majority'), AUDIO[1]),
        ('image', ('val', 'image_acc'), IMAGE[0]), ('majority code', ('val', 'image_majority'), IMAGE[1])]),
    ('cross-modal gain (nats; 0: ignored)', [
        ('audio', ('cross_modal_gain', 'audio'), AUDIO[0]), ('image', ('cross_modal_gain', 'image'), IMAGE[0])]),
]
PANEL_W, PANEL_H, MARGIN = 400, 330, 48  # px: each panel, and the room left of and under its plot for labels


@functools.lru_cache
def font(size):
    try:
        return ImageFont.load_default(size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()  # else Pillow's small bitmap font, one size


def text(draw, x, y, words, size=11, align=0.0, fill='#4b5563'):
    """words at (x, y), moved left by `align` times their width (0: left, 0.5: centred, 1: right)."""
    draw.text((x - align * draw.textlength(words, font=font(size)), y), words, fill=fill, font=font(size))


def draw_curves(records):
    """The log's curves, three panels side by side: loss per modality, accuracy beside the majority
    code, cross-modal gain. Returns a PIL image."""
    out = Image.new('RGB', (PANEL_W * len(PANELS), PANEL_H), 'white')
    draw = ImageDraw.Draw(out)
    for i, (title, lines) in enumerate(PANELS):
        series = [(label, colour, [(r['step'], r.get(split, {}).get(key)) for r in records
                                   if r.get(split, {}).get(key) is not None])  # None: not measured (NaN)
                  for label, (split, key), colour in lines]
        draw_panel(draw, i * PANEL_W, title, series)
    return out


def draw_panel(draw, left, title, series):
    """One panel at x = left: its title, a frame with the first and last step and three values
    marked, each series as a line with dots, and the legend under it."""
    x0, y0, x1, y1 = left + MARGIN, 24, left + PANEL_W - 12, PANEL_H - 70  # the plot's frame
    text(draw, x0, 4, title, size=14, fill='black')
    draw.rectangle([x0, y0, x1, y1], outline='#9ca3af')
    steps = [s for _, _, pts in series for s, _ in pts]
    values = [v for _, _, pts in series for _, v in pts]
    if not values:
        return
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)
    lo, hi = min(values), max(values)
    lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)  # one value: a band around it

    def xy(s, v):  # a (step, value) point -> pixels
        return x0 + (s - s0) / (s1 - s0) * (x1 - x0), y1 - (v - lo) / (hi - lo) * (y1 - y0)
    for f in (0, 0.5, 1):  # three values up the left side, the first and last step along the bottom
        text(draw, x0 - 4, xy(s0, lo + f * (hi - lo))[1] - 6, f'{lo + f * (hi - lo):.3g}', align=1)
    for s in sorted({s0, max(steps)}):
        text(draw, xy(s, lo)[0], y1 + 4, f'{s}', align=0.5)
    text(draw, (x0 + x1) / 2, y1 + 4, 'step', align=0.5)
    for k, (label, colour, pts) in enumerate(series):
        pixels = [xy(s, v) for s, v in pts]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for x, y in pixels:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
        lx, ly = x0 + (k % 2) * (x1 - x0) // 2, y1 + 24 + (k // 2) * 18  # the legend: two columns
        draw.rectangle([lx, ly + 3, lx + 14, ly + 11], fill=colour)
        text(draw, lx + 20, ly, label, size=12, fill='black')

# -----------------------------------------------------------------------------
# the evaluation page

PAGE = 40  # items per gallery page: a long split gets pages, none with thousands of players
FIRST = 8  # items of each task on index.html; the rest are a link away
TASKS = {  # task -> title, the condition shown, the result, the real counterpart ('sound' / 'picture')
    'i2a': ('image → audio', ['picture'], ['sound'], ['sound']),
    'a2i': ('audio → image', ['sound'], ['picture'], ['picture']),
    'cogen': ('co-generation (no condition: do the sound and the picture agree?)', [], ['sound', 'picture'], []),
    'inpaint': ('audio inpainting (the middle of the real sound regenerated, guided by the picture)', ['picture'],
                ['sound'], ['sound']),
}
EXT = {'sound': '.wav', 'picture': '.png'}
FIGURES = [  # task, figure, title, the modality whose ceilings apply (the probes judge its files)
    ('i2a', 'acc', 'image → audio', 'audio'), ('a2i', 'acc', 'audio → image', 'image'),
    ('inpaint', 'acc', 'inpainting', 'audio'), ('cogen', 'agreement', 'co-generation agreement', None)]
JUDGES = [  # a judge, its metric ({t}: task, {f}: figure) and its ceilings ({m}: modality): real test items, round trips
    ('CNN probe', '{t}_{f}', 'probe_{m}_acc_real', 'probe_{m}_acc_roundtrip'),
    ('feature probe', '{t}_{f}_features', 'probe_{m}_acc_real_features', 'probe_{m}_acc_roundtrip_features'),
    ('lower of the two', '{t}_{f}_lower', 'probe_{m}_acc_real_lower', 'probe_{m}_acc_roundtrip_lower'),
    ('analytic probe', '{t}_probe_{f}', 'real_probe_agreement', '')]  # the toy's: one ceiling for all
STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#111}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #d1d5db;padding:4px 8px;vertical-align:top;text-align:left}td.n{text-align:right}
img.pic{width:128px;image-rendering:pixelated}img.mel{width:220px;height:80px;display:block}audio{width:220px}
.right{color:#15803d}.wrong{color:#b91c1c}.problem{color:#b91c1c;font-weight:bold}nav a{margin-right:.5em}
.row{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start}h2{margin:.8em 0 .3em}"""


def esc(x):
    return html.escape(str(x))  # every text and attribute value goes through here


def href(rel):  # a file of the results folder as a relative URL (an id may hold spaces, '#', '?')
    return esc(quote(rel.replace(os.sep, '/')))


def table(header, rows):
    """An HTML table from header texts (None: no header) and rows of cells that are HTML already."""
    head = '<tr>' + ''.join(f'<th>{esc(h)}</th>' for h in header) + '</tr>' if header else ''
    return f'<table>{head}' + ''.join('<tr>' + ''.join(cells) + '</tr>' for cells in rows) + '</table>'


def td(x):
    return f'<td>{x}</td>'


def number(metrics, key):
    """A metric's cell: shown to 4 places, its exact value and name in data-* attributes (machine-checkable)."""
    if key not in metrics:
        return '<td>-</td>'
    v = metrics[key]
    shown = f'{v:.4f}' if isinstance(v, (int, float)) else esc(v)
    return f'<td class="n" data-metric="{esc(key)}" data-value="{esc(repr(v))}">{shown}</td>'


def save(path, write, mode='wb'):
    """util.write_atomic into path's folder, made first (real/, mel/<task>/)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, write, mode)


def read_json(path, what):
    """A JSON object from path; a missing or unreadable file is a ValueError naming it."""
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError:
        raise ValueError(f'{path}: no such file ({what})') from None
    except (OSError, ValueError) as e:
        raise ValueError(f'{path}: cannot read it ({type(e).__name__}: {e})') from None
    if not isinstance(value, dict):
        raise ValueError(f'{path}: not a JSON object ({what})')
    return value


def mel_picture(wave, cfg):
    """A sound (T,) as its mel-spectrogram in sample.py's colours, low frequencies at the bottom."""
    from sample import mel_image  # imported here: train.py imports this file, and sample.py imports data.py
    return mel_image(mel_spectrogram(wave, cfg))


class Media:
    """The results folder's files as HTML: a sound as a player above its mel picture (mel/..., drawn
    once), a picture as an <img>; the real items put into real/ from the dataset. A missing or
    unreadable file becomes a line naming it, and is listed in `problems`."""

    def __init__(self, run, data_dir, split, mel):
        self.run, self.data_dir, self.split, self.mel, self.problems = run, data_dir, split, mel, []

    def problem(self, rel, why):
        self.problems.append((rel, why))
        return f'<div class="problem">{esc(why)}: {esc(rel)}</div>'

    def generated(self, kind, rel):
        return self.sound(rel) if kind == 'sound' else self.picture(rel)

    def real(self, kind, item):
        """The real item `item` of the split, put into real/ so the folder stands alone: a hard link
        to the dataset's file (no second copy on disk; copying the folder copies the file), else a copy."""
        rel = os.path.join('real', item + EXT[kind])
        source = os.path.join(self.data_dir, f"{self.split}_{'wav' if kind == 'sound' else 'frame'}", item + EXT[kind])
        path = os.path.join(self.run, rel)
        if not os.path.exists(path) and os.path.isfile(source):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                os.link(source, path)  # all or nothing, as a rename
            except OSError:  # another file system, or one without links
                with open(source, 'rb') as f:
                    data = f.read()
                save(path, lambda out: out.write(data))
        return self.generated(kind, rel)

    def sound(self, rel):
        path, mel = os.path.join(self.run, rel), os.path.join('mel', os.path.splitext(rel)[0] + '.png')
        if not os.path.exists(path):
            return self.problem(rel, 'missing')
        mel_path, picture = os.path.join(self.run, mel), None
        try:
            info = sf.info(path)
            if info.frames == 0:
                raise ValueError('no samples')
            if not os.path.exists(mel_path) or os.path.getmtime(mel_path) < os.path.getmtime(path):  # drawn once
                wave = sf.read(path, dtype='float32', always_2d=True)[0][:, 0]  # channel 0
                picture = mel_picture(wave, MelConfig(**self.mel) if self.mel else MelConfig(sample_rate=info.samplerate))
        except (RuntimeError, ValueError, OSError) as e:  # libsndfile's errors are RuntimeErrors
            return self.problem(rel, f'unreadable ({" ".join(str(e).split())[:120]})')
        if picture is not None:  # outside the try: a full disk is the machine's error (util.WriteError), not the file's
            save(mel_path, lambda f: picture.save(f, format='PNG'))
        return f'<audio controls preload="metadata" src="{href(rel)}"></audio><img class="mel" src="{href(mel)}" alt="mel">'

    def picture(self, rel):
        path = os.path.join(self.run, rel)
        if not os.path.exists(path):
            return self.problem(rel, 'missing')
        try:
            with Image.open(path) as im:
                im.verify()  # the whole file read and checked (its CRCs), not only the header
        except (OSError, SyntaxError, ValueError) as e:
            return self.problem(rel, f'unreadable ({" ".join(str(e).split())[:120]})')
        return f'<img class="pic" src="{href(rel)}" alt="picture">'


def class_name(classes, c):
    return classes[c] if classes and isinstance(c, int) and 0 <= c < len(classes) else str(c)


def verdicts(task, k, judged, classes):
    """What each probe made of item k: the class it judged (cogen: the sound's and the picture's), ✓ or ✗."""
    lines = []
    for judge, tasks in judged.items():
        if task not in tasks:
            continue
        if k >= min(len(tasks[task]['predicted']), len(tasks[task]['wanted'])):
            continue  # an items.json of fewer items than the folder holds
        p, w = tasks[task]['predicted'][k], tasks[task]['wanted'][k]
        mark = '<span class="right">✓</span>' if p == w else '<span class="wrong">✗</span>'
        said = (f'sound {esc(class_name(classes, p))}, picture {esc(class_name(classes, w))}' if task == 'cogen'
                else esc(class_name(classes, p)))
        lines.append(f'{esc(judge)}: {said} {mark}')
    return '<br>'.join(lines) or '-'


def gallery(task, indices, media, items):
    """The items `indices` of a task as a table: condition, result, real counterpart, label, verdicts."""
    _, shown_condition, shown_result, shown_real = TASKS[task]
    ids, labels, classes = items['ids'], items.get('labels') or [], items.get('classes')
    rows = []
    for k in indices:
        stem = f'{k:05d}' if task == 'cogen' else ids[k]  # evaluate.py's file names
        condition = ''.join(media.real(kind, ids[k]) for kind in shown_condition) or 'none'
        result = ''.join(media.generated(kind, os.path.join(task, stem + EXT[kind])) for kind in shown_result)
        real = ''.join(media.real(kind, ids[k]) for kind in shown_real) or '-'
        label = class_name(classes, labels[k]) if k < len(labels) and labels[k] is not None and task != 'cogen' else '-'
        rows.append([td(f'{k + 1}<br>{esc(stem)}'), td(condition), td(result), td(real), td(esc(label)),
                     td(verdicts(task, k, items.get('judged', {}), classes))])
    return table(['#', 'condition', 'generated', 'real', 'label', 'judged as'], rows)


def page_links(task, n_pages, current=None):
    links = [f'<b>{p}</b>' if p == current else f'<a href="{href(f"{task}-{p}.html")}">{p}</a>'
             for p in range(1, n_pages + 1)]
    return '<nav>pages: ' + ' '.join(links) + '</nav>'


def document(title, body):
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n')


def accuracy_table(metrics):
    """Each task's accuracy by each judge, its ceilings beside it: the probe on the real test items
    and on tokenizer round trips (what a perfect generator could reach through these tokenizers).
    Returns the HTML and the metrics it shows."""
    rows, shown = [], set()
    for judge, name, real, roundtrip in JUDGES:
        for task, figure, title, modality in FIGURES:
            key = name.format(t=task, f=figure)
            if key not in metrics:
                continue
            ceilings = [c.format(m=modality) if c and (modality or '{m}' not in c) else '' for c in (real, roundtrip)]
            rows.append([td(esc(title)), td(esc(judge)), number(metrics, key), *(number(metrics, c) for c in ceilings)])
            shown |= {key, *ceilings}
    header = ['task', 'judge', 'generated', 'ceiling: real test items', 'ceiling: round trips']
    return (table(header, rows) if rows else '<p>No class accuracy (no probe for this dataset).</p>'), shown


def per_class_table(items):
    """Accuracy per class of each labelled task by each judge (where the split has labels)."""
    labels, classes = items.get('labels') or [], items.get('classes')
    if not labels or None in labels:
        return '<p>No labels: no accuracy per class.</p>'
    columns = [(judge, task, judged['predicted']) for judge, tasks in items.get('judged', {}).items()
               for task, judged in tasks.items() if task != 'cogen' and len(judged['predicted']) == len(labels)]
    rows = []
    for c in sorted(set(labels)):
        mine = [k for k, label in enumerate(labels) if label == c]
        hits = [sum(predicted[k] == c for k in mine) for _, _, predicted in columns]
        rows.append([td(esc(class_name(classes, c))), f'<td class="n">{len(mine)}</td>',
                     *(f'<td class="n">{h / len(mine):.2f} ({h}/{len(mine)})</td>' for h in hits)])
    return table(['class', 'items', *(f'{TASKS[task][0].split(" (")[0]}, {judge}' for judge, task, _ in columns)], rows)


def training_curves(run, out_dir):
    """out_dir's curves.png and log.jsonl (train.py's) copied into the folder; their HTML."""
    for name in (CURVES, LOG):
        if out_dir and os.path.isfile(os.path.join(out_dir, name)):
            with open(os.path.join(out_dir, name), 'rb') as f:
                data = f.read()
            write_atomic(os.path.join(run, name), lambda out: out.write(data))
    if not os.path.isfile(os.path.join(run, CURVES)):
        return f'<p>No training curves: no {esc(os.path.join(out_dir, CURVES))} (train.py draws it at each eval).</p>'
    return (f'<p><img src="{href(CURVES)}" alt="training curves" style="max-width:100%"><br>'
            f'<a href="{href(LOG)}">{LOG}</a>: one JSON line per eval</p>')


def problem_list(problems, shown=50):
    if not problems:
        return ''
    more = [f'and {len(problems) - shown} more'] if len(problems) > shown else []
    return (f'<h2 class="problem">{len(problems)} problems</h2><ul>'
            + ''.join(f'<li>{esc(p)}</li>' for p in problems[:shown] + more) + '</ul>')


def summary(report, problems):
    """The top of index.html: what was evaluated and how, what is wrong with the folder, the metrics."""
    metrics = report['metrics']
    accuracy, shown = accuracy_table(metrics)
    data = f"{report.get('data_dir', '?')}, split {report.get('split', '?')}, {report.get('n_items', '?')} items"
    facts = [('checkpoint', report.get('checkpoint', '?')), ('data', data), *report.get('settings', {}).items()]
    settings = table(None, [[td(esc(k)), td(esc(v))] for k, v in facts])
    others = table(['metric', 'value'], [[td(esc(k)), number(metrics, k)] for k in metrics if k not in shown])
    return (problem_list(problems) + f'<div class="row"><div><h2>Settings</h2>{settings}</div>'  # side by side
            f'<div><h2>Other metrics</h2>{others}</div></div><h2>Accuracy and its ceilings</h2>{accuracy}')


def task_section(task, media, items, pages):
    """A task's part of index.html: its first FIRST items and links to the rest, whose gallery
    pages of PAGE items are added to `pages` (file name -> HTML)."""
    n, title = len(items['ids']), TASKS[task][0]
    n_pages = -(-n // PAGE) if n > FIRST else 0  # a short split is all on index.html
    for p in range(1, n_pages + 1):
        links = page_links(task, n_pages, p)
        pages[f'{task}-{p}.html'] = document(f'{title}, page {p}', (
            f'<p><a href="index.html">back to the report</a></p><h1>{esc(title)}</h1>{links}'
            + gallery(task, range((p - 1) * PAGE, min(p * PAGE, n)), media, items) + links))
    more = f'<p>The first {FIRST} of {n} items; all of them:</p>' + page_links(task, n_pages) if n_pages else ''
    return f'<h2>{esc(title)}</h2>{more}' + gallery(task, range(min(n, FIRST)), media, items)


def read_results(run):
    """metrics.json (a ValueError naming it if it cannot be read) and items.json (if it cannot, a
    note, and the items as the dataset has them: no verdicts). Returns report, items, notes."""
    report = read_json(os.path.join(run, 'metrics.json'), 'not a results folder of evaluate.py?')
    if not isinstance(report.get('metrics'), dict):
        raise ValueError(f"{os.path.join(run, 'metrics.json')}: no metrics in it")
    try:
        items, notes = read_json(os.path.join(run, 'items.json'), 'evaluate.py writes it; run it again'), []
    except ValueError as e:
        items, notes = items_from_dataset(run, report), [str(e)]
    return report, items, notes


def items_from_dataset(run, report):
    """Without items.json: the split's ids, labels and classes from the dataset's meta.json, as
    evaluate.py read them (no verdicts); without the dataset, the ids are the names of the files."""
    try:
        meta = read_json(os.path.join(str(report.get('data_dir')), 'meta.json'), 'the dataset')
        split, n = meta['splits'][report['split']], report['n_items']
        return {'ids': [str(i) for i in split['ids'][:n]], 'labels': (split.get('labels') or [None] * n)[:n],
                'classes': meta.get('classes'), 'mel': meta['audio'].get('mel')}
    except (ValueError, KeyError, TypeError, AttributeError):
        folder = os.path.join(run, 'i2a' if os.path.isdir(os.path.join(run, 'i2a')) else 'a2i')
        return {'ids': sorted(os.path.splitext(f)[0] for f in os.listdir(folder)) if os.path.isdir(folder) else []}


def write_pages(run):
    """index.html and the gallery pages of evaluate.py's results folder `run`, from its metrics.json,
    items.json and the files on disk, all written at once. Returns the paths, index.html last."""
    report, items, notes = read_results(run)
    tasks = [t for t in str(report.get('settings', {}).get('tasks', ','.join(TASKS))).split(',') if t in TASKS]
    media = Media(run, str(report.get('data_dir', '')), str(report.get('split', 'test')), items.get('mel'))
    pages = {}
    sections = [task_section(task, media, items, pages) for task in tasks]  # first: they find the problems
    name = os.path.basename(os.path.abspath(run))
    problems = notes + [f'{why}: {rel}' for rel, why in media.problems]
    body = [f'<h1>Visual Echoes evaluation: {esc(name)}</h1>', summary(report, problems),
            '<h2>Accuracy per class</h2>', per_class_table(items),
            '<h2>Training</h2>', training_curves(run, os.path.dirname(str(report.get('checkpoint', '')))), *sections]
    pages['index.html'] = document(f'Evaluation {name}', '\n'.join(body))
    with AtomicFiles() as files:  # all pages or none: never a page linking to one not yet written
        for page, text in pages.items():
            with open(files.path(os.path.join(run, page)), 'w', encoding='utf-8') as f:
                f.write(text)
    return [os.path.join(run, page) for page in pages]


def cli(argv=None):
    """The command line: 0 on success; bad input (no folder, a missing or unreadable metrics.json, a
    folder that cannot be written) is one `error: ...` line and 2."""
    p = ArgumentParser(description='rewrite index.html (and its gallery pages) of an evaluate.py results folder')
    p.add_argument('run', help='a results folder: out_dir/eval_<split>_<settings>')
    run = p.parse_args(argv).run
    t0 = time.perf_counter()
    try:
        written = write_pages(run)
    except ValueError as e:
        return report_error(e)
    print(f'wrote {written[-1]} and {len(written) - 1} gallery pages in {time.perf_counter() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(cli())
