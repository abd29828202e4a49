"""MNIST with a convolutional network: stages 四 to 九 of the tutorial in one script.

四 the CNN (conv-pool-conv-pool-fc), 五 softmax + cross-entropy (--loss ce, default) or the digit as a
regression target (--loss mse), 六 optimizers (--opt, --lr), 七 CPU/GPU (--device), 八 accuracy,
layer checks (--check-shape, --check-content), evaluation, L2 (--l2), plots, 九 a checkpoint after
every epoch (checkpoint/mnist_epoch{N}.pdparams/.pdopt) with Adam and PolynomialDecay 0.01 -> 0.001.

    python mnist_cnn.py                          # the tutorial's final setup, 5 epochs
    python mnist_cnn.py --data-dir ../shared/data/mnist-mini --epochs 2
    python mnist_cnn.py --predict digit.png      # classify one image with the trained model
    python resume.py --ckpt checkpoint/mnist_epoch0   # continue from the end of epoch 0
"""
import argparse
import time

import common  # first: it sets CPU switches that must precede paddle's import

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

NAME = 'mnist'  # checkpoint names: checkpoint/mnist_epoch{N}, as in the tutorial
SCRIPT = 'mnist_cnn'


# ---- config ---------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_train_args(parser, epochs=5, lr=0.01, opt='adam', schedule='poly')
    common.add_run_args(parser, out='runs/cnn')
    parser.add_argument('--check-shape', action='store_true',
                        help='print every layer\'s parameter and output shapes (stage 八)')
    parser.add_argument('--check-content', action='store_true',
                        help='print sample kernel weights and feature-map values (stage 八)')
    common.add_predict_args(parser)
    return parser


# ---- model ----------------------------------------------------------------------------------

class Conv2D(nn.Conv2D):
    """nn.Conv2D with the same parameters (weight, bias [C]), names and results, faster on a CPU:
    paddle adds the bias as [1,C,1,1] on a slow path that costs a third of this network's step
    (bench.py); added as [C,1,1] the losses are bit-identical and checkpoints are interchangeable."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias_attr=False)
        self.bias = self.create_parameter([out_channels], is_bias=True)  # after the weight, as nn.Conv2D
        self.conv_args = {'stride': stride, 'padding': padding}

    def forward(self, x):
        return F.conv2d(x, self.weight, **self.conv_args) + self.bias.reshape([-1, 1, 1])


class MNISTCNN(nn.Layer):
    """conv(1->20, 5x5, pad 2)+ReLU -> maxpool 2 -> conv(20->20, 5x5, pad 2)+ReLU -> maxpool 2 -> fc.
    28x28 -> 28x28 -> 14x14 -> 14x14 -> 7x7, so the fc sees 20*7*7 = 980 values.
    outputs=10: class scores for softmax + cross-entropy; outputs=1: the digit as a number (MSE)."""

    def __init__(self, outputs=10):
        super().__init__()
        self.conv1 = Conv2D(1, 20, kernel_size=5, stride=1, padding=2)
        self.pool1 = nn.MaxPool2D(kernel_size=2, stride=2)
        self.conv2 = Conv2D(20, 20, kernel_size=5, stride=1, padding=2)
        self.pool2 = nn.MaxPool2D(kernel_size=2, stride=2)
        self.fc = nn.Linear(980, outputs)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        return self.fc(paddle.flatten(x, start_axis=1))


def build_model(cfg):
    return MNISTCNN(outputs=10 if cfg['loss'] == 'ce' else 1)


@paddle.no_grad()
def check_layers(model, images, seed, shapes=True, content=False):
    """Stage 八: walk one batch through the layers, printing shapes and/or sample values.
    The sampled channel comes from the seed, not from global random state (training is unaffected)."""
    x = paddle.to_tensor(images)
    steps = [('conv1+relu', lambda t: F.relu(model.conv1(t))), ('pool1', model.pool1),
             ('conv2+relu', lambda t: F.relu(model.conv2(t))), ('pool2', model.pool2),
             ('fc', lambda t: model.fc(paddle.flatten(t, start_axis=1)))]
    if shapes:
        print('########## parameter shapes ##########')
        for name, p in model.named_parameters():
            print(f'{name}: {p.shape}')
        print('########## output shape of every layer ##########')
        print(f'input: {x.shape}')
    channel = int(np.random.default_rng(seed).integers(0, 20))
    for name, step in steps:
        x = step(x)
        if shapes:
            print(f'{name}: {x.shape}')
        if content and name.startswith('conv'):
            print(f'{name}: channel {channel} of the first image, top-left 4x4:\n'
                  f'{np.array2string(x.numpy()[0, channel, :4, :4], precision=4)}')
    if content:
        print(f'conv1 kernel [0][0]:\n{np.array2string(model.conv1.weight.numpy()[0, 0], precision=4)}')
        print(f'conv2 kernel [0][0]:\n{np.array2string(model.conv2.weight.numpy()[0, 0], precision=4)}')
        print(f'output of the last layer for the first image: {np.array2string(x.numpy()[0], precision=4)}')


# ---- train, evaluate, save -------------------------------------------------------------------

def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    if args.predict:
        return common.predict_from_run(args, SCRIPT, build_model)
    wall_start = time.perf_counter()
    device = common.select_device(args.device)

    # data (三) and the run's config: train / valid / eval splits as numpy arrays
    splits, cfg = common.prepare_run(args, NAME, ignore=('check_shape', 'check_content'))

    # model and optimizer, built inside a fresh name scope so that the parameter (and optimizer
    # state) names are the same in every process and every call: resume depends on it.
    with paddle.utils.unique_name.guard():
        common.seed_everything(args.seed)
        model = build_model(cfg)
        optimizer, scheduler = common.build_optimizer(cfg, model.parameters())
        if args.check_shape or args.check_content:
            check_layers(model, splits['train'][0][:args.batch_size], args.seed,
                         args.check_shape, args.check_content)

        # train, with a checkpoint after every epoch (九); then evaluate (八) and save
        run = common.new_run(NAME, SCRIPT, args.ckpt_dir, args.log_every)
        record = common.run_and_report(
            lambda: common.train(model, optimizer, scheduler, cfg, splits, run))
        return common.finish_run(model, cfg, splits, record, run, args.out, device, wall_start, 'CNN')


if __name__ == '__main__':
    common.run_main(main)
