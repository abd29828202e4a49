"""Ctrl-C in a script, beyond the first press mid-epoch (test_faults.py): a second press, one while
the interrupted checkpoint is being saved, one on an epoch's last batch, in the final evaluation and
after the last line. Real training processes; the presses come from inside the process where they
must land at one exact moment."""
import hashlib
import json
import os
import signal

import startup
startup.import_paddle()  # before paddle, as in the scripts

import checkpoints
import paddle
import pytest
import restore
from conftest import ROOT, python_run, script_env
from test_faults import assert_every_file_is_whole


# The user presses Ctrl-C, sees "finishing this step, then saving a checkpoint (Ctrl-C again to
# abort)", and presses it again before that step is done. Two real SIGINTs to the training process;
# to land both inside one step every time (a second signal from outside can arrive after the save
# on a busy machine), they are sent by the process itself, from the loss function of its 8th step
# (epoch 1, batch 2 of 5), the second once the first has been handled. Otherwise this is mnist_cnn.py as
# `python mnist_cnn.py` runs it (common.run_main(main)).
TWO_CTRL_C = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
sys.argv = ['mnist_cnn.py'] + {args!r}
import mnist_cnn
import paddle
real, steps = mnist_cnn.loss_and_correct, []
def ctrl_c_twice_in_step_8(output, labels, kind):
    if paddle.is_grad_enabled():  # a training step, not evaluation
        steps.append(1)
        if len(steps) == 8:
            for press in range(2):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the handler runs here: the first press prints, the second aborts
    return real(output, labels, kind)
mnist_cnn.loss_and_correct = ctrl_c_twice_in_step_8
mnist_cnn.common.run_main(mnist_cnn.main)
"""


def test_a_second_ctrl_c_aborts_without_saving(idx_dir, tmp_path):
    """A second Ctrl-C aborts at once: no NAME_interrupted (nor a part of one), no further epoch,
    no results; the process ends by the interrupt (Python's exit for an unhandled Ctrl-C, which a
    shell shows as 130), and the checkpoints of the epochs before are whole."""
    args = ['--data-dir', str(idx_dir), '--epochs', '3', '--batch-size', '20', '--train-limit', '100']
    code = TWO_CTRL_C.format(root=str(ROOT), args=args)
    (tmp_path / 'checkpoint').mkdir()  # a whole checkpoint of another model, further along: not named
    for ext in ('pdparams', 'pdopt'):
        (tmp_path / 'checkpoint' / f'linear_epoch9.{ext}').write_bytes(ext.encode())
    (tmp_path / 'checkpoint' / 'linear_epoch9.json').write_text(json.dumps({
        'format': checkpoints.FORMAT, 'run_id': 'another', 'global_step': 999, 'next_epoch': 10,
        'files': {ext: hashlib.sha256(ext.encode()).hexdigest() for ext in ('pdparams', 'pdopt')}}))
    proc = python_run([ROOT / 'mnist_cnn.py'], tmp_path, script_env(tmp_path), timeout=300, code=code)
    assert proc.returncode == -signal.SIGINT, proc.stdout + proc.stderr
    assert proc.stdout.count('interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort)') == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "stopped by a second interrupt (Ctrl-C), without saving; this run's newest checkpoint is whole. "
        'Continue with: python resume.py --ckpt checkpoint/mnist_epoch0'), proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert 'stopped; saved' not in proc.stderr
    assert sorted(n for n in os.listdir(tmp_path / 'checkpoint') if n.startswith('mnist')) == \
        ['mnist_epoch0.json', 'mnist_epoch0.pdopt', 'mnist_epoch0.pdparams']  # no part of mnist_interrupted
    for ext in ('json', 'pdparams', 'pdopt'):  # (its bytes are no model's)
        os.remove(tmp_path / 'checkpoint' / f'linear_epoch9.{ext}')
    assert_every_file_is_whole(str(tmp_path / 'checkpoint'))
    assert restore.find(str(tmp_path / 'checkpoint'))[1]['next_epoch'] == 1
    assert not (tmp_path / 'runs' / 'cnn' / 'metrics.json').exists()


# The second press while NAME_interrupted is being saved: right after its .pdparams is in place
# (os.replace wrapped, as test_kill_points.py does for its kills), the first press in step 8.
SECOND_CTRL_C_IN_THE_SAVE = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
sys.argv = ['mnist_cnn.py'] + {args!r}
import mnist_cnn
import paddle
real, steps = mnist_cnn.loss_and_correct, []
def ctrl_c_in_step_8(output, labels, kind):
    if paddle.is_grad_enabled():
        steps.append(1)
        if len(steps) == 8:
            os.kill(os.getpid(), signal.SIGINT)
    return real(output, labels, kind)
mnist_cnn.loss_and_correct = ctrl_c_in_step_8
real_replace = os.replace
def replace(source, target):
    real_replace(source, target)
    if str(target).endswith('mnist_interrupted.pdparams'):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)
os.replace = replace
mnist_cnn.common.run_main(mnist_cnn.main)
"""


def test_a_second_ctrl_c_during_the_save_leaves_no_part_of_it(idx_dir, tmp_path):
    """The second press lands while NAME_interrupted is half saved (its .pdparams written, not yet
    its .pdopt and .json): the abort removes that half, so the folder holds only whole checkpoints
    and a later run finds nothing to trip over."""
    args = ['--data-dir', str(idx_dir), '--epochs', '3', '--batch-size', '20', '--train-limit', '100']
    code = SECOND_CTRL_C_IN_THE_SAVE.format(root=str(ROOT), args=args)
    proc = python_run([ROOT / 'mnist_cnn.py'], tmp_path, script_env(tmp_path), timeout=300, code=code)
    assert proc.returncode == -signal.SIGINT, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('stopped by a second interrupt (Ctrl-C), without saving;')
    assert sorted(n for n in os.listdir(tmp_path / 'checkpoint') if not n.startswith('.')) == \
        ['mnist_epoch0.json', 'mnist_epoch0.pdopt', 'mnist_epoch0.pdparams']  # no part of mnist_interrupted
    assert_every_file_is_whole(str(tmp_path / 'checkpoint'))


def test_a_ctrl_c_after_the_run_finished_changes_nothing(idx_dir, tmp_path):
    """Ctrl-C after the last line ('wrote ...'), while Python exits: the run is finished and
    whole, so it exits 0 and says nothing more (it ended with 130 and no word)."""
    args = ['--data-dir', str(idx_dir), '--epochs', '1', '--train-limit', '100']
    code = (f'import os, signal, sys, time\nsys.path.insert(0, {str(ROOT)!r})\n'
            f'sys.argv = ["mnist_cnn.py"] + {args!r}\nimport mnist_cnn\n'
            'mnist_cnn.common.run_main(mnist_cnn.main)\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.5)\n')
    proc = python_run([ROOT / 'mnist_cnn.py'], tmp_path, script_env(tmp_path), timeout=300, code=code)
    assert proc.returncode == 0 and proc.stderr == '', proc.stderr[-2000:]
    assert proc.stdout.rstrip().splitlines()[-1].startswith('wrote ')


CTRL_C_IN_THE_FINAL_EVALUATION = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
sys.argv = ['mnist_cnn.py'] + {args!r}
import mnist_cnn
real = mnist_cnn.finish
def finish(*args, **kwargs):  # training is over: its safe stop no longer holds Ctrl-C
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)
    return real(*args, **kwargs)
mnist_cnn.finish = finish
mnist_cnn.common.run_main(mnist_cnn.main)
"""


def test_ctrl_c_in_the_final_evaluation_is_one_line(idx_dir, tmp_path):
    """After the last epoch's checkpoint: no traceback, one line, the end by the interrupt, every
    checkpoint whole (found by a new-user trial: it was a KeyboardInterrupt traceback)."""
    args = ['--data-dir', str(idx_dir), '--epochs', '1', '--train-limit', '100']
    code = CTRL_C_IN_THE_FINAL_EVALUATION.format(root=str(ROOT), args=args)
    proc = python_run([ROOT / 'mnist_cnn.py'], tmp_path, script_env(tmp_path), code=code)
    assert proc.returncode == -signal.SIGINT, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        'stopped (Ctrl-C) before the run finished; every file written so far is whole; '
        'after its training, resume.py with its last checkpoint writes its evaluation'], proc.stderr[-2000:]
    assert_every_file_is_whole(str(tmp_path / 'checkpoint'))
    assert not (tmp_path / 'runs' / 'cnn' / 'metrics.json').exists()


@pytest.mark.parametrize('epochs', [2, 1])
def test_ctrl_c_on_an_epochs_last_batch_finishes_that_epoch(idx_dir, tmp_path, monkeypatch, capsys, epochs):
    """Ctrl-C during the last batch of epoch 0 (raised deterministically from inside the step):
    the epoch still validates and saves mnist_epoch0, and the resumed run's epoch rows and losses
    equal the uninterrupted run's. When epoch 0 is the run's last (1 epoch), the run finishes
    instead, saying so: its evaluation and results are all that is left, and they equal the
    uninterrupted run's."""
    import mnist_cnn
    import resume
    args = ['--data-dir', idx_dir, '--epochs', str(epochs), '--batch-size', '100', '--log-every', '1000']
    full = mnist_cnn.main(args + ['--out', str(tmp_path / 'full'), '--ckpt-dir', str(tmp_path / 'c_full')])
    steps = full['steps_per_epoch']

    calls = {'n': 0}
    real = mnist_cnn.loss_and_correct

    def interrupt_on_last_batch(output, labels, kind):
        if paddle.is_grad_enabled():  # a training step, not evaluation
            calls['n'] += 1
            if calls['n'] == steps:
                signal.raise_signal(signal.SIGINT)
        return real(output, labels, kind)
    monkeypatch.setattr(mnist_cnn, 'loss_and_correct', interrupt_on_last_batch)
    if epochs == 1:
        capsys.readouterr()
        finished = mnist_cnn.main(args + ['--out', str(tmp_path / 'part'), '--ckpt-dir', str(tmp_path / 'c')])
        assert 'interrupt: that was the last epoch, so the run finishes: its evaluation and results' \
            in capsys.readouterr().out
        assert finished['batch_losses'] == full['batch_losses'] and finished['eval'] == full['eval']
        return
    with pytest.raises(SystemExit) as stop:
        mnist_cnn.main(args + ['--out', str(tmp_path / 'part'), '--ckpt-dir', str(tmp_path / 'c')])
    assert stop.value.code == 130
    monkeypatch.setattr(mnist_cnn, 'loss_and_correct', real)
    assert restore.find(str(tmp_path / 'c'))[1]['next_epoch'] == 1
    assert (tmp_path / 'c' / 'mnist_epoch0.json').exists()

    resumed = resume.main(['--ckpt', str(tmp_path / 'c'), '--out', str(tmp_path / 'res'),
                           '--compare', str(tmp_path / 'full' / 'metrics.json')])
    assert resumed['batch_losses'] == full['batch_losses'][steps:]
    timing = ('samples_per_s', 'seconds')
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]
    assert strip(resumed['epochs']) == strip(full['epochs'][1:])
