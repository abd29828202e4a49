"""Committed expected losses of every stage that trains (tests/golden/*.json, regenerate with
`make golden`): each run of tests/goldens.py RUNS again on the fixture data, in a fresh process,
compared with its file. == where the file was written in this environment (CPU model, Python, numpy,
paddle), else a tolerance (said in goldens.compare); a failure names the fields that differ.
"""
import pytest

import goldens
from conftest import read_metrics


@pytest.fixture(scope='module')
def housing_data(tmp_path_factory):
    return goldens.write_housing_data(tmp_path_factory.mktemp('golden_housing') / 'housing.data')


def test_every_run_has_its_golden_file():
    files = {run['file'] for run in goldens.RUNS.values()}
    assert len(files) == len(goldens.RUNS)
    assert {p.name for p in goldens.GOLDEN_DIR.glob('*.json')} == files
    for name in goldens.RUNS:  # (a file of an older `make golden` has none: compared with the tolerance)
        env = goldens.load(name).get('environment')
        assert env is None or set(env) == {'cpu', 'cpu_features', 'machine', 'os', 'python', 'numpy', 'paddle'}, name


@pytest.mark.parametrize('name', list(goldens.RUNS))
def test_golden_values(name, request, run_script, tmp_path):
    run = goldens.RUNS[name]
    if name == 'cnn':  # the resume tests' uninterrupted run: the very same command, trained once
        metrics = request.getfixturevalue('cnn_run')['metrics']
    else:
        data = request.getfixturevalue('idx_dir' if run['data'] == 'mnist' else 'housing_data')
        proc = run_script(run['script'], *goldens.command(name, data), cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        metrics = read_metrics(tmp_path / run['out'])
    goldens.compare(name, metrics)


def test_a_failure_names_what_differs():
    """The message of a failed comparison says where the file was recorded and which fields differ here."""
    golden = goldens.load('numpy')
    metrics = {'batch_losses': [x * 1.01 for x in golden['batch_losses']], 'eval': golden['eval']}
    here = dict(golden['environment'], python='0.0.1', numpy='0.0.2')
    with pytest.raises(AssertionError, match=r'recorded on .* / Python .*; here: .* / Python 0\.0\.1 / numpy 0\.0\.2'
                                             r'.*\(differs: Python, numpy\)'):
        goldens.compare('numpy', metrics, here)
    # In the recorded environment itself, one ulp is already a failure.
    import numpy as np
    losses = list(golden['batch_losses'])
    losses[-1] = float(np.nextafter(losses[-1], 10.0))
    with pytest.raises(AssertionError, match=r'not bit-identical.*\(the same environment, so == is required\)'):
        goldens.compare('numpy', {'batch_losses': losses, 'eval': golden['eval']}, dict(golden['environment']))
    # and a difference within the tolerance passes on another machine
    assert goldens.compare('numpy', {'batch_losses': losses, 'eval': golden['eval']},
                           dict(golden['environment'], cpu='another CPU')) == 'tolerance'
