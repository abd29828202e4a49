"""MNIST with a two-layer network in numpy alone: the course's from-scratch chapter (stage 四).

Forward pass, softmax cross-entropy, backpropagation and the SGD update, every line by hand:
784 pixels -> 128 sigmoid units -> 10 class scores, mini-batches of 100 at lr 0.1, 5 epochs.
It works on a whole batch at once (the reference trains one image at a time), and its hidden
layer's gradient multiplies by the sigmoid's derivative (the reference adds it: a bug). Batches
come in the same (seed, epoch) order as the PaddlePaddle scripts'.
No checkpoints: a run takes seconds.

    python mnist_numpy.py --data-dir ../shared/data/mnist-mini
"""
import argparse
import math
import os
import time

import startup
startup.use_project_python(needs=('numpy', 'matplotlib'))  # numpy alone: no PaddlePaddle needed

import numpy as np

import common  # the data loading and batch order the PaddlePaddle scripts use too
import plots
from safe_files import atomic_write, check_writable, write_json

NAME, SCRIPT = 'numpy', 'mnist_numpy'


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    parser.add_argument('--out', default='runs/numpy',
                        help='run folder: metrics.json, plots, model.npz')
    parser.add_argument('--log-every', type=common.positive_int, default=100,
                        help='a progress line every N batches')
    return parser


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


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

    def loss_and_gradients(self, x, y):
        """Mean cross-entropy over the batch, the number right, and every parameter's gradient."""
        h, logits = self.forward(x)
        shifted = logits - logits.max(axis=1, keepdims=True)  # a stable softmax
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        n = len(y)
        loss = -np.log(probs[np.arange(n), y]).mean()
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

    def evaluate(self, images, labels):
        losses, correct = 0.0, 0
        for start in range(0, len(labels), 1000):
            x, y = flat(images[start:start + 1000]), labels[start:start + 1000]
            loss, right, _ = self.loss_and_gradients(x, y)
            losses, correct = losses + loss * len(y), correct + right
        return ({'loss': losses / len(labels), 'acc': correct / len(labels)} if len(labels)
                else {'loss': None, 'acc': None})


def flat(images):
    return images.reshape(len(images), -1).astype(np.float64)


def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    wall_start = time.perf_counter()
    splits, source = common.load_mnist_splits(args.data_dir, args.train_limit)
    cfg = common.new_config(args, NAME, SCRIPT, source, splits)
    check_writable(args.out)  # a bad --out fails now, not after training
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
        print(f'epoch {epoch}: '
              f'train loss {loss_sum / len(train_y):.4f} acc {correct / len(train_y):.4f} | '
              f'valid loss/acc {valid["loss"]:.4f} / {valid["acc"]:.4f} | '
              f'{len(train_y) / seconds:.0f} samples/s')
    result = net.evaluate(*splits['eval'])
    print(f'eval: loss {result["loss"]:.4f}, accuracy {result["acc"]:.4f} '
          f'on {len(splits["eval"][1]):,} images')

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
