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
import math
import os
import time

import common  # first: it sets CPU switches that must precede paddle's import

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

NAME = 'mnist'  # checkpoint names: checkpoint/mnist_epoch{N}, as in the tutorial


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
    parser.add_argument('--predict', metavar='IMAGE',
                        help='classify one PNG/JPG digit with the model trained into --out, then stop')
    parser.add_argument('--model', default=None,
                        help='model file for --predict (default: <out>/model.pdparams)')
    return parser


# ---- model ----------------------------------------------------------------------------------

class MNISTCNN(nn.Layer):
    """conv(1->20, 5x5, pad 2)+ReLU -> maxpool 2 -> conv(20->20, 5x5, pad 2)+ReLU -> maxpool 2 -> fc.
    28x28 -> 28x28 -> 14x14 -> 14x14 -> 7x7, so the fc sees 20*7*7 = 980 values.
    outputs=10: class scores for softmax + cross-entropy; outputs=1: the digit as a number (MSE)."""

    def __init__(self, outputs=10):
        super().__init__()
        self.conv1 = nn.Conv2D(1, 20, kernel_size=5, stride=1, padding=2)
        self.pool1 = nn.MaxPool2D(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2D(20, 20, kernel_size=5, stride=1, padding=2)
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


def predict(args):
    """--predict IMAGE: load the trained model (and its settings) and classify one image."""
    prefix = common.checkpoint_prefix(args.model or os.path.join(args.out, 'model'))
    meta = common.read_checkpoint_meta(prefix)
    if meta.get('script') != 'mnist_cnn':
        common.fail(f'{prefix}.pdparams was trained by {meta.get("script")}.py, not mnist_cnn.py; '
                    f'use that script\'s --predict')
    image = common.load_digit_image(args.predict)  # check the image before building anything
    model = build_model(meta['config'])
    common.load_model_state(model, prefix + '.pdparams')
    digit, prob = common.predict_digit(model, image, meta['config']['loss'])
    detail = f' (probability {prob:.4f})' if prob is not None else ' (regression output, rounded)'
    print(f'predicted digit: {digit}{detail}')
    return digit, prob


# ---- train, evaluate, save -------------------------------------------------------------------

def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    if args.predict:
        with paddle.utils.unique_name.guard():
            return predict(args)
    wall_start = time.perf_counter()
    device = common.select_device(args.device)

    # data (三): train / valid / eval splits as numpy arrays
    splits, source = common.load_mnist_splits(args.data_dir)
    splits = common.limit_train(splits, source, args.train_limit)
    steps_per_epoch = math.ceil(source['sizes']['train'] / args.batch_size)

    # config: every option, the data, and what the LR schedule spans (so a resume rebuilds it)
    cfg = {k: v for k, v in vars(args).items()
           if k not in ('predict', 'model', 'check_shape', 'check_content', 'overwrite', 'log_every')}
    cfg.update(data=source, schedule_steps=args.epochs * steps_per_epoch,
               train_fingerprint=common.fingerprint(*splits['train']))
    common.check_ckpt_dir_free(args.ckpt_dir, NAME, cfg, args.overwrite)

    # model and optimizer, built inside a fresh name scope so that the parameter (and optimizer
    # state) names are the same in every process and every call: resume depends on it.
    with paddle.utils.unique_name.guard():
        common.seed_everything(args.seed)
        model = build_model(cfg)
        optimizer, scheduler = common.build_optimizer(cfg, model.parameters())
        if args.check_shape or args.check_content:
            check_layers(model, splits['train'][0][:args.batch_size], args.seed,
                         args.check_shape, args.check_content)

        run = {'name': NAME, 'script': 'mnist_cnn', 'run_id': common.new_run_id(),
               'ckpt_dir': args.ckpt_dir, 'log_every': args.log_every}
        record = common.run_and_report(
            lambda: common.train(model, optimizer, scheduler, cfg, splits, run))

        # evaluate on the held-out eval split (八), save the final model, metrics and plots
        result = common.evaluate(model, *splits['eval'], cfg['loss']) if len(splits['eval'][1]) else None
        if result:
            print(f'eval: loss {result["loss"]:.4f}, accuracy {result["acc"]:.4f} '
                  f'on {len(splits["eval"][1]):,} images')
        common.save_checkpoint(os.path.join(args.out, 'model'), model, None,
                               {'script': 'mnist_cnn', 'run_id': run['run_id'], 'config': cfg})
    metrics = common.write_metrics(args.out, cfg, record, result,
                                   time.perf_counter() - wall_start, device, {'run_id': run['run_id']})
    plots = common.save_plots(metrics, args.out, 'CNN')
    print(f'wrote {args.out}/metrics.json, {", ".join(plots)} and {args.out}/model.pdparams')
    return metrics


if __name__ == '__main__':
    common.run_main(main)
