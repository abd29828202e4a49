"""MNIST with a convolutional network: stages 三 to 九 of the course in one script, top to bottom.

    1. flags        the settings; the defaults are the tutorial's final setup (stage 九)
    2. data (三)    paddle.io.Dataset + DataLoader; each epoch's order is fixed by (seed, epoch)
    3. model (四)   conv-pool-conv-pool-fc, and the layer checks of stage 八
    4. loss (五), optimizer (六)   softmax + cross-entropy or MSE; SGD/Momentum/AdaGrad/Adam,
                                  L2, LR decay
    5. the loop     forward, loss, backward, step; each epoch: validation (八) and a checkpoint (九)
    6. evaluation   on the eval split (八): accuracy, mistakes, confusion; the model saved
    main runs these in order, one numbered step each (in the notebook: one cell each).

    # 5 epochs of the tutorial's final setup
    python mnist_cnn.py --data-dir path/to/mnist
    # continue from the end of epoch 0
    python resume.py --ckpt checkpoint/mnist_epoch0
    # 七: two data-parallel workers
    python -m paddle.distributed.launch --nproc_per_node 2 mnist_cnn.py
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

NAME, SCRIPT = 'mnist', 'mnist_cnn'  # checkpoints: checkpoint/mnist_epoch{N}, as in the tutorial


# ---- 1. flags -----------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=common.HelpFormatter)
    add = parser.add_argument
    add('--epochs', type=common.positive_int, default=5, help='passes over the training split')
    add('--batch-size', type=common.positive_int, default=100, help='images per step (all workers)')
    add('--lr', type=common.positive_float, default=0.01, help='(initial) learning rate')
    add('--seed', type=int, default=0,
        help='the initial weights and every epoch\'s order derive from it')
    add('--loss', default='ce', choices=['ce', 'mse'],
        help='ce: 10 class scores, softmax + cross-entropy (五); '
             'mse: one output, the digit as a number (四)')
    add('--opt', default='adam', choices=['sgd', 'momentum', 'adagrad', 'adam'],
        help='optimizer (六)')
    add('--schedule', default='poly', choices=['poly', 'constant'],
        help='poly: --lr down to --lr/10 (九)')
    add('--l2', type=common.non_negative_float, default=0.0, help='L2 regularisation (八); 0 = off')
    add('--num-workers', type=common.non_negative_int, default=0, help='DataLoader processes (三)')
    add('--shift', type=common.non_negative_int, default=0,
        help='move training images up to N pixels')
    add('--check-content', action='store_true',
        help='print and draw the untrained network\'s kernels and feature maps (八)')
    common.add_run_args(parser, out='runs/cnn')
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


class TrainSet(MNISTDataset):
    """The training images; with --shift N each is moved by up to N pixels each way, a new move
    every epoch, drawn from (seed, epoch) so that a resumed run sees the very same images
    (set_epoch)."""

    # random numbers from [seed, epoch, 1]: a stream apart from the epoch's order, [seed, epoch]
    MOVES_STREAM = 1

    def __init__(self, images, labels, shift=0, seed=0):
        super().__init__(images, labels)
        self.shift, self.seed = shift, seed
        self.set_epoch(0)

    def set_epoch(self, epoch):
        rng = np.random.default_rng([self.seed, epoch, self.MOVES_STREAM])
        self.moves = rng.integers(-self.shift, self.shift + 1, size=(len(self), 2))  # (dy, dx) each

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        s, (dy, dx) = self.shift, self.moves[index]
        if s:  # pad with background (-1), then cut the 28x28 window moved by (dy, dx)
            image = np.pad(image, ((0, 0), (s, s), (s, s)), constant_values=-1.0)
        return image[:, s + dy:s + dy + 28, s + dx:s + dx + 28], label


def make_loaders(splits, cfg):
    """Training batches in an order that depends on (seed, epoch) alone, so a resumed run sees
    the batches the interrupted one would have; validation and evaluation in file order,
    500 at a time."""
    train_set = TrainSet(*splits['train'], cfg.get('shift', 0), cfg['seed'])
    sampler = common.batch_sampler(len(train_set), cfg['batch_size'], cfg['seed'])
    # DataLoader workers (--num-workers) send batches by pipe, not through shared memory (/dev/shm:
    # 64 MB on AI Studio, too small for them)
    train_loader = paddle.io.DataLoader(train_set, batch_sampler=sampler,
                                        num_workers=cfg['num_workers'], use_shared_memory=False)
    valid_loader = paddle.io.DataLoader(MNISTDataset(*splits['valid']), batch_size=500)
    eval_loader = paddle.io.DataLoader(MNISTDataset(*splits['eval']), batch_size=500)
    return train_loader, valid_loader, eval_loader


# ---- 3. model (四) ------------------------------------------------------------------------------

class Conv2D(nn.Conv2D):
    """nn.Conv2D with the same parameters, names and results, faster on a CPU: the bias added as
    [C,1,1] rather than paddle's slow [1,C,1,1] path (tools/bench.py). Checkpoints are
    interchangeable."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias_attr=False)
        # created after the weight, as in nn.Conv2D
        self.bias = self.create_parameter([out_channels], is_bias=True)
        self.conv_args = {'stride': stride, 'padding': padding}

    def forward(self, x):
        return F.conv2d(x, self.weight, **self.conv_args) + self.bias.reshape([-1, 1, 1])


class MNISTCNN(nn.Layer):
    """conv(1->20, 5x5, pad 2)+ReLU -> maxpool 2
    -> conv(20->20, 5x5, pad 2)+ReLU -> maxpool 2 -> fc.
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
    # fresh parameter names (conv2d_0.w_0, ...), which key the .pdopt: every run's checkpoints fit
    paddle.utils.unique_name.switch()
    return MNISTCNN(outputs=10 if cfg['loss'] == 'ce' else 1)


@paddle.no_grad()
def check_layers(model, images, seed, out, content=False):
    """八: one batch through the layers, printing every parameter's and layer output's shape.
    content (--check-content): also values from the feature maps and kernels, and their pictures
    (layer_plots.check_content)."""
    x = paddle.to_tensor(images)
    steps = [('conv1+relu', lambda t: F.relu(model.conv1(t))), ('pool1', model.pool1),
             ('conv2+relu', lambda t: F.relu(model.conv2(t))), ('pool2', model.pool2),
             ('fc', lambda t: model.fc(paddle.flatten(t, start_axis=1)))]
    print('########## parameter shapes ##########')
    # list(shape): [100, 20, 28, 28] as the course printed it (paddle 3 shows paddle.Size([...]))
    print('\n'.join(f'{name}: {list(p.shape)}' for name, p in model.named_parameters()))
    print(f'########## output shape of every layer ##########\ninput: {list(x.shape)}')
    outputs = {}
    for name, step in steps:
        x = step(x)
        print(f'{name}: {list(x.shape)}')
        outputs[name] = x
    if content:
        layer_plots = common.optional('layer_plots', '--check-content')  # a notebook lacks it
        layer_plots.check_content(model, images, outputs, seed, out)


# ---- 4. loss (五) and optimizer (六) ------------------------------------------------------------

def loss_and_correct(output, labels, loss_kind):
    """The batch's mean loss and how many images it got right. ce: output holds 10 class scores
    (cross_entropy applies the softmax itself, the stable form);
    mse: output is the digit as a number."""
    if loss_kind == 'ce':
        loss, predicted = F.cross_entropy(output, labels), output.argmax(axis=1)
    else:
        loss = F.mse_loss(output, labels.astype('float32').reshape([-1, 1]))
        predicted = output.reshape([-1]).round().clip(0, 9).astype('int64')
    return loss, int((predicted == labels).astype('int64').sum())


def build_optimizer(cfg, parameters):
    """(optimizer, LR scheduler or None): 六's optimizers, 八's L2 decay, 九's decaying rate."""
    scheduler = None
    if cfg['schedule'] == 'poly':  # from lr down to lr/10, linearly over all the run's steps
        scheduler = paddle.optimizer.lr.PolynomialDecay(cfg['lr'],
                                                        decay_steps=cfg['schedule_steps'],
                                                        end_lr=cfg['lr'] / 10)
    l2 = paddle.regularizer.L2Decay(cfg['l2']) if cfg['l2'] else None
    optimizers = {'sgd': paddle.optimizer.SGD, 'adagrad': paddle.optimizer.Adagrad,
                  'adam': paddle.optimizer.Adam,
                  'momentum': lambda **kw: paddle.optimizer.Momentum(momentum=0.9, **kw)}
    optimizer = optimizers[cfg['opt']](learning_rate=scheduler or cfg['lr'], parameters=parameters,
                                       weight_decay=l2)  # a scheduler gives each step's rate
    return optimizer, scheduler


# ---- 5. the training loop -----------------------------------------------------------------------

def train(model, optimizer, scheduler, loaders, cfg, start=None):
    """Train from `start` (a checkpoint's position; None: the beginning) to cfg['epochs'] epochs,
    with validation and a checkpoint after every epoch; then the loss and accuracy curves.
    Returns every batch's loss and each epoch's row."""
    train_loader, valid_loader, _ = loaders
    sampler = train_loader.batch_sampler
    # 七: with data-parallel workers, DataParallel averages their gradients (share_weight below
    # keeps that average the global batch's mean) and the tracker sums their figures (parallel.py,
    # in the repository: run under the launcher, never in a notebook)
    net = paddle.DataParallel(model) if common.rank_and_world()[1] > 1 else model
    # the tracker holds the checkpoint folder, keeps the figures (metrics.json, the curves,
    # VisualDL) and makes Ctrl-C a safe stop
    with progress.tracker(cfg, model, optimizer, start, train_loader.dataset) as tracker:
        for epoch in range(tracker.start_epoch, cfg['epochs']):
            first = tracker.begin_epoch(epoch)  # 0, or the batch where a resumed run stopped
            sampler.set_epoch(epoch, first)  # this epoch's order, from (seed, epoch)
            train_loader.dataset.set_epoch(epoch)  # with --shift: this epoch's moves
            net.train()
            for batch_id, (images, labels) in enumerate(train_loader, start=first):
                output = net(images)  # forward pass (前向计算)
                loss, correct = loss_and_correct(output, labels, cfg['loss'])
                # 七: 1.0 unless the workers' shares of this batch differ
                loss = loss * sampler.share_weight(batch_id)
                loss.backward()  # backward pass: the gradient of every parameter (反向传播)
                optimizer.step()  # update the parameters (六)
                optimizer.clear_grad()
                if scheduler is not None:
                    scheduler.step()  # the next step's learning rate (九)
                tracker.record_batch(batch_id, loss, correct, len(labels))
                tracker.stop_if_diverged()  # NaN or infinite loss: stop, earlier checkpoints intact
                tracker.save_and_stop_if_interrupted()  # Ctrl-C: save NAME_interrupted, then stop
                tracker.print_progress()  # every --log-every batches, as the tutorial prints
            valid = evaluate(model, valid_loader, cfg['loss'])  # 八: images it never trains on
            position = tracker.end_epoch(valid)
            prefix = os.path.join(cfg['ckpt_dir'], f'{NAME}_epoch{epoch}')
            # 九: paddle.save(model.state_dict(), prefix + '.pdparams') and the same for the
            # optimizer's (.pdopt), each file written whole, then a .json: where to continue
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


# ---- main: the sections above, in order (a notebook runs each step in its own cell) -------------

def main(argv=None):
    # 1. flags (the tutorial's settings by default), and the device (七)
    args = common.parse_args(build_parser(), argv)
    if args.predict:  # classify one image with the trained model, then stop
        import predict
        return predict.run(args, SCRIPT, build_model)
    device = common.select_device(args.device)  # CPU or GPU, and the data-parallel workers
    # 2. data (三): the three splits, the loaders, one batch, and samples.png
    splits, source = common.load_mnist_splits(args.data_dir, args.train_limit)
    cfg = common.new_config(args, NAME, SCRIPT, source, splits, ignore=('check_content',))
    checkpoints.check_folders(cfg)  # a bad path, a folder in use: refused now, not later
    loaders = make_loaders(splits, cfg)
    progress.show_data(loaders[0], cfg)
    # 3. model (四), and 八's check: every parameter's and every layer's output shape
    paddle.seed(args.seed)  # the same seed, the same initial weights
    model = build_model(cfg)
    check_layers(model, splits['train'][0][:args.batch_size], args.seed, args.out,
                 args.check_content)
    # 4. loss (五) and optimizer (六)
    optimizer, scheduler = build_optimizer(cfg, model.parameters())
    print(f'loss {args.loss}, optimizer {args.opt}, learning rate {optimizer.get_lr():g} '
          f'({args.schedule}), L2 {args.l2}')
    # 5. train: progress lines, a checkpoint after each epoch (九), then the curves
    record = train(model, optimizer, scheduler, loaders, cfg)
    # 6. evaluate on the eval split (八), save the model and metrics.json
    return finish(model, loaders, cfg, record, device)


if __name__ == '__main__':
    common.run_main(main)
