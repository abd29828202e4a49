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
from conftest import ROOT, python_run, python_start, read_metrics, record_new_weights, script_env
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
    assert f"note: an earlier run's 4 checkpoint(s) moved from checkpoint to {Path('checkpoint') / 'previous' / earlier['run_id']}\n" in proc.stdout
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


def test_an_unfinished_run_moves_aside_with_the_command_that_continues_it(reference, run_script, idx_dir,
                                                                          tmp_path):
    """A new run into the folder of a run stopped before its last epoch (a kill, or Ctrl-C during an
    epoch's last batch: its newest checkpoint is mnist_epoch1 of 4) moves that run whole to
    checkpoint/previous/<run id>/ and says how to continue it; that command continues it with the
    uninterrupted run's losses, bit for bit. A run stopped by Ctrl-C (mnist_interrupted) of two
    data-parallel workers gets the launcher's command; a finished run moves without one."""
    work = tmp_path / 'w'
    shutil.copytree(reference, work)
    for ext in ('json', 'pdparams', 'pdopt'):  # the run stopped after epoch 1 of 4
        for epoch in (2, 3):
            os.remove(work / 'checkpoint' / f'mnist_epoch{epoch}.{ext}')
    run_id = json.loads((work / 'checkpoint' / 'mnist_epoch1.json').read_text())['run_id']
    new_run = ['mnist_cnn.py', '--data-dir', idx_dir, *FAULT_ARGS[:-4], '--seed', '9', '--epochs', '1',
               '--train-limit', '40']
    proc = run_script(*new_run, cwd=work)
    assert proc.returncode == 0, proc.stderr
    moved = os.path.join('checkpoint', 'previous', run_id, 'mnist_epoch1')
    assert (f"note: an earlier run's 2 checkpoint(s) moved from checkpoint to {os.path.dirname(moved)}; that run "
            f'stopped before its last epoch: continue it (it saves there) with python resume.py --ckpt {moved}\n'
            ) in proc.stdout
    assert sorted(os.listdir(work / 'checkpoint' / 'previous' / run_id)) == [
        f'mnist_epoch{e}.{ext}' for e in (0, 1) for ext in ('json', 'pdopt', 'pdparams')]
    proc = run_script('resume.py', '--ckpt', moved, '--compare', str(reference / 'runs' / 'cnn' / 'metrics.json'),
                      cwd=work)
    assert proc.returncode == 0 and 'resumed losses are bit-identical' in proc.stdout, proc.stdout + proc.stderr
    # the seed-9 run (finished: 1 epoch of 1) moves without a command
    proc = run_script(*new_run, cwd=work)
    assert proc.returncode == 0 and "note: an earlier run's 1 checkpoint(s) moved" in proc.stdout, proc.stderr
    assert 'stopped before' not in proc.stdout
    now = json.loads((work / 'checkpoint' / 'mnist_epoch0.json').read_text())
    for ext in ('json', 'pdparams', 'pdopt'):  # now a run of 2 workers stopped by Ctrl-C, then this one
        shutil.copy(work / 'checkpoint' / f'mnist_epoch0.{ext}', work / 'checkpoint' / f'mnist_interrupted.{ext}')
    meta = dict(json.loads((work / 'checkpoint' / 'mnist_interrupted.json').read_text()), workers=2, next_epoch=0,
                run_id='two-workers')
    (work / 'checkpoint' / 'mnist_interrupted.json').write_text(json.dumps(meta))
    proc = run_script(*new_run, cwd=work)
    interrupted = os.path.join('checkpoint', 'previous', 'two-workers', 'mnist_interrupted')
    assert proc.returncode == 0, proc.stderr
    assert (f'continue it (it saves there) with `python -m paddle.distributed.launch --nproc_per_node 2 resume.py '
            f'--ckpt {interrupted}` (with make: `make resume NPROC=2 CKPT={interrupted}`)\n') in proc.stdout
    assert now['run_id'] in os.listdir(work / 'checkpoint' / 'previous')


def test_resume_names_the_runs_moved_aside_when_none_is_left(reference, run_script, tmp_path):
    """A learner who missed the note (the new run then killed before its first checkpoint, or one
    asking for a checkpoint only the earlier run had): resume.py names where it is now, in
    checkpoint/previous/<run id>/; junk there, and another model's name, change nothing."""
    work = tmp_path / 'w'
    previous = work / 'checkpoint' / 'previous'
    shutil.copytree(reference / 'checkpoint', previous / 'abc123')
    (previous / 'empty').mkdir()
    (previous / '.DS_Store').write_text('x')
    moved = os.path.join('checkpoint', 'previous', 'abc123')
    proc = run_script('resume.py', '--ckpt', 'latest', cwd=work)
    one_error(proc, f'checkpoint holds no complete checkpoint; a newer run moved earlier ones aside, the furthest '
                    f'trained first: {os.path.join(moved, "mnist_epoch3")}; pass --ckpt with one of them')
    for ext in ('json', 'pdparams', 'pdopt'):  # a newer run's first checkpoint beside them
        shutil.copy(reference / 'checkpoint' / f'mnist_epoch0.{ext}', work / 'checkpoint')
    for name in ('mnist_epoch2', 'mnist_interrupted'):  # one moved aside; one nowhere (the newest there)
        proc = run_script('resume.py', '--ckpt', os.path.join('checkpoint', name), cwd=work)
        one_error(proc, f'no checkpoint at {os.path.join("checkpoint", name)}' + (
            f': a newer run moved it aside to {os.path.join(moved, name)}; pass --ckpt {os.path.join(moved, name)}'
            if name == 'mnist_epoch2' else "; the newest of its run's kind there is checkpoint/mnist_epoch0"))
    proc = run_script('resume.py', '--ckpt', os.path.join('checkpoint', 'linear_epoch0'), cwd=work)
    one_error(proc, 'no checkpoint at checkpoint/linear_epoch0 (looked for')
    # a second earlier run holding the same names, written later; a hand-edited json; nothing on top
    shutil.copytree(reference / 'checkpoint', previous / '0later', ignore=shutil.ignore_patterns('mnist_epoch3.*'))
    for path in (previous / '0later').glob('*.json'):
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 60))
    shutil.copytree(reference / 'checkpoint', previous / 'edited', ignore=shutil.ignore_patterns('mnist_epoch[0-2].*'))
    meta = json.loads((previous / 'edited' / 'mnist_epoch3.json').read_text())
    (previous / 'edited' / 'mnist_epoch3.json').write_text(json.dumps(dict(meta, files=[], global_step=99)))
    for ext in ('json', 'pdparams', 'pdopt'):
        os.remove(work / 'checkpoint' / f'mnist_epoch0.{ext}')
    later = os.path.join('checkpoint', 'previous', '0later')
    proc = run_script('resume.py', '--ckpt', os.path.join('checkpoint', 'mnist_epoch2'), cwd=work)
    one_error(proc, f'a newer run moved it aside to one of {os.path.join(later, "mnist_epoch2")}, '
                    f'{os.path.join(moved, "mnist_epoch2")} (the last written first); '
                    f'pass --ckpt {os.path.join(later, "mnist_epoch2")}')
    for ckpt in (os.path.join('checkpoint', 'mnist_interrupted'), os.path.join('checkpoint', 'previous')):
        proc = run_script('resume.py', '--ckpt', ckpt, cwd=work)
        one_error(proc, f'the furthest trained first: {os.path.join(moved, "mnist_epoch3")}, '
                        f'{os.path.join(later, "mnist_epoch2")}; ')


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
    record_new_weights(work / 'mnist_epoch0')
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
            '(now --lr 100); the checkpoints saved before this batch in checkpoint are intact')
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


def offline(tmp_path, monkeypatch):
    """No data anywhere and no network: PaddlePaddle's cache in tmp_path, downloads to a closed port."""
    import paddle.dataset.common as pdc
    monkeypatch.setenv('HOME', str(tmp_path))
    for var in ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'):
        monkeypatch.setenv(var, 'http://127.0.0.1:9')
    monkeypatch.delenv('NO_PROXY', raising=False)
    monkeypatch.delenv('no_proxy', raising=False)
    monkeypatch.setattr(pdc, 'DATA_HOME', str(tmp_path / '.cache' / 'paddle' / 'dataset'))
    monkeypatch.chdir(tmp_path)


def test_no_data_and_no_network_says_how_to_pass_the_data_where_the_run_started(tmp_path, monkeypatch):
    offline(tmp_path, monkeypatch)
    monkeypatch.setenv('MAKELEVEL', '1')  # as `make cnn` starts the script
    with pytest.raises(common.UserError, match=r'without network pass --data-dir FOLDER \(with make: '
                                               r'DATA_DIR=FOLDER\), a folder holding them'):
        common.load_mnist_splits(None)


def test_cached_download_with_wrong_md5(tmp_path, monkeypatch):
    """A damaged file in PaddlePaddle's cache is not used: its md5 is checked, the real
    downloader tries again (no network here), and the message names the file."""
    offline(tmp_path, monkeypatch)
    cache = tmp_path / '.cache' / 'paddle' / 'dataset' / 'mnist'
    cache.mkdir(parents=True)
    (cache / 'train-images-idx3-ubyte.gz').write_bytes(b'not the real file')
    with pytest.raises(common.UserError) as err:
        common.load_mnist_splits(None)
    assert 'train-images-idx3-ubyte.gz has md5' in str(err.value)
    assert 'not the expected f68b3c2dcbeaaa9fbdd348bbdeb94873' in str(err.value)
