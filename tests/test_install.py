"""`make` builds .venv from nothing, as the README and the Makefile say: `make install` with pip
(a learner's mirror), `make test` with uv and pip where uv cannot. Slow (a fresh PaddlePaddle
install each): `make test` leaves them to `make test-whole`, which .ci/run runs."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import THREAD_SETTINGS, script_env
from test_readme import fresh_copy

CHECK_PINS = """
import importlib.metadata, sys
from packaging.markers import Marker
wrong = []
for line in open(sys.argv[1] if len(sys.argv) > 1 else 'requirements.txt'):
    line = line.split('#')[0].strip()
    if not line:
        continue
    pin, _, marker = line.partition(';')
    if marker.strip() and not Marker(marker.strip()).evaluate():
        continue
    name, version = pin.strip().split('==')
    try:
        if importlib.metadata.version(name) != version:
            wrong.append(f'{name} {importlib.metadata.version(name)}, pinned {version}')
    except importlib.metadata.PackageNotFoundError:
        wrong.append(f'{name} is not installed, pinned {version}')
sys.exit('; '.join(wrong) or None)
"""


@pytest.mark.install
@pytest.mark.skipif(shutil.which('make') is None or shutil.which('git') is None, reason='needs make and git')
def test_make_builds_the_venv_from_nothing(tmp_path):
    """The README: `make cnn` and `make test` create .venv from requirements.txt when it is missing;
    `make install PYTHON=...` picks the Python. In a fresh copy with no .venv, `make install` makes
    it (pip fetches the pinned packages from the package index, or takes them from its cache: the
    only network this needs); every pin that applies to that Python is what got installed; that
    .venv's Python trains the CNN for an epoch; `make install` again has nothing to do, and
    `make cnn` trains without installing anything; once requirements.txt is newer, it has again. Slow (a fresh PaddlePaddle install): `make test`
    leaves it to `make test-whole`, which .ci/run runs."""
    copy = fresh_copy(tmp_path, venv=False)
    env = {k: v for k, v in os.environ.items() if k not in THREAD_SETTINGS}  # pip reaches the index
    env.pop('VIRTUAL_ENV', None)
    env['HOME'] = os.environ.get('HOME', str(tmp_path))  # pip's cache, if there is one
    base = getattr(sys, '_base_executable', sys.executable)
    proc = subprocess.run(['make', 'install', f'PYTHON={base}'], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'{base} -m venv .venv' in proc.stdout and 'pip install' in proc.stdout
    python = copy / '.venv' / 'bin' / 'python'
    assert (copy / '.venv' / '.installed').is_file()
    pins = subprocess.run([str(python), '-c', CHECK_PINS], cwd=copy, env=env, capture_output=True, text=True)
    assert pins.returncode == 0, pins.stderr
    again = subprocess.run(['make', '-q', 'install', f'PYTHON={base}'], cwd=copy, env=env)
    assert again.returncode == 0, 'make install wants to run again right after it ran'
    proc = subprocess.run(['make', 'cnn', 'EPOCHS=1', f'PYTHON={base}'], cwd=copy, env=script_env(tmp_path / 'home'),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'pip install' not in proc.stdout and (copy / 'checkpoint' / 'mnist_epoch0.json').is_file()
    # "... when it is missing or older than that file": a newer requirements.txt makes make reinstall
    later = time.time() + 60
    os.utime(copy / 'requirements.txt', (later, later))
    stale = subprocess.run(['make', '-q', 'install', f'PYTHON={base}'], cwd=copy, env=env)
    assert stale.returncode == 1, 'a requirements.txt newer than .venv does not make make install again'
    # then another PYTHON= updates .venv with .venv's own Python, never `PYTHON -m venv` over it
    fake, remade = tmp_path / 'python3.12', tmp_path / 'remade'  # fake: stands for another Python
    fake.write_text(f'#!/bin/sh\n[ "$1" = -m ] && touch {remade}\necho 3.12.99 supported\n')
    fake.chmod(0o755)
    update = subprocess.run(['make', 'install', f'PYTHON={fake}'], cwd=copy, env=env, capture_output=True, text=True)
    assert update.returncode == 0 and 'pip install' in update.stdout and not remade.exists(), update.stdout


@pytest.mark.install
@pytest.mark.skipif(shutil.which('make') is None or shutil.which('git') is None, reason='needs make and git')
def test_make_test_installs_with_pip_where_uv_cannot(tmp_path):
    """The Makefile: `make test` installs both requirement files with uv, "and pip where uv cannot",
    the same pinned versions either way. Here uv's index is a closed port and its cache empty, so
    uv fails: one note says so, pip installs both files, and every pin of both holds."""
    copy = fresh_copy(tmp_path, venv=False)
    env = {k: v for k, v in os.environ.items() if k not in THREAD_SETTINGS}
    env.pop('VIRTUAL_ENV', None)
    env['HOME'] = os.environ.get('HOME', str(tmp_path))  # pip's cache, if there is one
    for name in [k for k in env if k.startswith('UV_')]:  # no index, link or config of the machine's
        del env[name]
    closed = 'http://127.0.0.1:9/simple'
    env.update(UV_DEFAULT_INDEX=closed, UV_INDEX_URL=closed, UV_CACHE_DIR=str(tmp_path / 'uv-cache'))
    base = getattr(sys, '_base_executable', sys.executable)
    proc = subprocess.run(['make', '.venv/.installed-test', f'PYTHON={base}'], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'note: uv could not install them; pip installs them instead' in proc.stdout, proc.stdout
    for name in ('requirements.txt', 'requirements-test.txt'):
        pins = subprocess.run([str(copy / '.venv' / 'bin' / 'python'), '-c', CHECK_PINS, name], cwd=copy,
                              env=env, capture_output=True, text=True)
        assert pins.returncode == 0, f'{name}: {pins.stderr}'
    assert (copy / '.venv' / '.installed').is_file() and (copy / '.venv' / '.installed-test').is_file()
