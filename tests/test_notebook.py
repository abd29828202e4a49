"""Notebook / AI Studio use: scripts pasted into a cell, main([...]) called in-process, data in
./work/, and the `make all --fast` pipeline."""
import os

import numpy as np

import mnist_cnn
import resume
import results
from conftest import ROOT, read_metrics


def test_train_then_resume_in_one_process(idx_dir, tmp_path):
    """Two models in one process (a notebook's life): parameter and optimizer-state names are
    rebuilt inside a fresh name scope each time, so the resume loads and matches exactly."""
    out, ckpt = tmp_path / 'run', tmp_path / 'ckpt'
    full = mnist_cnn.main(['--data-dir', idx_dir, '--epochs', '2', '--out', str(out), '--ckpt-dir', str(ckpt),
                           '--log-every', '1000'])
    again = mnist_cnn.main(['--data-dir', idx_dir, '--epochs', '2', '--out', str(tmp_path / 'again'),
                            '--ckpt-dir', str(ckpt), '--log-every', '1000'])
    assert again['batch_losses'] == full['batch_losses']
    resumed = resume.main(['--ckpt', str(ckpt / 'mnist_epoch0'), '--out', str(tmp_path / 'res'),
                           '--compare', str(out / 'metrics.json')])
    assert resumed['batch_losses'] == full['batch_losses'][full['steps_per_epoch']:]


def test_make_all_fast_pipeline(idx_dir, tmp_path):
    """results.py --fast end to end: every stage runs, the report and its figures exist."""
    from test_housing import TRUE_W
    rng = np.random.default_rng(7)
    features = rng.uniform(0, 10, size=(200, 13))
    np.savetxt(tmp_path / 'housing.data', np.c_[features, features @ TRUE_W + 3.0], fmt='%.6f')
    report = results.main(['--data-dir', idx_dir, '--housing-data', str(tmp_path / 'housing.data'),
                           '--out', str(tmp_path / 'results'), '--fast'])
    text = open(report).read()
    for name, *_ in results.EXPERIMENTS:
        assert f'| {name} |' in text
    assert 'failed' not in text
    assert 'identical to the uninterrupted run, every batch' in text
    for figure in ('optimizers.png', 'mse_vs_ce.png', 'l2.png', 'resume.png'):
        assert os.path.getsize(tmp_path / 'results' / figure) > 10_000
        assert f'![{figure}]({figure})' in text
