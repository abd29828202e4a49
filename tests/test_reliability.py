"""Failures of the file system, for real: a full disk (a small tmpfs), a read-only file system, a
path through a file, two runs into one checkpoint folder, a killed run's lock. Each gets one
`error:` sentence, exit code 1, no temporary or half-written file, and the checkpoints saved
before stay complete and resumable."""
import os
import subprocess
import sys
import time

import pytest

import checkpoints
from conftest import ROOT, script_env

QUICK = ['--epochs', '3', '--log-every', '1000']


@pytest.fixture
def mount(tmp_path):
    """mount(size_kb, read_only=False) -> a fresh tmpfs folder (needs root; skipped otherwise)."""
    mounted = []

    def make(size_kb, read_only=False):
        if os.geteuid() != 0:
            pytest.skip('mounting a small tmpfs needs root')
        point = tmp_path / f'fs{len(mounted)}'
        point.mkdir()
        options = f'size={size_kb}k' + (',ro' if read_only else '')
        proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(point)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f'cannot mount a tmpfs here: {proc.stderr.strip()}')
        mounted.append(point)
        return point
    yield make
    for point in mounted:
        subprocess.run(['umount', '-l', str(point)])


def one_error(proc, *parts):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def no_temporary_files(folder):
    return [n for n in os.listdir(folder) if '.tmp' in n or n == '.write-test']


def test_disk_full_while_saving_a_checkpoint(mount, run_script, idx_dir, tmp_path):
    """300 KB hold epoch 0's checkpoint (250 KB) but not epoch 1's model file."""
    ckpt = mount(300) / 'ckpt'
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *QUICK, '--ckpt-dir', ckpt, cwd=tmp_path)
    one_error(proc, f'cannot write {ckpt}/mnist_epoch1.pdparams: No space left on device',
              'free some space there', 'checkpoints saved before are intact')
    assert sorted(n for n in os.listdir(ckpt) if not n.startswith('.')) == [
        'mnist_epoch0.json', 'mnist_epoch0.pdopt', 'mnist_epoch0.pdparams']  # no half of epoch 1
    assert no_temporary_files(ckpt) == []
    proc = run_script('resume.py', '--ckpt', ckpt, '--ckpt-dir', tmp_path / 'more', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_disk_full_while_writing_the_results(mount, run_script, idx_dir, tmp_path):
    """--out on 64 KB: the pictures and the final model (80 KB) do not fit; every checkpoint stays."""
    out = mount(64) / 'run'
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *QUICK, '--out', out, cwd=tmp_path)
    one_error(proc, f'cannot write {out}/', ': No space left on device', 'free some space there')
    assert no_temporary_files(out) == []
    assert len(checkpoints.list_checkpoints(str(tmp_path / 'checkpoint'))) == 3


@pytest.mark.parametrize('flag', ['--ckpt-dir', '--out'])
def test_read_only_folder_fails_before_training(mount, run_script, idx_dir, tmp_path, flag):
    folder = mount(64, read_only=True)
    start = time.perf_counter()
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *QUICK, flag, folder / 'x', cwd=tmp_path)
    one_error(proc, f'cannot write {folder}/x: Read-only file system', 'pass a folder you can write to')
    assert 'epoch: 0' not in proc.stdout  # refused before any training
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize('script, flag', [('mnist_cnn.py', '--ckpt-dir'), ('mnist_cnn.py', '--out'),
                                          ('mnist_mlp.py', '--out'), ('mnist_numpy.py', '--out'),
                                          ('housing.py', '--out')])
def test_a_path_through_a_file_fails_before_training(run_script, idx_dir, tmp_path, script, flag):
    (tmp_path / 'notes.txt').write_text('a file, not a folder')
    data = idx_dir
    if script == 'housing.py':
        data = tmp_path / 'housing.data'
        data.write_text(' '.join(['1'] * 14 * 20))
    proc = run_script(script, '--data-dir', data, flag, 'notes.txt/run', cwd=tmp_path)
    one_error(proc, 'cannot write notes.txt/run: Not a directory', 'part of that path is a file')
    assert 'epoch: 0,' not in proc.stdout and 'epoch    0' not in proc.stdout


def start(script, args, cwd):
    return subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=script_env(cwd),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_progress(proc):
    for line in proc.stdout:
        if line.startswith('epoch: '):
            return
    raise AssertionError('the run ended before training: ' + proc.stderr.read())


LONG = ['--epochs', '40', '--batch-size', '20', '--log-every', '1']


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_runs(run_script, idx_dir, tmp_path):
    first = start('mnist_cnn.py', ['--data-dir', idx_dir, *LONG], tmp_path)
    try:
        wait_for_progress(first)
        for script, args in (('mnist_cnn.py', ['--data-dir', idx_dir, '--epochs', '1', '--seed', '7']),
                             ('mnist_cnn.py', ['--data-dir', idx_dir, *LONG]),  # even the same settings
                             ('resume.py', ['--ckpt', 'latest'])):
            proc = run_script(script, *args, cwd=tmp_path)
            one_error(proc, 'checkpoint is in use by another training run (pid', 'pass another --ckpt-dir')
        assert first.poll() is None  # the first run goes on, untouched
    finally:
        first.kill()
        first.communicate()


def test_a_killed_runs_lock_does_not_block_the_next(run_script, idx_dir, tmp_path):
    """The lock is the operating system's (flock): it dies with its process, whatever killed it."""
    first = start('mnist_cnn.py', ['--data-dir', idx_dir, *LONG], tmp_path)
    wait_for_progress(first)
    first.kill()
    first.communicate()
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *LONG[:2], '--epochs', '1', '--overwrite', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_the_lock_is_released_when_a_run_ends_in_the_same_process(idx_dir, tmp_path):
    """A notebook trains twice into one folder: the first run's lock is gone when main returns."""
    import mnist_cnn
    args = ['--data-dir', idx_dir, '--epochs', '1', '--log-every', '1000', '--out', str(tmp_path / 'o'),
            '--ckpt-dir', str(tmp_path / 'c')]
    assert mnist_cnn.main(args)['batch_losses'] == mnist_cnn.main(args)['batch_losses']
