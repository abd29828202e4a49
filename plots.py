"""The course's pictures as PNG files: numpy arrays in (no paddle here), matplotlib only.

    picture                 stage   what it shows
    plot_lines              八      loss and accuracy curves, one line per series
    training_plots          八      loss.png and acc.png of a training run (plot_lines)
    samples_grid            三      the first 32 images as the model receives them, with their
                                    labels
    prediction_figure       五      one image beside its 10 softmax probabilities (or its digit)
    confusion_figure        八      a 10x10 table: true digit (rows) against predicted one (columns)
    mistakes_grid           八      the misclassified images, most confident mistakes first
    kernels_figure          八      every 5x5 kernel of conv1, and conv2's for one input channel
    feature_maps_figure     八      one image and every channel after conv1, pool1, conv2, pool2

Each picture is written whole or not at all (safe_files.atomic_write) and, in a notebook, also
shown inline. grid_image tiles images into one uint8 array, for samples_grid and for VisualDL's
add_image. confusion_matrix and per_class_accuracy are the numbers behind confusion_figure.
"""
import math
import os

import numpy as np

from common import in_notebook
from safe_files import atomic_write

DPI = 100  # figsize in inches x 100 = the PNG's size in pixels


# ---- matplotlib, files, lines (八) ---------------------------------------------------------------

def pyplot():
    import matplotlib
    if not in_notebook():
        matplotlib.use('Agg')  # headless: files only
    return __import__('matplotlib.pyplot').pyplot


def save_figure(fig, path):
    """Save a figure as PNG (whole or not at all); shown inline too in a notebook."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format='png'))
    if in_notebook():
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
    ax.xaxis.get_major_locator().set_params(integer=markers)  # per-epoch plots: whole-number ticks
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# ---- images as the model receives them (三) ------------------------------------------------------

def as_2d(images):
    """[N,1,H,W] or [N,H,W] -> [N,H,W]."""
    images = np.asarray(images)
    return images.reshape(len(images), *images.shape[-2:])


def tile(images, rows, cols, gap, fill=np.nan):
    """The first rows*cols images [N,(1,)H,W] side by side in one float array, `gap` pixels of
    `fill` between them (NaN: left blank, so the white background shows)."""
    images = as_2d(images)[:rows * cols]
    h, w = images.shape[1:]
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), fill, dtype=np.float64)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = image
    return out


def grid_image(images, rows, cols, gap=2):
    """The first rows*cols images [N,1,28,28] (values in [-1,1]) tiled into one uint8 array
    [rows*(28+gap)-gap, cols*(28+gap)-gap]: -1 -> 0 (black), 1 -> 255, grey between tiles.
    For samples_grid, and for VisualDL: writer.add_image(tag, grid, step, dataformats='HW')."""
    tiled = tile(np.clip(as_2d(images), -1, 1), rows, cols, gap, fill=0.0)  # 0.0 -> grey 128
    return np.round((tiled + 1) * 127.5).astype(np.uint8)


def samples_grid(path, images, labels, title, rows=4, cols=8):
    """The first rows*cols images, each with its label in its top-left corner (yellow)."""
    step = as_2d(images).shape[-1] + 2  # a tile and grid_image's gap
    fig, ax = pyplot().subplots(figsize=(8, 4.4))
    ax.imshow(grid_image(images, rows, cols), cmap='gray', vmin=0, vmax=255)  # 0..255 is -1..1
    for i, label in enumerate(labels[:rows * cols]):
        r, c = divmod(i, cols)
        ax.text(c * step + 1, r * step + 1, str(int(label)), color='yellow', fontsize=10,
                va='top', ha='left', fontweight='bold')
    ax.set_axis_off()
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


# ---- one prediction (五) -------------------------------------------------------------------------

def prediction_figure(path, image, probabilities, digit):
    """The image as the model sees it, beside a bar of each digit's probability with the predicted
    one in orange; probabilities None (a regression model): the predicted digit as text instead."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(7, 3), width_ratios=(1, 1.6))
    left.imshow(as_2d(np.asarray(image)[None])[0], cmap='gray', vmin=-1, vmax=1)
    left.set_axis_off()
    left.set_title('input (28x28, -1..1)', fontsize=10)
    if probabilities is None:
        right.set_axis_off()
        right.text(0.5, 0.5, f'predicted digit: {int(digit)}', fontsize=16,
                   ha='center', va='center')
    else:
        colours = ['tab:orange' if k == digit else 'tab:gray' for k in range(len(probabilities))]
        right.bar(range(len(probabilities)), probabilities, color=colours)
        right.set(xticks=range(len(probabilities)), ylim=(0, 1), xlabel='digit',
                  ylabel='probability')
        right.set_title(f'predicted: {int(digit)} ({probabilities[digit]:.2f})', fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ---- evaluation: confusion and mistakes (八) -----------------------------------------------------

def confusion_matrix(labels, predicted, classes=10):
    """int64 [classes, classes]: matrix[t, p] = how many images of digit t were predicted as p."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def per_class_accuracy(matrix):
    """Each digit's share of right answers (diagonal / row sum); None for a digit with no images."""
    totals = matrix.sum(axis=1)
    return [float(matrix[k, k] / totals[k]) if totals[k] else None for k in range(len(matrix))]


def confusion_figure(path, matrix):
    """The matrix as a table of counts: rows the true digit, columns the predicted one."""
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
    fig.tight_layout()
    return save_figure(fig, path)


def mistake_order(wrong, labels, probability, output):
    """The wrong answers' indices, most confident first (by probability, else by |output - label|,
    else as given), and those words for the title."""
    if probability is not None:
        key, words = -np.asarray(probability, dtype=np.float64)[wrong], 'most confident first'
    elif output is not None:
        key = -np.abs(np.ravel(output).astype(np.float64)[wrong] - labels[wrong])
        words = 'largest error first'
    else:
        key, words = np.zeros(len(wrong)), 'in order'
    return wrong[np.argsort(key, kind='stable')], words


def mistake_title(i, labels, predicted, probability, output):
    title = f'true {int(labels[i])} / pred {int(predicted[i])}'
    if probability is not None:
        return f'{title} ({float(probability[i]):.2f})'
    return f'{title} (out {float(np.ravel(output)[i]):.1f})' if output is not None else title


def mistakes_grid(path, images, labels, predicted, probability, count=32, output=None):
    """Up to count misclassified images, most confident mistakes first, each titled
    'true 3 / pred 8 (0.97)'. probability: each image's probability of its predicted digit, [N]
    (or all ten, [N,10]); None for a regression model, whose raw output [N] then orders and titles
    them if given. Returns the indices shown, in order; no mistakes: one panel saying so."""
    labels, predicted = np.ravel(labels), np.ravel(predicted)
    if probability is not None and np.ndim(probability) == 2:
        probability = np.asarray(probability)[np.arange(len(predicted)), predicted]
    wrong = np.flatnonzero(labels != predicted)
    if len(wrong) == 0:
        return no_mistakes(path, len(labels))
    order, words = mistake_order(wrong, labels, probability, output)
    chosen = order[:count]
    cols, rows = 8, math.ceil(len(chosen) / 8)
    height = 0.35 + 1.3 * rows  # inches: the heading, then 1.3 per row of panels
    fig, axes = pyplot().subplots(rows, cols, figsize=(10, height), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / height, hspace=0.25)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, chosen):
        ax.imshow(as_2d(images[i:i + 1])[0], cmap='gray', vmin=-1, vmax=1)
        ax.set_title(mistake_title(i, labels, predicted, probability, output), fontsize=7.5)
    shown = f', the first {len(chosen)} shown' if len(chosen) < len(wrong) else ''
    fig.suptitle(f'{len(wrong)} of {len(labels)} images wrong ({words}{shown})', fontsize=11)
    save_figure(fig, path)
    return [int(i) for i in chosen]


def no_mistakes(path, total):
    fig, ax = pyplot().subplots(figsize=(4, 2))
    ax.set_axis_off()
    ax.text(0.5, 0.5, f'no mistakes\n(all {total} images right)', fontsize=14,
            ha='center', va='center')
    save_figure(fig, path)
    return []


# ---- what the layers learned and compute (八) ----------------------------------------------------

def labelled_tiles(ax, arrays, rows, cols, cmap, vmin, vmax, gap=1):
    """arrays [K,h,w] tiled rows x cols in one image on ax, each numbered in small grey digits."""
    h, w = np.shape(arrays)[-2:]
    shown = ax.imshow(tile(arrays, rows, cols, gap), cmap=cmap, vmin=vmin, vmax=vmax)
    for k in range(len(arrays)):
        r, c = divmod(k, cols)
        ax.text(c * (w + gap) + (w - 1) / 2, r * (h + gap) - 0.5, str(k), fontsize=7,
                color='0.35', ha='center', va='bottom')
    ax.set_axis_off()
    return shown


def kernels_figure(path, conv1_weight, conv2_weight, channel):
    """conv1's kernels ([20,1,5,5]) above conv2's kernels that read conv1's channel `channel`
    ([20,20,5,5][:, channel]); each block on a colour scale symmetric about 0 (red +, blue -)."""
    fig, axes = pyplot().subplots(2, 1, figsize=(10, 5), layout='constrained')
    blocks = [(np.asarray(conv1_weight)[:, 0], 'conv1: its 20 kernels, on the input image'),
              (np.asarray(conv2_weight)[:, channel],
               f'conv2: its 20 kernels on conv1\'s channel {channel} (of 20 input channels)')]
    for ax, (kernels, title) in zip(axes, blocks):
        limit = float(np.abs(kernels).max()) or 1.0
        shown = labelled_tiles(ax, kernels, 2, math.ceil(len(kernels) / 2), 'RdBu_r', -limit, limit)
        fig.colorbar(shown, ax=ax, shrink=0.9, pad=0.01)
        ax.set_title(title, fontsize=10, pad=12)
    return save_figure(fig, path)


def feature_maps_figure(path, image, stages):
    """The input image on top, then a row of all channels for each stage {name: [C,H,W]} in order
    (conv1+relu, pool1, conv2+relu, pool2); one colour scale per row, 0 to its largest value."""
    heights = [1.4] + [0.75] * len(stages)
    fig, axes = pyplot().subplots(len(heights), 1, figsize=(10, sum(heights)),
                                  height_ratios=heights, layout='constrained')
    axes[0].imshow(as_2d(np.asarray(image)[None])[0], cmap='gray', vmin=-1, vmax=1)
    axes[0].set_axis_off()
    axes[0].set_title('input 1x28x28', fontsize=10)
    for ax, (name, maps) in zip(axes[1:], stages.items()):
        maps = np.asarray(maps)
        low, high = min(0.0, float(maps.min())), float(maps.max()) or 1.0
        gap = max(1, maps.shape[-1] // 14)  # 2 pixels between 28x28 maps, 1 between smaller ones
        labelled_tiles(ax, maps, 1, len(maps), 'viridis', low, high, gap)
        ax.set_title(f'{name}: {"x".join(map(str, maps.shape))}', fontsize=10, pad=10)
    return save_figure(fig, path)


# ---- after every training run ------------------------------------------------------------------

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
