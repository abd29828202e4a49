"""The point of the package: training resumed from a checkpoint gives exactly the losses of the
uninterrupted run, and the same seed gives the same losses in every run.

Exact comparisons (==) where bit-identity is promised: same machine, same code, fresh processes.
The committed golden values (of this CNN run and of every other stage) are in test_golden.py.
"""
import json

import numpy as np
import pytest

from conftest import GOLDEN_ARGS, read_metrics


@pytest.mark.parametrize('epoch', [0, 1])
def test_resume_gives_identical_losses(cnn_run, run_script, tmp_path, epoch):
    proc = run_script('resume.py', '--ckpt', cnn_run['ckpt'] / f'mnist_epoch{epoch}',
                      '--ckpt-dir', tmp_path / 'ckpt', '--out', tmp_path / 'out',
                      '--compare', cnn_run['out'] / 'metrics.json', cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'bit-identical' in proc.stdout
    full = cnn_run['metrics']
    resumed = read_metrics(tmp_path / 'out')
    per_epoch = full['steps_per_epoch']
    assert resumed['first_step'] == (epoch + 1) * per_epoch
    # Every batch of the remaining epochs, exactly (not approximately) equal.
    assert resumed['batch_losses'] == full['batch_losses'][(epoch + 1) * per_epoch:]
    assert len(resumed['batch_losses']) == (2 - epoch) * per_epoch
    assert resumed['eval'] == full['eval']
    # The resumed run's epoch rows agree with the uninterrupted run's (except timing).
    timing = ('samples_per_s', 'seconds')
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]
    assert strip(resumed['epochs']) == strip(full['epochs'][epoch + 1:])


def test_resumed_checkpoints_equal_the_original_ones(cnn_run, run_script, tmp_path):
    """Resuming from epoch 0 rewrites epoch 1 and 2 checkpoints with the very same bytes."""
    proc = run_script('resume.py', '--ckpt', cnn_run['ckpt'] / 'mnist_epoch0', '--ckpt-dir',
                      tmp_path / 'ckpt', '--out', tmp_path / 'out', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for epoch in (1, 2):
        ours = json.loads((tmp_path / 'ckpt' / f'mnist_epoch{epoch}.json').read_text())['files']
        theirs = json.loads((cnn_run['ckpt'] / f'mnist_epoch{epoch}.json').read_text())['files']
        assert ours == theirs  # sha256 of .pdparams and .pdopt


def test_compare_detects_a_difference(cnn_run, run_script, tmp_path):
    """--compare must fail loudly when losses differ (here: a reference with one loss nudged)."""
    reference = dict(cnn_run['metrics'])
    losses = list(reference['batch_losses'])
    losses[-1] = np.nextafter(losses[-1], 10.0)  # the smallest possible change
    reference['batch_losses'] = losses
    (tmp_path / 'ref.json').write_text(json.dumps(reference))
    proc = run_script('resume.py', '--ckpt', cnn_run['ckpt'] / 'mnist_epoch1', '--ckpt-dir',
                      tmp_path / 'ckpt', '--out', tmp_path / 'out', '--compare', tmp_path / 'ref.json',
                      cwd=tmp_path)
    assert proc.returncode == 1
    assert 'DIFFER' in proc.stdout


def test_same_seed_same_losses_other_seed_other_losses(cnn_run, run_script, idx_dir, tmp_path):
    again = run_script('mnist_cnn.py', '--data-dir', idx_dir, *GOLDEN_ARGS, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert read_metrics(tmp_path / 'runs' / 'cnn')['batch_losses'] == cnn_run['metrics']['batch_losses']

    other = tmp_path / 'seed1'
    other.mkdir()
    args = [a if a != '0' else '1' for a in GOLDEN_ARGS]  # --seed 1
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *args, cwd=other)
    assert proc.returncode == 0, proc.stderr
    assert read_metrics(other / 'runs' / 'cnn')['batch_losses'] != cnn_run['metrics']['batch_losses']


def test_training_learns_the_fixture(cnn_run):
    losses = cnn_run['metrics']['batch_losses']
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert cnn_run['metrics']['eval']['acc'] > 0.8


def test_dataloader_workers_do_not_change_the_losses(cnn_run, run_script, idx_dir, tmp_path):
    """三: with two DataLoader worker processes preparing batches (no shared memory), the batches,
    and so every loss, are the same bits as with none."""
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *GOLDEN_ARGS, '--num-workers', '2', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert read_metrics(tmp_path / 'runs' / 'cnn')['batch_losses'] == cnn_run['metrics']['batch_losses']


def test_a_checkpoint_of_the_older_format_gets_one_sentence(cnn_run, run_script, tmp_path):
    """Checkpoints written before the scripts showed their own loop (format 1) are refused clearly."""
    import shutil
    work = tmp_path / 'old'
    shutil.copytree(cnn_run['ckpt'], work)
    meta = json.loads((work / 'mnist_epoch0.json').read_text())
    del meta['format']  # format 1 wrote 'format': 1; older files had none
    (work / 'mnist_epoch0.json').write_text(json.dumps(meta))
    proc = run_script('resume.py', '--ckpt', work / 'mnist_epoch0', cwd=tmp_path)
    assert proc.returncode == 1
    assert 'was written by an older version of these scripts (checkpoint format 1, now 2)' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and 'Traceback' not in proc.stderr


def test_shifted_images_move_and_resume_exactly(run_script, idx_dir, tmp_path):
    """--shift 1: each training image moved by up to a pixel, anew each epoch, from (seed, epoch),
    so the resumed run sees the same moved images and its losses are identical."""
    import common
    import mnist_cnn
    x, y = common.load_mnist_splits(idx_dir)[0]['train']
    shifted = mnist_cnn.TrainSet(x, y, shift=1, seed=0)
    shifted.set_epoch(0)
    for i in range(20):
        dy, dx = shifted.moves[i]
        moved = np.full((1, 30, 30), -1.0, dtype=np.float32)
        moved[:, 1 - dy:29 - dy, 1 - dx:29 - dx] = x[i]  # the image drawn 1 pixel in, then moved by (-dy, -dx)
        np.testing.assert_array_equal(shifted[i][0], moved[:, 1:29, 1:29])
    assert {tuple(m) for m in shifted.moves} == {(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)}
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, '--epochs', '2', '--shift', '1', '--log-every', '1000',
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_script('resume.py', '--ckpt', 'checkpoint/mnist_epoch0', '--compare', 'runs/cnn/metrics.json', cwd=tmp_path)
    assert proc.returncode == 0 and 'bit-identical' in proc.stdout, proc.stdout + proc.stderr
