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
    proc = launch(work, 'mnist_cnn.py', '--data-dir', idx_dir, *DP_ARGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {'dir': work, 'metrics': read_metrics(work / 'runs' / 'cnn'), 'stdout': proc.stdout}


def test_two_workers_follow_the_single_process_run(single, parallel):
    ours, one = parallel['metrics'], single['metrics']
    assert len(ours['batch_losses']) == len(one['batch_losses']) == 2 * 19
    np.testing.assert_allclose(ours['batch_losses'], one['batch_losses'], rtol=RTOL)
    np.testing.assert_allclose(ours['eval']['loss'], one['eval']['loss'], rtol=RTOL)
    assert abs(ours['eval']['acc'] - one['eval']['acc']) <= 1 / 200  # at most one image of 200
    assert 'device: cpu, 2 data-parallel workers' in parallel['stdout']


def test_only_rank_0_writes_files_and_prints_progress(parallel):
    work = parallel['dir']
    assert sorted(os.listdir(work / 'checkpoint')) == sorted(
        ['.lock', '.lock-holder'] + [f'mnist_epoch{e}.{x}' for e in range(2) for x in ('json', 'pdparams', 'pdopt')])
    assert sorted(os.listdir(work / 'runs' / 'cnn')) == sorted(
        ['acc.png', 'confusion.png', 'loss.png', 'metrics.json', 'mistakes.png', 'model.json', 'model.pdparams',
         'samples.png'])
    assert sorted(n for n in os.listdir(work) if not n.startswith('.')) == ['checkpoint', 'log', 'runs']  # .cache: HOME
    rank1 = (work / 'log' / 'workerlog.1').read_text()
    assert 'epoch: 0, batch: 0' not in rank1 and 'wrote' not in rank1
    log0 = (work / 'log' / 'workerlog.0').read_text()
    for epoch, batch in ((0, 0), (0, 5), (0, 15), (1, 10)):  # every progress line, summed over workers
        assert f'epoch: {epoch}, batch: {batch}, loss is: ' in log0, log0[-2000:]


def test_two_data_parallel_runs_are_identical(parallel, idx_dir, tmp_path):
    """gloo's all-reduce of two workers adds in a fixed order: the same seed gives the same bits."""
    proc = launch(tmp_path, 'mnist_cnn.py', '--data-dir', idx_dir, *DP_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_metrics(tmp_path / 'runs' / 'cnn')['batch_losses'] == parallel['metrics']['batch_losses']


def test_a_two_worker_checkpoint_resumes_in_one_process(parallel, single, run_script, tmp_path):
    """--compare against the two-worker run: any difference is reported (exit 1), with a note that
    bit-identity holds for the same number of workers only."""
    proc = run_script('resume.py', '--ckpt', parallel['dir'] / 'checkpoint' / 'mnist_epoch0', '--ckpt-dir',
                      tmp_path / 'ckpt', '--out', tmp_path / 'out', '--compare',
                      parallel['dir'] / 'runs' / 'cnn' / 'metrics.json', cwd=tmp_path)
    assert 'Traceback' not in proc.stderr
    resumed = read_metrics(tmp_path / 'out')
    differ = resumed['batch_losses'] != parallel['metrics']['batch_losses'][19:]
    assert proc.returncode == (1 if differ else 0), proc.stdout + proc.stderr
    assert ('note: the reference ran with 2 data-parallel worker(s), this run with 1' in proc.stdout) == differ
    assert resumed['first_step'] == 19 and resumed['workers'] == 1 and parallel['metrics']['workers'] == 2
    np.testing.assert_allclose(resumed['batch_losses'], single['metrics']['batch_losses'][19:], rtol=RTOL)


def test_a_one_process_checkpoint_resumes_with_two_workers(single, tmp_path):
    proc = launch(tmp_path, 'resume.py', '--ckpt', single['dir'] / 'checkpoint' / 'mnist_epoch0', '--ckpt-dir',
                  tmp_path / 'ckpt', '--out', tmp_path / 'out')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resumed = read_metrics(tmp_path / 'out')
    np.testing.assert_allclose(resumed['batch_losses'], single['metrics']['batch_losses'][19:], rtol=RTOL)
    assert 'Traceback' not in (tmp_path / 'log' / 'workerlog.1').read_text()


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


def start_and_wait_for_training(tmp_path, idx_dir, lines=15, wait_for=None):
    """A long data-parallel run; returns once rank 0 has printed `lines` progress lines (and, with
    wait_for, once that file exists: the launcher's output is read meanwhile, so its pipe never fills)."""
    args = ['--data-dir', idx_dir, '--epochs', '30', '--batch-size', '20', '--log-every', '1']
    launcher = subprocess.Popen(launch_cmd(tmp_path, 'mnist_cnn.py', *args), cwd=tmp_path, env=script_env(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def test_ctrl_c_stops_every_worker_at_one_step(idx_dir, run_script, tmp_path):
    """Ctrl-C reaches the launcher, which sends each worker SIGTERM (three times, 0.2 s apart):
    all workers stop at the same step, rank 0 saves a checkpoint, and one process resumes it."""
    launcher = start_and_wait_for_training(tmp_path, idx_dir)
    launcher.send_signal(signal.SIGINT)
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    log0 = (tmp_path / 'log' / 'workerlog.0').read_text()
    assert 'interrupt: finishing this step, then saving a checkpoint' in log0
    assert 'Continue with: python resume.py --ckpt checkpoint/mnist_' in log0
    assert 'Traceback' not in log0 and 'Traceback' not in (tmp_path / 'log' / 'workerlog.1').read_text()
    assert_checkpoints_whole_and_resumable(run_script, tmp_path)


def test_a_worker_that_dies_fails_the_launch(idx_dir, run_script, tmp_path):
    """SIGKILL to rank 1: rank 0 loses its peer inside PaddlePaddle's gradient exchange (or in the
    loss average) and stops; the launch exits non-zero naming the failed worker and its log; every
    checkpoint on disk is whole and resumes. The kill comes after the first epoch's checkpoint, so
    there is one to check (before it, nothing would be on disk to lose)."""
    launcher = start_and_wait_for_training(tmp_path, idx_dir, wait_for=tmp_path / 'checkpoint' / 'mnist_epoch0.json')
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
