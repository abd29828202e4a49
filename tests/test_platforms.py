"""Where learners are: a shell whose `python` is not the project's .venv, a Python without
PaddlePaddle for the numpy chapters, Windows (no fcntl), AMD laptops on Windows.

No Windows or macOS machine runs these tests. The checkpoint folder's lock is the one
POSIX-or-Windows pair (checkpoints.lock: flock, or msvcrt on Windows); a grep proves that no other
code path makes a POSIX-only call. The msvcrt branch is not run here (no Windows machine); the
flock branch is tested in test_reliability.py.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rerun
import startup
from conftest import ROOT, blocking_env, script_env

BASE_PYTHON = getattr(sys, '_base_executable', sys.executable)  # the Python .venv was made from


def has_package(python, name):
    return subprocess.run([python, '-c', f'import {name}'], capture_output=True).returncode == 0


def run(python, script, *args, cwd, env):
    return subprocess.run([python, str(script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def one_error_line(proc):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    return lines[0]


# ---- a plain `python` --------------------------------------------------------------------------

needs_plain_python = pytest.mark.skipif(
    not (ROOT / '.venv').is_dir() or has_package(BASE_PYTHON, 'paddle'),
    reason='needs ./.venv and a Python without paddle beside it (the one .venv was made from)')


@needs_plain_python
def test_the_cards_resume_command_works_with_a_plain_python(cnn_run, tmp_path):
    """`python resume.py --ckpt checkpoint/mnist_epoch0` in a new shell, where `python` is not
    .venv's: the script runs again with .venv's Python, says so in one line, and resumes exactly."""
    shutil.copytree(cnn_run['ckpt'], tmp_path / 'checkpoint')
    proc = run(BASE_PYTHON, ROOT / 'resume.py', '--ckpt', 'checkpoint/mnist_epoch0', '--compare',
               cnn_run['out'] / 'metrics.json', cwd=tmp_path, env=script_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    note = proc.stderr.splitlines()[0]
    assert note.startswith('note: ') and 'has no paddle' in note and str(ROOT / '.venv') in note
    assert 'bit-identical' in proc.stdout


@needs_plain_python
def test_without_a_venv_a_plain_python_gets_one_sentence(tmp_path):
    copy = tmp_path / 'clone'
    copy.mkdir()
    for path in ROOT.glob('*.py'):
        shutil.copy(path, copy)
    proc = run(BASE_PYTHON, copy / 'mnist_cnn.py', '--epochs', '1', cwd=tmp_path, env=script_env(tmp_path))
    line = one_error_line(proc)
    assert 'has no paddle' in line and 'make install' in line and 'requirements.txt' in line
    assert BASE_PYTHON in line  # which Python it found


# ---- the numpy chapters need numpy alone ------------------------------------------------------

def test_numpy_chapters_run_without_paddle(tmp_path):
    env = blocking_env(tmp_path, tmp_path, 'paddle')
    # mnist_numpy.py without paddle: test_numpy_gradients.py, with and without its numerical chapter
    rng = np.random.default_rng(3)
    np.savetxt(tmp_path / 'housing.data', rng.uniform(0, 10, size=(60, 14)), fmt='%.4f')
    for method in ('gd', 'sgd'):
        proc = run(sys.executable, ROOT / 'housing.py', '--impl', 'numpy', '--method', method, '--epochs',
                   '5', '--data-dir', tmp_path, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # the PaddlePaddle half says what is missing, in one sentence
    proc = run(sys.executable, ROOT / 'housing.py', '--impl', 'paddle', '--data-dir', tmp_path,
               cwd=tmp_path, env=env)
    assert 'has no paddle' in one_error_line(proc)


def test_importing_common_or_plots_does_not_import_paddle():
    code = ('import sys; sys.path.insert(0, %r); import common, plots, safe_files, errors; '
            'print("paddle" in sys.modules)' % str(ROOT))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert proc.stdout.strip() == 'False', proc.stderr


def test_a_process_that_imported_ipykernel_is_no_kernel():
    """A Jupyter client (nbclient, jupyter_client) imports ipykernel without being a kernel: the scripts
    run in it as scripts (the kernels of test_notebooks.py show the notebook side). It was: after the
    notebook tests, the scripts' in-process runs took the pytest process for a notebook."""
    code = ('import sys; sys.path.insert(0, %r); import ipykernel.kernelapp, startup; '
            'print(startup.in_kernel())' % str(ROOT))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert proc.stdout.strip() == 'False', proc.stderr


# ---- Windows: no fcntl ------------------------------------------------------------------------

# POSIX-only calls a training run must not make without a portable twin. Allowed where a guard
# stands beside them: startup.py reads /proc/cpuinfo only if it exists, rerun.py execs only on POSIX.
POSIX_ONLY = re.compile(r'import fcntl|import termios|import pwd|import grp|import resource|'
                        r'os\.fork\(|os\.setsid|os\.killpg|os\.getuid|os\.geteuid|signal\.SIG(KILL|HUP|USR|ALRM)|'
                        r'signal\.alarm|os\.execv|/proc/|/dev/shm')
ALLOWED = {('startup.py', "if os.path.exists('/proc/cpuinfo'):"),
           ('startup.py', "with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:"),
           ('startup.py', '"""A field of /proc/cpuinfo (Linux only; None elsewhere)."""'),
           ('checkpoints.py', 'import fcntl'),  # in the else of `if os.name == 'nt'`: msvcrt
           ('rerun.py', 'os.execve(project, command, env)  # becomes that Python: same process, same Ctrl-C')}


def test_no_posix_only_call_outside_tests():
    found = []
    for path in sorted(list(ROOT.glob('*.py')) + list((ROOT / 'tools').glob('*.py'))):
        for line in path.read_text(encoding='utf-8').splitlines():
            code = line.split('  # ')[0]  # comments may name what the code avoids (/dev/shm)
            if POSIX_ONLY.search(code) and (path.name, line.strip()) not in ALLOWED:
                found.append(f'{path.name}: {line.strip()}')
    assert not found, 'POSIX-only calls (give them a Windows twin or a guard):\n' + '\n'.join(found)


def test_amd_processors_are_recognised_on_windows(monkeypatch):
    monkeypatch.setattr(os.path, 'exists', lambda path: False)  # no /proc/cpuinfo
    monkeypatch.setattr(startup.platform, 'processor', lambda: 'AMD64 Family 25 Model 33 Stepping 0, AuthenticAMD')
    assert startup.cpu_switches()['MKL_DEBUG_CPU_TYPE'] == '5'
    monkeypatch.setattr(startup.platform, 'processor', lambda: 'Intel64 Family 6 Model 140 Stepping 1, GenuineIntel')
    assert 'MKL_DEBUG_CPU_TYPE' not in startup.cpu_switches()
    monkeypatch.setattr(startup.platform, 'processor', lambda: 'arm')  # macOS on Apple silicon
    assert startup.cpu_switches() == {'OMP_NUM_THREADS': str(min(2, os.cpu_count() or 1))}


def test_a_note_when_paddle_was_imported_first(tmp_path):
    """A notebook that ran `import paddle` before the script: one line says the CPU settings had no effect."""
    code = ('import os, sys; os.environ.pop("OMP_NUM_THREADS", None); import paddle; '
            'sys.path.insert(0, %r); import startup; startup.import_paddle()' % str(ROOT))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'})
    assert proc.returncode == 0, proc.stderr
    assert 'note: paddle was imported before this script, so its CPU settings (OMP_NUM_THREADS=' in proc.stderr


def test_windows_and_macos_paths_in_startup_and_rerun(tmp_path, monkeypatch):
    """The .venv's Python is found where Windows puts it (Scripts\\python.exe)."""
    (tmp_path / '.venv' / 'Scripts').mkdir(parents=True)
    (tmp_path / '.venv' / 'Scripts' / 'python.exe').write_text('')
    monkeypatch.setattr(rerun, 'ROOT', str(tmp_path))
    assert rerun.venv_python() == str(Path(tmp_path) / '.venv' / 'Scripts' / 'python.exe')
