"""--check-content (八): what the untrained network's layers hold and compute, printed and drawn.
mnist_cnn.py imports it only with that flag; mnist_cnn.ipynb carries it all the same
(tools/make_notebooks.py), so the flag works in the notebook too.
"""
import math
import os

import numpy as np

from plots import as_2d, pyplot, save_figure, tile


def check_content(model, images, outputs, seed, out):
    """After mnist_cnn.check_layers' shapes: a corner of one feature map per layer (the channel
    comes from the seed) and the fc's outputs, for the first image; a kernel of each conv; then
    pictures of every kernel (kernels.png) and of the first image's feature maps
    (feature_maps.png). outputs: {layer: its output for the batch images}."""
    channel = int(np.random.default_rng(seed).integers(0, 20))
    print('########## the untrained layers\' values (--check-content) ##########')
    feature_maps = {}
    for name, x in outputs.items():
        if x.ndim == 4:  # a corner of one feature map of the first image
            feature_maps[name] = x.numpy()[0]
            print(f'{name}: first image, channel {channel}, top-left 4x4:\n'
                  f'{np.array2string(feature_maps[name][channel, :4, :4], precision=4)}')
        else:  # the fc's 10 outputs
            print(f'{name}: first image:\n{np.array2string(x.numpy()[0], precision=4)}')
    conv1, conv2 = model.conv1.weight.numpy(), model.conv2.weight.numpy()
    for name, weight in (('conv1', conv1), ('conv2', conv2)):
        print(f'{name} kernel [0][0]:\n{np.array2string(weight[0, 0], precision=4)}')
    kernels_figure(os.path.join(out, 'kernels.png'), conv1, conv2, channel)
    feature_maps_figure(os.path.join(out, 'feature_maps.png'), images[0], feature_maps)


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
