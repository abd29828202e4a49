"""MNIST with a multilayer perceptron: stage 四 of the course.

The tutorial's MLP 784 -> 10 -> 10 -> 1 with sigmoid hidden layers, regressing the digit with MSE
(SGD, lr 0.01, batch 100, 5 epochs); --loss ce gives it 10 outputs and softmax + cross-entropy;
--hidden 300 compares with LeCun et al. 1998's 300-unit MLP (4.7% test error). The same network
written in numpy, with backpropagation by hand, is mnist_numpy.py. The data, the loss, the training
loop and the evaluation are mnist_linear.py's (stage 二): only the model changes.

    python mnist_mlp.py --data-dir ../shared/data/mnist-mini
    python mnist_mlp.py --data-dir ../shared/data/mnist-mini --loss ce --hidden 300
"""
import argparse

import startup
paddle = startup.import_paddle()  # first the project's Python and the CPU settings: see startup.py

import paddle.nn as nn
import paddle.nn.functional as F

import common
import progress
from checkpoints import check_folders
from mnist_linear import build_optimizer, finish, make_loaders, train  # noqa: F401 (resume.py)

NAME, SCRIPT = 'mlp', 'mnist_mlp'  # checkpoints: checkpoint/mlp_epoch{N}


# ---- 1. flags -----------------------------------------------------------------------------------

def hidden_sizes(text):
    try:
        sizes = tuple(int(s) for s in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected sizes like 10,10 or 300, got {text!r}')
    if min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f'hidden sizes must be positive, got {text!r}')
    return list(sizes)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=common.HelpFormatter)
    parser.add_argument('--epochs', type=common.positive_int, default=5,
                        help='passes over the training split')
    parser.add_argument('--batch-size', type=common.positive_int, default=100,
                        help='images per step')
    parser.add_argument('--lr', type=common.positive_float, default=0.01,
                        help='learning rate of plain SGD')
    parser.add_argument('--seed', type=int, default=0,
                        help='the initial weights and every epoch\'s order derive from it')
    parser.add_argument('--loss', default='mse', choices=['mse', 'ce'],
                        help='mse: one output, the digit as a number (四); '
                             'ce: 10 class scores, softmax + cross-entropy (五)')
    parser.add_argument('--hidden', type=hidden_sizes, default=[10, 10],
                        help='hidden layer sizes, comma-separated')
    parser.add_argument('--num-workers', type=common.non_negative_int, default=0,
                        help='DataLoader processes preparing batches ahead (三); '
                             '0 = in the training process')
    common.add_run_args(parser, out='runs/mlp')
    return parser


# ---- 2. data (三): mnist_linear.make_loaders, the same MNISTDataset and batch order -----------

# ---- 3. model (四) ------------------------------------------------------------------------------

class MNISTMLP(nn.Layer):
    """784 pixels -> hidden layers (sigmoid each) -> 1 number (mse) or 10 class scores (ce)."""

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
    # fresh parameter names (linear_0.w_0, ...), which key the .pdopt: every run's checkpoints fit
    paddle.utils.unique_name.switch()
    return MNISTMLP(tuple(cfg['hidden']), outputs=10 if cfg['loss'] == 'ce' else 1)


# ---- main: mnist_linear.py's steps with this model (a notebook runs each in its own cell) -----

def main(argv=None):
    # 1. flags (the tutorial's settings by default), and the device (七)
    args = common.parse_args(build_parser(), argv)
    if args.predict:  # classify one image with the trained model, then stop
        import predict
        return predict.run(args, SCRIPT, build_model)
    if common.rank_and_world()[1] > 1:
        common.fail('data-parallel training (stage 七) is in mnist_cnn.py; run this script without '
                    'the launcher')
    device = common.select_device(args.device)
    # 2. data (三): the three splits, the loaders (mnist_linear's), one batch, and samples.png
    splits, source = common.load_mnist_splits(args.data_dir, args.train_limit)
    cfg = common.new_config(args, NAME, SCRIPT, source, splits)
    check_folders(cfg)  # a bad path, a folder in use: refused now, not later
    loaders = make_loaders(splits, cfg)
    progress.show_data(loaders[0], cfg)
    # 3. model (四): hidden layers with sigmoid
    paddle.seed(args.seed)  # the same seed, the same initial weights
    model = build_model(cfg)
    print(model)
    # 4. loss (mnist_linear's: MSE, or softmax + cross-entropy) and optimizer: plain SGD
    optimizer, scheduler = build_optimizer(cfg, model.parameters())
    print(f'loss {args.loss}, optimizer SGD, learning rate {optimizer.get_lr():g}')
    # 5. train with mnist_linear's loop: a checkpoint after each epoch (九), then the curves
    record = train(model, optimizer, scheduler, loaders, cfg)
    # 6. evaluate on the eval split (八), save the model and metrics.json
    return finish(model, loaders, cfg, record, device)


if __name__ == '__main__':
    common.run_main(main)
