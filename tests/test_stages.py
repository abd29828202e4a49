"""The first MNIST stages (mnist_linear.py, mnist_mlp.py, mnist_numpy.py) on the synthetic fixture,
the pictures every run draws, and the interface resume.py relies on."""
import importlib
import inspect
import struct

import numpy as np
import pytest

import mnist_linear
import mnist_mlp
import mnist_numpy
import resume
import fixtures
from conftest import ROOT, read_metrics


def png_size(path):
    """(width, height) of a PNG file, read from its header; fails if it is not a PNG."""
    data = path.read_bytes()[:24]
    assert data[:8] == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
    return struct.unpack('>II', data[16:24])

QUICK = ['--epochs', '3', '--log-every', '1000']


def assert_stage_outputs(out, script, loss):
    """What a finished run of a stage script leaves in its --out: metrics.json with every epoch and
    the eval figures of its loss, the curves, the final model; the PaddlePaddle stages also what goes
    in and what comes out (samples, confusion, mistakes, each digit's accuracy). test_golden.py calls
    this on its runs of mnist_linear, mnist_mlp and mnist_numpy (3 epochs of 5 batches each)."""
    m = read_metrics(out)
    assert set(m['eval']) == ({'loss', 'acc', 'mae'} if loss == 'mse' else {'loss', 'acc'})
    assert len(m['epochs']) == 3 and len(m['batch_losses']) == 3 * 5
    assert png_size(out / 'loss.png') == (700, 400) and png_size(out / 'acc.png') == (700, 400)
    final = 'model.npz' if script == 'mnist_numpy.py' else 'model.pdparams'
    assert (out / final).is_file()
    if script != 'mnist_numpy.py':  # the PaddlePaddle stages draw what goes in and what comes out
        assert png_size(out / 'samples.png') == (1000, 605)
        assert png_size(out / 'confusion.png') == (600, 600)
        assert png_size(out / 'mistakes.png')[0] in (400, 1000)  # 400: the "no mistakes" panel
        per_digit = m['eval_acc_per_digit']
        assert len(per_digit) == 10 and all(a is None or 0 <= a <= 1 for a in per_digit)


def scripts_that_write_checkpoints():
    return sorted(p.stem for p in ROOT.glob('*.py')  # the stage scripts with a training loop that saves
                  if ('checkpoints.save(' in p.read_text(encoding='utf-8') or 'from mnist_linear import' in
                      p.read_text(encoding='utf-8')) and p.stem not in ('checkpoints', 'progress'))


def test_every_checkpointing_script_offers_what_resume_needs():
    """resume.py imports the script a checkpoint names and calls these functions (its docstring)."""
    scripts = scripts_that_write_checkpoints()
    assert scripts == ['mnist_cnn', 'mnist_linear', 'mnist_mlp']
    for name in scripts:
        module = importlib.import_module(name)
        for function, parameters in resume.SCRIPT_INTERFACE.items():
            assert callable(getattr(module, function, None)), f'{name}.py has no {function}()'
            found = tuple(inspect.signature(getattr(module, function)).parameters)
            assert found == parameters, f'{name}.{function}{found}: resume.py calls it with {parameters}'
    source = inspect.getsource(resume.main)
    for function in resume.SCRIPT_INTERFACE:  # each one of them is what resume.main really calls
        assert f'script.{function}(' in source, f'resume.main never calls script.{function}()'


def test_linear_prints_predictions_and_predicts_an_image(run_script, idx_dir, tmp_path):
    from test_cli import digit_png
    proc = run_script('mnist_linear.py', '--data-dir', idx_dir, '--loss', 'ce', '--lr', '0.05',
                      *QUICK, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'label ' in proc.stdout and 'predicted' in proc.stdout
    proc = run_script('mnist_linear.py', '--predict', digit_png(tmp_path / 'd.png', 7), cwd=tmp_path)
    assert proc.returncode == 0 and 'predicted digit:' in proc.stdout, proc.stderr
    proc = run_script('mnist_cnn.py', '--predict', tmp_path / 'd.png', '--out', 'runs/linear', cwd=tmp_path)
    assert proc.returncode == 1 and 'trained by mnist_linear.py, not mnist_cnn.py' in proc.stderr


def test_mlp_checkpoint_resumes_exactly(run_script, idx_dir, tmp_path):
    """resume.py rebuilds whichever script's model the checkpoint names."""
    proc = run_script('mnist_mlp.py', '--data-dir', idx_dir, *QUICK, '--loss', 'ce', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_script('resume.py', '--ckpt', 'checkpoint/mlp_epoch0', '--compare',
                      'runs/mlp/metrics.json', cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'bit-identical' in proc.stdout


def test_numpy_backprop_matches_numerical_gradient():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(6, 784))
    y = rng.integers(0, 10, size=6)
    net = mnist_numpy.NumpyMLP(hidden=5, seed=1)
    _, _, grads = net.loss_and_gradients(x, y)
    eps = 1e-6
    for name, index in [('w1', (3, 2)), ('w1', (700, 4)), ('b1', (1,)), ('w2', (4, 9)), ('b2', (0,))]:
        p = net.params[name]
        old = p[index]
        p[index] = old + eps
        plus = net.loss_and_gradients(x, y)[0]
        p[index] = old - eps
        minus = net.loss_and_gradients(x, y)[0]
        p[index] = old
        assert grads[name][index] == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-9), name


def accuracy(module, idx_dir, tmp_path, *args):
    """In-process main(), as a notebook would call it."""
    m = module.main(['--data-dir', idx_dir, '--out', str(tmp_path / 'out'), '--ckpt-dir',
                     str(tmp_path / 'ckpt'), '--epochs', '5', '--log-every', '1000', *args])
    return m['eval']['acc']


def test_numpy_mlp_with_an_empty_validation_split(tmp_path, capsys):
    """5 training images: the last sixth, the validation split, is empty (as mnist_cnn prints it)."""
    folder = fixtures.write_idx_folder(str(tmp_path / 'five'), train_n=5, test_n=10)
    mnist_numpy.main(['--data-dir', folder, '--out', str(tmp_path / 'out'), '--epochs', '1', '--no-numerical'])
    assert '| valid loss/acc n/a |' in capsys.readouterr().out


def test_numpy_mlp_learns_the_fixture(idx_dir, tmp_path):
    m = mnist_numpy.main(['--data-dir', idx_dir, '--out', str(tmp_path), '--hidden', '64', '--lr', '0.2',
                          '--epochs', '10', '--log-every', '1000', '--no-numerical'])
    assert m['eval']['acc'] > 0.8


# Settings at which neither variant diverges on the fixture (SGD on the linear regression blows up
# from lr 0.003 at batch 100 on this data: the divergence check stops it, see test_faults).
@pytest.mark.parametrize('module, extra', [(mnist_linear, ['--lr', '0.001', '--batch-size', '10', '--epochs', '10']),
                                           (mnist_mlp, ['--lr', '0.1', '--hidden', '64'])])
def test_cross_entropy_beats_regression(idx_dir, tmp_path, module, extra):
    """The tutorial's lesson in numbers: with the same layers and steps, classifying beats
    regressing the digit as a number (rounded-prediction accuracy)."""
    ce = accuracy(module, idx_dir, tmp_path / 'ce', '--loss', 'ce', *extra)
    mse = accuracy(module, idx_dir, tmp_path / 'mse', '--loss', 'mse', *extra)
    assert ce > mse + 0.1, (ce, mse)


