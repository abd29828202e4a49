"""The course's pictures as PNG files, from numpy arrays (no paddle here), with matplotlib: curves
(八), samples (三), the confusion matrix and the mistakes (八). Each is written whole or not at all
and, in a notebook, shown inline too. (--check-content's values and pictures: layer_plots.py.)
"""
import math
import os
import sys

import numpy as np

from common import in_notebook
from safe_files import atomic_write

DPI = 100  # figsize in inches x 100 = the PNG's size in pixels
written = []  # the pictures saved since take_written last looked


def take_written(folder):  # the pictures saved into folder since the last call, for the summary
    mine = [path for path in written if os.path.dirname(path) == os.path.normpath(folder)]
    written[:] = [path for path in written if path not in mine]
    return [os.path.basename(path) for path in dict.fromkeys(mine)]


def pyplot():
    import matplotlib
    if not in_notebook():
        matplotlib.use('Agg')  # headless: files only
    return __import__('matplotlib.pyplot').pyplot


def save_figure(fig, path):
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format='png'))
    written.append(os.path.normpath(path))
    if in_notebook():
        sys.stdout.flush()  # the lines printed before the picture stay above it
        pyplot().show()
    pyplot().close(fig)
    return path


def plot_lines(path, series, title, xlabel, ylabel, markers=False, logy=False):
    """One PNG with a line per entry of series {label: (x, y)}."""
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for label, (x, y) in series.items():
        ax.plot(x, y, marker='o' if markers else None, linewidth=1.5 if markers else 1, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, yscale='log' if logy else 'linear')
    ax.set_title(title, fontsize=10)
    if markers:  # per-epoch plots: a tick on each epoch (a whole number, with one epoch too)
        epochs = sorted({e for x, _ in series.values() for e in x})
        ax.set_xticks(epochs[::math.ceil(len(epochs) / 20)])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    # fixed margins (room for 6-character ticks): fig.tight_layout() draws once more, ~0.1 s
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.92)
    return save_figure(fig, path)


def training_plots(metrics, out, title):
    """loss.png (the training loss of every batch) and acc.png (train/valid accuracy per epoch)."""
    steps = np.arange(len(metrics['batch_losses'])) + metrics.get('first_step', 0)
    paths = [plot_lines(os.path.join(out, 'loss.png'),
                        {'train loss (per batch)': (steps, metrics['batch_losses'])},
                        f'{title}: training loss', 'step (batch)', 'loss')]
    rows = metrics['epochs']
    if rows:
        epochs = [r['epoch'] for r in rows]
        series = {'train': (epochs, [r['train_acc'] for r in rows])}
        if rows[0]['valid_acc'] is not None:
            series['valid'] = (epochs, [r['valid_acc'] for r in rows])
        paths.append(plot_lines(os.path.join(out, 'acc.png'), series,
                                f'{title}: accuracy per epoch', 'epoch', 'accuracy', markers=True))
    return paths


# ---- images as the model receives them (三) ------------------------------------------------------

def as_2d(images):  # [N,1,H,W] or [N,H,W] -> [N,H,W]
    images = np.asarray(images)
    return images.reshape(len(images), *images.shape[-2:])


def tile(images, rows, cols, gap, fill=np.nan, above=0):
    """The first rows*cols images side by side in one float array, `gap` pixels of `fill` between
    them (NaN: left blank, so the white background shows), `above` more over each row (titles)."""
    images = as_2d(images)[:rows * cols]
    h, w = images.shape[1:]
    step = h + gap + above
    out = np.full((rows * step - gap, cols * (w + gap) - gap), fill, dtype=np.float64)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        out[r * step + above:r * step + above + h, c * (w + gap):c * (w + gap) + w] = image
    return out


def captioned_grid(path, images, captions, title, cols=8, fontsize=7.5):
    """The images in rows of cols, a caption over each: one picture of them all (a panel each
    would take seconds)."""
    gap, above = 8, 6  # pixels between the images, and over each row of them for the captions
    tiled = tile(images, math.ceil(len(images) / cols), cols, gap, above=above)
    height = 0.45 + 9.8 * tiled.shape[0] / tiled.shape[1]  # inches: the heading, then the images
    fig, ax = pyplot().subplots(figsize=(10, height))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / height)
    ax.imshow(tiled, cmap='gray', vmin=-1, vmax=1)  # -1 black, 1 white, the gaps left blank
    h, w = as_2d(images[:1]).shape[1:]
    for k, caption in enumerate(captions):
        r, c = divmod(k, cols)
        ax.text(c * (w + gap) + w / 2, r * (h + gap + above) + above - 2, caption,
                fontsize=fontsize, ha='center', va='bottom')
    ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def samples_grid(path, images, labels, title, count=32):  # the first images, each under its label
    return captioned_grid(path, images[:count], [str(int(n)) for n in labels[:count]], title,
                          fontsize=10)


# ---- evaluation: confusion and mistakes (八) -----------------------------------------------------

def confusion_matrix(labels, predicted, classes=10):  # [t, p]: images of digit t predicted as p
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def per_class_accuracy(matrix):  # each digit's share of right answers; None: no such images
    totals = matrix.sum(axis=1)
    return [float(matrix[k, k] / totals[k]) if totals[k] else None for k in range(len(matrix))]


def confusion_figure(path, matrix):
    fig, ax = pyplot().subplots(figsize=(6, 6))
    ax.imshow(matrix, cmap='Blues')
    dark = matrix.max() / 2  # white text on the darker half of the colour scale
    for (t, p), count in np.ndenumerate(matrix):
        ax.text(p, t, str(count), ha='center', va='center', fontsize=9,
                color='white' if count > dark else 'black')
    ticks = range(len(matrix))
    ax.set(xticks=ticks, yticks=ticks, xlabel='predicted digit', ylabel='true digit')
    right = int(np.trace(matrix))
    ax.set_title(f'confusion matrix: {right} of {int(matrix.sum())} right', fontsize=11)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.09, top=0.94)  # fixed: see plot_lines
    return save_figure(fig, path)


def mistakes_grid(path, images, labels, predicted, probability, count=32, output=None):
    """Up to count misclassified images, each titled 'true 3 / pred 8 (0.97)', the most confident
    first. probability: of the predicted digit [N], or of all ten [N,10]; None for a regression
    model, which passes its raw output [N] instead (the largest error first). Returns the
    indices shown."""
    labels, predicted = np.ravel(labels), np.ravel(predicted)
    if probability is not None and np.ndim(probability) == 2:
        probability = np.asarray(probability)[np.arange(len(predicted)), predicted]
    wrong = np.flatnonzero(labels != predicted)
    if len(wrong) == 0:
        return no_mistakes(path, len(labels))
    if probability is not None:
        key, words = -np.asarray(probability, dtype=np.float64)[wrong], 'most confident first'
    else:  # a regression model: the output farthest from the true digit first
        key = -np.abs(np.ravel(output).astype(np.float64)[wrong] - labels[wrong])
        words = 'largest error first'
    chosen = wrong[np.argsort(key, kind='stable')][:count]
    captions = [f'true {int(labels[i])} / pred {int(predicted[i])}' + (
        f' ({float(probability[i]):.2f})' if probability is not None else
        f' (out {float(np.ravel(output)[i]):.1f})') for i in chosen]
    shown = f', the first {len(chosen)} shown' if len(chosen) < len(wrong) else ''
    captioned_grid(path, images[chosen], captions,
                   f'{len(wrong)} of {len(labels)} images wrong ({words}{shown})')
    return [int(i) for i in chosen]


def no_mistakes(path, total):
    fig, ax = pyplot().subplots(figsize=(4, 2))
    ax.set_axis_off()
    ax.text(0.5, 0.5, f'no mistakes\n(all {total} images right)', fontsize=14,
            ha='center', va='center')
    save_figure(fig, path)
    return []
