"""What AI Studio and a whole-course run need beside the notebooks (test_notebooks.py runs those in a
real kernel): DataLoader workers under a /dev/shm as small as AI Studio's, and `make all --fast`
end to end. (Stage scripts pasted into cells and a train-then-resume kernel were tested here; the
generated notebooks now prove the same, cell by cell, in test_notebooks.py.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fixtures
import results
from conftest import ROOT, script_env


def test_dataloader_workers_need_no_shared_memory(run_script, idx_dir, tmp_path):
    """AI Studio's /dev/shm is 64 MB; DataLoader workers that pass batches through shared memory
    die there (Paddle#25211). The scripts' workers use pipes: they train under a 512 KB /dev/shm,
    where a shared-memory loader fails (checked when this test was written)."""
    cmd = (f'mount -t tmpfs -o size=512k tmpfs /dev/shm && {sys.executable} {ROOT / "mnist_cnn.py"} '
           f'--data-dir {idx_dir} --epochs 1 --num-workers 2 --log-every 1000')
    proc = subprocess.run(['unshare', '-m', 'sh', '-c', cmd], cwd=tmp_path, env=script_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    if 'mount' in proc.stderr and proc.returncode != 0 and 'epoch' not in proc.stdout:
        pytest.skip(f'cannot mount a private /dev/shm here: {proc.stderr.strip()[:200]}')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'eval: loss' in proc.stdout


def test_make_all_fast_pipeline(tmp_path):
    """results.py --fast end to end: every stage runs; resume.py matches every batch and the tutorial's
    resume does not; the course's mnist.json.gz written from the idx files trains to the same losses.
    On 240 images (200 train: 2 batches an epoch): what is checked is that every row runs and what
    the report says, not what the models learn."""
    import re
    from test_housing import TRUE_W
    idx_dir = fixtures.write_idx_folder(str(tmp_path / 'mnist'), train_n=240, test_n=60)
    features = np.random.default_rng(7).uniform(0, 10, size=(200, 13))
    np.savetxt(tmp_path / 'housing.data', np.c_[features, features @ TRUE_W + 3.0], fmt='%.6f')
    report = results.main(['--data-dir', idx_dir, '--housing-data', str(tmp_path / 'housing.data'),
                           '--out', str(tmp_path / 'results'), '--fast'])
    text_ = open(report).read()
    for name, *_ in results.EXPERIMENTS:
        assert f'| {name} |' in text_
    assert 'failed' not in text_
    compared, identical = map(int, re.search(r'\| resume\.py \(ours\) \| (\d+) \| (\d+) \| 0 \|', text_).groups())
    assert compared == identical > 0
    for way in ('rate restarted', 'rate restarted, reshuffled'):
        compared, identical = map(int, re.search(rf"\| the tutorial's: {way} \| (\d+) \| (\d+) \|", text_).groups())
        assert identical < compared
    assert 'gives the same' in text_ and '(bit for bit)' in text_
    for figure in ('optimizers.png', 'mse_vs_ce.png', 'l2.png', 'resume.png'):
        assert os.path.getsize(tmp_path / 'results' / figure) > 10_000
        assert f'![{figure}]({figure})' in text_
