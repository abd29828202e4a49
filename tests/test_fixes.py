"""Four behaviours a reader of the tests found, each now fixed and held by a test that failed before:
with data-parallel workers a learner's own bug shows its real error (it was turned into "a worker
stopped"); no global stream is left replaced (rank > 0 got sys.stdout = /dev/null for good); the
progress print and the workers' sum share one condition (Tracker.prints); a run lists the pictures
it wrote (it listed files by time)."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, script_env

BUGGY = '''
import runpy, sys
sys.path.insert(0, {root!r})
import mnist_cnn
def forward(self, x):  # a learner's shape bug: the fc layer fed the wrong size
    raise RuntimeError('(InvalidArgument) the learner-made shape mismatch 980 != 1960')
mnist_cnn.MNISTCNN.forward = forward
sys.argv = ['mnist_cnn.py'] + sys.argv[1:]
mnist_cnn.common.run_main(mnist_cnn.main)
'''


def test_a_learners_bug_under_data_parallel_shows_its_real_error(idx_dir, tmp_path):
    script = tmp_path / 'buggy.py'
    script.write_text(BUGGY.format(root=str(ROOT)))
    proc = subprocess.run([sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', '2',
                           '--log_dir', str(tmp_path / 'log'), str(script), '--data-dir', str(idx_dir),
                           '--epochs', '1', '--train-limit', '100', '--batch-size', '50'],
                          cwd=tmp_path, env=script_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    log0 = (tmp_path / 'log' / 'workerlog.0').read_text()
    assert 'the learner-made shape mismatch 980 != 1960' in log0, log0[-3000:]
    assert 'a data-parallel worker stopped' not in log0
    assert "see each worker's own error in the launcher's log folder" in log0


def test_selecting_the_device_leaves_sys_stdout_alone(monkeypatch):
    import common
    monkeypatch.setenv('PADDLE_TRAINER_ID', '1')  # rank 1 of 1: no launcher needed
    stdout = sys.stdout
    common.select_device('cpu')
    assert sys.stdout is stdout


def test_progress_lines_and_the_workers_sum_share_one_condition():
    import progress
    tracker = progress.Tracker.__new__(progress.Tracker)
    tracker.cfg, tracker.per_epoch = {'log_every': 3}, 10
    assert [b for b in range(10) if tracker.prints(b)] == [0, 3, 6, 9]
    import inspect  # the workers sum on the batches that print (and the epoch's last): the same call
    import parallel
    assert 'self.prints(batch_id)' in inspect.getsource(parallel.Tracker.gather)
    assert 'self.prints(self.batch_id)' in inspect.getsource(progress.Tracker.print_progress)


def test_a_run_lists_the_pictures_it_wrote(run_script, idx_dir, tmp_path):
    common = ['mnist_cnn.py', '--data-dir', idx_dir, '--epochs', '1', '--train-limit', '100']
    first = run_script(*common, '--check-content', cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    wrote = [line for line in first.stdout.splitlines() if line.startswith('wrote ')][-1]
    assert 'kernels.png' in wrote and 'feature_maps.png' in wrote
    os.utime(tmp_path / 'runs' / 'cnn' / 'kernels.png')  # newer than the next run's start
    second = run_script(*common, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    wrote = [line for line in second.stdout.splitlines() if line.startswith('wrote ')][-1]
    assert wrote == ('wrote runs/cnn/: metrics.json, model.pdparams, model.json, samples.png, loss.png, acc.png, '
                     'mistakes.png, confusion.png'), wrote


@pytest.fixture(autouse=True)
def _paddle_path():
    sys.path.insert(0, str(ROOT))
    yield
    sys.path.remove(str(ROOT))


def test_an_accuracy_near_chance_says_the_network_has_not_learned(capsys):
    import progress  # a quick run (1,000 images, 1 epoch, Adam at 0.01) can end there
    progress.print_eval({'loss': 2.3022, 'acc': 0.1065}, {'train_limit': 1000})
    progress.print_eval({'loss': 2.3022, 'acc': 0.1065}, {'train_limit': None})  # all the images already
    progress.print_eval({'loss': 0.0412, 'acc': 0.9871}, {'train_limit': None})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == 'eval: loss 2.3022, accuracy 0.1065' and lines[1].startswith('note: that is near chance')
    assert '(--epochs, --train-limit)' in lines[1] and 'train longer (--epochs), or' in lines[3]
    assert lines[4:] == ['eval: loss 0.0412, accuracy 0.9871']


def test_a_ctrl_c_during_the_workers_sum_is_not_lost(monkeypatch):
    """parallel.Tracker sums the workers' Ctrl-C flags at each epoch's end; a signal that arrives while
    that sum runs (the launcher's SIGTERM often lands inside the C call) still counts next time."""
    import signal
    import parallel
    import progress
    tracker = parallel.Tracker.__new__(parallel.Tracker)
    tracker.epoch, tracker.cfg, tracker.world_size = 0, {'epochs': 3}, 2
    tracker.stop_requested = tracker.terminated = False

    def sum_while_a_signal_arrives(values):
        progress.on_signal(tracker, signal.SIGTERM)
        return [0.0]  # no worker had asked before the sum
    monkeypatch.setattr(parallel, 'all_reduce_sum', sum_while_a_signal_arrives)
    tracker.stop_if_interrupted()  # nobody had asked: every worker goes on (none may stop alone)
    assert tracker.stop_requested  # and the request stands for the next sum


def test_a_trained_model_or_a_stale_optimizer_is_refused_outside_a_notebook_too(tmp_path):
    """train() called twice on one model (python -i, an IPython terminal, a learner's own code), or
    with an optimizer of an earlier model: one sentence, not training on from those weights."""
    import paddle
    import progress
    from errors import UserError
    cfg = {'steps_per_epoch': 1, 'name': 'mnist', 'run_id': 'abc',
           'ckpt_dir': str(tmp_path / 'ck'), 'out': str(tmp_path / 'out')}
    model = paddle.nn.Linear(2, 2)
    model.trained = True  # as record_batch leaves it
    with pytest.raises(UserError, match=r'this model was trained already .*; build a new model and its optimizer first$'):
        with progress.tracker(cfg, model, paddle.optimizer.SGD(parameters=model.parameters())):
            pass
    earlier = paddle.nn.Linear(2, 2)
    with pytest.raises(UserError, match=r'the optimizer belongs to an earlier model .*; build a new model and its optimizer first$'):
        with progress.tracker(cfg, paddle.nn.Linear(2, 2), paddle.optimizer.SGD(parameters=earlier.parameters())):
            pass
