"""The bookkeeping around a training loop, so that the loop itself stays in view in each script.

    with progress.Tracker(cfg, model, optimizer, start) as tracker:
        for epoch in range(tracker.start_epoch, cfg['epochs']):
            first = tracker.begin_epoch(epoch)
            for batch_id, (images, labels) in ...:
                ...  loss.backward(); optimizer.step(); ...
                tracker.record_batch(batch_id, loss, correct, len(labels))
                tracker.stop_if_diverged()
                tracker.save_and_stop_if_interrupted()
                if batch_id % cfg['log_every'] == 0:
                    tracker.print_progress()
            position = tracker.end_epoch(valid)
            checkpoints.save(..., position)
            tracker.stop_if_interrupted()

A Tracker keeps every batch's loss and each epoch's summary (metrics.json, the plots, VisualDL)
and prints the progress line with an ETA. It stops safely: a NaN or infinite loss stops with one
sentence; Ctrl-C (or the SIGTERM that paddle.distributed.launch sends its workers) finishes the
current step, saves NAME_interrupted and stops; a run resumed mid-epoch starts at the batch where
it stopped, with that epoch's partial sums. With data-parallel workers (七) every figure is the
sum over all workers, gathered every log_every batches and at each epoch's end (one all_reduce
then, not one per step), and all workers stop at the same step.
"""
import math
import os
import signal
import sys
import time

import numpy as np
import paddle

import checkpoints
import common
import errors
import plots
from safe_files import write_json


class Interrupted(Exception):
    """Ctrl-C was honoured: a checkpoint to resume from was saved (its prefix is the message)."""


def all_reduce_sum(values):
    """Sum a few numbers over the data-parallel workers (unchanged with one)."""
    if common.rank_and_world()[1] == 1:
        return list(values)
    total = paddle.to_tensor(np.asarray(values, dtype=np.float64))
    paddle.distributed.all_reduce(total)
    return total.numpy().tolist()


class Tracker:
    def __init__(self, cfg, model, optimizer, start=None, train_set=None):
        start = start or {}
        self.cfg, self.model, self.optimizer, self.train_set = cfg, model, optimizer, train_set
        self.per_epoch = cfg['steps_per_epoch']
        self.start_epoch, self.start_batch = start.get('next_epoch', 0), start.get('next_batch', 0)
        self.partial = start.get('partial')
        self.world_size = common.rank_and_world()[1]
        # one process: figures are final every batch; workers gather theirs every log_every batches
        self.gather_every = 1 if self.world_size == 1 else cfg['log_every']
        self.record = {'batch_losses': [], 'epochs': [], 'steps_per_epoch': self.per_epoch,
                       'workers': self.world_size,
                       'first_step': self.start_epoch * self.per_epoch + self.start_batch}
        self.stop_requested, self.handlers, self.visualdl = False, {}, None
        self.stop_agreed = False  # all workers saw a Ctrl-C request (the same on every worker)

    # ---- life: signal handlers and the VisualDL log, for the duration of the training -------
    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.handlers[signum] = signal.signal(signum, self.on_signal)
            except ValueError:  # not the main thread: signals keep their default behaviour
                pass
        if self.cfg.get('visualdl') and common.rank_and_world()[0] == 0:
            self.visualdl = open_visualdl(self.cfg)
        return self

    def on_signal(self, signum, frame):
        if self.stop_requested and signum == signal.SIGINT:
            # a second Ctrl-C aborts at once (the launcher's SIGTERMs do not)
            raise KeyboardInterrupt
        if not self.stop_requested:
            when = ('this step' if self.gather_every == 1
                    else 'the steps until the workers next agree')
            print(f'\ninterrupt: finishing {when}, then saving a checkpoint '
                  f'(Ctrl-C again to abort)', flush=True)
        self.stop_requested = True

    def __exit__(self, kind, error, trace):
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)
        if self.visualdl is not None:
            self.visualdl.close()
        if kind is Interrupted:
            saved = f'stopped; saved {error}.pdparams/.pdopt. Continue with: '
            if common.in_notebook():  # one line, and the command for a notebook
                raise errors.Stopped(saved + f"resume.main(['--ckpt', '{error}'])") from None
            print(saved + f'python resume.py --ckpt {error}', file=sys.stderr, flush=True)
            raise SystemExit(130)
        worker_died = (isinstance(error, (RuntimeError, OSError))
                       and not isinstance(error, common.UserError))
        if self.world_size > 1 and worker_died:
            common.fail(f'a data-parallel worker stopped, so this one cannot go on '
                        f'({type(error).__name__}: {str(error).strip().splitlines()[-1][:200]}); '
                        f'the first error is in the launcher\'s log folder (log/workerlog.N); '
                        f'checkpoints saved before are intact')
        return False

    # ---- the loop's calls, in the order the loop makes them ----------------------------------
    def begin_epoch(self, epoch):
        """The batch this epoch starts at: 0, or where a resumed run stopped (with its partial
        sums)."""
        resumed = epoch == self.start_epoch and self.partial
        self.epoch = epoch
        self.sums = (dict(self.partial) if resumed
                     else {'loss': 0.0, 'correct': 0, 'seen': 0, 'seconds': 0.0})
        self.first = self.start_batch if epoch == self.start_epoch else 0
        # this worker's batches not yet summed; the last summed
        self.pending, self.gathered = [], []
        self.epoch_start = time.perf_counter()
        return self.first

    def record_batch(self, batch_id, loss, correct, count):
        """Keep the batch's loss and accuracy (for the progress line, metrics.json, the plots). With
        workers (七), every worker's figures are summed every log_every batches and at the epoch's
        end: one all_reduce for all those batches, and the Ctrl-C flag with them."""
        self.batch_id = batch_id
        self.pending.append((float(loss), correct, count))
        self.gathered = []
        # on the batches the loop prints (batch_id % log_every == 0) and on the epoch's last one
        due = batch_id % self.gather_every == 0 or batch_id + 1 == self.per_epoch
        if not due:
            return
        figures = [x for row in self.pending for x in row]  # (loss, correct, count) per batch
        summed = all_reduce_sum(figures + [self.stop_requested])
        # every worker decides on the same sum; a Ctrl-C that came during it counts next time
        self.stop_agreed = summed.pop() > 0
        self.gathered = [summed[i:i + 3] for i in range(0, len(summed), 3)]
        self.first_gathered = batch_id + 1 - len(self.pending)
        self.pending = []
        for i, (loss_sum, right, seen) in enumerate(self.gathered):
            # each worker's loss is weighted by its share of the batch
            value = loss_sum / self.world_size
            self.record['batch_losses'].append(value)
            self.sums['loss'] += value * seen
            self.sums['correct'] += int(right)
            self.sums['seen'] += int(seen)
            if self.visualdl is not None and math.isfinite(value):
                step = self.epoch * self.per_epoch + self.first_gathered + i
                self.visualdl.add_scalar('train/loss', value, step)
                self.visualdl.add_scalar('train/acc', right / seen, step)

    def stop_if_diverged(self):
        """A NaN or infinite loss: stop with one sentence; the checkpoints saved before are intact.
        (Every worker sees the same sums, so all of them stop here.)"""
        for i, (loss_sum, _, _) in enumerate(self.gathered):
            if not math.isfinite(loss_sum):
                common.fail(f'the loss became {loss_sum / self.world_size} at epoch {self.epoch}, '
                            f'batch {self.first_gathered + i}: training diverged. Use a smaller '
                            f'learning rate (now --lr {self.cfg["lr"]}); the checkpoints saved '
                            f'before this batch in {self.cfg["ckpt_dir"]} are intact')

    def save_and_stop_if_interrupted(self):
        """After Ctrl-C: save NAME_interrupted (weights, optimizer, where to continue) and stop. On
        the epoch's last batch the epoch is finished first, and its own checkpoint is the one."""
        if self.stop_agreed and self.gathered and self.batch_id + 1 < self.per_epoch:
            self.sums['seconds'] += time.perf_counter() - self.epoch_start
            prefix = os.path.join(self.cfg['ckpt_dir'], f'{self.cfg["name"]}_interrupted')
            position = self.position(self.epoch, self.epoch, self.batch_id + 1, self.sums)
            checkpoints.save(prefix, self.model, self.optimizer, position)
            raise Interrupted(prefix)

    def print_progress(self):
        """The tutorial's progress line (all workers' figures), with the time spent in this epoch
        and an estimate of what remains of it."""
        if not self.gathered:  # workers: the figures are summed every log_every batches
            return
        loss_sum, right, seen = self.gathered[-1]
        elapsed = time.perf_counter() - self.epoch_start
        eta = elapsed / (self.batch_id + 1 - self.first) * (self.per_epoch - self.batch_id - 1)
        print(f'epoch: {self.epoch}, batch: {self.batch_id}, '
              f'loss is: {loss_sum / self.world_size:.8f}, '
              f'acc is {right / seen:.2f} ({elapsed:.0f}s, epoch ETA {eta:.0f}s)', flush=True)

    def end_epoch(self, valid):
        """The epoch's summary line and row; returns the position to save with its checkpoint."""
        seconds = self.sums['seconds'] + time.perf_counter() - self.epoch_start
        row = {'epoch': self.epoch, 'train_loss': self.sums['loss'] / self.sums['seen'],
               'train_acc': self.sums['correct'] / self.sums['seen'], 'valid_loss': valid['loss'],
               'valid_acc': valid['acc'], 'samples_per_s': self.sums['seen'] / max(seconds, 1e-9),
               'seconds': seconds}
        self.record['epochs'].append(row)
        valid_text = (f'{valid["loss"]:.4f} / {valid["acc"]:.4f}' if valid['acc'] is not None
                      else 'n/a')
        print(f'epoch {self.epoch}: train loss {row["train_loss"]:.4f} acc {row["train_acc"]:.4f}'
              f' | valid loss/acc {valid_text}'
              f' | {row["samples_per_s"]:.0f} samples/s, {seconds:.1f} s', flush=True)
        if self.visualdl is not None:
            self.log_epoch_to_visualdl(row)
        return self.position(self.epoch, self.epoch + 1, 0, None)

    def log_epoch_to_visualdl(self, row):
        """The epoch's figures, a histogram of every weight, and the epoch's first training
        images."""
        for key in ('train_loss', 'train_acc', 'valid_loss', 'valid_acc'):
            if row[key] is not None:
                self.visualdl.add_scalar(f'epoch/{key}', row[key], self.epoch)
        for name, parameter in self.model.named_parameters():
            self.visualdl.add_histogram(f'weights/{name}', parameter.numpy(), self.epoch)
        if self.train_set is not None:
            images, _ = first_samples(self.train_set, self.cfg['seed'], self.epoch)
            grid = plots.grid_image(images, rows=4, cols=8)
            self.visualdl.add_image('train/first_images', grid, self.epoch, dataformats='HW')

    def stop_if_interrupted(self):
        """After the epoch's checkpoint: a Ctrl-C that came during its last batch or its validation
        stops here, and that checkpoint is the one to resume from (after the last epoch: no stop,
        the run is done and goes on to its final evaluation)."""
        if self.epoch + 1 < self.cfg['epochs'] and all_reduce_sum([self.stop_requested])[0]:
            prefix = os.path.join(self.cfg['ckpt_dir'], f'{self.cfg["name"]}_epoch{self.epoch}')
            raise Interrupted(prefix)

    def position(self, epoch, next_epoch, next_batch, partial):
        """What a checkpoint records besides the weights: the run, and where to continue."""
        return {'script': self.cfg['script'], 'model': self.cfg['name'],
                'run_id': self.cfg['run_id'],
                'epoch': epoch, 'next_epoch': next_epoch, 'next_batch': next_batch,
                'global_step': next_epoch * self.per_epoch + next_batch, 'partial': partial,
                'config': self.cfg, 'paddle_version': paddle.__version__}


def open_visualdl(cfg):
    """A VisualDL writer appending to the run's own log file, so a resumed run continues its
    curves."""
    try:
        from visualdl import LogWriter
    except ImportError:
        common.fail('--visualdl needs the VisualDL package: pip install visualdl==2.5.3 '
                    '(or drop --visualdl)')
    name = f'vdlrecords.{cfg["name"]}-{cfg["run_id"]}.log'
    # a killed run loses <= 10 s
    return LogWriter(logdir=cfg['visualdl'], file_name=name, flush_secs=10)


def finish(model, result, cfg, record, device, wall_start, title, extra=None):
    """After training: print the eval split's result, save the final model (<out>/model.pdparams),
    metrics.json (every option, every batch loss, each epoch, the eval result) and the plots
    loss.png and acc.png. Data-parallel: rank 0 writes."""
    if result['acc'] is not None:
        mae = f', mean absolute error {result["mae"]:.4f}' if 'mae' in result else ''
        print(f'eval: loss {result["loss"]:.4f}, accuracy {result["acc"]:.4f}{mae}')
    checkpoints.save(os.path.join(cfg['out'], 'model'), model, None,
                     {'script': cfg['script'], 'config': cfg})
    metrics = dict(extra or {}, config=cfg, eval=result, wall_s=time.perf_counter() - wall_start,
                   paddle_version=paddle.__version__, device=device, run_id=cfg.get('run_id'),
                   **record)
    if common.rank_and_world()[0] == 0:
        write_json(os.path.join(cfg['out'], 'metrics.json'), metrics)
        plots.training_plots(metrics, cfg['out'], title)
        started = time.time() - metrics['wall_s'] - 1  # this run's pictures, not older ones
        pictures = sorted(name for name in os.listdir(cfg['out']) if name.endswith('.png')
                          and os.path.getmtime(os.path.join(cfg['out'], name)) >= started)
        print(f'wrote {cfg["out"]}/: metrics.json, model.pdparams, {", ".join(pictures)}')
    return metrics


# ---- pictures a learner looks at (三, 八); plots.py draws them ---------------------------------

def first_samples(dataset, seed, epoch, count=32):
    """The first `count` training images of an epoch's order, as the model receives them (after
    normalisation and, with --shift, that epoch's move), and their labels."""
    if hasattr(dataset, 'set_epoch'):
        dataset.set_epoch(epoch)
    order = common.epoch_order(len(dataset), seed, epoch)[:count]
    images, labels = zip(*(dataset[int(i)] for i in order))
    return np.stack(images), np.array(labels)


def save_samples(dataset, cfg):
    """三: samples.png, the first training images of epoch 0 with their labels. Rank 0 draws."""
    if common.rank_and_world()[0] != 0:
        return None
    images, labels = first_samples(dataset, cfg['seed'], 0)
    return plots.samples_grid(os.path.join(cfg['out'], 'samples.png'), images, labels,
                              'the first training images of epoch 0, as the model receives them')


@paddle.no_grad()
def save_mistakes_and_confusion(model, loader, loss_kind, out):
    """八: every eval image's prediction; mistakes.png (the most confident mistakes first) and
    confusion.png (true digit against predicted, counts). For a regression model (mse) the rounded
    output plays the class. Returns the accuracy of each digit 0-9. Rank 0 draws."""
    model.eval()
    images, labels, outputs = [], [], []
    for batch_images, batch_labels in loader:
        outputs.append(model(batch_images).numpy())
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    model.train()
    images, labels, output = np.concatenate(images), np.concatenate(labels), np.concatenate(outputs)
    if loss_kind == 'ce':
        probability = np.exp(output - output.max(axis=1, keepdims=True))
        probability /= probability.sum(axis=1, keepdims=True)  # softmax
        predicted, number = probability.argmax(axis=1), None
    else:
        number = output[:, 0]
        predicted, probability = np.clip(np.round(number), 0, 9).astype(np.int64), None
    matrix = plots.confusion_matrix(labels, predicted)
    if common.rank_and_world()[0] == 0:
        plots.mistakes_grid(os.path.join(out, 'mistakes.png'), images, labels, predicted,
                            probability, output=number)
        plots.confusion_figure(os.path.join(out, 'confusion.png'), matrix)
    return plots.per_class_accuracy(matrix)
