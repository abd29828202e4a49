"""Golden files: one short run of every stage that trains, on the fixture data, with its batch losses,
its result and the environment it ran in. tests/make_golden.py (`make golden`) writes them into
tests/golden/; tests/test_golden.py reruns the same runs and compares. Both take the runs from RUNS
below, so the settings cannot drift apart.

A golden file holds one entry per environment it was recorded in (CPU model and vector features,
Python, numpy, PaddlePaddle: EXACT_FIELDS): `make golden` adds this machine's entry beside the
others, replacing only the entry of the identical environment.

Exactness: in the environment that wrote an entry, a rerun is bit-identical (every script seeds
everything and orders its batches by (seed, epoch)), so where an entry matches this machine's
environment the comparison is ==, and one flipped last bit fails. Where none matches, the nearest
entry is compared within a tolerance (TOLERANCE below, measured), and a ToleranceWarning says so.
"""
import importlib.metadata
import json
import os
import platform
import warnings
from pathlib import Path

import numpy as np

from conftest import GOLDEN_ARGS

GOLDEN_DIR = Path(__file__).resolve().parent / 'golden'
QUICK = ['--epochs', '3', '--seed', '0', '--log-every', '1000']

# name -> one run: the script, its flags (the data folder is added: --data-dir <fixture>), which
# fixture it reads ('mnist': fixtures.write_idx_folder, 'housing': write_housing_data below), where its
# metrics.json lands (the script's default --out, relative to the run's own empty folder), whether
# PaddlePaddle computes it (numpy-only runs do not compare paddle's version) and the golden file.
RUNS = {
    'cnn': dict(script='mnist_cnn.py', args=GOLDEN_ARGS, data='mnist', out='runs/cnn', paddle=True,
                file='cnn_fixture.json'),  # the name and args the resume tests' cnn_run fixture has
    'linear-mse': dict(script='mnist_linear.py', args=[*QUICK, '--loss', 'mse'], data='mnist', out='runs/linear',
                       paddle=True, file='linear_mse_fixture.json'),
    'linear-ce': dict(script='mnist_linear.py', args=[*QUICK, '--loss', 'ce'], data='mnist', out='runs/linear',
                      paddle=True, file='linear_ce_fixture.json'),
    'mlp-mse': dict(script='mnist_mlp.py', args=[*QUICK, '--loss', 'mse'], data='mnist', out='runs/mlp',
                    paddle=True, file='mlp_mse_fixture.json'),
    'mlp-ce': dict(script='mnist_mlp.py', args=[*QUICK, '--loss', 'ce'], data='mnist', out='runs/mlp',
                   paddle=True, file='mlp_ce_fixture.json'),
    # the numerical-gradient chapter, which draws from its own generator, is test_numpy_gradients'
    'numpy': dict(script='mnist_numpy.py', args=[*QUICK, '--hidden', '32', '--no-numerical'], data='mnist',
                  out='runs/numpy', paddle=False, file='numpy_fixture.json'),
    'housing-paddle': dict(script='housing.py', args=['--impl', 'paddle', '--epochs', '5', '--seed', '0'],
                           data='housing', out='runs/housing', paddle=True, file='housing_paddle_fixture.json'),
    'housing-numpy-gd': dict(script='housing.py', args=['--impl', 'numpy', '--method', 'gd', '--epochs', '100',
                                                        '--seed', '0'],
                             data='housing', out='runs/housing', paddle=False, file='housing_numpy_gd_fixture.json'),
    'housing-numpy-sgd': dict(script='housing.py', args=['--impl', 'numpy', '--method', 'sgd', '--epochs', '20',
                                                         '--seed', '0'],
                              data='housing', out='runs/housing', paddle=False, file='housing_numpy_sgd_fixture.json'),
}

# What each fixture is, as written into the golden files.
DATA = {'mnist': 'tests/fixtures.py write_idx_folder() (600 train / 200 test synthetic digits)',
        'housing': 'tests/goldens.py write_housing_data() (200 houses, price exactly linear in the features)'}

# Environment fields whose equality promises bit-identical reruns (with the same code and data). The
# core count is one: the scripts take min(2, cores) threads for paddle (startup.py) and numpy's
# OpenBLAS one per core, and 1 thread instead of 2 moves the CNN's losses by up to 2.4e-7.
EXACT_FIELDS = {'cpu': 'CPU', 'cpu_features': 'CPU features', 'cores': 'cores', 'python': 'Python',
                'numpy': 'numpy', 'paddle': 'paddle'}

# price = features . TRUE_W + 3, as tests/test_housing.py's housing_file fixture
TRUE_W = np.array([0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 0.25, 1.0, -2.0, 0.75, 0.1, -0.3, 0.6])


def write_housing_data(path):
    """The synthetic housing.data of tests/test_housing.py (same generator, same seed, same bytes)."""
    rng = np.random.default_rng(7)
    features = rng.uniform(0, 10, size=(200, 13)) * rng.uniform(0.5, 5, size=13)
    price = features @ TRUE_W + 3.0
    np.savetxt(path, np.c_[features, price], fmt='%.6f')  # whitespace-separated, like the UCI file
    return str(path)


def command(name, data_path):
    """The flags of run `name` on the fixture at data_path."""
    return ['--data-dir', str(data_path), *RUNS[name]['args']]


# ---- environment ------------------------------------------------------------------------------

def cpu_model():
    """The CPU's model name (tools/bench.py's cpu_model: /proc/cpuinfo on Linux, sysctl on macOS)."""
    import bench  # tools/ is on sys.path (conftest.py)
    return bench.cpu_model()


def paddle_version():
    """PaddlePaddle's version as installed for this Python, or None when it is not there."""
    for dist in ('paddlepaddle', 'paddlepaddle-gpu'):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:  # a source build without package metadata
        import paddle
        return paddle.__version__
    except ImportError:
        return None


def cpu_features():
    """The vector instruction sets that pick the math libraries' kernels (two processors of one
    model name can differ here, e.g. 'AMD EPYC' with and without AVX-512). Linux only."""
    import startup
    flags = (startup.linux_cpu_info('flags') or '').split()
    wanted = ('avx', 'avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16', 'amx_tile')
    return ' '.join(f for f in wanted if f in flags) or None


def environment():
    """What decides the last bits of the losses, for this process (the scripts run with sys.executable)."""
    return {'cpu': cpu_model(), 'cpu_features': cpu_features(), 'cores': os.cpu_count(),
            'machine': platform.machine(), 'os': platform.platform(),
            'python': platform.python_version(), 'numpy': np.__version__, 'paddle': paddle_version()}


def describe(env):
    if not env:  # a file written before golden files recorded their environment
        return 'a machine it did not record (an older `make golden`)'
    return f"{env.get('cpu')} ({env.get('cpu_features')}; {env.get('cores')} cores) / Python {env.get('python')} / numpy {env.get('numpy')} / paddle {env.get('paddle')}"


def differing_fields(recorded, here, paddle=True):
    """Names (CPU, Python, ...) of the exactness fields that differ; an unknown CPU counts as differing."""
    fields = [k for k in EXACT_FIELDS if paddle or k != 'paddle']
    unknown = recorded.get('cpu') is None  # an unknown CPU counts as another one
    return [EXACT_FIELDS[k] for k in fields if recorded.get(k) != here.get(k) or unknown]


# ---- what a run recorded, and the comparison ---------------------------------------------------

# Where no entry was recorded in this environment: the largest relative difference allowed, by
# whether PaddlePaddle computes the run (float32) or numpy alone (float64). Measured on the AMD EPYC
# (avx avx2 fma) that wrote the first entries, whose CPU the golden runs could not leave: MKL's
# other code path (MKL_DEBUG_CPU_TYPE=2 instead of startup.py's 5: the kernels another CPU takes)
# moved the float32 losses and results by at most 3.7e-7 relative (the CNN; housing-paddle 3.1e-7
# over its 80 steps; eval values 1.0e-7), 1 thread instead of 2 by at most 2.4e-7; an AMD EPYC with
# AVX-512 moved the CNN by 1.1e-7 (measured for issue 27: 10 of 15 losses ==). rtol 1e-6 allows
# that with a margin of 2.7x and still catches any real change (another model, data order,
# schedule or optimizer moves these losses in the 2nd-3rd digit). The float64 numpy runs moved by
# at most 4.8e-16 under OpenBLAS's other kernels (OPENBLAS_CORETYPE=Prescott, Sandybridge): 1e-12.
TOLERANCE = {True: 1e-6, False: 1e-12}


class ToleranceWarning(UserWarning):
    """A golden run was compared within a tolerance, not ==: no entry matched this environment."""


def observed(name, metrics):
    """The values a golden file keeps of one run's metrics.json: every batch loss and the result."""
    if RUNS[name]['script'] == 'housing.py':  # its losses: per iteration (gd: one per epoch)
        result = {k: metrics[k] for k in ('train_mse', 'test_mse', 'test_rmse_k')}
        result['prediction_k'] = metrics['example']['prediction_k']
    else:
        result = metrics['eval']
    return {'batch_losses': metrics['batch_losses'], 'eval': result}


def entry(name, metrics, env):
    """One environment's entry of run `name`'s golden file."""
    return {'environment': env, **observed(name, metrics)}


def load(name, path=None):
    """Run `name`'s golden file: {'script', 'args', 'data', 'entries': [entry, ...]}. (A file of an
    older `make golden`, with one record and no 'entries', reads as one entry.)"""
    golden = json.loads(Path(path or GOLDEN_DIR / RUNS[name]['file']).read_text())
    if 'entries' not in golden:
        golden['entries'] = [{'environment': golden.pop('environment', None) or {},
                              'batch_losses': golden.pop('batch_losses'), 'eval': golden.pop('eval')}]
    return golden


def matching_entry(golden, here, paddle=True):
    """The entry recorded in this very environment (no exactness field differs), or None."""
    return next((e for e in golden['entries'] if not differing_fields(e['environment'], here, paddle)), None)


def nearest_entry(golden, here, paddle=True):
    """The entry to compare with when none matches: the same CPU and vector features first, then the
    fewest differing fields, then the newest."""
    def distance(item):
        index, e = item
        differ = differing_fields(e['environment'], here, paddle)
        return ('CPU' in differ or 'CPU features' in differ, len(differ), -index)
    return min(enumerate(golden['entries']), key=distance)[1]


def merge(name, golden, new_entry, env):
    """`make golden`: golden (the file's content, or None) with new_entry beside the other entries;
    only an entry of the identical environment (EXACT_FIELDS; numpy-only runs: all but paddle) is
    replaced. Returns (the new content, what happened)."""
    run = RUNS[name]
    head = {'script': run['script'], 'args': run['args'], 'data': DATA[run['data']]}
    if golden is None:
        return {**head, 'entries': [new_entry]}, 'new file'
    if (golden.get('script', run['script']), golden['args']) != (run['script'], run['args']):
        return {**head, 'entries': [new_entry]}, \
            f'the run changed (was {golden.get("script")} {" ".join(golden["args"])}): ' \
            f'its {len(golden["entries"])} earlier entries dropped'
    entries = list(golden['entries'])
    same = [i for i, e in enumerate(entries) if not differing_fields(e['environment'], env, run['paddle'])]
    if same:
        entries[same[0]] = new_entry
        changed = golden['entries'][same[0]] != new_entry
        how = 'replaced the entry of this environment' + (' (values changed' + (
            '; if the code changed the numerics, the other environments\' entries are stale: --fresh drops them)'
            if len(entries) > 1 else ')') if changed else ' (unchanged)')
    else:
        entries.append(new_entry)
        how = f'added an entry beside {len(golden["entries"])} other(s)'
    return {**head, 'entries': entries}, how


def compare(name, metrics, here=None, golden=None):
    """Assert that run `name`'s metrics match its golden file: == against the entry recorded in this
    environment, else within TOLERANCE of the nearest entry, with a ToleranceWarning saying so. A
    failure says where the entry was recorded and which fields differ. Returns 'exact' or
    'tolerance'."""
    run = RUNS[name]
    golden = golden or load(name)
    here = here or environment()
    assert (golden.get('script', run['script']), golden['args']) == (run['script'], run['args']), \
        f'{run["file"]} was written for {golden.get("script")} {golden["args"]}, not the table\'s ' \
        f'{run["script"]} {run["args"]}: run `make golden`'
    chosen = matching_entry(golden, here, run['paddle'])
    exact = chosen is not None
    chosen = chosen or nearest_entry(golden, here, run['paddle'])
    recorded = chosen['environment']
    differ = differing_fields(recorded, here, run['paddle'])
    others = len(golden['entries']) - 1
    where = f'recorded on {describe(recorded)}; here: {describe(here)} ' + \
        (f'(differs: {", ".join(differ)}; no entry of the {others + 1} matches this environment)' if differ
         else '(the same environment, so == is required)')
    ours, theirs = observed(name, metrics), {k: chosen[k] for k in ('batch_losses', 'eval')}
    assert len(ours['batch_losses']) == len(theirs['batch_losses']), \
        f'{name}: {len(ours["batch_losses"])} batch losses, golden {len(theirs["batch_losses"])}; {where}'
    if exact:  # bit-identical is the promise in one environment
        first = next((i for i, (a, b) in enumerate(zip(ours['batch_losses'], theirs['batch_losses'])) if a != b), None)
        assert first is None, (f'{name}: batch loss {first} is {ours["batch_losses"][first]!r}, golden '
                               f'{theirs["batch_losses"][first]!r} (not bit-identical); {where}')
        assert ours['eval'] == theirs['eval'], f'{name}: eval {ours["eval"]}, golden {theirs["eval"]}; {where}'
        return 'exact'
    rtol = TOLERANCE[run['paddle']]
    same = sum(a == b for a, b in zip(ours['batch_losses'], theirs['batch_losses']))  # what == would say
    warnings.warn(ToleranceWarning(
        f'{name}: compared within rtol {rtol:g}, not ==: {run["file"]} has no entry recorded in this '
        f'environment ({describe(here)}); the nearest was recorded on {describe(recorded)} (differs: '
        f'{", ".join(differ)}). `make golden` adds this machine\'s entry; then the comparison is ==. '
        f'(Here {same} of {len(ours["batch_losses"])} batch losses equal it bit for bit, the result '
        f'{"too" if ours["eval"] == theirs["eval"] else "not"}.)'))
    np.testing.assert_allclose(ours['batch_losses'], theirs['batch_losses'], rtol=rtol, atol=0,
                               err_msg=f'{name}: batch losses (rtol {rtol:g}); {where}')
    assert set(ours['eval']) == set(theirs['eval']), f'{name}: eval keys {sorted(ours["eval"])}; {where}'
    for key, value in theirs['eval'].items():
        if key == 'acc':  # one image of the fixture's 200-image eval split either way
            assert abs(ours['eval'][key] - value) <= 1 / 200 + 1e-12, \
                f'{name}: eval acc {ours["eval"][key]}, golden {value}; {where}'
        else:
            np.testing.assert_allclose(ours['eval'][key], value, rtol=rtol, atol=0,
                                       err_msg=f'{name}: eval {key} (rtol {rtol:g}); {where}')
    return 'tolerance'
