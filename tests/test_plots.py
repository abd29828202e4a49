"""plots.py: every picture is a whole PNG of a known size, the numbers behind them are right, the
mistakes come most confident first, and a path that cannot be written gives one sentence."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import common
import fixtures
import layer_plots
import plots
import predict
import visualdl_log
from conftest import ROOT

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def png_size(path):
    """(width, height) from the IHDR chunk, which must come first after the signature."""
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE
    assert head[12:16] == b'IHDR'
    return struct.unpack('>II', head[16:24])


@pytest.fixture(scope='module')
def digits():
    """64 synthetic digits as the model receives them: [64,1,28,28] in [-1,1], and their labels."""
    images, labels = fixtures.synthetic_digits(64, seed=2)
    return (images / 127.5 - 1.0).astype(np.float32)[:, None], labels.astype(np.int64)


def layer_outputs():
    """Stand-ins for the CNN's four stages (only the shapes matter here)."""
    rng = np.random.default_rng(0)
    shapes = {'conv1+relu': (20, 28, 28), 'pool1': (20, 14, 14), 'conv2+relu': (20, 14, 14),
              'pool2': (20, 7, 7)}
    return {name: np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
            for name, shape in shapes.items()}


def test_every_picture_is_a_png_of_its_size(digits, tmp_path):
    images, labels = digits
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(10), size=len(labels))
    w1 = rng.standard_normal((20, 1, 5, 5)).astype(np.float32)
    w2 = rng.standard_normal((20, 20, 5, 5)).astype(np.float32)
    steps = np.arange(10)
    pictures = {
        'lines': (lambda p: plots.plot_lines(p, {'loss': (steps, 1 / (1 + steps))}, 't', 'x', 'y'),
                  (700, 400)),
        'samples': (lambda p: plots.samples_grid(p, images, labels, 'samples'), (1000, 605)),
        'prediction': (lambda p: predict.prediction_figure(p, images[0], probabilities[0], 3),
                       (700, 300)),
        'prediction_mse': (lambda p: predict.prediction_figure(p, images[0], None, 3), (700, 300)),
        'confusion': (lambda p: plots.confusion_figure(
            p, plots.confusion_matrix(labels, probabilities.argmax(1))), (600, 600)),
        'kernels': (lambda p: layer_plots.kernels_figure(p, w1, w2, 7), (1000, 500)),
        'features': (lambda p: layer_plots.feature_maps_figure(p, images[0], layer_outputs()),
                     (1000, 440)),
    }
    for name, (draw, size) in pictures.items():
        path = str(tmp_path / f'{name}.png')
        assert draw(path) == path
        assert png_size(path) == size, name
    assert sorted(os.listdir(tmp_path)) == sorted(f'{name}.png' for name in pictures)  # no .tmp


def test_confusion_matrix_and_per_class_accuracy():
    labels = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 2, 2]
    matrix = plots.confusion_matrix(labels, predicted, classes=4)
    assert matrix.dtype == np.int64
    assert matrix.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert plots.per_class_accuracy(matrix) == [pytest.approx(2 / 3), 0.5, 1.0, None]
    assert plots.confusion_matrix(np.arange(10), np.arange(10)).tolist() == np.eye(10).tolist()


def mistakes(digits, tmp_path, name, predicted, probability, **kw):
    images, labels = digits
    path = str(tmp_path / name)
    chosen = plots.mistakes_grid(path, images[:8], labels[:8], predicted, probability, **kw)
    return chosen, png_size(path)


def test_the_most_confident_mistakes_come_first(digits, tmp_path):
    labels = digits[1][:8]
    predicted = labels.copy()
    predicted[[1, 4, 6]] = (labels[[1, 4, 6]] + 1) % 10  # three wrong
    confidence = np.array([0.9, 0.5, 0.99, 0.3, 0.8, 0.95, 0.7, 0.6])
    chosen, size = mistakes(digits, tmp_path, 'm.png', predicted, confidence)
    assert chosen == [4, 6, 1] and size == (1000, 164)  # 0.8, 0.7, 0.5; one row of images
    all_ten = np.full((8, 10), 0.01)
    all_ten[np.arange(8), predicted] = confidence
    assert mistakes(digits, tmp_path, 'm10.png', predicted, all_ten)[0] == [4, 6, 1]
    assert mistakes(digits, tmp_path, 'm2.png', predicted, confidence, count=2)[0] == [4, 6]


def test_a_regression_model_s_mistakes_come_largest_error_first(digits, tmp_path):
    labels = digits[1][:8].astype(np.float64)
    output = labels.copy()
    output[[0, 3, 5]] += [1.2, -3.4, 2.0]
    predicted = np.clip(np.round(output), 0, 9).astype(np.int64)
    assert np.flatnonzero(predicted != labels).tolist() == [0, 3, 5]
    assert mistakes(digits, tmp_path, 'r.png', predicted, None, output=output)[0] == [3, 5, 0]


def test_at_most_32_mistakes_in_four_rows(digits, tmp_path):
    images, labels = digits
    predicted = (labels + 1) % 10  # all 64 wrong
    confidence = np.linspace(0.1, 0.9, len(labels))
    path = str(tmp_path / 'many.png')
    chosen = plots.mistakes_grid(path, images, labels, predicted, confidence)
    assert chosen == list(range(63, 31, -1)) and png_size(path) == (1000, 605)


def test_no_mistakes_is_one_panel(digits, tmp_path):
    labels = digits[1][:8]
    chosen, size = mistakes(digits, tmp_path, 'none.png', labels, np.ones(8))
    assert chosen == [] and size == (400, 200)


def test_grid_image_tiles_and_maps_minus_one_to_black(digits):
    images = digits[0]
    grid = visualdl_log.grid_image(images, 2, 3)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 30 - 2, 3 * 30 - 2)
    assert np.array_equal(grid[:28, 30:58], np.round((images[1, 0] + 1) * 127.5).astype(np.uint8))
    assert (grid[28:30] == 128).all()  # the gap between rows
    ends = visualdl_log.grid_image(np.stack([-np.ones((1, 28, 28)), np.ones((1, 28, 28))]), 1, 3)
    assert ends[:, :28].max() == 0 and ends[:, 30:58].min() == 255
    assert (ends[:, 60:] == 128).all()  # an empty cell


def test_a_path_that_cannot_be_written_is_one_sentence(digits, tmp_path):
    (tmp_path / 'file').write_text('not a folder')
    path = str(tmp_path / 'file' / 'samples.png')
    with pytest.raises(common.UserError, match='cannot write .*samples.png'):
        plots.samples_grid(path, digits[0], digits[1], 'samples')
    assert os.listdir(tmp_path) == ['file']


def test_in_a_notebook_the_picture_is_shown_too(digits, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(plots, 'in_notebook', lambda: True)
    monkeypatch.setattr(plots.pyplot(), 'show', lambda: shown.append(True))
    predict.prediction_figure(str(tmp_path / 'p.png'), digits[0][0], None, 3)
    assert shown == [True] and png_size(tmp_path / 'p.png') == (700, 300)


def test_plots_does_not_import_paddle():
    code = "import sys, plots; assert 'paddle' not in sys.modules, 'paddle was imported'"
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize('series, logy', [
    ((np.arange(1, 101), 0.8 * np.exp(-np.arange(100) / 50) + 0.1), True),  # housing's gd: minor tick labels
    ((np.arange(1, 101), np.linspace(0.05, 0.02, 100)), True),  # less than a decade on a log axis
    ((np.arange(400), np.linspace(600000, 1000, 400)), False),  # six-digit losses
    ((np.arange(400), np.linspace(0.000132, 0.00001, 400)), False),  # tiny ones
], ids=['housing-gd', 'narrow-log', 'six-digits', 'tiny'])
def test_fixed_margins_hold_every_label(tmp_path, monkeypatch, series, logy):
    """plot_lines and confusion_figure draw with fixed margins (no second draw to measure the text):
    every tick label, axis label and title lies inside the picture."""
    inside = []
    real = plots.save_figure

    def measured(fig, path):
        renderer = fig.canvas.get_renderer()
        inside.extend(fig.bbox.contains(x, y) for ax in fig.axes
                      for x, y in ax.get_tightbbox(renderer).corners())
        return real(fig, path)
    monkeypatch.setattr(plots, 'save_figure', measured)
    plots.plot_lines(str(tmp_path / 'loss.png'), {'train loss (per batch)': series}, 'housing: loss', 'epoch', 'loss',
                     logy=logy)
    plots.confusion_figure(str(tmp_path / 'confusion.png'), np.full((10, 10), 123456))
    assert inside and all(inside)


def test_per_epoch_plots_tick_each_epoch_even_one(tmp_path, monkeypatch):
    ticks = {}
    monkeypatch.setattr(plots, 'save_figure', lambda fig, path: ticks.setdefault(path, list(fig.axes[0].get_xticks())))
    for n in (1, 5, 45):
        plots.plot_lines(str(tmp_path / f'{n}.png'), {'train': (list(range(1, n + 1)), [0.5] * n)}, 't', 'epoch', 'acc',
                         markers=True)
    assert ticks[str(tmp_path / '1.png')] == [1] and ticks[str(tmp_path / '5.png')] == [1, 2, 3, 4, 5]
    assert ticks[str(tmp_path / '45.png')] == list(range(1, 46, 3))  # at most about 20 ticks
