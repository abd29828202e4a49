"""MNIST with one linear layer: stage 二 of the tutorial, and why it falls short.

The tutorial first treats a digit like a house price: Linear(784 -> 1) regresses the digit as a
number with MSE (SGD, lr 0.001, batch 100). "Accuracy" is then the rounded prediction (clipped to
0-9) hitting the label; the mean absolute error says how far off the number is. --loss ce keeps one
linear layer but gives it 10 outputs and softmax + cross-entropy (multinomial logistic regression):
the same capacity, the right loss. (LeCun et al. 1998: 12.0% test error for a linear classifier;
PaddlePaddle's book: about 92.3% accuracy for softmax regression.)

    python mnist_linear.py --data-dir ../shared/data/mnist-mini
    python mnist_linear.py --data-dir ../shared/data/mnist-mini --loss ce
"""
import argparse
import time

import common  # first: it sets CPU switches that must precede paddle's import

import numpy as np
import paddle
import paddle.nn as nn

NAME = 'linear'  # checkpoint/linear_epoch{N}
SCRIPT = 'mnist_linear'


# ---- config ---------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_train_args(parser, epochs=10, lr=0.001, opt='sgd', schedule='constant', loss='mse')
    common.add_run_args(parser, out='runs/linear')
    common.add_predict_args(parser)
    return parser


# ---- model ----------------------------------------------------------------------------------

class MNISTLinear(nn.Layer):
    """784 pixels -> 1 number (mse) or 10 class scores (ce), no hidden layer."""

    def __init__(self, outputs=1):
        super().__init__()
        self.fc = nn.Linear(784, outputs)

    def forward(self, x):
        return self.fc(paddle.flatten(x, start_axis=1))


def build_model(cfg):
    return MNISTLinear(outputs=10 if cfg['loss'] == 'ce' else 1)


@paddle.no_grad()
def show_predictions(model, images, labels, loss_kind, count=10):
    """A few predictions next to their labels, as the tutorial prints them."""
    model.eval()
    output = model(paddle.to_tensor(images[:count])).numpy()
    guesses = output.argmax(axis=1) if loss_kind == 'ce' else output[:, 0]
    for guess, label in zip(guesses, labels[:count]):
        shown = f'{guess:d}' if loss_kind == 'ce' else f'{guess:6.2f} -> {int(np.clip(np.round(guess), 0, 9))}'
        print(f'  label {label}: predicted {shown}')


# ---- train, evaluate, save -------------------------------------------------------------------

def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    if args.predict:
        return common.predict_from_run(args, SCRIPT, build_model)
    wall_start = time.perf_counter()
    device = common.select_device(args.device)
    splits, cfg = common.prepare_run(args, NAME)
    with paddle.utils.unique_name.guard():
        common.seed_everything(args.seed)
        model = build_model(cfg)
        optimizer, scheduler = common.build_optimizer(cfg, model.parameters())
        run = common.new_run(NAME, SCRIPT, args.ckpt_dir, args.log_every)
        record = common.run_and_report(
            lambda: common.train(model, optimizer, scheduler, cfg, splits, run))
        metrics = common.finish_run(model, cfg, splits, record, run, args.out, device, wall_start,
                                    f'linear ({args.loss})')
        print('first eval images:')
        show_predictions(model, *splits['eval'], args.loss)
    return metrics


if __name__ == '__main__':
    common.run_main(main)
