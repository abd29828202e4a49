"""MNIST with one linear layer: stage 二 of the course, and why it falls short.

The tutorial first treats a digit like a house price: Linear(784 -> 1) regresses the digit as a
number with MSE (SGD, lr 0.001, batch 100). Its "accuracy" is the rounded prediction (clipped to
0-9) hitting the label; the mean absolute error says how far off the number is. --loss ce keeps one
linear layer but gives it 10 outputs and softmax + cross-entropy (multinomial logistic regression):
the same capacity, the right loss (stage 五). LeCun et al. 1998: 12.0% test error for a linear
classifier; PaddlePaddle's book: about 92.3% accuracy for softmax regression.

    python mnist_linear.py --data-dir ../shared/data/mnist-mini
    python mnist_linear.py --data-dir ../shared/data/mnist-mini --loss ce
"""
import argparse
import os

import startup
paddle = startup.import_paddle()  # first the project's Python and the CPU settings: see startup.py

import numpy as np
import paddle.nn as nn
import paddle.nn.functional as F

import checkpoints
import common
import progress

NAME, SCRIPT = 'linear', 'mnist_linear'  # checkpoints: checkpoint/linear_epoch{N}


# ---- 1. flags -----------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=common.HelpFormatter)
    parser.add_argument('--epochs', type=common.positive_int, default=10,
                        help='passes over the training split')
    parser.add_argument('--batch-size', type=common.positive_int, default=100,
                        help='images per step')
    parser.add_argument('--lr', type=common.positive_float, default=0.001,
                        help='learning rate of plain SGD')
    parser.add_argument('--seed', type=int, default=0,
                        help='the initial weights and every epoch\'s order derive from it')
    parser.add_argument('--loss', default='mse', choices=['mse', 'ce'],
                        help='mse: one output, the digit as a number (二); '
                             'ce: 10 class scores, softmax + cross-entropy (五)')
    parser.add_argument('--num-workers', type=common.non_negative_int, default=0,
                        help='DataLoader processes preparing batches ahead (三); '
                             '0 = in the training process')
    common.add_run_args(parser, out='runs/linear')
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


# ---- 3. model (二) ------------------------------------------------------------------------------

class MNISTLinear(nn.Layer):
    """784 pixels -> 1 number (mse) or 10 class scores (ce), no hidden layer."""

    def __init__(self, outputs=1):
        super().__init__()
        self.fc = nn.Linear(784, outputs)

    def forward(self, x):
        return self.fc(paddle.flatten(x, start_axis=1))


def build_model(cfg):
    # fresh parameter names (linear_0.w_0, ...), which key the .pdopt: every run's checkpoints fit
    paddle.utils.unique_name.switch()
    return MNISTLinear(outputs=10 if cfg['loss'] == 'ce' else 1)


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
    # the tracker holds the checkpoint folder, keeps the figures (metrics.json, the curves,
    # VisualDL) and makes Ctrl-C a safe stop
    with progress.tracker(cfg, model, optimizer, start, train_loader.dataset) as tracker:
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
                tracker.print_progress()  # every --log-every batches, as the tutorial prints
            valid = evaluate(model, valid_loader, cfg['loss'])
            position = tracker.end_epoch(valid)
            prefix = os.path.join(cfg['ckpt_dir'], f'{cfg["name"]}_epoch{epoch}')
            # 九: the model, the optimizer and where to continue
            checkpoints.save(prefix, model, optimizer, position)
            tracker.stop_if_interrupted()  # Ctrl-C late in an epoch: stop (the last: finish)
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


# ---- 6. evaluation (八) ------------------------------------------------------------------------

def finish(model, loaders, cfg, record, device, extra=None):
    """八: the final accuracy on the eval split, which training never touched, its mistakes and
    confusion matrix (mistakes.png, confusion.png); then the model and metrics.json."""
    result = evaluate(model, loaders[2], cfg['loss'])
    progress.print_eval(result, cfg)  # the accuracy, then its pictures
    per_digit = progress.save_mistakes_and_confusion(model, loaders[2], cfg['loss'], cfg['out'])
    extra = dict(extra or {}, eval_acc_per_digit=per_digit)
    return progress.finish(model, result, cfg, record, device, extra)


@paddle.no_grad()
def show_predictions(model, images, labels, loss_kind, count=10):
    """A few predictions next to their labels, as the tutorial prints them."""
    model.eval()
    output = model(paddle.to_tensor(images[:count])).numpy()
    guesses = output.argmax(axis=1) if loss_kind == 'ce' else output[:, 0]
    for guess, label in zip(guesses, labels[:count]):
        shown = (f'{guess:d}' if loss_kind == 'ce'
                 else f'{guess:6.2f} -> {int(np.clip(np.round(guess), 0, 9))}')
        print(f'  label {label}: predicted {shown}')


# ---- main: the sections above, in order (a notebook runs each step in its own cell) -------------

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
    # 2. data (三): the three splits, the loaders, one batch, and samples.png
    splits, source = common.load_mnist_splits(args.data_dir, args.train_limit)
    cfg = common.new_config(args, NAME, SCRIPT, source, splits)
    checkpoints.check_folders(cfg)  # a bad path, a folder in use: refused now, not later
    loaders = make_loaders(splits, cfg)
    progress.show_data(loaders[0], cfg)
    # 3. model (二): one linear layer
    paddle.seed(args.seed)  # the same seed, the same initial weights
    model = build_model(cfg)
    print(model)
    # 4. loss and optimizer
    optimizer, scheduler = build_optimizer(cfg, model.parameters())
    print(f'loss {args.loss}, optimizer SGD, learning rate {optimizer.get_lr():g}')
    # 5. train: progress lines, a checkpoint after each epoch (九), then the curves
    record = train(model, optimizer, scheduler, loaders, cfg)
    # 6. evaluate on the eval split (八), save the model and metrics.json; a few predictions
    metrics = finish(model, loaders, cfg, record, device)
    print('first eval images:')
    show_predictions(model, *splits['eval'], args.loss)
    return metrics


if __name__ == '__main__':
    common.run_main(main)
