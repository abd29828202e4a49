"""Faults a learner meets: a killed kernel (SIGKILL), Ctrl-C, a damaged or foreign checkpoint, a
run that diverges, a reused checkpoint folder. Real training subprocesses throughout."""
import json
import os
import shutil
import shlex
import signal
import time

import startup
startup.import_paddle()  # before paddle, as in the scripts

import checkpoints
import restore
import common

import numpy as np
import paddle
import pytest
from conftest import ROOT, python_run, python_start, read_metrics, script_env
from pathlib import Path
from test_reliability import one_error

# 4 epochs of 25 small batches: long enough to be killed at many different moments
FAULT_ARGS = ['--epochs', '4', '--batch-size', '20', '--seed', '3', '--log-every', '1']


@pytest.fixture(scope='module')
def reference(idx_dir, run_script, tmp_path_factory):
    """The uninterrupted run every faulty run must reproduce."""
    work = tmp_path_factory.mktemp('fault_reference')
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *FAULT_ARGS, cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work


def start(script, args, cwd, home):  # a run to read and signal while it trains (forked: conftest)
    return python_start([ROOT / script, *args], cwd, script_env(home))


def wait_for_lines(proc, count):
    """Read progress lines until `count` have been printed (or the process ends)."""
    seen = 0
    for line in proc.stdout:
        if line.startswith('epoch'):
            seen += 1
            if seen >= count:
                return True
    return False


def assert_every_file_is_whole(ckpt_dir):
    """Whatever a kill left behind: each checkpoint file loads; each description verifies."""
    for name in os.listdir(ckpt_dir):
        path = os.path.join(ckpt_dir, name)
        if name.startswith('.'):  # an unfinished temporary file: never read by anything
            continue
        if name.endswith('.json'):
            checkpoints.read_meta(path[:-5])  # both files present, hashes match
        else:
            paddle.load(path)  # not truncated


def test_sigkill_at_random_points_never_damages_checkpoints(reference, idx_dir, tmp_path):
    rng = np.random.default_rng(2024)  # seeded: the same kill points every run of the test
    ckpt = tmp_path / 'checkpoint'
    finished = lambda found: found and found[-1][2]['next_epoch'] >= 4
    kills = 0
    # two kills, each with a checkpoint behind it (26 lines an epoch): seeded, the first run dies in
    # epoch 1 and its resume in epoch 2 (test_kill_points.py kills at every point of a save)
    for attempt in range(4):
        found = checkpoints.list_checkpoints(str(ckpt))
        if finished(found) or kills == 2:
            break
        if found:  # continue from the newest complete checkpoint, as a user would
            proc = start('resume.py', ['--ckpt', 'latest', '--log-every', '1'], tmp_path, tmp_path)
        else:
            proc = start('mnist_cnn.py', ['--data-dir', idx_dir, *FAULT_ARGS], tmp_path, tmp_path)
        if wait_for_lines(proc, int(rng.integers(27, 60))):
            time.sleep(float(rng.uniform(0, 0.05)))  # sometimes mid-step, sometimes mid-save
            proc.kill()
            kills += 1
        proc.wait(timeout=120)
        proc.stdout.close()
        proc.stderr.close()
        if ckpt.exists():
            assert_every_file_is_whole(str(ckpt))
    assert kills == 2
    found = checkpoints.list_checkpoints(str(ckpt))
    if not finished(found):  # the last leg, uninterrupted, compared batch by batch
        script, args = ('resume.py', ['--ckpt', 'latest', '--compare',
                                      reference / 'runs' / 'cnn' / 'metrics.json']) if found else \
            ('mnist_cnn.py', ['--data-dir', idx_dir, *FAULT_ARGS])
        proc = python_run([ROOT / script, *args], tmp_path, script_env(tmp_path), timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # However it was interrupted, the final state is the same bytes as the uninterrupted run's.
    for epoch in range(4):
        ours = json.loads((ckpt / f'mnist_epoch{epoch}.json').read_text())['files']
        theirs = json.loads((reference / 'checkpoint' / f'mnist_epoch{epoch}.json').read_text())['files']
        assert ours == theirs, epoch


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM], ids=['ctrl_c', 'sigterm'])
def test_ctrl_c_or_sigterm_mid_epoch_saves_and_resumes_exactly(reference, idx_dir, tmp_path, signum):
    """The README's table: Ctrl-C (or SIGTERM, as a job scheduler or `kill` sends) finishes the
    current step, saves NAME_interrupted, prints the resume command and exits with 130; the run
    resumed from Ctrl-C's checkpoint gives the uninterrupted run's losses (SIGTERM's checkpoint is
    made by the same handler and save, so it is not resumed a second time). The checkpoint folder's
    name has a space: the printed command quotes it, and that command, split as a shell splits it,
    is the resume."""
    folder = 'my checkpoints'
    proc = start('mnist_cnn.py', ['--data-dir', idx_dir, *FAULT_ARGS, '--ckpt-dir', folder], tmp_path, tmp_path)
    assert wait_for_lines(proc, 25 + 1 + 8)  # epoch 0 (25 batches + its summary), 8 batches of epoch 1
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert 'interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort)' in out
    saved, command = err.strip().splitlines()[-1].split(' Continue with: ')
    assert saved == f'stopped; saved {folder}/mnist_interrupted.pdparams/.pdopt.'
    assert command == f"python resume.py --ckpt '{folder}/mnist_interrupted'"
    assert 'Traceback' not in err
    meta = checkpoints.read_meta(str(tmp_path / folder / 'mnist_interrupted'))  # whole: hashes verify
    assert meta['next_epoch'] == 1 and 0 < meta['next_batch'] < 25
    if signum == signal.SIGTERM:
        return  # the same stop and checkpoint as Ctrl-C's (the handler is one): its resume is below

    python, script, *args = shlex.split(command)
    res = python_run([ROOT / script, *args, '--compare', reference / 'runs' / 'cnn' / 'metrics.json'],
                     tmp_path, script_env(tmp_path), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'bit-identical' in res.stdout
    full = read_metrics(reference / 'runs' / 'cnn')
    resumed = read_metrics(tmp_path / 'runs' / 'resume')
    assert resumed['batch_losses'] == full['batch_losses'][25 + meta['next_batch']:]
    # The interrupted epoch's summary counts the batches before the interrupt too.
    for key in ('train_loss', 'train_acc', 'valid_loss', 'valid_acc'):
        assert resumed['epochs'][0][key] == full['epochs'][1][key]


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
    proc = python_run([ROOT / 'mnist_cnn.py'], tmp_path, script_env(tmp_path), timeout=300, code=code)
    assert proc.returncode == -signal.SIGINT, proc.stdout + proc.stderr
    assert proc.stdout.count('interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort)') == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        'stopped (Ctrl-C) before the run finished; every file written so far is whole'), proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert 'stopped; saved' not in proc.stderr
    assert sorted(n for n in os.listdir(tmp_path / 'checkpoint') if not n.startswith('.lock')) == \
        ['mnist_epoch0.json', 'mnist_epoch0.pdopt', 'mnist_epoch0.pdparams']  # no part of mnist_interrupted
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
    assert proc.stderr.strip().splitlines()[-1] == (
        'stopped (Ctrl-C) before the run finished; every file written so far is whole'), proc.stderr[-2000:]
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
        'stopped (Ctrl-C) before the run finished; every file written so far is whole'], proc.stderr[-2000:]
    assert_every_file_is_whole(str(tmp_path / 'checkpoint'))
    assert not (tmp_path / 'runs' / 'cnn' / 'metrics.json').exists()


def test_latest_and_folder_pick_the_newest_checkpoint(reference):
    prefix, meta = restore.find(str(reference / 'checkpoint'))
    assert prefix.endswith('mnist_epoch3') and meta['next_epoch'] == 4


def test_a_new_run_moves_the_earlier_runs_checkpoints_aside(reference, run_script, idx_dir, tmp_path):
    """make cnn, then make cnn ARGS="--opt momentum" (the course's stage 六): the second run starts,
    and the first run's checkpoints move, whole and still resumable, to checkpoint/previous/<run>/."""
    work = tmp_path / 'w'
    shutil.copytree(reference, work)
    earlier = json.loads((work / 'checkpoint' / 'mnist_epoch0.json').read_text())
    before = (work / 'checkpoint' / 'mnist_epoch0.pdparams').read_bytes()
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *FAULT_ARGS[:-4], '--opt', 'momentum',
                      '--epochs', '1', '--train-limit', '100', cwd=work)
    assert proc.returncode == 0, proc.stderr
    moved = work / 'checkpoint' / 'previous' / earlier['run_id']
    assert f'moved to {Path("checkpoint") / "previous" / earlier["run_id"]}' in proc.stdout
    assert (moved / 'mnist_epoch0.pdparams').read_bytes() == before
    assert restore.find(str(moved))[0].endswith('mnist_epoch3')  # all four epochs, complete
    now = json.loads((work / 'checkpoint' / 'mnist_epoch0.json').read_text())
    assert now['run_id'] != earlier['run_id'] and now['config']['opt'] == 'momentum'
    assert not (work / 'checkpoint' / 'mnist_epoch3.json').exists()  # nothing of the earlier run mixed in
    # resume.py --ckpt checkpoint/mnist_epoch0 now continues the newest run; --epochs 2 trains
    # further, at the schedule's final rate (--lr / 10)
    proc = run_script('resume.py', '--ckpt', 'checkpoint/mnist_epoch0', '--epochs', '2', cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert f'(run {now["run_id"]})' in proc.stdout
    scheduler = paddle.load(str(work / 'checkpoint' / 'mnist_epoch1.pdopt'))['LR_Scheduler']
    assert scheduler['last_lr'] == pytest.approx(now['config']['lr'] / 10, rel=1e-12)  # Python floats


def test_an_unfinished_run_is_never_moved_aside_silently(reference, run_script, idx_dir, tmp_path):
    """A run stopped by Ctrl-C (NAME_interrupted) or between epochs (a kill, or Ctrl-C during an
    epoch's last batch: its newest checkpoint is mnist_epoch1 of 4) is resumed, not replaced: a new
    run into its folder stops with one sentence and moves nothing; --overwrite moves it aside."""
    work = tmp_path / 'w'
    shutil.copytree(reference, work)
    for ext in ('json', 'pdparams', 'pdopt'):  # the run stopped after epoch 1 of 4
        for epoch in (2, 3):
            os.remove(work / 'checkpoint' / f'mnist_epoch{epoch}.{ext}')
    run_id = json.loads((work / 'checkpoint' / 'mnist_epoch1.json').read_text())['run_id']
    listing = sorted(os.listdir(work / 'checkpoint'))
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *FAULT_ARGS[:-4], '--seed', '9', cwd=work)
    one_error(proc, 'mnist_epoch1 is the newest checkpoint of an unfinished run',
              'python resume.py --ckpt', '--overwrite')
    assert sorted(os.listdir(work / 'checkpoint')) == listing  # nothing moved, nothing written
    for ext in ('json', 'pdparams', 'pdopt'):  # now stopped by Ctrl-C mid-epoch 2
        shutil.copy(work / 'checkpoint' / f'mnist_epoch1.{ext}', work / 'checkpoint' / f'mnist_interrupted.{ext}')
    meta = json.loads((work / 'checkpoint' / 'mnist_interrupted.json').read_text())
    meta['global_step'] += 1
    meta['workers'] = 2  # as if two data-parallel workers had saved it: resumed through the launcher
    (work / 'checkpoint' / 'mnist_interrupted.json').write_text(json.dumps(meta))
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *FAULT_ARGS[:-4], '--seed', '9', cwd=work)
    one_error(proc, 'mnist_interrupted is the newest checkpoint of an unfinished run',
              'continue it with: `python -m paddle.distributed.launch --nproc_per_node 2 resume.py --ckpt ')
    assert proc.stderr.rstrip().endswith('resume.py --ckpt checkpoint/mnist_interrupted` (with make: `make resume '
                                         'NPROC=2 CKPT=checkpoint/mnist_interrupted`)')  # each command delimited
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *FAULT_ARGS[:-4], '--seed', '9', '--epochs', '1',
                      '--train-limit', '40', '--overwrite', cwd=work)
    assert proc.returncode == 0, proc.stderr
    moved = work / 'checkpoint' / 'previous' / run_id
    assert (moved / 'mnist_interrupted.json').exists() and restore.find(str(moved))[0].endswith('interrupted')


def damaged_copy(reference, tmp_path):
    work = tmp_path / 'w'
    shutil.copytree(reference / 'checkpoint', work)
    return work


@pytest.mark.parametrize('damage, message', [
    (lambda w: os.remove(w / 'mnist_epoch0.pdopt'),
     'mnist_epoch0.pdopt is missing: the checkpoint'),
    (lambda w: (w / 'mnist_epoch0.pdparams').write_bytes((w / 'mnist_epoch0.pdparams').read_bytes()[:500]),
     'mnist_epoch0.pdparams is damaged or belongs to another run'),
    (lambda w: shutil.copy(w / 'mnist_epoch1.pdopt', w / 'mnist_epoch0.pdopt'),
     'mnist_epoch0.pdopt is damaged or belongs to another run'),
    (lambda w: os.remove(w / 'mnist_epoch0.json'),
     'mnist_epoch0.json is missing'),
    (lambda w: (w / 'mnist_epoch0.json').write_text('{"half": '),
     'is not a checkpoint description'),
])
def test_damaged_checkpoints(reference, run_script, tmp_path, damage, message):
    work = damaged_copy(reference, tmp_path)
    damage(work)
    proc = run_script('resume.py', '--ckpt', work / 'mnist_epoch0', cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_checkpoint_of_another_model_names_the_parameters(reference, run_script, idx_dir, tmp_path):
    """An MLP's parameters under a CNN checkpoint's name (hashes made to match, as if a user
    copied files around): the load names every parameter that does not fit."""
    proc = run_script('mnist_mlp.py', '--data-dir', idx_dir, '--epochs', '1', '--loss', 'ce', '--train-limit', '100',
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    work = damaged_copy(reference, tmp_path)
    shutil.copy(tmp_path / 'checkpoint' / 'mlp_epoch0.pdparams', work / 'mnist_epoch0.pdparams')
    meta = json.loads((work / 'mnist_epoch0.json').read_text())
    meta['files']['pdparams'] = checkpoints.file_hash(str(work / 'mnist_epoch0.pdparams'))
    (work / 'mnist_epoch0.json').write_text(json.dumps(meta))
    proc = run_script('resume.py', '--ckpt', work / 'mnist_epoch0', cwd=tmp_path)
    assert proc.returncode == 1
    assert 'does not fit this model (MNISTCNN): missing conv1.weight, conv1.bias' in proc.stderr
    assert 'unexpected hidden.0.weight' in proc.stderr


def test_divergence_stops_and_keeps_the_good_checkpoints(run_script, idx_dir, tmp_path):
    """SGD at lr 100 on the regression head, one batch per epoch (--train-limit 20): the loss of
    epoch 0 is finite (the initial weights), of epoch 1 huge (5e26 on the fixture) but finite, and
    of epoch 2 overflows. The run stops there with one sentence; mnist_epoch0 and mnist_epoch1,
    saved before, are whole (their sha256 verify, they load) and resume: from mnist_epoch1 the
    same divergence comes at the same batch. Nothing of the diverged state is saved. (With
    cross-entropy the same rate wrecks the model but the loss stays finite: log-softmax cannot
    overflow.)"""
    args = ['--data-dir', idx_dir, '--opt', 'sgd', '--lr', '100', '--loss', 'mse', '--schedule', 'constant',
            '--epochs', '3', '--batch-size', '20', '--train-limit', '20', '--log-every', '1']
    proc = run_script('mnist_cnn.py', *args, cwd=tmp_path)
    stop = ('error: the loss became inf at epoch 2, batch 0: training diverged. Use a smaller learning rate '
            '(now --lr 100.0); the checkpoints saved before this batch in checkpoint are intact')
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [stop], proc.stdout + proc.stderr
    assert 'epoch 1: train loss' in proc.stdout  # two epochs finished before
    ckpt = tmp_path / 'checkpoint'
    assert sorted(n for n in os.listdir(ckpt) if not n.startswith('.lock')) == \
        [f'mnist_epoch{e}.{x}' for e in (0, 1) for x in ('json', 'pdopt', 'pdparams')]
    assert_every_file_is_whole(str(ckpt))
    assert [item[2]['next_epoch'] for item in checkpoints.list_checkpoints(str(ckpt))] == [1, 2]
    # nothing from the diverged state: no checkpoint of epoch 2, no final model, no metrics
    assert not (tmp_path / 'runs' / 'cnn' / 'model.pdparams').exists()
    assert not (tmp_path / 'runs' / 'cnn' / 'metrics.json').exists()
    proc = run_script('resume.py', '--ckpt', 'checkpoint/mnist_epoch1', '--log-every', '1', cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [stop], proc.stdout + proc.stderr


def test_cached_download_with_wrong_md5(tmp_path, monkeypatch):
    """A damaged file in PaddlePaddle's cache is not used: its md5 is checked, the real
    downloader tries again (no network here), and the message names the file."""
    import paddle.dataset.common as pdc
    monkeypatch.setenv('HOME', str(tmp_path))
    for var in ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'):
        monkeypatch.setenv(var, 'http://127.0.0.1:9')
    monkeypatch.delenv('NO_PROXY', raising=False)
    monkeypatch.delenv('no_proxy', raising=False)
    monkeypatch.setattr(pdc, 'DATA_HOME', str(tmp_path / '.cache' / 'paddle' / 'dataset'))
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / '.cache' / 'paddle' / 'dataset' / 'mnist'
    cache.mkdir(parents=True)
    (cache / 'train-images-idx3-ubyte.gz').write_bytes(b'not the real file')
    with pytest.raises(common.UserError) as err:
        common.load_mnist_splits(None)
    assert 'train-images-idx3-ubyte.gz has md5' in str(err.value)
    assert 'not the expected f68b3c2dcbeaaa9fbdd348bbdeb94873' in str(err.value)


def test_ctrl_c_on_an_epochs_last_batch_finishes_that_epoch(idx_dir, tmp_path, monkeypatch):
    """Ctrl-C during the last batch of epoch 0 (raised deterministically from inside the step):
    the epoch still validates and saves mnist_epoch0, and the resumed run's epoch rows and losses
    equal the uninterrupted run's."""
    import mnist_cnn
    import resume
    args = ['--data-dir', idx_dir, '--epochs', '2', '--batch-size', '100', '--log-every', '1000']
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
