"""Golden files: one short run of every stage that trains, on the fixture data, with its batch losses,
its result and the environment it ran in. tests/make_golden.py (`make golden`) writes them into
tests/golden/; tests/test_golden.py reruns the same runs and compares. Both take the runs from RUNS
below, so the settings cannot drift apart.

Exactness: on the machine and software that wrote a file, a rerun is bit-identical (every script
seeds everything and orders its batches by (seed, epoch)), so there the comparison is ==. Elsewhere
it is a tolerance, said in compare().
"""
import importlib.metadata
import json
import platform
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
    'numpy': dict(script='mnist_numpy.py', args=[*QUICK, '--hidden', '32'], data='mnist', out='runs/numpy',
                  paddle=False, file='numpy_fixture.json'),
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

# Environment fields whose equality promises bit-identical reruns (with the same code and data).
EXACT_FIELDS = {'cpu': 'CPU', 'cpu_features': 'CPU features', 'python': 'Python', 'numpy': 'numpy',
                'paddle': 'paddle'}

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
    """The CPU's model name (startup.cpu_model: /proc/cpuinfo on Linux, sysctl on macOS)."""
    import startup
    return startup.cpu_model()


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
    return {'cpu': cpu_model(), 'cpu_features': cpu_features(), 'machine': platform.machine(),
            'os': platform.platform(),
            'python': platform.python_version(), 'numpy': np.__version__, 'paddle': paddle_version()}


def describe(env):
    if not env:  # a file written before golden files recorded their environment
        return 'a machine it did not record (an older `make golden`)'
    return f"{env.get('cpu')} ({env.get('cpu_features')}) / Python {env.get('python')} / numpy {env.get('numpy')} / paddle {env.get('paddle')}"


def differing_fields(recorded, here, paddle=True):
    """Names (CPU, Python, ...) of the exactness fields that differ; an unknown CPU counts as differing."""
    fields = [k for k in EXACT_FIELDS if paddle or k != 'paddle']
    unknown = recorded.get('cpu') is None  # an unknown CPU counts as another one
    return [EXACT_FIELDS[k] for k in fields if recorded.get(k) != here.get(k) or unknown]


# ---- what a run recorded, and the comparison ---------------------------------------------------

def observed(name, metrics):
    """The values a golden file keeps of one run's metrics.json: every batch loss and the result."""
    if RUNS[name]['script'] == 'housing.py':  # its losses: per iteration (gd: one per epoch)
        result = {k: metrics[k] for k in ('train_mse', 'test_mse', 'test_rmse_k')}
        result['prediction_k'] = metrics['example']['prediction_k']
    else:
        result = metrics['eval']
    return {'batch_losses': metrics['batch_losses'], 'eval': result}


def golden_record(name, metrics, env):
    run = RUNS[name]
    return {'script': run['script'], 'args': run['args'], 'data': DATA[run['data']], **observed(name, metrics),
            'environment': env}


def load(name):
    return json.loads((GOLDEN_DIR / RUNS[name]['file']).read_text())


def compare(name, metrics, here=None):
    """Assert that run `name`'s metrics match its golden file: == when the file was written in this
    environment, else within the tolerance below. A failure says where each was recorded."""
    run, golden = RUNS[name], load(name)
    here = here or environment()
    recorded = golden.get('environment', {})
    assert (golden.get('script', run['script']), golden['args']) == (run['script'], run['args']), \
        f'{run["file"]} was written for {golden.get("script")} {golden["args"]}, not the table\'s ' \
        f'{run["script"]} {run["args"]}: run `make golden`'
    differ = differing_fields(recorded, here, run['paddle'])
    where = f'recorded on {describe(recorded)}; here: {describe(here)} ' + \
        (f'(differs: {", ".join(differ)})' if differ else '(the same environment, so == is required)')
    ours, theirs = observed(name, metrics), {k: golden[k] for k in ('batch_losses', 'eval')}
    assert len(ours['batch_losses']) == len(theirs['batch_losses']), \
        f'{name}: {len(ours["batch_losses"])} batch losses, golden {len(theirs["batch_losses"])}; {where}'
    if not differ:  # bit-identical is the promise on one machine
        first = next((i for i, (a, b) in enumerate(zip(ours['batch_losses'], theirs['batch_losses'])) if a != b), None)
        assert first is None, (f'{name}: batch loss {first} is {ours["batch_losses"][first]!r}, golden '
                               f'{theirs["batch_losses"][first]!r} (not bit-identical); {where}')
        assert ours['eval'] == theirs['eval'], f'{name}: eval {ours["eval"]}, golden {theirs["eval"]}; {where}'
        return 'exact'
    # Tolerance: on the machine that wrote them the run is bit-identical, but other CPUs take other MKL
    # kernels (AVX2 vs AVX-512, the AMD switch in common.py) that round the last float32 bits differently;
    # measured here, that moves losses by ~1e-6 relative. rtol 1e-4 allows that and still catches any real
    # change (another model, data order, schedule or optimizer changes these losses in the 2nd-3rd digit).
    # (The numpy-only runs compute in float64 through numpy's BLAS: other CPUs move them far less.)
    np.testing.assert_allclose(ours['batch_losses'], theirs['batch_losses'], rtol=1e-4,
                               err_msg=f'{name}: batch losses; {where}')
    for key, value in theirs['eval'].items():
        if key == 'acc':  # one image of the fixture's 200-image eval split either way
            assert abs(ours['eval'][key] - value) <= 1 / 200 + 1e-12, \
                f'{name}: eval acc {ours["eval"][key]}, golden {value}; {where}'
        else:
            np.testing.assert_allclose(ours['eval'][key], value, rtol=1e-4, err_msg=f'{name}: eval {key}; {where}')
    assert set(ours['eval']) == set(theirs['eval']), f'{name}: eval keys {sorted(ours["eval"])}; {where}'
    return 'tolerance'
