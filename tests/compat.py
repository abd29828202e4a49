"""`make compat`: do the scripts work with the PaddlePaddle versions learners have?

For each version: a side environment .compat/paddle-VERSION on Python 3.10 (AI Studio's), with that
paddlepaddle plus matplotlib and pillow at whatever versions pip picks for it; then, on the
synthetic fixture, in a scratch folder: import, train the CNN 2 epochs, resume from epoch 0 with
--compare (bit-identical losses), --predict on a PNG, and every file byte-compiled by Python 3.10.
Prints the matrix as a Markdown table (the README's) and writes .compat/matrix.json.

    python tests/compat.py                       # 2.6.2 3.0.0 3.2.2 3.3.1
    python tests/compat.py --versions 3.2.2 --python /usr/bin/python3.10
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import fixtures  # noqa: E402
from conftest import script_env  # noqa: E402

CHECKS = ['import', 'train 2 epochs', 'resume ==', '--predict', 'py3.10 compile']


def find_python310(given):
    candidates = [given] if given else ['python3.10'] + sorted(glob.glob(os.path.expanduser('~/.pyenv/versions/3.10*/bin/python3.10')))
    for candidate in candidates:
        try:
            out = subprocess.run([candidate, '--version'], capture_output=True, text=True)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.startswith('Python 3.10'):
            return candidate
    sys.exit('error: no Python 3.10 found (AI Studio\'s version); pass --python /path/to/python3.10')


def environment(version, python, folder):
    env_dir = folder / f'paddle-{version}'
    py = env_dir / 'bin' / 'python'
    if not (env_dir / '.installed').exists():
        shutil.rmtree(env_dir, ignore_errors=True)
        subprocess.run([python, '-m', 'venv', str(env_dir)], check=True)
        proc = subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
                               f'paddlepaddle=={version}', 'matplotlib', 'pillow'], capture_output=True, text=True)
        if proc.returncode != 0:
            return None, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'pip failed'
        (env_dir / '.installed').touch()
    return py, None


def run(py, args, cwd):
    proc = subprocess.run([str(py), *map(str, args)], cwd=cwd, env=script_env(cwd), capture_output=True, text=True,
                          timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


def last_line(output):
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ''


def check(py, work):
    """{check: 'ok' or the reason it failed}, and the versions found."""
    data = fixtures.write_idx_folder(str(work / 'data'))
    from test_cli import digit_png
    image = digit_png(work / 'digit.png', label=3)
    result = {}
    rc, out = run(py, ['-c', f'import sys; sys.path.insert(0, {str(ROOT)!r}); import common, numpy, paddle; '
                             f'print(sys.version.split()[0], numpy.__version__, paddle.__version__)'], work)
    result['import'] = 'ok' if rc == 0 else last_line(out)
    versions = out.strip().splitlines()[-1].split() if rc == 0 else ['?', '?', '?']
    rc, out = run(py, [ROOT / 'mnist_cnn.py', '--data-dir', data, '--epochs', '2', '--log-every', '1000'], work)
    result['train 2 epochs'] = 'ok' if rc == 0 else last_line(out)
    rc, out = run(py, [ROOT / 'resume.py', '--ckpt', 'checkpoint/mnist_epoch0', '--compare', 'runs/cnn/metrics.json'], work)
    result['resume =='] = 'ok' if rc == 0 and 'bit-identical' in out else last_line(out)
    rc, out = run(py, [ROOT / 'mnist_cnn.py', '--predict', image], work)
    result['--predict'] = 'ok' if rc == 0 and 'predicted digit:' in out else last_line(out)
    rc, out = run(py, ['-m', 'py_compile', *sorted(map(str, ROOT.glob('*.py'))), *sorted(map(str, HERE.glob('*.py')))], work)
    result['py3.10 compile'] = 'ok' if rc == 0 else last_line(out)
    return result, dict(zip(('python', 'numpy', 'paddle'), versions))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--versions', nargs='+', default=['2.6.2', '3.0.0', '3.2.2', '3.3.1'])
    parser.add_argument('--python', help='a Python 3.10 interpreter (default: python3.10, else pyenv\'s)')
    parser.add_argument('--folder', default=str(ROOT / '.compat'))
    args = parser.parse_args()
    python, folder = find_python310(args.python), Path(args.folder)
    folder.mkdir(exist_ok=True)
    rows = []
    for version in args.versions:
        start = time.perf_counter()
        py, error = environment(version, python, folder)
        with tempfile.TemporaryDirectory() as tmp:
            result, found = check(py, Path(tmp)) if py else ({c: f'not installed: {error}' for c in CHECKS}, {})
        rows.append({'paddlepaddle': version, 'found': found, 'checks': result, 'seconds': time.perf_counter() - start})
        print(f'paddlepaddle {version}: {result} ({rows[-1]["seconds"]:.0f} s)', flush=True)
    (folder / 'matrix.json').write_text(json.dumps(rows, indent=1))
    print(f'\n| paddlepaddle | python | numpy | {" | ".join(CHECKS)} |\n|---|---|---|' + '---|' * len(CHECKS))
    for row in rows:
        cells = ['yes' if row['checks'][c] == 'ok' else f'no: {row["checks"][c]}' for c in CHECKS]
        print(f'| {row["paddlepaddle"]} | {row["found"].get("python", "?")} | {row["found"].get("numpy", "?")} | '
              + ' | '.join(cells) + ' |')
    return 0 if all(v == 'ok' for row in rows for v in row['checks'].values()) else 1


if __name__ == '__main__':
    sys.exit(main())
