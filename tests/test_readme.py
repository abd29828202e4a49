"""The README is true and executable.

1. Every shell command in its ```bash and ```bat blocks runs, in the order the README shows them,
   on a fresh copy of the project (the files git tracks), with the synthetic fixture as the data:
   the idx files and housing.data in ./work/ (where the scripts look first) and the fixture's folder
   wherever the README names a data folder. `python` on the PATH is a Python without PaddlePaddle
   when there is one, as in a learner's new shell. A command too slow for `make test`, or one that
   only runs on Windows or a GPU, is listed in SKIPPED with its reason, and one the README repeats
   (the Chinese quick start) runs once; none is dropped silently: the test prints each skip.
2. Every file, `make` target and flag the README names exists (flags: each script's --help).
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

import fixtures
import goldens
from conftest import ROOT, script_env

README = (ROOT / 'README.md').read_text(encoding='utf-8')

# command (as written in the README) -> why `make test` does not run it
SKIPPED = {
    'make test': 'it is this test suite',
    'make all FAST=1': 'the whole course on 1,000 images, minutes: test_notebook.py runs tools/results.py --fast',
    'python tools/results.py --fast': 'as `make all FAST=1` (test_notebook.py runs it)',
    'py -3.12 -m venv .venv': 'Windows only (the py launcher)',
    r'.venv\Scripts\python -m pip install -r requirements.txt': 'Windows only (a Windows path)',
    '.venv/bin/python -m paddle.distributed.launch --nproc_per_node 2 mnist_cnn.py --data-dir DIR':
        'the launch `make cnn NPROC=2` makes, which runs above',
    '.venv/bin/python -m paddle.distributed.launch --nproc_per_node 2 resume.py --ckpt checkpoint/mnist_epoch0':
        'a second launcher run (about 30 s); test_data_parallel.py resumes through the launcher',
    '.venv/bin/python -m paddle.distributed.launch --devices 0,1 mnist_cnn.py': 'needs two GPUs',
    '.venv/bin/python -m paddle.distributed.launch --nnodes 2 --master 10.0.0.1:6170 --nproc_per_node 8 mnist_cnn.py':
        'needs two machines',
}
FIXTURE_DATA = '@FIXTURE@'  # replaced by the fixture's MNIST folder
DATA_FOLDERS = ('../shared/data/mnist-mini', '../shared/data/mnist', '<完整 MNIST 目录>', 'DIR')


def readme_commands():
    """(block language, command) for every command line of the README's bash and bat blocks."""
    found = []
    for language, body in re.findall(r'^```(bash|bat)\n(.*?)^```', README, re.S | re.M):
        for line in body.splitlines():
            command = re.split(r'\s{2,}#', line)[0].strip()
            if command:
                found.append((language, command))
    return found


def with_fixture_data(command):
    for folder in DATA_FOLDERS:
        command = re.sub(r'(?<![\w./-])' + re.escape(folder) + r'(?![\w./-])', FIXTURE_DATA, command)
    return command


def test_the_readme_has_commands_and_every_skip_is_still_in_it():
    commands = [c for _, c in readme_commands()]
    assert len(commands) >= 20 and 'make cnn' in commands and 'make test' in commands
    stale = [c for c in SKIPPED if c not in commands]
    assert not stale, f'SKIPPED names commands the README no longer has: {stale}'


def fresh_copy(tmp_path):
    """The files git tracks, as a clone has them, beside the real .venv; data in ./work/."""
    copy = tmp_path / 'project'
    tracked = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split('\0')
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    (copy / '.venv').symlink_to(ROOT / '.venv', target_is_directory=True)
    for name in ('requirements.txt', 'requirements-test.txt'):  # older than .venv's stamps: no reinstall
        os.utime(copy / name, (0, 0))
    fixtures.write_idx_folder(str(copy / 'work'))
    goldens.write_housing_data(copy / 'work' / 'housing.data')
    return copy


def learner_env(tmp_path):
    """A new shell: `python` is a Python without PaddlePaddle where there is one, no thread settings."""
    env = script_env(tmp_path / 'home')
    base = getattr(sys, '_base_executable', sys.executable)
    plain = subprocess.run([base, '-c', 'import paddle'], capture_output=True).returncode != 0
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name in ('python', 'python3'):
        (bin_dir / name).symlink_to(base if plain else sys.executable)
    env['PATH'] = f'{bin_dir}{os.pathsep}{env["PATH"]}'
    env.pop('VIRTUAL_ENV', None)
    return env


@pytest.mark.skipif(not (ROOT / '.venv').is_dir() or shutil.which('make') is None or shutil.which('git') is None,
                    reason='needs ./.venv (make test makes it), make and git')
def test_every_readme_command_runs_in_order(tmp_path):
    copy, env = fresh_copy(tmp_path), learner_env(tmp_path)
    data = tmp_path / 'fixture-mnist'
    fixtures.write_idx_folder(str(data))
    ran, skipped = [], []
    for language, command in readme_commands():
        if command in SKIPPED or command in ran:
            reason = SKIPPED.get(command, 'the same command ran above')
            skipped.append(f'{command}  ({reason})')
            continue
        if language == 'bat' and not command.startswith('python '):
            raise AssertionError(f'a Windows command with no Linux twin and no reason in SKIPPED: {command}')
        shell_command = with_fixture_data(command).replace(FIXTURE_DATA, str(data))
        proc = subprocess.run(['bash', '-c', shell_command], cwd=copy, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f'README command failed: {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
        ran.append(command)
    print(f'ran {len(ran)} README commands; skipped {len(skipped)}:\n  ' + '\n  '.join(skipped))
    assert len(ran) >= 15
    # what the commands promise, checked once at the end
    previous = copy / 'checkpoint' / 'previous'
    assert previous.is_dir() and len(list(previous.iterdir())) >= 3  # each new run moved the last aside
    assert (copy / 'runs' / 'cnn' / 'samples.png').is_file() and (copy / 'work' / 'mnist.json.gz').is_file()


# ---- every name the README uses exists ----------------------------------------------------------

def backticked():
    return set(re.findall(r'`([^`\n]+)`', README))


def test_every_file_the_readme_names_exists():
    names = set()
    for text in backticked() | {c for _, c in readme_commands()}:
        names.update(re.findall(r'(?<![\w/.-])((?:tools/|tests/|notebooks/|tests/golden/)?[\w-]+\.(?:py|ipynb|txt|toml))\b',
                                text))
    made_by_runs = {'requirements.txt', 'requirements-test.txt'}  # exist; listed for clarity
    folders = ('', 'tools', 'tests', 'notebooks')
    missing = sorted(n for n in names if not any((ROOT / d / n).exists() for d in folders))
    assert not missing, f'the README names files that do not exist: {missing}'
    assert {'startup.py', 'common.py', 'checkpoints.py', 'plots.py'} <= names and made_by_runs <= names


def make_targets():
    text = (ROOT / 'Makefile').read_text(encoding='utf-8')
    return set(re.findall(r'^([a-z][a-z-]*):', text, re.M))


def test_every_make_target_the_readme_names_exists():
    named = set(re.findall(r'make ([a-z][a-z-]*)', README))
    named -= {'sure'}  # prose: "make sure"
    missing = sorted(named - make_targets())
    assert not missing, f'the README names make targets that do not exist: {missing}'
    assert {'cnn', 'test', 'notebooks', 'compat', 'all'} <= named


SCRIPTS = ['mnist_cnn.py', 'mnist_linear.py', 'mnist_mlp.py', 'mnist_numpy.py', 'housing.py', 'resume.py',
           'tutorial_resume.py', 'tools/results.py', 'tools/bench.py', 'tools/mnist_json.py',
           'tools/make_notebooks.py']


def test_every_flag_the_readme_names_exists(tmp_path):
    """Flags from each script's --help, run as a learner would run it."""
    known = set()
    for script in SCRIPTS:
        proc = subprocess.run([sys.executable, str(ROOT / script), '--help'], capture_output=True, text=True,
                              env=script_env(tmp_path), timeout=120)
        assert proc.returncode == 0, script + proc.stderr
        known.update(re.findall(r'(--[a-z][a-z0-9-]*)', proc.stdout))
    launcher = {'--nproc_per_node', '--devices', '--nnodes', '--master', '--log_dir'}  # paddle.distributed.launch's
    python = {'--help'}
    named = set(re.findall(r'(?<![\w-])(--[a-z][a-z0-9_-]*)', README)) - launcher - python
    # visualdl's, ruff's and pip's own flags, named as theirs
    pip_and_tools = {'--logdir', '--fix', '--no-cache', '--platform'}
    missing = sorted(named - known - pip_and_tools)
    assert not missing, f'the README names flags no script has: {missing}'
