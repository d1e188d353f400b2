"""report.py: the evaluation page rendered by a real headless browser (Chromium), its gallery pages,
missing and corrupt files, the command line; train.py's eval log across a SIGKILL and a resume.
The tiny toy model is tests/conftest.py's, shared with tests/test_evaluate.py (trained once)."""
import html
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'tests')]
import evaluate  # noqa: E402
import report  # noqa: E402
from conftest import N  # noqa: E402
from test_evaluate import RUN, configure  # noqa: E402
from test_train import ENV, start, tiny_args, wait_for, write_token_dataset  # noqa: E402

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')  # Debian's package is `chromium` (.ci/run installs it)


@pytest.fixture(scope='module')
def results(tiny_toy, tmp_path_factory):
    """The folder of a tiny evaluation (every task, N items; in-process, in an out_dir of its own, so
    that tests/test_evaluate.py's runs do not touch it) and its metrics.json."""
    out = tmp_path_factory.mktemp('report') / 'out'
    out.mkdir()
    for name in ('ckpt.pt', 'log.jsonl', 'curves.png'):  # what train.py left
        shutil.copy(tiny_toy / 'out' / name, out / name)
    configure(tiny_toy, out_dir=str(out), cfg=None, temperature=None)
    evaluate.main()
    return out / RUN, json.loads((out / RUN / 'metrics.json').read_text())


def copied(run, tmp_path):
    """The results folder copied elsewhere: the page must stand alone (relative links only)."""
    shutil.copytree(run, tmp_path / 'copy')
    return tmp_path / 'copy'


def browser():
    """The headless browser; none installed is a failure, never a skip (a missing browser must not pass)."""
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.fail('no Chromium found (apt-get install -y chromium, as .ci/run does): the report cannot be checked')
    return found


def chromium(*args):
    cmd = [browser(), '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


# the test-only harness: the report's page with this script added, the shipped page has none. Once every
# player has its metadata (or failed) and every picture has loaded (or failed), it writes what the
# browser made of them and of each metric cell into the page, which --dump-dom then prints.
CHECK = '''<script>
const settled = el => new Promise(done => {
  if (el.tagName === 'AUDIO' ? el.readyState >= 1 || el.error : el.complete) return done();
  for (const e of ['loadedmetadata', 'load', 'error']) el.addEventListener(e, done);
});
const media = [...document.querySelectorAll('audio, img')];
Promise.all(media.map(settled)).then(() => {
  const out = document.createElement('pre');
  out.id = 'browser-check';
  out.textContent = JSON.stringify({
    audio: [...document.querySelectorAll('audio')].map(a => [a.getAttribute('src'), a.duration, a.error && a.error.code]),
    img: [...document.querySelectorAll('img')].map(i => [i.getAttribute('src'), i.naturalWidth]),
    metrics: [...document.querySelectorAll('[data-metric]')].map(c => [c.dataset.metric, c.dataset.value, c.textContent]),
  });
  document.body.appendChild(out);
});
</script></body>'''


def rendered(page):
    """What Chromium made of `page` (a file of the results folder) once its media had settled."""
    harness = page.with_name('_browser_check.html')  # beside it: the same relative links
    harness.write_text(page.read_text().replace('</body>', CHECK))
    dom = chromium('--virtual-time-budget=30000', '--dump-dom', harness.as_uri())  # no flags a reader's browser lacks
    harness.unlink()
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', dom, re.S)
    assert found, 'the harness never reported: some media never loaded nor failed\n' + dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_the_report_in_a_real_browser(results, tmp_path):
    run, metrics_json = results
    metrics = metrics_json['metrics']
    folder = copied(run, tmp_path)  # elsewhere: nothing may point back at the original folder
    index = folder / 'index.html'
    assert '<script' not in index.read_text()  # the shipped page has no script
    seen = rendered(index)
    # every player and picture loads: no broken media
    # per item 6 players and 11 pictures: i2a 2 + 3 (a mel picture under every player), a2i 1 + 3, cogen
    # 1 + 2, inpaint 2 + 3; and the training curves
    assert (len(seen['audio']), len(seen['img'])) == (6 * N, 11 * N + 1), seen
    for src, duration, error in seen['audio']:
        assert error is None and duration is not None and duration > 0, (src, duration, error)
    for src, width in seen['img']:
        assert width > 0, src
    # the numbers in the page are metrics.json's: every metric shown, to 4 places, with its exact value
    assert {k for k, _, _ in seen['metrics']} == set(metrics)
    for key, value, text in seen['metrics']:
        assert value == repr(metrics[key]) and float(text) == pytest.approx(metrics[key], abs=5e-5, nan_ok=True), key
    # the ceilings beside an accuracy: the probe on the real test items and on round trips
    assert re.search(r'data-metric="i2a_acc".*?data-metric="probe_audio_acc_real".*?data-metric="probe_audio_acc_roundtrip"',
                     index.read_text())
    # a screenshot that is not blank (the README's, with WRITE_DOCS_SCREENSHOT=1)
    shot = tmp_path / 'report.png'
    chromium('--window-size=1200,2200', f'--screenshot={shot}', index.as_uri())  # down to the first gallery
    pixels = np.asarray(Image.open(shot).convert('RGB'))
    assert pixels.shape == (2200, 1200, 3) and pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100
    if os.environ.get('WRITE_DOCS_SCREENSHOT') == '1':
        shutil.copy(shot, REPO / 'docs' / 'report.png')


class Links(HTMLParser):
    """Every src and href of a page."""
    def __init__(self, text):
        super().__init__()
        self.links = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ('src', 'href')]


def assert_links_resolve(folder):
    """Every link of every page is relative and names a file that is there: no broken page."""
    for page in folder.glob('*.html'):
        for link in Links(page.read_text()).links:
            assert not re.match(r'[a-z]+:|/', link), (page.name, link)
            assert (folder / link).is_file(), (page.name, link)


def test_a_long_split_gets_pages(results, tmp_path, monkeypatch):
    run, _ = results
    folder = copied(run, tmp_path)
    monkeypatch.setattr(report, 'FIRST', 1)
    monkeypatch.setattr(report, 'PAGE', 2)
    written = report.write_pages(str(folder))
    assert {Path(p).name for p in written} == {'index.html', *(f'{t}-{p}.html' for t in report.TASKS for p in (1, 2))}
    index = (folder / 'index.html').read_text()
    assert index.count('<audio') == 6 and 'href="i2a-2.html"' in index  # one item per task: 2 + 1 + 1 + 2 sounds
    assert (folder / 'i2a-2.html').read_text().count('<audio') == 2 * (N - 2)  # the last item's, and its real sound's
    assert_links_resolve(folder)


def test_missing_and_corrupt_files_are_named(results, tmp_path, capsys):
    """A damaged folder still gives a whole page, naming each missing or unreadable file (report.py's
    command line, on its own); bad input to the command is one line and exit code 2."""
    run, _ = results
    folder = copied(run, tmp_path)
    (folder / 'i2a' / 'test00001.wav').unlink()
    (folder / 'a2i' / 'test00002.png').write_bytes(b'not a picture')
    (folder / 'cogen' / '00000.wav').write_bytes(b'RIFF....WAVEfmt garbage')
    (folder / 'items.json').write_text('{"ids": [')  # cut short: the ids and labels come from the dataset
    assert report.cli([str(folder)]) == 0
    assert f'wrote {folder / "index.html"} and 0 gallery pages' in capsys.readouterr().out
    index = (folder / 'index.html').read_text()
    assert 'missing: i2a/test00001.wav' in index
    assert re.search(r'unreadable \([^)]*\): a2i/test00002.png', index)
    assert re.search(r'unreadable \([^)]*\): cogen/00000.wav', index)
    assert 'items.json: cannot read it' in index and '<h2 class="problem">4 problems</h2>' in index
    assert index.count('<tr><td>1<br>') == 4 and index.count('<tr><td>3<br>') == 4  # every item of every task
    assert_links_resolve(folder)
    for bad, says in ((tmp_path / 'nowhere', 'metrics.json: no such file'),
                      (folder, r'metrics.json: cannot read it \(JSONDecodeError: .*\)'),
                      (folder, 'metrics.json: not a JSON object')):
        if bad == folder:  # first cut short, then a list
            (folder / 'metrics.json').write_text('{"metrics": ' if 'JSONDecode' in says else '[1, 2]')
        assert report.cli([str(bad)]) == 2
        assert re.fullmatch(rf'error: {bad}/{says}[^\n]*\n', capsys.readouterr().err)


def log_steps(out):
    return [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]


def test_the_training_log_survives_a_kill_and_a_resume(tmp_path):
    """train.py killed between two evals (SIGKILL: no clean-up) and resumed: the log continues, its
    steps strictly increasing, none lost nor repeated, whatever the dead process logged after its last
    checkpoint dropped; the curves picture is redrawn at the next evals."""
    import torch
    data, out = write_token_dataset(tmp_path / 'data'), tmp_path / 'out'
    args = tiny_args(data, str(out), eval_interval=4, gradient_accumulation_steps=1)
    proc = start(args)
    wait_for(proc, r'^iter 5:')  # after the eval at step 4
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(out / 'ckpt.pt', weights_only=True)['iter_num']
    before, curves = log_steps(out), (out / 'curves.png').read_bytes()
    assert 4 <= killed_at < 40 and [r['step'] for r in before][:2] == [0, 4]
    with open(out / 'log.jsonl', 'a') as f:  # as if the dead process had logged past its checkpoint
        f.write(json.dumps({'step': killed_at + 1, 'made_up': True}) + '\n')
    r = subprocess.run([sys.executable, '-u', 'train.py', *args, '--init_from=resume'], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    after = log_steps(out)
    assert [r['step'] for r in after] == list(range(0, 41, 4))  # every eval once, in order
    assert after[:len([b for b in before if b['step'] < killed_at])] == [b for b in before if b['step'] < killed_at]
    assert not any('made_up' in r for r in after)
    last = after[-1]
    assert after[1]['lr'] > 0 and last['time'] > after[0]['time']
    for split in ('train', 'val'):  # loss per modality, accuracy beside the majority code
        assert {'audio', 'image', 'audio_acc', 'audio_majority', 'image_acc', 'image_majority'} <= set(last[split])
    gain = last['cross_modal_gain']
    assert set(gain) == {'audio', 'image'} and all(math.isfinite(v) for v in gain.values())
    assert (out / 'curves.png').read_bytes() != curves
    assert Image.open(out / 'curves.png').size == (3 * report.PANEL_W, report.PANEL_H)
