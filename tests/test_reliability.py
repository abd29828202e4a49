"""Failures of the file system, for real: a full disk (a small tmpfs), a read-only file system, a
folder without write permission, a path through a file, two runs into one checkpoint folder, a
killed run's lock. Each gets one `error:` sentence, exit code 1, no temporary or half-written file,
and the checkpoints saved before stay complete and resumable.

The small file systems need no root: the run goes into a user and mount namespace of its own
(`unshare -rm`, as any user may where the kernel allows unprivileged user namespaces), which mounts
the tmpfs, runs the script there and copies what it wrote back to the same path outside. As root,
where unshare is refused, the tmpfs is mounted directly; the read-only test runs both ways.
"""
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

import checkpoints
from conftest import ROOT, script_env
from errors import UserError

QUICK = ['--epochs', '3', '--log-every', '1000']

# In the namespace: the real folder stays reachable at $under (a bind mount), the tmpfs covers
# $point, the script runs, and what it left on the tmpfs is copied to the real folder.
IN_NAMESPACE = r"""
options=$1 point=$2 under=$3; shift 3
mount --bind "$point" "$under" && mount -t tmpfs -o "$options" tmpfs "$point" || exit 97
"$@"; code=$?
cp -a "$point/." "$under/" || exit 98
exit $code
"""


@functools.lru_cache(maxsize=None)
def why_no_namespace():
    """None when `unshare -rm` can mount a tmpfs here, else the reason."""
    if not shutil.which('unshare'):
        return 'no unshare command (util-linux)'
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.run(['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs "$1"', 'sh', folder],
                              capture_output=True, text=True)
    return None if proc.returncode == 0 else f'`unshare -rm` cannot mount a tmpfs here: {proc.stderr.strip()}'


class SmallFs:
    """A tmpfs of size_kb at .point, for one run of a script (.run: a CompletedProcess)."""

    def __init__(self, point, options, how, run_script):
        self.point, self.options, self.how, self.run_script = point, options, how, run_script

    def run(self, script, *args, cwd):
        if self.how == 'mount':  # mounted directly (root): the script runs as usual
            return self.run_script(script, *args, cwd=cwd)
        under = self.point.parent / f'.{self.point.name}-under'
        under.mkdir()
        proc = subprocess.run(['unshare', '-rm', 'sh', '-c', IN_NAMESPACE, 'sh', self.options, str(self.point),
                               str(under), sys.executable, str(ROOT / script), *map(str, args)],
                              cwd=cwd, env=script_env(cwd), capture_output=True, text=True, timeout=600)
        assert proc.returncode not in (97, 98), f'the namespace failed: {proc.stderr}'
        return proc


@pytest.fixture
def small_fs(tmp_path, run_script, request):
    """small_fs(size_kb, read_only=False) -> SmallFs; by `unshare -rm` where it works, else (root) a
    direct mount. An indirect parameter 'unshare' or 'mount' insists on one way."""
    mounted = []

    def make(size_kb, read_only=False):
        wanted = getattr(request, 'param', None)
        if wanted != 'mount' and why_no_namespace() is None:
            how = 'unshare'
        elif wanted == 'unshare':
            pytest.skip(why_no_namespace())
        elif os.geteuid() != 0:
            pytest.skip('mounting a tmpfs directly needs root' + ('' if wanted else f', and {why_no_namespace()}'))
        else:
            how = 'mount'
        point = tmp_path / f'fs{len(mounted)}'
        point.mkdir()
        options = f'size={size_kb}k' + (',ro' if read_only else '')
        if how == 'mount':
            proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(point)], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                pytest.skip(f'cannot mount a tmpfs here: {proc.stderr.strip()}')
        mounted.append((point, how))
        return SmallFs(point, options, how, run_script)
    yield make
    for point, how in mounted:
        if how == 'mount':
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
    return [n for n in os.listdir(folder) if '.tmp' in n or n.startswith('.write-test')]


def test_disk_full_while_saving_a_checkpoint(small_fs, run_script, idx_dir, tmp_path):
    """300 KB hold epoch 0's checkpoint (250 KB) but not epoch 1's model file."""
    fs = small_fs(300)
    ckpt = fs.point / 'ckpt'
    proc = fs.run('mnist_cnn.py', '--data-dir', idx_dir, *QUICK, '--ckpt-dir', ckpt, cwd=tmp_path)
    one_error(proc, f'cannot write {ckpt}/mnist_epoch1.pdparams: No space left on device',
              'free some space there', 'every file written before, checkpoints too, is intact')
    assert sorted(n for n in os.listdir(ckpt) if not n.startswith('.')) == [
        'mnist_epoch0.json', 'mnist_epoch0.pdopt', 'mnist_epoch0.pdparams']  # no half of epoch 1
    assert no_temporary_files(ckpt) == []
    proc = run_script('resume.py', '--ckpt', ckpt, '--ckpt-dir', tmp_path / 'more', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_disk_full_while_writing_the_results(small_fs, idx_dir, tmp_path):
    """--out on 64 KB: the pictures and the final model (80 KB) do not fit; every checkpoint stays."""
    fs = small_fs(64)
    out = fs.point / 'run'
    proc = fs.run('mnist_cnn.py', '--data-dir', idx_dir, *QUICK, '--out', out, cwd=tmp_path)
    one_error(proc, f'cannot write {out}/', ': No space left on device', 'free some space there')
    assert no_temporary_files(out) == []
    assert len(checkpoints.list_checkpoints(str(tmp_path / 'checkpoint'))) == 3


@pytest.mark.parametrize('small_fs', ['unshare', 'mount'], indirect=True)
@pytest.mark.parametrize('flag', ['--ckpt-dir', '--out'])
def test_read_only_folder_fails_before_training(small_fs, idx_dir, tmp_path, flag):
    fs = small_fs(64, read_only=True)
    start = time.perf_counter()
    proc = fs.run('mnist_cnn.py', '--data-dir', idx_dir, *QUICK, flag, fs.point / 'x', cwd=tmp_path)
    one_error(proc, f'cannot write {fs.point}/x: Read-only file system', 'pass a folder you can write to')
    assert 'epoch: 0' not in proc.stdout  # refused before any training
    assert time.perf_counter() - start < 60


NOBODY = 65534


@pytest.mark.parametrize('flag', ['--ckpt-dir', '--out'])
def test_a_folder_without_write_permission_fails_before_training(idx_dir, tmp_path, flag):
    """chmod 0555: as root nothing is refused, so there the script runs as the user nobody, through
    setpriv. It keeps one capability, CAP_DAC_READ_SEARCH: to read and search every folder, not to
    write (the venv's Python may live where nobody may not read, e.g. under /root with mode 0700)."""
    folder = tmp_path / 'locked'
    folder.mkdir()
    folder.chmod(0o555)
    home = tmp_path / 'home'  # the run's HOME and working folder: its own
    home.mkdir()
    command = [sys.executable, str(ROOT / 'mnist_cnn.py'), '--data-dir', idx_dir, *QUICK, flag, str(folder)]
    if os.geteuid() == 0:
        if not shutil.which('setpriv'):
            pytest.skip('running as root, and no setpriv (util-linux) to run the script as another user')
        os.chown(home, NOBODY, NOBODY)
        command = ['setpriv', f'--reuid={NOBODY}', f'--regid={NOBODY}', '--clear-groups',
                   '--inh-caps=+dac_read_search', '--ambient-caps=+dac_read_search', *command]
    proc = subprocess.run(command, cwd=home, env=script_env(home), capture_output=True, text=True, timeout=300)
    one_error(proc, f'cannot write {folder}: Permission denied', 'you may not write there; pass a folder of your own')
    assert 'epoch: 0' not in proc.stdout  # refused before any training
    assert os.listdir(folder) == []


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
    if flag == '--out':  # refused before the checkpoint folder is made
        assert 'checkpoint' not in os.listdir(tmp_path)


def test_resume_and_visualdl_paths_through_a_file_fail_before_training(run_script, cnn_run, idx_dir, tmp_path):
    """resume.py's and tutorial_resume.py's --out, and --visualdl's folder, are refused as --out is:
    before training, one sentence (resume.py writes no samples.png first; VisualDL opens its folder
    only then)."""
    (tmp_path / 'notes.txt').write_text('a file, not a folder')
    ckpt = cnn_run['ckpt'] / 'mnist_epoch0'
    for script, args in (('resume.py', ['--ckpt', ckpt, '--out', 'notes.txt/run']),
                         ('tutorial_resume.py', ['--ckpt', ckpt, '--compare', cnn_run['out'] / 'metrics.json',
                                                 '--out', 'notes.txt/run']),
                         ('resume.py', ['--ckpt', ckpt, '--out', 'o', '--visualdl', 'notes.txt/run']),
                         ('mnist_cnn.py', ['--data-dir', idx_dir, '--visualdl', 'notes.txt/run'])):
        if '--visualdl' in args and not importlib.util.find_spec('visualdl'):
            continue  # (make test installs it)
        proc = run_script(script, *args, cwd=tmp_path)
        one_error(proc, 'cannot write notes.txt/run: Not a directory', 'part of that path is a file')
        assert 'epoch: ' not in proc.stdout, script


def test_two_writers_of_one_file_leave_it_whole(tmp_path):
    """Two processes writing one file at once (two runs given one --out, workers downloading MNIST into
    one cache) each write through a temporary of their own: no error, and the file is one of theirs."""
    code = ('import sys; sys.path.insert(0, sys.argv[1]); from safe_files import write_bytes\n'
            'for _ in range(30): write_bytes(sys.argv[2], sys.argv[3].encode() * 200000)')
    target = tmp_path / 'metrics.json'
    writers = [subprocess.Popen([sys.executable, '-c', code, str(ROOT), str(target), mark],
                                stderr=subprocess.PIPE, text=True) for mark in 'ab']
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read()
    assert target.read_bytes() in (b'a' * 200000, b'b' * 200000)
    assert os.listdir(tmp_path) == ['metrics.json']


def test_the_sweep_takes_only_a_killed_saves_temporaries(tmp_path):
    """The run holding a checkpoint folder removes the .NAME.tmpPID files of saves killed midway,
    and nothing else a user keeps there."""
    kept = ['.notes.tmp1', '.mnist_epoch0.pdparams.tmp12.bak', 'notes.txt', '.lock']
    for name in kept + ['.mnist_epoch0.pdparams.tmp123', '.mnist_epoch0.json.tmp9']:
        (tmp_path / name).write_text('x')
    with checkpoints.hold_folder({'ckpt_dir': str(tmp_path), 'name': 'mnist', 'run_id': 'r'}):
        pass
    assert sorted(os.listdir(tmp_path)) == sorted(kept)


def test_workers_leave_the_lock_to_rank_0(tmp_path, monkeypatch):
    """Under the launcher only rank 0 takes the checkpoint folder's lock (for all workers): a worker
    of rank 1 asking while rank 0 holds it is not refused."""
    cfg = {'ckpt_dir': str(tmp_path / 'ck'), 'out': str(tmp_path / 'out')}
    with checkpoints.lock(cfg['ckpt_dir']):
        monkeypatch.setenv('PADDLE_TRAINER_ID', '1')
        monkeypatch.setenv('PADDLE_TRAINERS_NUM', '2')
        checkpoints.check_folders(cfg)
        monkeypatch.setenv('PADDLE_TRAINER_ID', '0')
        with pytest.raises(UserError, match='is in use by another training run'):
            checkpoints.check_folders(cfg)


def start(script, args, cwd):
    return subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=script_env(cwd),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_progress(proc):
    for line in proc.stdout:
        if line.startswith('epoch: '):
            return
    raise AssertionError('the run ended before training: ' + proc.stderr.read())


def wait_for_file(path, proc, timeout=300):
    end = time.perf_counter() + timeout
    while not path.exists():
        assert proc.poll() is None and time.perf_counter() < end, f'{path} never came'
        time.sleep(0.1)


LONG = ['--epochs', '40', '--batch-size', '20', '--log-every', '1']


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_runs(run_script, idx_dir, tmp_path):
    first = start('mnist_cnn.py', ['--data-dir', idx_dir, *LONG], tmp_path)
    try:
        wait_for_progress(first)
        samples = tmp_path / 'runs' / 'cnn' / 'samples.png'  # the first run's, drawn before training
        drawn = (samples.read_bytes(), samples.stat().st_mtime_ns)
        for script, args in (('mnist_cnn.py', ['--data-dir', idx_dir, '--epochs', '1', '--seed', '7']),
                             ('mnist_cnn.py', ['--data-dir', idx_dir, '--out', 'runs/new']),  # not made
                             ('mnist_cnn.py', ['--data-dir', idx_dir, *LONG]),  # even the same settings
                             ('resume.py', ['--ckpt', 'latest'])):
            if script == 'resume.py':  # latest: a checkpoint must be there (else "no complete checkpoint")
                wait_for_file(tmp_path / 'checkpoint' / 'mnist_epoch0.json', first)
            proc = run_script(script, *args, cwd=tmp_path)
            one_error(proc, 'the checkpoint folder checkpoint is in use by another training run;', 'another --ckpt-dir and, for its results, another --out')
            assert (samples.read_bytes(), samples.stat().st_mtime_ns) == drawn  # refused before drawing
        assert not (tmp_path / 'runs' / 'new').exists()
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
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *LONG[:2], '--epochs', '1', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_the_lock_is_released_when_a_run_ends_in_the_same_process(idx_dir, tmp_path):
    """A notebook trains twice into one folder: the first run's lock is gone when main returns."""
    import mnist_cnn
    args = ['--data-dir', idx_dir, '--epochs', '1', '--log-every', '1000', '--out', str(tmp_path / 'o'),
            '--ckpt-dir', str(tmp_path / 'c')]
    assert mnist_cnn.main(args)['batch_losses'] == mnist_cnn.main(args)['batch_losses']
