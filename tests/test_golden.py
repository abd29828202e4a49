"""Committed expected losses of every stage that trains (tests/golden/*.json, one entry per
environment, added by `make golden`): each run of tests/goldens.py RUNS again on the fixture data, in
a fresh process, compared with its file. == against the entry recorded in this environment (CPU model
and vector features, cores, Python, numpy, paddle); where none matches, within a measured tolerance
of the nearest, and a ToleranceWarning (in pytest's warnings summary) says so and why. A failure names
the fields that differ.
"""
import json
import warnings

import pytest

import goldens
from conftest import read_metrics
from test_stages import assert_stage_outputs


@pytest.fixture(scope='module')
def housing_data(tmp_path_factory):
    return goldens.write_housing_data(tmp_path_factory.mktemp('golden_housing') / 'housing.data')


def test_every_run_has_its_golden_file():
    files = {run['file'] for run in goldens.RUNS.values()}
    assert len(files) == len(goldens.RUNS)
    assert {p.name for p in goldens.GOLDEN_DIR.glob('*.json')} == files
    for name, run in goldens.RUNS.items():
        golden = json.loads((goldens.GOLDEN_DIR / run['file']).read_text())
        assert set(golden) == {'script', 'args', 'data', 'entries'} and golden['entries'], name
        keys = [tuple(e['environment'].get(k) for k in goldens.EXACT_FIELDS if run['paddle'] or k != 'paddle')
                for e in golden['entries']]
        assert len(set(keys)) == len(keys), f'{name}: two entries of one environment'
        for e in golden['entries']:
            assert set(e) == {'environment', 'batch_losses', 'eval'}, name
            assert set(e['environment']) == {*goldens.EXACT_FIELDS, 'machine', 'os'}, name


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
        if run['script'] != 'housing.py':  # one run proves the stage's outputs and its losses
            loss = run['args'][run['args'].index('--loss') + 1] if '--loss' in run['args'] else 'ce'
            assert_stage_outputs(tmp_path / run['out'], run['script'], loss)
    how = goldens.compare(name, metrics)  # 'tolerance' has warned (goldens.ToleranceWarning), naming why
    print(f'{name}: {"== the entry of this environment" if how == "exact" else "within the tolerance"}')


def golden_with(*entries):
    """The numpy run's golden file with these (environment, losses) entries."""
    golden = goldens.load('numpy')
    return dict(golden, entries=[{'environment': env, 'batch_losses': losses, 'eval': golden['entries'][0]['eval']}
                                 for env, losses in entries])


def test_a_failure_names_what_differs():
    """The message of a failed comparison says where the entry was recorded and which fields differ here."""
    golden = goldens.load('numpy')
    first = golden['entries'][0]
    metrics = {'batch_losses': [x * 1.01 for x in first['batch_losses']], 'eval': first['eval']}
    here = dict(first['environment'], python='0.0.1', numpy='0.0.2')
    with pytest.raises(AssertionError, match=r'recorded on .* / Python .*; here: .* / Python 0\.0\.1 / numpy 0\.0\.2'
                                             r'.*\(differs: Python, numpy; no entry of the \d+ matches'), \
            pytest.warns(goldens.ToleranceWarning):
        goldens.compare('numpy', metrics, here)


def test_one_last_bit_fails_where_an_entry_matches_and_passes_with_a_warning_elsewhere():
    import numpy as np
    first = goldens.load('numpy')['entries'][0]
    losses = list(first['batch_losses'])
    losses[-1] = float(np.nextafter(losses[-1], 10.0))
    metrics = {'batch_losses': losses, 'eval': first['eval']}
    with pytest.raises(AssertionError, match=r'not bit-identical.*\(the same environment, so == is required\)'):
        goldens.compare('numpy', metrics, dict(first['environment']))
    with pytest.warns(goldens.ToleranceWarning, match=r'numpy: compared within rtol 1e-12, not ==: .* no entry '
                                                      r'recorded in this environment .*differs: CPU.*make golden'):
        assert goldens.compare('numpy', metrics, dict(first['environment'], cpu='another CPU')) == 'tolerance'
    # == needs no warning
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert goldens.compare('numpy', {'batch_losses': first['batch_losses'], 'eval': first['eval']},
                               dict(first['environment'])) == 'exact'


def test_the_tolerance_is_the_measured_one_not_1e_4():
    """A float32 run differing by 2e-6 (beyond every measured CPU difference, within the old rtol 1e-4)
    fails where no entry matches."""
    golden = goldens.load('cnn')
    first = golden['entries'][0]
    metrics = {'batch_losses': [x * (1 + 2e-6) for x in first['batch_losses']], 'eval': first['eval']}
    other = dict(first['environment'], cpu_features='avx avx2 fma avx512f')
    with pytest.raises(AssertionError, match=r'rtol 1e-06.*differs: CPU features'), \
            pytest.warns(goldens.ToleranceWarning):
        goldens.compare('cnn', metrics, other)
    metrics['batch_losses'] = [x * (1 + 5e-7) for x in first['batch_losses']]  # what another CPU does
    with pytest.warns(goldens.ToleranceWarning):
        assert goldens.compare('cnn', metrics, other) == 'tolerance'


def test_each_environment_is_compared_with_its_own_entry():
    """Two entries: the one of this environment decides, with ==, whatever the other holds."""
    import numpy as np
    first = goldens.load('numpy')['entries'][0]
    mine, theirs = dict(first['environment']), dict(first['environment'], cpu='another CPU')
    nudged = [float(np.nextafter(x, 10.0)) for x in first['batch_losses']]
    golden = golden_with((theirs, first['batch_losses']), (mine, nudged))
    assert goldens.compare('numpy', {'batch_losses': nudged, 'eval': first['eval']}, mine, golden) == 'exact'
    with pytest.raises(AssertionError, match='not bit-identical'):  # the other entry's values: not enough
        goldens.compare('numpy', {'batch_losses': first['batch_losses'], 'eval': first['eval']}, mine, golden)
    # a third machine is compared with the nearest entry: the same CPU first
    third = dict(mine, python='0.0.1')
    with pytest.warns(goldens.ToleranceWarning, match=r'differs: Python\)'):
        goldens.compare('numpy', {'batch_losses': nudged, 'eval': first['eval']}, third, golden)
    assert goldens.nearest_entry(golden, third, paddle=False)['environment'] == mine


def test_make_golden_adds_an_entry_per_environment_and_replaces_only_its_own():
    first = goldens.load('numpy')['entries'][0]
    mine, theirs = dict(first['environment']), dict(first['environment'], cpu='another CPU')
    entry = lambda env, scale=1.0: {'environment': env, 'batch_losses': [x * scale for x in first['batch_losses']],
                                    'eval': first['eval']}
    golden, how = goldens.merge('numpy', None, entry(theirs), theirs)
    assert how == 'new file' and len(golden['entries']) == 1
    golden, how = goldens.merge('numpy', golden, entry(mine), mine)
    assert how.startswith('added an entry beside 1') and [e['environment'] for e in golden['entries']] == [theirs, mine]
    golden, how = goldens.merge('numpy', golden, entry(mine, 2.0), mine)
    assert how.startswith('replaced the entry of this environment (values changed')
    assert golden['entries'] == [entry(theirs), entry(mine, 2.0)]
    # numpy-only runs: paddle's version is no part of their environment
    golden, how = goldens.merge('numpy', golden, entry(dict(mine, paddle='9.9.9')), dict(mine, paddle='9.9.9'))
    assert how.startswith('replaced') and len(golden['entries']) == 2
    # a changed run (other args) drops the entries of the old one
    golden, how = goldens.merge('numpy', dict(golden, args=['--epochs', '1']), entry(mine), mine)
    assert 'earlier entries dropped' in how and golden['entries'] == [entry(mine)]
