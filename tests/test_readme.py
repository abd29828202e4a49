"""The README is true and executable.

1. Every shell command in its ```bash and ```bat blocks runs, in the order the README shows them,
   on a fresh copy of the project (the files git tracks), with the synthetic fixture as the data:
   the idx files and housing.data in ./work/ (where the scripts look first) and the fixture's folder
   wherever the README names a data folder. `python` on the PATH is a Python without PaddlePaddle
   when there is one, as in a learner's new shell. A command too slow to run here, or one that
   only runs on Windows or a GPU, is listed in SKIPPED with its reason, and one the README repeats
   (the Chinese quick start) runs once; none is dropped silently: the test prints each skip.
2. Every file, `make` target and flag the README names exists (flags: each script's --help).
"""
import json
import os
import re
import runpy
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fixtures
import goldens
from conftest import ROOT, script_env

README = (ROOT / 'README.md').read_text(encoding='utf-8')

# command (as written in the README) -> why this test does not run it
SKIPPED = {
    'make test': 'the quick test suite; this test is in make test-whole, which CI runs after it',
    'make all FAST=1': 'the whole course on 1,000 images, minutes: test_results.py runs tools/results.py --fast',
    'python tools/results.py --fast': 'as `make all FAST=1` (test_results.py runs it)',
    'python mnist_cnn.py': 'exactly what `make cnn` runs (the Makefile: $(PY) mnist_cnn.py), which ran above; the '
                           'python twins after it resume the `make cnn ARGS="--opt sgd"` run',
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
DATA_FOLDERS = ('path/to/mnist', '../shared/data/mnist-mini', '../shared/data/mnist', '<完整 MNIST 目录>', 'DIR')


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


def fresh_copy(tmp_path, venv=True):
    """The files git tracks, as a clone has them, beside the real .venv (venv=False: no .venv at
    all); data in ./work/: the fixture cut to 200 training images (167 train / 33 valid, 2 batches
    of the default 100 per epoch), since these commands run the tutorial's 5 epochs many times and
    only their exit and outputs matter here, not what they learn."""
    copy = tmp_path / 'project'
    tracked = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split('\0')
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    if venv:
        (copy / '.venv').symlink_to(ROOT / '.venv', target_is_directory=True)
        for name in ('requirements.txt', 'requirements-test.txt'):  # older than .venv's stamps: no reinstall
            os.utime(copy / name, (0, 0))
    fixtures.write_idx_folder(str(copy / 'work'), **SMALL)
    goldens.write_housing_data(copy / 'work' / 'housing.data')
    return copy


SMALL = {'train_n': 200, 'test_n': 50}


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


# ---- what each command promises, checked right after it ran -------------------------------------
# Each check gets the run: copy (the project), proc (the finished command), before (the id of the
# run whose checkpoints were in checkpoint/ before the command, None if none) and data (the fixture
# folder that stands for the README's data folders). Every command the test runs has a check.

class Run:
    def __init__(self, copy, proc, before, data):
        self.copy, self.proc, self.before, self.data = copy, proc, before, data

    def metrics(self, out='runs/cnn'):
        return json.loads((self.copy / out / 'metrics.json').read_text())


def newest_run(copy):
    """The run id of the checkpoints in checkpoint/ (None when there are none)."""
    path = copy / 'checkpoint' / 'mnist_epoch0.json'
    return json.loads(path.read_text())['run_id'] if path.exists() else None


def trained_cnn(epochs=5, opt='adam', workers=1, data_dir=False):
    """A finished mnist_cnn.py run (the tutorial's defaults unless said; its data from ./work/ or
    the folder passed): metrics, every picture, a checkpoint per epoch, and the earlier run's
    checkpoints moved, whole, to checkpoint/previous/<run>/."""
    def check(run):
        m = run.metrics()
        assert (m['config']['epochs'], m['config']['opt'], m['workers']) == (epochs, opt, workers)
        assert len(m['epochs']) == epochs and m['eval']['acc'] is not None
        assert m['config']['data']['path'] == str(run.data if data_dir else run.copy / 'work')
        for picture in ('samples.png', 'loss.png', 'acc.png', 'mistakes.png', 'confusion.png'):
            assert (run.copy / 'runs' / 'cnn' / picture).is_file(), picture
        assert newest_run(run.copy) == m['run_id'] != run.before
        assert (run.copy / 'checkpoint' / f'mnist_epoch{epochs - 1}.json').is_file()
        if run.before is not None:
            moved = run.copy / 'checkpoint' / 'previous' / run.before
            assert (moved / 'mnist_epoch0.json').is_file(), f'{run.before} not moved to checkpoint/previous/'
        if workers > 1:  # the launcher's log of each worker
            assert all((run.copy / 'log' / f'workerlog.{rank}').is_file() for rank in range(workers))
    return check


def resumed_exactly(compare):
    """resume.py from mnist_epoch0: every later batch loss and the eval result equal the
    uninterrupted run's (runs/cnn), exactly; with --compare it says so."""
    def check(run):
        full, resumed = run.metrics(), run.metrics('runs/resume')
        assert resumed['run_id'] == full['run_id'] and resumed['first_step'] == full['steps_per_epoch']
        assert resumed['batch_losses'] == full['batch_losses'][resumed['first_step']:]
        assert resumed['eval'] == full['eval']
        if compare:  # "prints, per epoch, how many batch losses are identical and the largest difference"
            per_epoch = full['steps_per_epoch']
            for epoch in range(1, full['config']['epochs']):
                line = f'epoch {epoch}: {per_epoch}/{per_epoch} batch losses identical, largest |difference| 0'
                assert line in run.proc.stdout, run.proc.stdout
            assert 'resumed losses are bit-identical to the uninterrupted run' in run.proc.stdout, run.proc.stdout
    return check


def tutorial_resume_drifts(run):
    # "the tutorial's `train_again()` with the two faults that break a resume (...), to see its losses drift"
    assert 'resumed losses DIFFER from the reference run' in run.proc.stdout, run.proc.stdout
    full, theirs = run.metrics(), run.metrics('runs/tutorial-resume')
    ours = full['batch_losses'][theirs['first_step']:]
    assert len(theirs['batch_losses']) == len(ours) and theirs['batch_losses'] != ours


def stage_run(out, ckpt=None, eval_keys=('loss', 'acc')):
    def check(run):
        m = run.metrics(out)
        assert set(eval_keys) <= set(m['eval']) and (run.copy / out / 'loss.png').is_file()
        assert ckpt is None or list((run.copy / ckpt).glob('*_epoch0.json')), f'no checkpoint in {ckpt}'
    return check


def housing_run(out, impl, method):
    def check(run):
        m = run.metrics(out)
        assert (m['config']['impl'], m['config']['method']) == (impl, method)
        assert m['test_rmse_k'] > 0 and (run.copy / out / 'loss.png').is_file()
        assert impl == 'numpy' or (run.copy / out / 'LR_model.pdparams').is_file()
        assert (m['paddle_version'] is None) == (impl == 'numpy')  # "null for --impl numpy"
    return check


def course_json_holds_the_same_images(run):
    # tools/mnist_json.py writes the course's work/mnist.json.gz from the idx files; the README:
    # training on it gives the same losses bit for bit, so it must hold the very same arrays
    import common
    from_json = common.load_mnist_splits(str(run.copy / 'work' / 'mnist.json.gz'))[0]
    from_idx = common.load_mnist_splits(str(run.copy / 'work'))[0]  # the idx files beside it
    for split in ('train', 'valid', 'eval'):
        for ours, theirs in zip(from_json[split], from_idx[split]):
            assert np.array_equal(ours, theirs), split


def notebooks_written(run):
    for name in ('housing', 'mnist_linear', 'mnist_mlp', 'mnist_numpy', 'mnist_cnn', 'resume'):
        assert json.loads((run.copy / 'notebooks' / f'{name}.ipynb').read_text())['cells'], name


CHECKS = {  # README command (the data folder as FIXTURE_DATA) -> what it promises
    'make cnn': trained_cnn(),
    'python resume.py --ckpt checkpoint/mnist_epoch0': resumed_exactly(compare=False),
    f'make cnn DATA_DIR={FIXTURE_DATA} EPOCHS=2': trained_cnn(epochs=2, data_dir=True),
    'make cnn ARGS="--opt momentum"': trained_cnn(opt='momentum'),
    'make resume': resumed_exactly(compare=True),  # "continues the newest run, compares with runs/cnn"
    'make cnn NPROC=2': trained_cnn(workers=2),
    'make cnn ARGS="--opt sgd"': trained_cnn(opt='sgd'),
    'python resume.py --ckpt checkpoint/mnist_epoch0 --compare runs/cnn/metrics.json': resumed_exactly(compare=True),
    'python tutorial_resume.py --ckpt checkpoint/mnist_epoch0 --compare runs/cnn/metrics.json': tutorial_resume_drifts,
    'python mnist_linear.py --out runs/linear --ckpt-dir checkpoint/linear':
        stage_run('runs/linear', 'checkpoint/linear', ('loss', 'acc', 'mae')),
    'python mnist_mlp.py --out runs/mlp --ckpt-dir checkpoint/mlp':
        stage_run('runs/mlp', 'checkpoint/mlp', ('loss', 'acc', 'mae')),
    'python mnist_numpy.py --out runs/numpy': stage_run('runs/numpy'),
    'python housing.py --impl numpy --method gd --out runs/housing-numpy-gd':
        housing_run('runs/housing-numpy-gd', 'numpy', 'gd'),
    'python housing.py --impl paddle --out runs/housing': housing_run('runs/housing', 'paddle', 'sgd'),
    'python tools/mnist_json.py': course_json_holds_the_same_images,
    'python tools/make_notebooks.py': notebooks_written,
}


@pytest.mark.whole  # about 1.5 minutes of fresh processes: `make test-whole` runs it, `make test` leaves it out
@pytest.mark.skipif(not (ROOT / '.venv').is_dir() or shutil.which('make') is None or shutil.which('git') is None,
                    reason='needs ./.venv (make test or make test-whole makes it), make and git')
def test_every_readme_command_runs_in_order(tmp_path):
    copy, env = fresh_copy(tmp_path), learner_env(tmp_path)
    data = tmp_path / 'fixture-mnist'
    fixtures.write_idx_folder(str(data), **SMALL)
    ran, skipped = [], []
    for language, command in readme_commands():
        if command in SKIPPED or command in ran:
            reason = SKIPPED.get(command, 'the same command ran above (its promise is checked there)')
            skipped.append(f'{command}  ({reason})')
            continue
        if language == 'bat' and not command.startswith('python '):
            raise AssertionError(f'a Windows command with no Linux twin and no reason in SKIPPED: {command}')
        check = CHECKS.get(with_fixture_data(command))
        assert check, f'a README command with no check of what it promises (add one to CHECKS): {command}'
        shell_command = with_fixture_data(command).replace(FIXTURE_DATA, str(data))
        before = newest_run(copy)
        proc = subprocess.run(['bash', '-c', shell_command], cwd=copy, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f'README command failed: {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
        try:
            check(Run(copy, proc, before, data))
        except AssertionError as e:
            raise AssertionError(f'README command did not do what the README says: {command}\n{e}') from e
        ran.append(command)
    print(f'ran {len(ran)} README commands; skipped {len(skipped)}:\n  ' + '\n  '.join(skipped))
    assert len(ran) >= 15 and set(CHECKS) == {with_fixture_data(c) for c in ran}, 'CHECKS names a command the README no longer has'
    assert len(list((copy / 'checkpoint' / 'previous').iterdir())) == 4  # each new CNN run moved the last aside


def test_make_help_lists_every_target():
    proc = subprocess.run(['make', '-s', 'help'], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    listed = set(re.findall(r'^  make (\S+)', proc.stdout, re.M))
    assert listed == make_targets(), f'make help: {sorted(make_targets() - listed)} missing'


@pytest.mark.parametrize('command, expected', [
    # the Makefile's comment and the README: "Options pass through as variables"
    ('make cnn DATA_DIR=d EPOCHS=2 SEED=3 DEVICE=cpu ARGS="--opt sgd"',
     'mnist_cnn.py --data-dir d --device cpu --opt sgd --epochs 2 --seed 3'),
    ('make cnn NPROC=2', 'python -m paddle.distributed.launch --nproc_per_node 2 --log_dir log mnist_cnn.py'),
    ('make resume CKPT=checkpoint/mnist_epoch3 EPOCHS=6', 'resume.py --ckpt checkpoint/mnist_epoch3 --epochs 6'),
    ('make housing HOUSING_DATA=h EPOCHS=7', 'housing.py --impl paddle --out runs/housing --data-dir h --epochs 7'),
    ('make all FAST=1 DATA_DIR=d', 'tools/results.py --data-dir d --fast'),
], ids=['cnn', 'nproc', 'resume', 'housing', 'all'])
def test_make_passes_the_variables_through(tmp_path, command, expected):
    """What each variable becomes on the script's command line (make -n prints the commands)."""
    proc = subprocess.run(['bash', '-c', command.replace('make ', 'make -n ', 1)], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    printed = ' '.join(proc.stdout.replace('\\\n', ' ').split())  # recipe lines joined, spaces squeezed
    assert expected in printed, printed


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


def test_every_flag_the_readme_names_exists(capsys, monkeypatch):
    """Flags from each script's --help: the script run as __main__, as `python SCRIPT --help` runs it,
    in this process (a fresh process per script only adds paddle's import, 11 times; test_cli.py runs
    `--help` as a subprocess)."""
    known = set()
    for script in SCRIPTS:
        monkeypatch.setattr(sys, 'argv', [str(ROOT / script), '--help'])
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(ROOT / script), run_name='__main__')
        assert done.value.code in (0, None), script
        help_text = capsys.readouterr().out
        assert help_text.startswith('usage: '), script
        known.update(re.findall(r'(--[a-z][a-z0-9-]*)', help_text))
    launcher = {'--nproc_per_node', '--devices', '--nnodes', '--master', '--log_dir'}  # paddle.distributed.launch's
    python = {'--help'}
    named = set(re.findall(r'(?<![\w-])(--[a-z][a-z0-9_-]*)', README)) - launcher - python
    # visualdl's, ruff's and pip's own flags, named as theirs
    pip_and_tools = {'--logdir', '--fix', '--no-cache', '--platform'}
    missing = sorted(named - known - pip_and_tools)
    assert not missing, f'the README names flags no script has: {missing}'
