"""`make compat`: do the scripts install and work on the Pythons and PaddlePaddle versions learners have?

Two axes, each cell in its own environment under .compat/:
  Python: every Python 3.9-3.13 found (pyenv's ~/.pyenv/versions/3.X.*, else python3.X on PATH; or
    --pythons) with the PINNED install, `pip install -r requirements.txt` (its paddlepaddle: 3.3.1).
  PaddlePaddle: on one Python (3.10, AI Studio's; --paddle-python) paddlepaddle==V for each of
    --versions, with requirements.txt's other packages at whatever versions pip picks for it.
In each, on the synthetic fixture in a scratch folder: import; train the CNN 2 epochs; resume from
epoch 0 with --compare (bit-identical losses); --predict on a PNG; every file compiled by that Python;
and the golden run (tests/golden/cnn_fixture.json's args) against that file, as tests/goldens.py
compares: == against the entry recorded in the cell's environment (this CPU, the cell's Python, numpy
and paddle), else within goldens.TOLERANCE of the nearest entry, and the cell's line says which. A
cell whose paddle version no entry has (2.6.2, 3.0.0, 3.2.2 until recorded) is compared with the
nearest entry and only reported, not failed; --record-golden adds each cell's values as an entry,
so that later runs compare those cells == too.
Prints the Python x PaddlePaddle matrix (pass / FAIL (reason) / not run (reason)); writes .compat/matrix.json.

    python tests/compat.py                                   # 3.9-3.13 pinned + 2.6.2 3.0.0 3.2.2 on 3.10
    python tests/compat.py --pythons ~/.pyenv/versions/3.9.18/bin/python --versions   # one Python only
    python tests/compat.py --pythons --versions 2.6.2        # the PaddlePaddle axis only
    python tests/compat.py --versions 3.2.2 --paddle-python /usr/bin/python3.10
    python tests/compat.py --record-golden                   # also add every cell's golden entry
"""
import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import fixtures  # noqa: E402
import goldens  # noqa: E402
from conftest import script_env  # noqa: E402

MINORS = ['3.9', '3.10', '3.11', '3.12', '3.13']
GOLDEN = goldens.GOLDEN_DIR / goldens.RUNS['cnn']['file']
CHECKS = ['install', 'import', 'train 2 epochs', 'resume ==', '--predict', 'compile', 'golden']


def python_version(exe):
    try:
        out = subprocess.run([exe, '-c', 'import sys; print("%d.%d" % sys.version_info[:2])'],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_pythons(given):
    """{'3.9': path or None, ...}: the given interpreters, else the newest pyenv patch, else python3.X."""
    if given is not None:
        return {python_version(exe): exe for exe in given if python_version(exe)}
    found = {}
    for minor in MINORS:
        pyenv = sorted(glob.glob(os.path.expanduser(f'~/.pyenv/versions/{minor}.*/bin/python{minor}')),
                       key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split('.')])
        candidates = pyenv[::-1] + [shutil.which(f'python{minor}')]
        found[minor] = next((c for c in candidates if c and python_version(c) == minor), None)
    return found


def environment(folder, name, python, pip_args):
    """A venv folder/name with pip_args installed (redone when they or requirements.txt change) -> (python, error)."""
    spec = ' '.join(pip_args) + ((ROOT / 'requirements.txt').read_text() if '-r' in pip_args else '')
    env_dir = folder / name
    py, stamp = env_dir / 'bin' / 'python', hashlib.sha256(spec.encode()).hexdigest()
    if (env_dir / '.installed').exists() and (env_dir / '.installed').read_text() == stamp:
        return py, None
    shutil.rmtree(env_dir, ignore_errors=True)
    subprocess.run([python, '-m', 'venv', str(env_dir)], check=True)
    proc = subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--disable-pip-version-check', *pip_args],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith('ERROR')] or ['pip failed']
        return None, errors[0][:160]
    (env_dir / '.installed').write_text(stamp)
    return py, None


def run(py, args, cwd):
    proc = subprocess.run([str(py), *map(str, args)], cwd=cwd, env=script_env(cwd), capture_output=True, text=True,
                          timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


def last_line(output):
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else 'no output'


def golden_diff(losses, golden):
    """(relative difference, text): 0 and 'identical' when ==, else the largest difference."""
    if losses == golden:
        return 0.0, f'identical ({len(golden)} losses ==)'
    if len(losses) != len(golden):
        return float('inf'), f'{len(losses)} losses, golden {len(golden)}'
    ours, theirs = np.array(losses), np.array(golden)
    diff = np.abs(ours - theirs)
    rel = float((diff / np.abs(theirs)).max())
    return rel, f'max |diff| {diff.max():.3g} (rel {rel:.3g}) in {int((diff > 0).sum())}/{len(golden)} losses'


def golden_check(metrics, found, golden):
    """('ok' or the reason it failed, the text for the report, the cell's environment): the cell's
    golden run compared as goldens.compare does (== against the entry of its environment, else the
    tolerance, saying which)."""
    here = dict(goldens.environment(), **{k: found.get(k) for k in ('python', 'numpy', 'paddle')})
    _, diff = golden_diff(metrics['batch_losses'], goldens.nearest_entry(golden, here)['batch_losses'])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', goldens.ToleranceWarning)  # said below
            how = goldens.compare('cnn', metrics, here, golden)
    except AssertionError as error:
        if any(entry['environment'].get('paddle') == here['paddle'] for entry in golden['entries']):
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            return ' '.join(lines[:2])[:300], f'FAILED: {diff}', here
        return 'ok', (f'{diff}; no entry has paddle {here["paddle"]}: compared with the nearest entry '
                      f'(beyond its tolerance), reported, not checked; --record-golden records it'), here
    if how == 'exact':
        return 'ok', f'== the entry of this environment ({len(metrics["batch_losses"])} losses)', here
    nearest = goldens.nearest_entry(golden, here)['environment']
    differ = goldens.differing_fields(nearest, here)
    return 'ok', (f'{diff} against the nearest entry, {goldens.describe(nearest)} (differs: '
                  f'{", ".join(differ)}); no entry of this environment, so checked within rtol '
                  f'{goldens.TOLERANCE[True]:g}'), here


def check(py, work):
    """{check: 'ok' or the reason it failed}, the versions found, the golden comparison's text and the
    cell's golden entry (None when its run failed)."""
    data = fixtures.write_idx_folder(str(work / 'data'))
    images, labels = fixtures.synthetic_digits(200, seed=2)  # a 3 as a user's scan: dark ink on white, 56x56
    image = work / 'digit.png'
    Image.fromarray(255 - images[list(labels).index(3)]).resize((56, 56)).save(image)
    result = {'install': 'ok'}
    rc, out = run(py, ['-c', f'import sys; sys.path.insert(0, {str(ROOT)!r}); import common, numpy, paddle; '
                             f'print("versions:", sys.version.split()[0], numpy.__version__, paddle.__version__)'], work)
    result['import'] = 'ok' if rc == 0 else last_line(out)
    versions = next((line.split()[1:] for line in out.splitlines() if line.startswith('versions: ')), [])
    found = dict(zip(('python', 'numpy', 'paddle'), versions))  # (paddle's import warns on stderr)
    rc, out = run(py, [ROOT / 'mnist_cnn.py', '--data-dir', data, '--epochs', '2', '--log-every', '1000'], work)
    result['train 2 epochs'] = 'ok' if rc == 0 else last_line(out)
    rc, out = run(py, [ROOT / 'resume.py', '--ckpt', 'checkpoint/mnist_epoch0', '--compare', 'runs/cnn/metrics.json'],
                  work)
    result['resume =='] = 'ok' if rc == 0 and 'bit-identical' in out else last_line(out)
    rc, out = run(py, [ROOT / 'mnist_cnn.py', '--predict', image], work)
    result['--predict'] = 'ok' if rc == 0 and 'predicted digit:' in out else last_line(out)
    files = sorted(map(str, [*ROOT.glob('*.py'), *(ROOT / 'tools').glob('*.py'), *HERE.glob('*.py')]))
    rc, out = run(py, ['-c', 'import ast, sys; [ast.parse(open(f, encoding="utf-8").read(), f) for f in sys.argv[1:]]',
                       *files], work)
    result['compile'] = 'ok' if rc == 0 else last_line(out)
    golden = goldens.load('cnn')
    gold_dir = work / 'golden'
    gold_dir.mkdir()
    rc, out = run(py, [ROOT / 'mnist_cnn.py', '--data-dir', data, *golden['args']], gold_dir)
    if rc != 0:
        result['golden'], text, entry = last_line(out), 'run failed', None
    else:
        metrics = json.loads((gold_dir / 'runs' / 'cnn' / 'metrics.json').read_text())
        result['golden'], text, here = golden_check(metrics, found, golden)
        entry = goldens.entry('cnn', metrics, here)
    return result, found, text, entry


def cell(checks):
    failed = [(c, checks[c]) for c in CHECKS if c in checks and checks[c] != 'ok']
    return 'pass' if not failed else f'FAIL ({failed[0][0]}: {failed[0][1]})'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pythons', nargs='*', help='interpreters for the Python axis (default: 3.9-3.13 found)')
    parser.add_argument('--versions', nargs='*', default=['2.6.2', '3.0.0', '3.2.2'],
                        help='paddlepaddle versions for the PaddlePaddle axis (the pinned one is the Python axis)')
    parser.add_argument('--paddle-python', help='the Python of the PaddlePaddle axis (default: the 3.10 found)')
    parser.add_argument('--folder', default=str(ROOT / '.compat'))
    parser.add_argument('--record-golden', action='store_true',
                        help=f'add each cell\'s golden values to {GOLDEN.relative_to(ROOT)} as the entry of its '
                             f'environment (as `make golden` does for .venv)')
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(exist_ok=True)
    requirements = (ROOT / 'requirements.txt').read_text().splitlines()
    pinned = next(line.split('==')[1].split(';')[0].strip() for line in requirements
                  if line.startswith('paddlepaddle=='))
    pythons = find_pythons(args.pythons)
    axis_python = args.paddle_python or find_pythons(None).get('3.10')
    axis_minor = python_version(axis_python) if axis_python else None
    jobs = [(minor, pinned, exe, f'py{minor}-pinned', ['-r', str(ROOT / 'requirements.txt')])
            for minor, exe in pythons.items() if exe]
    others = sorted({re.split(r'[\s=<>!~;\[]', line)[0] for line in requirements if line.strip()[:1].isalpha()}
                    - {'paddlepaddle'})  # unpinned: the versions pip picks for that paddle
    jobs += [(axis_minor, v, axis_python, f'py{axis_minor}-paddle-{v}', [f'paddlepaddle=={v}', *others])
             for v in args.versions if axis_python and v != pinned]
    rows = []
    for minor, version, exe, name, pip_args in jobs:
        start = time.perf_counter()
        py, error = environment(folder, name, exe, pip_args)
        if py:
            with tempfile.TemporaryDirectory() as tmp:
                checks, found, golden, entry = check(py, Path(tmp))
            if args.record_golden and entry is not None:
                content, how = goldens.merge('cnn', goldens.load('cnn'), entry, entry['environment'])
                GOLDEN.write_text(json.dumps(content, indent=1) + '\n')
                golden += f'; recorded: {how}'
        else:
            checks, found, golden = {'install': error}, {}, 'not run'
        rows.append({'python': minor, 'paddlepaddle': version, 'interpreter': exe, 'found': found, 'checks': checks,
                     'golden': golden, 'cell': cell(checks), 'seconds': round(time.perf_counter() - start)})
        print(f'Python {minor} / paddlepaddle {version}: {rows[-1]["cell"]}; golden {golden}; {found} '
              f'({rows[-1]["seconds"]} s)', flush=True)
    (folder / 'matrix.json').write_text(json.dumps(rows, indent=1))

    versions = [pinned] + [v for v in args.versions if v != pinned]
    cells = {(r['python'], r['paddlepaddle']): r['cell'] for r in rows}
    print(f'\n| Python | {" | ".join(f"paddlepaddle {v}" + (" (pinned)" if v == pinned else "") for v in versions)} |')
    print('|---|' + '---|' * len(versions))
    for minor in sorted({*MINORS, *(m for m in pythons if m)}, key=lambda m: tuple(map(int, m.split('.')))):
        line = []
        for v in versions:
            if (minor, v) in cells:
                line.append(cells[(minor, v)])
            elif v == pinned:
                line.append(f'not run (no Python {minor} found)' if args.pythons is None
                            else 'not run (not in --pythons)')
            else:
                line.append(f'not run (PaddlePaddle axis on Python {axis_minor} only)' if axis_minor
                            else 'not run (no Python 3.10 for the PaddlePaddle axis)')
        print(f'| {minor} | ' + ' | '.join(line) + ' |')
    print(f'\ngolden ({GOLDEN.relative_to(ROOT)}):')
    for r in rows:
        print(f'  Python {r["python"]} / paddlepaddle {r["paddlepaddle"]} (numpy {r["found"].get("numpy", "?")}): '
              f'{r["golden"]}')
    return 0 if rows and all(r['cell'] == 'pass' for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
