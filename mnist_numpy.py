"""MNIST with a two-layer network in numpy alone: the course's from-scratch chapter (stage 四).

Forward pass, softmax cross-entropy, backpropagation and the SGD update, every line by hand:
784 pixels -> 128 sigmoid units -> 10 class scores, mini-batches of 100 at lr 0.1, 5 epochs.
It works on a whole batch at once (the reference trains one image at a time), and its hidden
layer's gradient multiplies by the sigmoid's derivative (the reference adds it: a bug). Batches
come in the same (seed, epoch) order as the PaddlePaddle scripts'.
No checkpoints: a run takes seconds. Then the course's chapter before backprop (its notebook 002):
numerical gradients check backprop on one batch, are timed against it and take a few steps, and
gradient_descent.png draws gradient descent on x0^2 + x1^2 (--no-numerical skips them).

    python mnist_numpy.py --data-dir ../shared/data/mnist-mini
"""
import argparse
import math
import os
import time
import timeit

import startup
startup.use_project_python(needs=('numpy', 'matplotlib'))  # numpy alone: no PaddlePaddle needed

import numpy as np

import common  # the data loading and batch order the PaddlePaddle scripts use too
import plots
from safe_files import atomic_write, check_writable, write_json

NAME, SCRIPT = 'numpy', 'mnist_numpy'


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=common.HelpFormatter)
    parser.add_argument('--epochs', type=common.positive_int, default=5,
                        help='passes over the training split')
    parser.add_argument('--batch-size', type=common.positive_int, default=100,
                        help='images per step')
    parser.add_argument('--lr', type=common.positive_float, default=0.1, help='learning rate')
    parser.add_argument('--seed', type=int, default=0,
                        help='the initial weights and every epoch\'s order derive from it')
    parser.add_argument('--hidden', type=common.positive_int, default=128, help='hidden units')
    parser.add_argument('--data-dir',
                        help='folder with the four MNIST idx files or mnist.json.gz '
                             '(as mnist_cnn.py)')
    parser.add_argument('--train-limit', type=common.positive_int,
                        help='train on the first N training images only')
    parser.add_argument('--out', default=common.kept('runs/numpy'),
                        help='run folder: metrics.json, plots, model.npz')
    parser.add_argument('--log-every', type=common.positive_int, default=100,
                        help='a progress line every N batches')
    parser.add_argument('--no-numerical', action='store_true',
                        help="skip the course's numerical gradients (5-15 s), gradient_descent.png")
    return parser


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax_cross_entropy(logits, y):
    """The batch's mean cross-entropy, and the softmax probabilities backprop starts from."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # a stable softmax
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return -np.log(probs[np.arange(len(y)), y]).mean(), probs


class NumpyMLP:
    """x [N,784] -> h = sigmoid(x W1 + b1) [N,H] -> logits = h W2 + b2 [N,10]
    -> softmax cross-entropy."""

    def __init__(self, hidden=128, seed=0):
        rng = np.random.default_rng(seed)
        # scaled so every unit starts with a moderate input (not the reference's unscaled randn)
        self.params = {'w1': rng.standard_normal((784, hidden)) / math.sqrt(784),
                       'b1': np.zeros(hidden),
                       'w2': rng.standard_normal((hidden, 10)) / math.sqrt(hidden),
                       'b2': np.zeros(10)}

    def forward(self, x):
        p = self.params
        h = sigmoid(x @ p['w1'] + p['b1'])
        return h, h @ p['w2'] + p['b2']

    def loss(self, x, y):
        """The forward pass alone: what numerical gradients evaluate, twice per parameter."""
        return float(softmax_cross_entropy(self.forward(x)[1], y)[0])

    def loss_and_gradients(self, x, y):
        """Mean cross-entropy over the batch, the number right, and every parameter's gradient."""
        h, logits = self.forward(x)
        loss, probs = softmax_cross_entropy(logits, y)
        n = len(y)
        d_logits = probs.copy()
        d_logits[np.arange(n), y] -= 1.0  # d loss / d logits = softmax - one_hot, per image
        d_logits /= n
        d_h = d_logits @ self.params['w2'].T
        d_z1 = d_h * h * (1.0 - h)  # through the sigmoid: multiply by its derivative
        grads = {'w2': h.T @ d_logits, 'b2': d_logits.sum(axis=0),
                 'w1': x.T @ d_z1, 'b1': d_z1.sum(axis=0)}
        return float(loss), int((logits.argmax(axis=1) == y).sum()), grads

    def step(self, grads, lr):
        for k in self.params:
            self.params[k] -= lr * grads[k]

    def evaluate(self, images, labels):  # the forward pass alone: no gradients to compute
        losses, correct = 0.0, 0
        for start in range(0, len(labels), 1000):
            x, y = flat(images[start:start + 1000]), labels[start:start + 1000]
            logits = self.forward(x)[1]
            losses += float(softmax_cross_entropy(logits, y)[0]) * len(y)
            correct += int((logits.argmax(axis=1) == y).sum())
        return ({'loss': losses / len(labels), 'acc': correct / len(labels)} if len(labels)
                else {'loss': None, 'acc': None})


def flat(images):
    return images.reshape(len(images), -1).astype(np.float64)


# Numerical gradients, the course's chapter before backprop (its notebook 002), beside backprop.

def numerical_gradient(f, x, h=1e-4):
    """df/dx for every entry of the array x by the central difference (f(x+h) - f(x-h)) / 2h.
    Its error shrinks like h squared, the one-sided (f(x+h) - f(x)) / h's only like h; and a far
    smaller h would lose the difference in rounding. x is changed in place and restored exactly."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        f_plus = f(x)
        x[i] = old - h
        f_minus = f(x)
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def numerical_gradients(net, x, y):
    """Every parameter's gradient, two forward passes per number. The loss ignores f's argument:
    that argument is the network's own array, changed in place (as the course's loss_W)."""
    return {name: numerical_gradient(lambda _: net.loss(x, y), p) for name, p in net.params.items()}


def gradient_check(net, x, y):
    """The largest relative error of backprop against numerical gradients on one batch: for each
    parameter its largest difference over its largest numerical gradient entry."""
    numerical = numerical_gradients(net, x, y)
    return max(float(np.abs(g - numerical[name]).max() / np.abs(numerical[name]).max())
               for name, g in net.loss_and_gradients(x, y)[2].items())


def numerical_beside_backprop(images, labels, lr, seed, hidden=10, batch=10, steps=3):
    """The check, one gradient timed each way, a few steps each way, on a small network and a batch
    drawn by a generator of its own: the training's batches and weights are untouched."""
    # any images, as the course picks them (with replacement: one may come twice)
    pick = np.random.default_rng(seed).choice(len(labels), batch + 100)
    x, y = flat(images[pick[:batch]]), labels[pick[:batch]]
    net, twin = NumpyMLP(hidden, seed), NumpyMLP(hidden, seed)  # the same weights
    start = time.perf_counter()
    error = gradient_check(net, x, y)  # one numerical gradient (and one backprop)
    numerical_s = time.perf_counter() - start
    backprop_s = timeit.timeit(lambda: net.loss_and_gradients(x, y), number=100) / 100
    losses = {'numerical': [net.loss(x, y)], 'backprop': [twin.loss(x, y)]}
    for _ in range(steps):  # net steps by numerical gradients, its twin by backprop
        net.step(numerical_gradients(net, x, y), lr)
        twin.step(twin.loss_and_gradients(x, y)[2], lr)
        losses['numerical'].append(net.loss(x, y))
        losses['backprop'].append(twin.loss(x, y))
    # the course's 784-50-10 on 100 images: time its 50 hidden biases, scale to its 39,760 numbers
    course, x100, y100 = NumpyMLP(50, seed), flat(images[pick[batch:]]), labels[pick[batch:]]
    seconds = timeit.timeit(lambda: numerical_gradient(lambda _: course.loss(x100, y100),
                                                       course.params['b1']), number=1)
    course_minutes = seconds / 50 * (784 * 50 + 50 + 50 * 10 + 10) * 100 / 60  # 100 iterations
    print(f'gradient check, 784-{hidden}-10 on {batch} images: largest relative error {error:.1e} '
          f"(float64, h = 1e-4: below h squared = 1e-8; the reference's sigmoid bug: about 40)")
    print(f'one gradient: numerical {numerical_s:.2f} s, backprop {backprop_s * 1e3:.2f} ms: '
          f'backprop is {numerical_s / backprop_s:,.0f} times faster')
    for way, values in losses.items():
        print(f'loss, {steps} {way} steps at lr {lr}: ' + ' '.join(f'{v:.6f}' for v in values))
    print(f"the course's 100 numerical steps (784-50-10, batch 100: 65 minutes there) would take "
          f'about {course_minutes:.0f} minutes here')
    return dict(hidden=hidden, images=batch, largest_relative_error=error, lr=lr,
                numerical_s=numerical_s, backprop_s=backprop_s, course_minutes=course_minutes,
                numerical_losses=losses['numerical'], backprop_losses=losses['backprop'])


def gradient_descent_path(lr, start=(-3.0, 4.0), steps=100):
    """The course's gradient descent on f(x) = x0^2 + x1^2 (lowest at 0, 0): every x it visits."""
    path = [np.array(start, dtype=float)]
    for _ in range(steps):
        path.append(path[-1] - lr * numerical_gradient(lambda x: x[0] ** 2 + x[1] ** 2, path[-1]))
    return np.array(path)


def draw_gradient_descent(paths, png):
    """gradient_descent.png: a panel per learning rate, the path of x over the contours of f."""
    fig, axes = plots.pyplot().subplots(1, len(paths), figsize=(12, 4))
    x0, x1 = np.meshgrid(np.linspace(-4.5, 4.5, 91), np.linspace(-4.5, 4.5, 91))
    for ax, (lr, path) in zip(axes, paths.items()):
        ax.contour(x0, x1, x0 ** 2 + x1 ** 2, levels=8, colors='0.8', linewidths=0.8)
        ax.plot(path[:, 0], path[:, 1], 'o-', markersize=3, linewidth=1)
        ax.set(aspect='equal', xlabel='x0', ylabel='x1')
        ax.set_title(f'lr {lr}: {len(path) - 1} steps end at ({path[-1, 0]:.2g}, '
                     f'{path[-1, 1]:.2g})', fontsize=10)
    fig.tight_layout()
    return plots.save_figure(fig, png)


def main(argv=None):
    # 1. flags, data, the run's folder
    args = common.parse_args(build_parser(), argv)
    wall_start = time.perf_counter()
    splits, source = common.load_mnist_splits(args.data_dir, args.train_limit)
    cfg = common.new_config(args, NAME, SCRIPT, source, splits)
    check_writable(args.out)  # a bad --out fails now, not after training

    # 2. the network, trained by backprop and SGD
    train_x, train_y = splits['train']
    # the batch order of the PaddlePaddle scripts, from (seed, epoch)
    sampler = common.EpochBatchSampler(len(train_y), args.batch_size, args.seed)
    net = NumpyMLP(args.hidden, seed=args.seed)
    record = {'batch_losses': [], 'epochs': [], 'first_step': 0, 'steps_per_epoch': len(sampler)}
    for epoch in range(args.epochs):
        start, loss_sum, correct = time.perf_counter(), 0.0, 0
        sampler.set_epoch(epoch)
        for batch_id, indices in enumerate(sampler):
            x, y = flat(train_x[indices]), train_y[indices]
            loss, right, grads = net.loss_and_gradients(x, y)  # forward and backward, by hand
            if not math.isfinite(loss):
                common.fail(f'the loss became {loss} at epoch {epoch}, batch {batch_id}: '
                            f'training diverged; use a smaller learning rate than --lr {args.lr}')
            net.step(grads, args.lr)  # w <- w - lr * gradient
            record['batch_losses'].append(loss)
            loss_sum, correct = loss_sum + loss * len(y), correct + right
            if batch_id % args.log_every == 0:
                print(f'epoch: {epoch}, batch: {batch_id}, loss is: {loss:.8f}, '
                      f'acc is {right / len(y):.2f}')
        seconds = time.perf_counter() - start
        valid = net.evaluate(*splits['valid'])
        record['epochs'].append({'epoch': epoch, 'train_loss': loss_sum / len(train_y),
                                 'train_acc': correct / len(train_y),
                                 'valid_loss': valid['loss'], 'valid_acc': valid['acc'],
                                 'samples_per_s': len(train_y) / seconds, 'seconds': seconds})
        valid_text = 'n/a' if valid['acc'] is None else f'{valid["loss"]:.4f} / {valid["acc"]:.4f}'
        print(f'epoch {epoch}: '
              f'train loss {loss_sum / len(train_y):.4f} acc {correct / len(train_y):.4f} | '
              f'valid loss/acc {valid_text} | {len(train_y) / seconds:.0f} samples/s')

    # 3. evaluation
    result = net.evaluate(*splits['eval'])
    print(f'eval: loss {result["loss"]:.4f}, accuracy {result["acc"]:.4f} '
          f'on {len(splits["eval"][1]):,} images')

    # 4. numerical gradients (the course's 002): check backprop, time both ways, a few steps
    if not args.no_numerical:
        record['numerical'] = numerical_beside_backprop(train_x, train_y, args.lr, args.seed)
        paths = {lr: gradient_descent_path(lr) for lr in (0.1, 0.01, 0.6)}  # the course's three
        print('gradient descent on x0^2 + x1^2 from (-3, 4), 100 steps: ' + ', '.join(
            f'lr {lr} ends at ({p[-1, 0]:.2g}, {p[-1, 1]:.2g})' for lr, p in paths.items()))
        draw_gradient_descent(paths, os.path.join(args.out, 'gradient_descent.png'))

    # 5. model.npz, metrics.json, loss.png and acc.png
    def write_npz(tmp):
        with open(tmp, 'wb') as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, **net.params)
    atomic_write(os.path.join(args.out, 'model.npz'), write_npz)
    metrics = dict(record, config=cfg, eval=result, wall_s=time.perf_counter() - wall_start,
                   device='cpu (numpy)')
    write_json(os.path.join(args.out, 'metrics.json'), metrics)
    plots.training_plots(metrics, args.out, f'MLP 784-{args.hidden}-10 (numpy)')
    print(f'wrote {args.out}/metrics.json, plots and {args.out}/model.npz')
    return metrics


if __name__ == '__main__':
    common.run_main(main)
