"""MNIST with a multilayer perceptron: stage 四 of the course.

The tutorial's MLP 784 -> 10 -> 10 -> 1 with sigmoid hidden layers, regressing the digit with MSE
(SGD, lr 0.01, batch 100, 5 epochs); --loss ce gives it 10 outputs and softmax + cross-entropy;
--hidden 300 compares with LeCun et al. 1998's 300-unit MLP (4.7% test error). The same network
written in numpy, with backpropagation by hand, is mnist_numpy.py.

    python mnist_mlp.py --data-dir ../shared/data/mnist-mini
    python mnist_mlp.py --data-dir ../shared/data/mnist-mini --loss ce --hidden 300
"""
import argparse
import os
import time

import startup
paddle = startup.import_paddle()  # first the project's Python and the CPU settings: see startup.py

import numpy as np
import paddle.nn as nn
import paddle.nn.functional as F

import checkpoints
import common
import predict
import progress
from safe_files import check_writable

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
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    predict.add_args(parser)
    return parser


# ---- 2. data (三) -------------------------------------------------------------------------------

class MNISTDataset(paddle.io.Dataset):
    """One split as a map-style dataset: dataset[i] is (image float32 [1,28,28], label int64)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __len__(self):
        return len(self.labels)


def make_loaders(splits, cfg):
    """Training batches in an order that depends on (seed, epoch) alone; validation and evaluation
    in file order, 500 at a time."""
    train_set = MNISTDataset(*splits['train'])
    sampler = common.EpochBatchSampler(len(train_set), cfg['batch_size'], cfg['seed'])
    # DataLoader workers (--num-workers) send batches by pipe, not through /dev/shm
    train_loader = paddle.io.DataLoader(train_set, batch_sampler=sampler,
                                        num_workers=cfg['num_workers'], use_shared_memory=False)
    valid_loader = paddle.io.DataLoader(MNISTDataset(*splits['valid']), batch_size=500)
    eval_loader = paddle.io.DataLoader(MNISTDataset(*splits['eval']), batch_size=500)
    return train_loader, valid_loader, eval_loader


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
    return MNISTMLP(tuple(cfg['hidden']), outputs=10 if cfg['loss'] == 'ce' else 1)


# ---- 4. loss and optimizer ---------------------------------------------------------------------

def loss_and_correct(output, labels, loss_kind):
    """The batch's mean loss and how many images it got right. mse: the output is the digit as a
    number, right when it rounds to the label; ce: 10 class scores, right when the top one is."""
    if loss_kind == 'ce':
        loss, predicted = F.cross_entropy(output, labels), output.argmax(axis=1)
    else:
        loss = F.mse_loss(output, labels.astype('float32').reshape([-1, 1]))
        predicted = output.reshape([-1]).round().clip(0, 9).astype('int64')
    return loss, int((predicted == labels).astype('int64').sum())


def build_optimizer(cfg, parameters):
    """Plain SGD at a constant rate, as the course's first stages (no LR schedule: None)."""
    return paddle.optimizer.SGD(learning_rate=cfg['lr'], parameters=parameters), None


# ---- 5. the training loop -----------------------------------------------------------------------

def train(model, optimizer, scheduler, loaders, cfg, start=None):
    """Train from `start` (a checkpoint's position; None: the beginning) to cfg['epochs'] epochs,
    with validation and a checkpoint after every epoch (scheduler: unused, SGD keeps its rate)."""
    train_loader, valid_loader, _ = loaders
    # the tracker keeps the figures (metrics.json, plots, VisualDL); Ctrl-C becomes a safe stop
    with progress.Tracker(cfg, model, optimizer, start, train_loader.dataset) as tracker:
        for epoch in range(tracker.start_epoch, cfg['epochs']):
            first = tracker.begin_epoch(epoch)  # 0, or the batch where a resumed run stopped
            # this epoch's order, from (seed, epoch)
            train_loader.batch_sampler.set_epoch(epoch, first)
            model.train()
            for batch_id, (images, labels) in enumerate(train_loader, start=first):
                output = model(images)  # forward pass
                loss, correct = loss_and_correct(output, labels, cfg['loss'])
                loss.backward()  # backward pass: the gradient of every parameter
                optimizer.step()  # w <- w - lr * gradient
                optimizer.clear_grad()
                tracker.record_batch(batch_id, loss, correct, len(labels))
                tracker.stop_if_diverged()  # NaN or infinite loss: stop, earlier checkpoints intact
                tracker.save_and_stop_if_interrupted()  # Ctrl-C: save NAME_interrupted, then stop
                if batch_id % cfg['log_every'] == 0:
                    tracker.print_progress()
            valid = evaluate(model, valid_loader, cfg['loss'])
            position = tracker.end_epoch(valid)
            prefix = os.path.join(cfg['ckpt_dir'], f'{NAME}_epoch{epoch}')
            # 九: the model, the optimizer and where to continue
            checkpoints.save(prefix, model, optimizer, position)
            tracker.stop_if_interrupted()  # Ctrl-C during the last batch or validation: stop here
    return tracker.record


@paddle.no_grad()
def evaluate(model, loader, loss_kind):
    """八: mean loss and accuracy over a whole split; for the regression (mse) also the mean
    absolute error of the predicted number."""
    model.eval()
    total_loss, total_correct, total_abs_error, seen = 0.0, 0, 0.0, 0
    for images, labels in loader:
        output = model(images)
        loss, correct = loss_and_correct(output, labels, loss_kind)
        total_loss += float(loss) * len(labels)
        total_correct += correct
        if loss_kind == 'mse':
            total_abs_error += float(np.abs(output.numpy()[:, 0] - labels.numpy()).sum())
        seen += len(labels)
    model.train()
    if not seen:
        return {'loss': None, 'acc': None}
    result = {'loss': total_loss / seen, 'acc': total_correct / seen}
    if loss_kind == 'mse':
        result['mae'] = total_abs_error / seen
    return result


def finish(model, loaders, cfg, record, device, wall_start, extra=None):
    """八: the final accuracy on the eval split, which training never touched, its mistakes and
    confusion matrix (mistakes.png, confusion.png); then the model, metrics.json and the plots."""
    result = evaluate(model, loaders[2], cfg['loss'])
    per_digit = progress.save_mistakes_and_confusion(model, loaders[2], cfg['loss'], cfg['out'])
    extra = dict(extra or {}, eval_acc_per_digit=per_digit)
    title = f'MLP {"-".join(map(str, cfg["hidden"]))} ({cfg["loss"]})'
    return progress.finish(model, result, cfg, record, device, wall_start, title, extra)


# ---- 6. main ------------------------------------------------------------------------------------

def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    if args.predict:
        return predict.run(args, SCRIPT, build_model)
    wall_start = time.perf_counter()
    if common.rank_and_world()[1] > 1:
        common.fail('data-parallel training (stage 七) is in mnist_cnn.py; run this script without '
                    'the launcher')
    device = common.select_device(args.device)
    splits, source = common.load_mnist_splits(args.data_dir, args.train_limit)
    cfg = common.new_config(args, NAME, SCRIPT, source, splits)
    loaders = make_loaders(splits, cfg)
    check_writable(args.out, args.ckpt_dir)  # a bad path fails now, not after an epoch
    # 九: one run at a time writes the checkpoint folder; a fresh name scope gives parameters and
    # optimizer state the same names in every run, so checkpoints load
    with checkpoints.lock_folder(args.ckpt_dir), paddle.utils.unique_name.guard():
        if not args.overwrite:  # a run stopped before its last epoch is resumed, not replaced
            checkpoints.refuse_if_unfinished_run(args.ckpt_dir, cfg)
        checkpoints.move_aside_earlier_runs(args.ckpt_dir, cfg)  # to checkpoint/previous/<run>/
        paddle.seed(args.seed)  # the same seed, the same initial weights
        model = build_model(cfg)
        optimizer, scheduler = build_optimizer(cfg, model.parameters())
        progress.save_samples(loaders[0].dataset, cfg)  # 三: samples.png, what the model receives
        record = train(model, optimizer, scheduler, loaders, cfg)
        return finish(model, loaders, cfg, record, device, wall_start)


if __name__ == '__main__':
    common.run_main(main)
