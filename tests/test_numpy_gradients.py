"""mnist_numpy.py's numerical-gradient chapter (the course's notebook 002): the central difference,
the gradient check of backprop (passing for the real backprop, failing for the reference's bug),
numerical training steps, and gradient_descent.png. No timings are asserted (they are in the README).

The bound of the check, CHECK_BOUND = 1e-6: in float64 with h = 1e-4 the central difference is off by
its truncation term, h^2/6 times the loss's third derivative, about 1e-9 of the largest gradient entry
here (measured on this fixture and on mnist-mini, 4 seeds, hidden 3 and 10: 6e-10 to 1.3e-9; it falls
100-fold from h = 1e-3 to 1e-4, as h^2 does). Rounding adds about 1e-16 * loss / h ~ 1e-11. So 1e-6
leaves a 1000-fold margin, and is still 30 times under a forward difference's error (3e-5) and far
under a wrong backprop's (the reference's sigmoid bug: 25 to 47 on the fixture and on mnist-mini).
"""
import struct
import subprocess
import sys

import numpy as np
import pytest

import common
import mnist_numpy
from conftest import ROOT, blocking_env, read_metrics

CHECK_BOUND = 1e-6


def png_size(path):
    """(width, height) from the PNG header; fails if the file is not a PNG (as test_stages' own, without
    importing the PaddlePaddle stages: this chapter needs numpy alone)."""
    data = path.read_bytes()[:24]
    assert data[:8] == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
    return struct.unpack('>II', data[16:24])


class ReferenceBugMLP(mnist_numpy.NumpyMLP):
    """The same network with the reference's backprop: the hidden layer's gradient ADDS the sigmoid's
    derivative h(1 - h) instead of multiplying by it (mnist_numpy's docstring names this bug)."""

    def loss_and_gradients(self, x, y):
        h, logits = self.forward(x)
        loss, probs = mnist_numpy.softmax_cross_entropy(logits, y)
        d_logits = probs.copy()
        d_logits[np.arange(len(y)), y] -= 1.0
        d_logits /= len(y)
        d_z1 = d_logits @ self.params['w2'].T + h * (1.0 - h)  # the bug: + instead of *
        grads = {'w2': h.T @ d_logits, 'b2': d_logits.sum(axis=0), 'w1': x.T @ d_z1, 'b1': d_z1.sum(axis=0)}
        return float(loss), int((logits.argmax(axis=1) == y).sum()), grads


@pytest.fixture(scope='module')
def batch(idx_dir):
    """Eight training images of the fixture, as the script's chapter takes them (float64, flat)."""
    splits, _ = common.load_mnist_splits(idx_dir, None)
    images, labels = splits['train']
    return mnist_numpy.flat(images[:8]), labels[:8]


def test_central_difference_gives_the_course_gradient():
    """The course's example: the gradient of x0^2 + x1^2 at (3, 4) is (6, 8); x is left as it was."""
    x = np.array([3.0, 4.0])
    grad = mnist_numpy.numerical_gradient(lambda v: v[0] ** 2 + v[1] ** 2, x)
    np.testing.assert_allclose(grad, [6.0, 8.0], rtol=1e-9)
    assert x.tolist() == [3.0, 4.0]


def test_gradient_check_passes_for_backprop(batch):
    net = mnist_numpy.NumpyMLP(hidden=6, seed=3)
    before = {k: p.copy() for k, p in net.params.items()}
    error = mnist_numpy.gradient_check(net, *batch)
    assert 0 < error < CHECK_BOUND, error
    for k, p in net.params.items():  # every parameter restored bit for bit
        assert np.array_equal(p, before[k]), k


def test_gradient_check_fails_for_the_reference_sigmoid_bug(batch):
    error = mnist_numpy.gradient_check(ReferenceBugMLP(hidden=6, seed=3), *batch)
    assert error > 1, error  # measured 25 here: the check tells the two apart by 10 orders


def test_gradient_descent_paths_as_the_course():
    """lr 0.1 reaches the minimum (the course printed (-6.1e-10, 8.1e-10)), 0.01 stops short, 0.6 steps
    across it: every step multiplies x by 1 - 2 lr = -0.2, so x changes sign at each step."""
    reach, short, across = (mnist_numpy.gradient_descent_path(lr) for lr in (0.1, 0.01, 0.6))
    assert len(reach) == 101 and reach[0].tolist() == [-3.0, 4.0]
    np.testing.assert_allclose(reach[-1], [-6.11e-10, 8.15e-10], rtol=1e-2)
    assert np.linalg.norm(short[-1]) > 0.5  # still 0.66 from the minimum after 100 steps
    assert all(np.sign(across[k, 0]) == -np.sign(across[k + 1, 0]) for k in range(10))


def test_the_run_reports_the_chapter_draws_the_picture_and_leaves_the_training_as_it_was(idx_dir, tmp_path):
    """Two runs with PaddlePaddle unimportable (these chapters need numpy alone), with the chapter and
    with --no-numerical: the same training losses, bit for bit (the chapter runs after the training,
    with a generator of its own), so the golden values, recorded with --no-numerical, hold for both."""
    runs = {}
    for flags in ([], ['--no-numerical']):
        folder = tmp_path / ('skipped' if flags else 'with')
        folder.mkdir()
        proc = subprocess.run([sys.executable, str(ROOT / 'mnist_numpy.py'), '--data-dir', idx_dir, '--epochs', '1',
                               '--hidden', '16', '--log-every', '1000', *flags], cwd=folder,
                              env=blocking_env(tmp_path, tmp_path, 'paddle'), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[bool(flags)] = proc, folder / 'runs' / 'numpy'
    (proc, out), (_, skipped) = runs[False], runs[True]
    numerical = read_metrics(out)['numerical']
    assert numerical['largest_relative_error'] < CHECK_BOUND
    assert numerical['numerical_s'] > 0 and numerical['backprop_s'] > 0 and numerical['course_minutes'] > 0
    by_numbers, by_backprop = numerical['numerical_losses'], numerical['backprop_losses']
    assert all(later < earlier for earlier, later in zip(by_numbers, by_numbers[1:])), by_numbers
    np.testing.assert_allclose(by_numbers, by_backprop, rtol=1e-7)  # the same steps, either way
    assert png_size(out / 'gradient_descent.png') == (1200, 400) and (out / 'loss.png').is_file()
    assert 'largest relative error' in proc.stdout and 'times faster' in proc.stdout
    assert 'numerical' not in read_metrics(skipped) and not (skipped / 'gradient_descent.png').exists()
    assert read_metrics(skipped)['batch_losses'] == read_metrics(out)['batch_losses']
