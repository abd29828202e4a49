"""MNIST with a multilayer perceptron: stage 四 of the tutorial, and the course's numpy network.

--impl paddle (default): the tutorial's MLP 784 -> 10 -> 10 -> 1 with sigmoid hidden layers,
regressing the digit with MSE (SGD, lr 0.01, batch 100, 5 epochs); --loss ce gives it 10 outputs
and softmax + cross-entropy; --hidden 300 compares with LeCun et al. 1998's 300-unit MLP (4.7% error).

--impl numpy: a two-layer MLP written with numpy only (784 -> 128 sigmoid -> 10 softmax,
cross-entropy, backprop by hand, mini-batch SGD at lr 0.1), as in the course's numpy chapters. It
works on a whole batch at once (the reference trains one image at a time), and its hidden-layer
gradient multiplies by the sigmoid's derivative (the reference adds it: a bug).

    python mnist_mlp.py --data-dir ../shared/data/mnist-mini
    python mnist_mlp.py --data-dir ../shared/data/mnist-mini --loss ce --hidden 300
    python mnist_mlp.py --data-dir ../shared/data/mnist-mini --impl numpy
"""
import argparse
import math
import os
import time

import common  # first: it sets CPU switches that must precede paddle's import

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

NAME = 'mlp'  # checkpoint/mlp_epoch{N}
SCRIPT = 'mnist_mlp'
# per implementation: hidden sizes, learning rate, loss (the tutorial's MLP; the numpy chapter's net)
IMPL_DEFAULTS = {'paddle': ((10, 10), 0.01, 'mse'), 'numpy': ((128,), 0.1, 'ce')}


# ---- config ---------------------------------------------------------------------------------

def hidden_sizes(text):
    try:
        sizes = tuple(int(s) for s in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected sizes like 10,10 or 300, got {text!r}')
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f'hidden sizes must be positive, got {text!r}')
    return sizes


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--impl', default='paddle', choices=['paddle', 'numpy'])
    common.add_train_args(parser, epochs=5, lr=None, opt='sgd', schedule='constant', loss=None)
    parser.add_argument('--hidden', type=hidden_sizes, default=None,
                        help='hidden layer sizes, comma-separated (default: 10,10 paddle; 128 numpy)')
    common.add_run_args(parser, out='runs/mlp')
    common.add_predict_args(parser)
    return parser


# ---- model 1: PaddlePaddle ---------------------------------------------------------------------

class MNISTMLP(nn.Layer):
    """784 -> hidden sizes (sigmoid each) -> 1 number (mse) or 10 class scores (ce)."""

    def __init__(self, hidden=(10, 10), outputs=1):
        super().__init__()
        sizes = [784, *hidden]
        self.hidden = nn.LayerList([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nn.Linear(sizes[-1], outputs)

    def forward(self, x):
        x = paddle.flatten(x, start_axis=1)
        for layer in self.hidden:
            x = F.sigmoid(layer(x))
        return self.out(x)


def build_model(cfg):
    return MNISTMLP(tuple(cfg['hidden']), outputs=10 if cfg['loss'] == 'ce' else 1)


# ---- model 2: numpy, backprop by hand ----------------------------------------------------------

def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class NumpyMLP:
    """x [N,784] -> sigmoid(x W1 + b1) [N,H] -> logits = h W2 + b2 [N,10] -> softmax cross-entropy."""

    def __init__(self, hidden=128, seed=0):
        rng = np.random.default_rng(seed)
        # scaled so every unit starts with a moderate input (not the reference's unscaled randn)
        self.params = {'w1': rng.standard_normal((784, hidden)) / math.sqrt(784), 'b1': np.zeros(hidden),
                       'w2': rng.standard_normal((hidden, 10)) / math.sqrt(hidden), 'b2': np.zeros(10)}

    def forward(self, x):
        p = self.params
        h = sigmoid(x @ p['w1'] + p['b1'])
        return h, h @ p['w2'] + p['b2']

    def loss_and_gradients(self, x, y):
        """Mean cross-entropy over the batch and its gradient for every parameter (backprop)."""
        h, logits = self.forward(x)
        shifted = logits - logits.max(axis=1, keepdims=True)  # stable softmax
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
        correct = int((logits.argmax(axis=1) == y).sum())
        return float(loss), correct, grads

    def step(self, grads, lr):
        for k in self.params:
            self.params[k] -= lr * grads[k]

    def evaluate(self, images, labels):
        losses, correct = 0.0, 0
        for _, x, y in common.batches(images, labels, 1000):
            loss, right, _ = self.loss_and_gradients(x.reshape(len(y), -1).astype(np.float64), y)
            losses += loss * len(y)
            correct += right
        n = max(len(labels), 1)
        return {'loss': losses / n, 'acc': correct / n}


def train_numpy(cfg, splits, log_every):
    """Mini-batch SGD over the numpy MLP; returns (net, record) shaped like common.train's."""
    net = NumpyMLP(cfg['hidden'][0], seed=cfg['seed'])
    train_x, train_y = splits['train']
    record = {'batch_losses': [], 'epochs': [], 'first_step': 0,
              'steps_per_epoch': math.ceil(len(train_y) / cfg['batch_size'])}
    for epoch in range(cfg['epochs']):
        start, loss_sum, correct = time.perf_counter(), 0.0, 0
        for b, x, y in common.batches(train_x, train_y, cfg['batch_size'], cfg['seed'], epoch):
            loss, right, grads = net.loss_and_gradients(x.reshape(len(y), -1).astype(np.float64), y)
            if not math.isfinite(loss):
                common.fail(f'the loss became {loss} at epoch {epoch}, batch {b}: training diverged; '
                            f'use a smaller learning rate than --lr {cfg["lr"]}')
            net.step(grads, cfg['lr'])
            record['batch_losses'].append(loss)
            loss_sum, correct = loss_sum + loss * len(y), correct + right
            if b % log_every == 0:
                print(f'epoch: {epoch}, batch: {b}, loss is: {loss:.8f}, acc is {right / len(y):.2f}')
        seconds = time.perf_counter() - start
        valid = net.evaluate(*splits['valid'])
        record['epochs'].append({'epoch': epoch, 'train_loss': loss_sum / len(train_y),
                                 'train_acc': correct / len(train_y), 'valid_loss': valid['loss'],
                                 'valid_acc': valid['acc'], 'samples_per_s': len(train_y) / seconds,
                                 'seconds': seconds})
        print(f'epoch {epoch}: train loss {loss_sum / len(train_y):.4f} acc {correct / len(train_y):.4f} | '
              f'valid loss/acc {valid["loss"]:.4f} / {valid["acc"]:.4f} | {len(train_y) / seconds:.0f} samples/s')
    return net, record


# ---- train, evaluate, save -------------------------------------------------------------------

def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    hidden, lr, loss = IMPL_DEFAULTS[args.impl]
    args.hidden, args.lr, args.loss = list(args.hidden or hidden), args.lr or lr, args.loss or loss
    if args.impl == 'numpy' and (args.loss != 'ce' or len(args.hidden) != 1 or args.opt != 'sgd'):
        common.fail('--impl numpy is one hidden layer with softmax cross-entropy and plain SGD; '
                    'drop --loss mse, --opt and multi-layer --hidden, or use --impl paddle')
    if args.predict:
        if args.impl == 'numpy':
            common.fail('--predict uses a PaddlePaddle model; train one with --impl paddle')
        return common.predict_from_run(args, SCRIPT, build_model)
    wall_start = time.perf_counter()

    if args.impl == 'numpy':
        splits, cfg = common.prepare_run(args, NAME)
        net, record = train_numpy(cfg, splits, args.log_every)
        result = net.evaluate(*splits['eval'])
        print(f'eval: loss {result["loss"]:.4f}, accuracy {result["acc"]:.4f} on {len(splits["eval"][1]):,} images')
        os.makedirs(args.out, exist_ok=True)
        def write_npz(tmp):
            with open(tmp, 'wb') as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, **net.params)
        common.atomic_write(os.path.join(args.out, 'model.npz'), write_npz)
        metrics = common.write_metrics(args.out, cfg, record, result, time.perf_counter() - wall_start,
                                       'cpu (numpy)')
        common.save_plots(metrics, args.out, 'MLP (numpy)')
        print(f'wrote {args.out}/metrics.json, plots and {args.out}/model.npz')
        return metrics

    device = common.select_device(args.device)
    splits, cfg = common.prepare_run(args, NAME)
    with paddle.utils.unique_name.guard():
        common.seed_everything(args.seed)
        model = build_model(cfg)
        optimizer, scheduler = common.build_optimizer(cfg, model.parameters())
        run = common.new_run(NAME, SCRIPT, args.ckpt_dir, args.log_every)
        record = common.run_and_report(
            lambda: common.train(model, optimizer, scheduler, cfg, splits, run))
        return common.finish_run(model, cfg, splits, record, run, args.out, device, wall_start,
                                 f'MLP {"-".join(map(str, cfg["hidden"]))} ({cfg["loss"]})')


if __name__ == '__main__':
    common.run_main(main)
