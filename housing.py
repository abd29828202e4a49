"""Boston housing: one linear model, first by hand in numpy, then with PaddlePaddle \
(the course's start).

The data: 506 houses x 14 numbers (13 features, then the price in $1000s). Split 80/20 in file
order; every column is min-max normalised with the TRAINING rows' min and max (kept to turn
predictions back into dollars).

    python housing.py --data-dir ../shared/data      # PaddlePaddle: Linear(13, 1) + SGD
    python housing.py --impl numpy --method gd       # full-batch gradient descent by hand
    python housing.py --impl numpy --method sgd      # mini-batch SGD by hand

Defaults (the tutorial's): numpy GD 1000 iterations at lr 0.01; numpy SGD 50 epochs, batch 100,
lr 0.1; PaddlePaddle batch 10, lr 0.01 (the tutorial's code says 0.005, its comment 0.01) and 200
epochs instead of its 20, which leave the model far from converged (see DEFAULTS).
"""
import argparse
import math
import os
import time

import startup
startup.use_project_python(needs=('numpy', 'matplotlib'))  # PaddlePaddle only for --impl paddle

import numpy as np

import common
import downloads
import plots
from safe_files import check_writable, write_json

HOUSING_URL = 'http://paddlemodels.bj.bcebos.com/uci_housing/housing.data'
HOUSING_MD5 = 'd4accdce7a25600298819f8e28e8d593'  # as paddle.text.datasets.UCIHousing checks it
COLUMNS = 14
# (epochs, batch size, learning rate) per implementation, from the tutorial, except PaddlePaddle
# SGD's 200 epochs: its 20 stop far from converged (test RMSE $14.6k, worse than the mean;
# 200: $5.2k).
DEFAULTS = {('numpy', 'gd'): (1000, None, 0.01), ('numpy', 'sgd'): (50, 100, 0.1),
            ('paddle', 'gd'): (1000, None, 0.01), ('paddle', 'sgd'): (200, 10, 0.01)}


# ---- 1. flags ------------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=common.HelpFormatter)
    parser.add_argument('--impl', default='paddle', choices=['paddle', 'numpy'])
    parser.add_argument('--method', default='sgd', choices=['gd', 'sgd'],
                        help='gd: full batch, one step per epoch; sgd: shuffled mini-batches')
    parser.add_argument('--epochs', type=common.positive_int, default=None,
                        help='default: 1000 for gd, 50 for numpy sgd, 200 for paddle sgd')
    parser.add_argument('--batch-size', type=common.positive_int, default=None,
                        help='default: 100 for numpy sgd, 10 for paddle sgd')
    parser.add_argument('--lr', type=common.positive_float, default=None,
                        help='default: 0.01 for gd and paddle sgd, 0.1 for numpy sgd')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--data-dir',
                        help='folder holding housing.data, or the file (default: '
                             './work/housing.data, else PaddlePaddle\'s cache, downloading there)')
    parser.add_argument('--out', default=common.kept('runs/housing'),
                        help='folder for metrics.json, loss.png, LR_model.pdparams')
    return parser


# ---- 2. data -------------------------------------------------------------------------------------

def find_housing(data_dir):
    if data_dir:
        path = os.path.join(data_dir, 'housing.data') if os.path.isdir(data_dir) else data_dir
        if not os.path.isfile(path):
            common.fail(f'--data-dir {data_dir}: no housing.data there; '
                        'pass the folder holding it or the file')
        return path
    if os.path.isfile(os.path.join('work', 'housing.data')):  # AI Studio's layout
        return os.path.join('work', 'housing.data')
    flag = common.pass_flag('--data-dir', 'FOLDER', make_variable='HOUSING_DATA')
    hint = ('Looked for ./work/housing.data and in PaddlePaddle\'s cache; on a machine without '
            f'network {flag}, the folder holding it')
    return downloads.fetch(HOUSING_URL, 'uci_housing', HOUSING_MD5, hint)


def load_housing(path):
    """All numbers of the file, reshaped to [N, 14]."""
    # every number in the file, whatever the line breaks (as the tutorial's np.fromfile(sep=' '))
    try:
        with open(path) as f:
            values = np.array(f.read().split(), dtype=np.float64)
    except (ValueError, UnicodeDecodeError) as e:
        common.fail(f'{path} holds something other than numbers ({e}); '
                    'it is not the UCI housing.data')
    if values.size == 0 or values.size % COLUMNS:
        common.fail(f'{path} holds {values.size} numbers, not a multiple of {COLUMNS} '
                    f'(13 features + price per house); it is damaged or another file')
    return values.reshape(-1, COLUMNS)


def split_and_normalise(data, ratio=0.8):
    """First 80% of rows train, the rest test; min-max scale by the training rows only."""
    offset = int(len(data) * ratio)
    mins, maxs = data[:offset].min(axis=0), data[:offset].max(axis=0)
    span = np.where(maxs > mins, maxs - mins, 1.0)  # a constant column would divide by zero
    scaled = (data - mins) / span
    return scaled[:offset], scaled[offset:], mins, span


def denormalise(values, mins, span, column=COLUMNS - 1):
    """Back to the file's units (the price column: $1000s)."""
    return np.asarray(values) * span[column] + mins[column]


# ---- 3. the model, by hand in numpy (--impl paddle: housing_paddle.py) --------------------------

class Network:
    """z = x.w + b with MSE loss, its analytic gradient and a gradient-descent update."""

    def __init__(self, num_weights, seed=0):
        self.w = np.random.default_rng(seed).standard_normal((num_weights, 1))
        self.b = 0.0

    def forward(self, x):
        return x @ self.w + self.b

    def loss(self, z, y):
        return float(np.mean((z - y) ** 2))

    def gradient(self, x, y):
        """d loss / d w = 2 * mean((z - y) * x); the tutorial drops the constant 2 (it folds into
        the learning rate), and so do we, so its learning rates carry over."""
        error = self.forward(x) - y
        return (error * x).mean(axis=0)[:, np.newaxis], float(error.mean())

    def update(self, gradient_w, gradient_b, lr):
        self.w = self.w - lr * gradient_w
        self.b = self.b - lr * gradient_b

    def train(self, data, epochs, lr, batch_size=None, seed=0, log_every=None):
        """Full-batch GD when batch_size is None, else mini-batch SGD shuffled by (seed, epoch).
        Returns the loss of every iteration."""
        losses = []
        # divergence is caught by common.check_finite
        with np.errstate(over='ignore', invalid='ignore'):
            for epoch in range(epochs):
                if batch_size is None:
                    parts = [data]
                else:  # shuffle by (seed, epoch), cut into mini-batches (the last may be smaller)
                    shuffled = data[common.epoch_order(len(data), seed, epoch)]
                    parts = [shuffled[k:k + batch_size] for k in range(0, len(data), batch_size)]
                for part in parts:
                    x, y = part[:, :-1], part[:, -1:]
                    losses.append(common.check_finite(self.loss(self.forward(x), y), epoch, lr))
                    self.update(*self.gradient(x, y), lr)
                if log_every and (epoch + 1) % log_every == 0:
                    print(f'epoch {epoch:4d}, loss {losses[-1]:.6f}')
        return losses


# ---- main: the sections above in order ---------------------------------------------------------

def main(argv=None):
    # 1. flags: the tutorial's epochs, batch size and learning rate for the chosen way
    args = common.parse_args(build_parser(), argv)
    wall_start = time.perf_counter()
    epochs, batch_size, lr = DEFAULTS[(args.impl, args.method)]
    epochs, lr = args.epochs or epochs, args.lr or lr
    batch_size = None if args.method == 'gd' else (args.batch_size or batch_size)
    # 2. data: 506 houses, 80% to train, every column scaled by the training rows' min and max
    path = find_housing(args.data_dir)
    data = load_housing(path)
    train_set, test_set, mins, span = split_and_normalise(data)
    print(f'data: {path}: {len(data)} houses, train {len(train_set)} / test {len(test_set)}\n'
          f'{args.impl} {args.method}: {epochs} epochs, batch {batch_size or "all"}, lr {lr}')
    cfg = dict(vars(args), epochs=epochs, batch_size=batch_size, lr=lr,
               data={'path': os.path.abspath(path),
                     'sizes': {'train': len(train_set), 'test': len(test_set)}})
    check_writable(args.out)  # a bad --out fails now, not after training
    x_train, y_train = train_set[:, :-1], train_set[:, -1:]
    x_test, y_test = test_set[:, :-1], test_set[:, -1:]
    example = len(test_set) - 10  # the tutorial's test example (index -10)
    # 3. train the model: by hand in numpy (the Network above) or with PaddlePaddle
    if args.impl == 'numpy':
        net = Network(13, seed=args.seed)
        losses = net.train(train_set, epochs, lr, batch_size, args.seed,
                           log_every=max(1, epochs // 10))
        predict = net.forward
        device, paddle_version = 'cpu (numpy)', None
    else:  # the same model with PaddlePaddle: housing_paddle.py
        import housing_paddle
        model_path = os.path.join(args.out, 'LR_model.pdparams')
        losses, predict = housing_paddle.train_and_reload(train_set, epochs, lr, batch_size,
                                                          args.seed, model_path)
        device, paddle_version = 'cpu', housing_paddle.paddle.__version__
    # 4. evaluate: the error in dollars, the tutorial's example house; metrics.json and loss.png
    train_mse = float(np.mean((predict(x_train) - y_train) ** 2))
    test_mse = float(np.mean((predict(x_test) - y_test) ** 2))
    test_rmse_k = math.sqrt(test_mse) * span[-1]  # in the price's units: $1000s
    guess = float(denormalise(predict(x_test[example:example + 1]), mins, span)[0, 0])
    truth = float(denormalise(y_test[example, 0], mins, span))
    print(f'test example {example}: predicted ${guess:.2f}k, label ${truth:.2f}k')
    print(f'train MSE {train_mse:.5f}, test MSE {test_mse:.5f} (normalised); '
          f'test RMSE ${test_rmse_k:.2f}k = ${test_rmse_k * 1000:,.0f}')

    metrics = {'config': cfg, 'batch_losses': losses, 'train_mse': train_mse, 'test_mse': test_mse,
               'test_mse_k2': test_mse * span[-1] ** 2, 'test_rmse_k': test_rmse_k,
               'example': {'index': example, 'prediction_k': guess, 'label_k': truth},
               'wall_s': time.perf_counter() - wall_start, 'paddle_version': paddle_version,
               'device': device}
    write_json(os.path.join(args.out, 'metrics.json'), metrics)
    plots.plot_lines(os.path.join(args.out, 'loss.png'),
                     {f'{args.impl} {args.method}': (np.arange(len(losses)), losses)},
                     'Boston housing: training loss (normalised MSE)', 'iteration', 'loss',
                     logy=True)
    print(f'wrote {args.out}/metrics.json and {args.out}/loss.png')
    return metrics


if __name__ == '__main__':
    common.run_main(main)
