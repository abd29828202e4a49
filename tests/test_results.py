"""`make all FAST=1` (tools/results.py --fast) end to end: the whole course in one command."""
import os

import numpy as np
import pytest

import fixtures
import results


@pytest.mark.whole  # about a minute: `make test-whole` runs it, `make test` leaves it out
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
    assert text_.count('(--fast: 2 epochs on 1,000 images, not the setting this note is about)') == len(results.EXPERIMENTS)
    compared, identical = map(int, re.search(r'\| resume\.py \(ours\) \| (\d+) \| (\d+) \| 0 \|', text_).groups())
    assert compared == identical > 0
    for way in ('rate restarted', 'rate restarted, reshuffled'):
        compared, identical = map(int, re.search(rf"\| faults?: {way} \| (\d+) \| (\d+) \|", text_).groups())
        assert identical < compared
    assert 'gives the same' in text_ and '(bit for bit)' in text_
    for figure in ('optimizers.png', 'mse_vs_ce.png', 'l2.png', 'resume.png'):
        assert os.path.getsize(tmp_path / 'results' / figure) > 10_000
        assert f'![{figure}]({figure})' in text_
