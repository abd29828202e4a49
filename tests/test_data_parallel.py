"""Stage 七, data-parallel training, run the way a user runs it: two CPU workers (gloo) started by
PaddlePaddle's own launcher, `python -m paddle.distributed.launch --nproc_per_node 2 mnist_cnn.py`.

Tolerance: two workers each average the loss over their part of a batch and the all-reduce
averages their gradients; one process averages over the whole batch. The sums round differently
in float32 (about 1e-7 relative on a step), and training amplifies such differences. Measured on
this fixture with the settings below (every batch of 25 split 13 + 12, 38 steps): 3e-8 to 1e-7
on the first steps, at most 4.9e-6 over the run. A real error is far larger: without the weighting
of unequal shares the losses are 10-110% off from step 8 (measured); summed instead of averaged
gradients or a wrong share are worse. rtol 1e-4 sits between the two.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import checkpoints
from conftest import ROOT, read_metrics, script_env

# 475 images in 19 batches of 25, each shared 13 + 12 by two workers: unequal shares every step.
# --log-every 5: the workers sum their figures at batches 0, 5, 10, 15 and 18 of each epoch.
DP_ARGS = ['--epochs', '2', '--batch-size', '25', '--train-limit', '475', '--seed', '0', '--log-every', '5']
RTOL = 1e-4
try:  # the two-worker run logs for VisualDL too, where it is installed (make test installs it)
    import visualdl  # noqa: F401
    VISUALDL = ['--visualdl', 'vdl']
except ImportError:
    VISUALDL = []


def launch_cmd(cwd, script, *args, nproc=2):
    return [sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', str(nproc),
            '--log_dir', str(cwd / 'log'), str(ROOT / script), *map(str, args)]


def launch(cwd, script, *args, nproc=2, timeout=300):
    return subprocess.run(launch_cmd(cwd, script, *args, nproc=nproc), cwd=cwd, env=script_env(cwd),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def single(tmp_path_factory, run_script, idx_dir):
    work = tmp_path_factory.mktemp('dp_single')
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *DP_ARGS, cwd=work)
    assert proc.returncode == 0, proc.stderr
    return {'dir': work, 'metrics': read_metrics(work / 'runs' / 'cnn')}


@pytest.fixture(scope='module')
def parallel(tmp_path_factory, idx_dir):
    work = tmp_path_factory.mktemp('dp_two')
    proc = launch(work, 'mnist_cnn.py', '--data-dir', idx_dir, *DP_ARGS, *VISUALDL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {'dir': work, 'metrics': read_metrics(work / 'runs' / 'cnn'), 'stdout': proc.stdout}


def test_two_workers_follow_the_single_process_run(single, parallel):
    ours, one = parallel['metrics'], single['metrics']
    assert len(ours['batch_losses']) == len(one['batch_losses']) == 2 * 19
    np.testing.assert_allclose(ours['batch_losses'], one['batch_losses'], rtol=RTOL)
    np.testing.assert_allclose(ours['eval']['loss'], one['eval']['loss'], rtol=RTOL)
    assert abs(ours['eval']['acc'] - one['eval']['acc']) <= 1 / 200  # at most one image of 200
    assert 'device: cpu, 2 data-parallel workers' in parallel['stdout']


@pytest.mark.skipif(not VISUALDL, reason='visualdl is not installed (make test installs it)')
def test_rank_0_logs_every_batch_of_both_workers_for_visualdl(parallel):
    """--visualdl under the launcher: one log (rank 0's), one loss per global step in order, the
    workers' summed figures (== metrics.json's, as float32), an epoch row per epoch."""
    from visualdl import LogReader
    import glob
    files = glob.glob(str(parallel['dir'] / 'vdl' / 'vdlrecords*'))
    assert len(files) == 1, files
    reader = LogReader(file_path=files[0])
    losses = reader.get_data('scalar', 'train/loss')
    assert [r.id for r in losses] == list(range(2 * 19))
    assert [r.value for r in losses] == pytest.approx(parallel['metrics']['batch_losses'], rel=1e-6)
    assert [r.id for r in reader.get_data('scalar', 'epoch/valid_acc')] == [0, 1]


def test_only_rank_0_writes_files_and_prints_progress(parallel):
    work = parallel['dir']
    assert sorted(os.listdir(work / 'checkpoint')) == sorted(
        ['.lock'] + [f'mnist_epoch{e}.{x}' for e in range(2) for x in ('json', 'pdparams', 'pdopt')])
    assert sorted(os.listdir(work / 'runs' / 'cnn')) == sorted(
        ['acc.png', 'confusion.png', 'loss.png', 'metrics.json', 'mistakes.png', 'model.json', 'model.pdparams',
         'samples.png'])
    assert sorted(n for n in os.listdir(work) if not n.startswith('.')) == sorted(  # .cache: HOME
        ['checkpoint', 'log', 'runs'] + ['vdl'] * bool(VISUALDL))
    rank1 = (work / 'log' / 'workerlog.1').read_text()
    assert 'epoch: 0, batch: 0' not in rank1 and 'wrote' not in rank1
    log0 = (work / 'log' / 'workerlog.0').read_text()
    assert '13, 1, 28, 28]' in log0 and '12, 1, 28, 28]' in rank1  # "one batch": each worker its part
    assert "one batch (this worker's part of 25): images [13, 1, 28, 28]" in log0
    for epoch, batch in ((0, 0), (0, 5), (0, 15), (1, 10)):  # every progress line, summed over workers
        assert f'epoch: {epoch}, batch: {batch}, loss is: ' in log0, log0[-2000:]


def test_a_two_worker_checkpoint_resumes_in_one_process(parallel, single, run_script, tmp_path):
    """The README: a checkpoint from two workers resumes in one process; its losses then follow
    within rounding, not bit for bit, and `resume.py --compare` says so (the difference and the note
    that bit-identity holds for the same number of workers only) and exits 0: that is the expected
    result, not a failed resume."""
    proc = run_script('resume.py', '--ckpt', parallel['dir'] / 'checkpoint' / 'mnist_epoch0', '--ckpt-dir',
                      tmp_path / 'ckpt', '--out', tmp_path / 'out', '--compare',
                      parallel['dir'] / 'runs' / 'cnn' / 'metrics.json', cwd=tmp_path)
    assert 'Traceback' not in proc.stderr
    resumed = read_metrics(tmp_path / 'out')
    assert resumed['first_step'] == 19 and resumed['workers'] == 1 and parallel['metrics']['workers'] == 2
    # one process sums each batch's loss in another order than two workers (13 + 12 images): on
    # this fixture the 19 resumed losses are not all the same bits, so --compare must report it
    assert resumed['batch_losses'] != parallel['metrics']['batch_losses'][19:]
    assert proc.returncode == 0 and 'error:' not in proc.stderr, proc.stdout + proc.stderr
    assert 'resumed losses DIFFER from the reference run' in proc.stdout
    assert 'note: the reference ran with 2 data-parallel worker(s), this run with 1' in proc.stdout
    np.testing.assert_allclose(resumed['batch_losses'], single['metrics']['batch_losses'][19:], rtol=RTOL)
    # compared with the one-process run instead: the same worker count as this resume, but the
    # checkpoint's weights were trained by two workers, so the runs had parted before it: no verdict
    assert json.loads((parallel['dir'] / 'checkpoint' / 'mnist_epoch0.json').read_text())['trained_with'] == [2]
    proc = run_script('resume.py', '--ckpt', parallel['dir'] / 'checkpoint' / 'mnist_epoch0', '--ckpt-dir',
                      tmp_path / 'ckpt2', '--out', tmp_path / 'out2', '--compare',
                      single['dir'] / 'runs' / 'cnn' / 'metrics.json', cwd=tmp_path)
    assert proc.returncode == 0 and 'error:' not in proc.stderr, proc.stdout + proc.stderr
    assert "note: the checkpoint's weights were trained (in part) by 2 data-parallel worker(s)" in proc.stdout


def test_a_one_process_checkpoint_resumes_with_two_workers_and_compare_says_how_close(single, tmp_path):
    """The other way round, as `make resume NPROC=2` after a one-process `make cnn` runs it (with
    --compare): the losses follow the one-process run within rounding, not bit for bit; rank 0
    prints the comparison, the difference and the note on the number of workers, writes
    metrics.json, and the launch succeeds: with another number of workers that is the expected
    result, not a failed resume (--compare's exit 1 is for losses that should be identical)."""
    proc = launch(tmp_path, 'resume.py', '--ckpt', single['dir'] / 'checkpoint' / 'mnist_epoch0', '--ckpt-dir',
                  tmp_path / 'ckpt', '--out', tmp_path / 'out', '--compare',
                  single['dir'] / 'runs' / 'cnn' / 'metrics.json')
    log0 = (tmp_path / 'log' / 'workerlog.0').read_text()
    assert 'resumed losses DIFFER from the reference run' in log0, log0[-3000:]
    assert 'note: the reference ran with 1 data-parallel worker(s), this run with 2' in log0
    # as expected with another number of workers: no error, the launch succeeds
    assert proc.returncode == 0 and 'error:' not in log0 and 'Traceback' not in log0, log0[-3000:]
    resumed = read_metrics(tmp_path / 'out')
    assert resumed['first_step'] == 19 and resumed['workers'] == 2
    assert resumed['batch_losses'] != single['metrics']['batch_losses'][19:]
    np.testing.assert_allclose(resumed['batch_losses'], single['metrics']['batch_losses'][19:], rtol=RTOL)
    log1 = (tmp_path / 'log' / 'workerlog.1').read_text()
    assert 'Traceback' not in log1 and 'error:' not in log1, log1[-3000:]


def rank_pid(launcher, rank, timeout=60):
    """The process id of one worker of a running launch, found by its PADDLE_TRAINER_ID."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in os.listdir('/proc'):
            try:
                with open(f'/proc/{pid}/environ', 'rb') as f:
                    env = f.read().split(b'\0')
                with open(f'/proc/{pid}/stat') as f:
                    parent = int(f.read().split(') ')[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == launcher.pid and f'PADDLE_TRAINER_ID={rank}'.encode() in env:
                return int(pid)
        time.sleep(0.2)
    raise AssertionError(f'no rank {rank} worker found')


LONG_ARGS = ['--epochs', '30', '--batch-size', '20', '--train-limit', '200', '--log-every', '1']  # 10 steps an epoch


def start_and_wait_for_training(tmp_path, idx_dir, lines=15, wait_for=None, args=LONG_ARGS):
    """A data-parallel run (by default a long one); returns once rank 0 has printed `lines` progress
    lines (and, with wait_for, once that file exists: the launcher's output is read meanwhile, so
    its pipe never fills)."""
    launcher = subprocess.Popen(launch_cmd(tmp_path, 'mnist_cnn.py', '--data-dir', idx_dir, *args), cwd=tmp_path,
                                env=script_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = 0
    for line in launcher.stdout:
        seen += line.startswith('epoch: ')
        if seen >= lines and (wait_for is None or os.path.exists(wait_for)):
            return launcher
    raise AssertionError('the launch ended before training started')


def assert_checkpoints_whole_and_resumable(run_script, tmp_path):
    found = checkpoints.list_checkpoints(str(tmp_path / 'checkpoint'))
    assert found, 'no complete checkpoint was left'
    for name in os.listdir(tmp_path / 'checkpoint'):
        assert name.startswith('.') or name.endswith(('.json', '.pdparams', '.pdopt'))
        if name.endswith('.json'):
            checkpoints.read_meta(str(tmp_path / 'checkpoint' / name[:-5]))
    proc = run_script('resume.py', '--ckpt', 'latest', '--epochs', str(found[-1][2]['next_epoch'] + 1), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def wait_for_text(path, text, process, timeout=180):
    """Poll a worker's log (written unbuffered) until it holds `text`."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(path) and text in open(path, errors='replace').read():
            return
        time.sleep(0.05)
    raise AssertionError(f'{text!r} never appeared in {path}')


def signal_pending(pid, signum):
    """Whether `signum` waits, undelivered, for process `pid` (it is stopped)."""
    with open(f'/proc/{pid}/status') as f:
        fields = dict(line.rstrip('\n').split(':\t', 1) for line in f if ':\t' in line)
    return bool((int(fields['SigPnd'], 16) | int(fields['ShdPnd'], 16)) & (1 << (signum - 1)))


def test_ctrl_c_stops_every_worker_at_one_step_and_two_workers_resume_it_exactly(parallel, idx_dir, tmp_path):
    """The README's stage 七: Ctrl-C reaches the launcher, which sends each worker SIGTERM (rank 0
    first, rank 1 up to 0.6 s later); the workers agree at the next summing point (every
    --log-every 5 batches), all stop at that step and rank 0 saves a checkpoint; the resume command
    ends log/workerlog.0. Then a two-worker resume of that checkpoint gives the uninterrupted
    two-worker run's losses exactly (==: bit-identity holds for the same number of workers).

    The run is the `parallel` fixture's (38 steps, the reference), too short to stop reliably on a
    busy machine: once rank 0 has logged batch 5, both workers are paused (SIGSTOP), the launcher
    gets Ctrl-C, and when its SIGTERM waits at rank 0, both continue (SIGCONT). Rank 0 then has the
    request and rank 1 not yet (its SIGTERM comes after rank 0's, as the launcher sends them): the
    workers must agree through their sum. Rank 1 prints no progress, so where it stopped is seen
    this way: each worker leaves through the orderly stop (its "stopped; saved" line naming the one
    checkpoint, no error, no traceback). Had one worker gone on, or stopped, a step before the
    other, one of them would have waited in the gradient all-reduce for a partner that had left and
    failed; and the exact resume shows rank 0 saved the state of a step both workers completed.
    It also shows the README's "two data-parallel runs with one seed are bit-identical": this run
    and the fixture's are two runs (their shared progress lines are compared too), and the resumed
    losses equal the fixture's bit for bit only if this run reached the very same state."""
    with open(tmp_path / 'launcher.txt', 'w') as out:
        launcher = subprocess.Popen(launch_cmd(tmp_path, 'mnist_cnn.py', '--data-dir', idx_dir, *DP_ARGS), cwd=tmp_path,
                                    env=script_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    wait_for_text(tmp_path / 'log' / 'workerlog.0', 'epoch: 0, batch: 5,', launcher)
    workers = [rank_pid(launcher, rank) for rank in (0, 1)]
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    launcher.send_signal(signal.SIGINT)
    deadline = time.time() + 60
    while not signal_pending(workers[0], signal.SIGTERM):
        assert time.time() < deadline, 'the launcher sent rank 0 no SIGTERM'
        time.sleep(0.02)
    for pid in workers:
        os.kill(pid, signal.SIGCONT)
    launcher.wait(timeout=120)
    out = (tmp_path / 'launcher.txt').read_text()
    assert launcher.returncode != 0
    logs = [(tmp_path / 'log' / f'workerlog.{rank}').read_text() for rank in (0, 1)]
    assert 'interrupt: finishing the steps until the workers next agree' in logs[0]
    for name in os.listdir(tmp_path / 'checkpoint'):  # nothing half-written
        assert name.startswith('.') or name.endswith(('.json', '.pdparams', '.pdopt')), name
    found = checkpoints.list_checkpoints(str(tmp_path / 'checkpoint'))  # whole: hashes verified
    prefix, meta = found[-1][1], found[-1][2]
    stop = meta['global_step']  # the step after the last one both workers completed
    # the summing point after batch 5: batch 10 or 15 (the pause may have come a few steps late),
    # or the epoch's last, 18 (then the epoch's own checkpoint is the one)
    assert stop in (11, 16, 19), stop
    name = os.path.basename(prefix)
    assert name == ('mnist_interrupted' if stop % 19 else f'mnist_epoch{stop // 19 - 1}'), (name, stop)
    for rank, log in enumerate(logs):
        assert 'Traceback' not in log and 'error:' not in log, f'rank {rank}:\n{log[-3000:]}'
        last = log.strip().splitlines()[-1]
        saved = 'saved' if rank == 0 else 'rank 0 saved'  # (rank 1 saves nothing)
        assert last == f'stopped; {saved} checkpoint/{name}.pdparams/.pdopt. Continue with: ' \
                       f'`python -m paddle.distributed.launch --nproc_per_node 2 resume.py --ckpt checkpoint/{name}` ' \
                       f'(with make: `make resume NPROC=2 CKPT=checkpoint/{name}`)', \
            f'rank {rank}: {last}'  # the same number of workers: bit-identical
    assert 'Container failed' not in out
    reference_log = (parallel['dir'] / 'log' / 'workerlog.0').read_text()
    shared = [line for line in logs[0].splitlines() if line.startswith('epoch: ')]
    assert shared and all(line.split(' (')[0] in reference_log for line in shared)  # without the times

    resumed_dir = tmp_path / 'resumed'
    resumed_dir.mkdir()
    proc = launch(resumed_dir, 'resume.py', '--ckpt', prefix, '--ckpt-dir', resumed_dir / 'checkpoint',
                  '--out', resumed_dir / 'out', '--compare', parallel['dir'] / 'runs' / 'cnn' / 'metrics.json')
    log0 = (resumed_dir / 'log' / 'workerlog.0').read_text()
    assert proc.returncode == 0, log0[-3000:]
    assert 'resumed losses are bit-identical to the uninterrupted run' in log0
    resumed = read_metrics(resumed_dir / 'out')
    assert resumed['workers'] == 2 and resumed['first_step'] == stop
    assert resumed['batch_losses'] == parallel['metrics']['batch_losses'][stop:]
    assert resumed['eval'] == parallel['metrics']['eval']


def test_a_worker_that_dies_fails_the_launch(idx_dir, run_script, tmp_path):
    """SIGKILL to rank 1: rank 0 loses its peer inside PaddlePaddle's gradient exchange (or in the
    loss average) and stops; the launch exits non-zero naming the failed worker and its log; every
    checkpoint on disk is whole and resumes. The kill comes after the first epoch's checkpoint, so
    there is one to check (before it, nothing would be on disk to lose)."""
    launcher = start_and_wait_for_training(tmp_path, idx_dir, lines=3,
                                           wait_for=tmp_path / 'checkpoint' / 'mnist_epoch0.json')
    os.kill(rank_pid(launcher, 1), signal.SIGKILL)
    out, _ = launcher.communicate(timeout=180)
    assert launcher.returncode != 0
    assert 'Container failed' in out and 'workerlog' in out
    assert_checkpoints_whole_and_resumable(run_script, tmp_path)


def test_a_nan_loss_stops_every_worker_at_the_same_batch(idx_dir, tmp_path):
    """The divergence of test_faults, with two workers: the loss each worker checks is the
    all-worker average, so both see the overflow at the same batch and stop with one sentence;
    nothing from the diverged state is saved."""
    proc = launch(tmp_path, 'mnist_cnn.py', '--data-dir', idx_dir, *DP_ARGS[:-2], '--opt', 'sgd',
                  '--lr', '100', '--loss', 'mse', '--schedule', 'constant')
    assert proc.returncode != 0
    stops = []
    for rank in (0, 1):
        log = (tmp_path / 'log' / f'workerlog.{rank}').read_text()
        assert 'Traceback' not in log, log[-3000:]
        line = next(text for text in log.splitlines() if 'training diverged' in text)
        stops.append(line[line.index('at epoch'):])
    assert stops[0] == stops[1], stops
    assert not (tmp_path / 'checkpoint' / 'mnist_epoch0.json').exists()


def test_the_other_scripts_refuse_the_launcher(idx_dir, tmp_path):
    proc = launch(tmp_path, 'mnist_linear.py', '--data-dir', idx_dir, '--epochs', '1')
    assert proc.returncode != 0
    log0 = (tmp_path / 'log' / 'workerlog.0').read_text()
    assert 'error: data-parallel training (stage 七) is in mnist_cnn.py' in log0


@pytest.mark.whole
@pytest.mark.skipif(os.name != 'posix', reason='a pseudo-terminal: POSIX only')
def test_ctrl_c_in_a_terminal_shows_the_resume_command_there(idx_dir, tmp_path):
    """A learner's Ctrl-C in the terminal of `make cnn NPROC=2`: the launcher ends within a second,
    before its workers have saved, and never shows their last lines; the resume command must reach
    that terminal all the same (parallel.to_terminal). Here the terminal is a real pseudo-terminal
    with a shell in it that outlives the launcher, as a learner's does; Ctrl-C is its ^C."""
    import pty
    import shlex
    cmd = shlex.join(launch_cmd(tmp_path, 'mnist_cnn.py', '--data-dir', idx_dir, *LONG_ARGS))
    pid, terminal = pty.fork()
    if pid == 0:  # the learner's shell, in tmp_path: a Ctrl-C ends the launcher, not the shell
        try:  # (trap with a command, not '': an ignored SIGINT would be inherited)
            os.chdir(tmp_path)
            os.execve('/bin/sh', ['sh', '-c', f'trap : INT; {cmd}; sleep 60'], script_env(tmp_path))
        finally:  # never back into pytest in this forked child
            os._exit(127)
    log = tmp_path / 'log' / 'workerlog.0'
    shown, sent, deadline = b'', False, time.time() + 180
    try:
        while b'Continue with: ' not in shown and time.time() < deadline:
            if not sent and log.exists() and b'epoch: 0, batch: 2,' in log.read_bytes():
                os.write(terminal, b'\x03')
                sent = True
            try:
                shown += os.read(terminal, 65536) if select_ready(terminal) else b''
            except OSError:  # every process let go of the terminal
                break
        # the worker's log gets the line after the terminal does
        while time.time() < deadline and not log.read_text().strip().splitlines()[-1].startswith('stopped;'):
            time.sleep(0.1)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(terminal)
        kill_workers(tmp_path / 'log')  # (the workers have sessions of their own)
    text = shown.decode(errors='replace')
    assert sent, 'training never reached batch 2'
    line = next((x for x in text.splitlines() if x.startswith('stopped; saved ')), None)
    assert line is not None, text[-3000:]
    assert line.strip() == log.read_text().strip().splitlines()[-1]
    assert 'resume.py --ckpt checkpoint/mnist_' in line


def kill_workers(log_dir):
    """The launcher's workers that write into log_dir (PADDLE_LOG_DIR), if any still run (Linux)."""
    for pid in filter(str.isdigit, os.listdir('/proc') if os.path.isdir('/proc') else []):
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                if f'PADDLE_LOG_DIR={log_dir}'.encode() in f.read().split(b'\0'):
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def select_ready(fd, seconds=0.2):
    import select
    return bool(select.select([fd], [], [], seconds)[0])
