"""The bookkeeping around a training loop, so that the loop itself stays in view in each script
(mnist_cnn.py's train() makes the Tracker's calls in order). A Tracker holds the checkpoint folder,
keeps every batch's loss and each epoch's row (metrics.json, the curves), prints the progress and
stops safely: a NaN or infinite loss with one sentence; Ctrl-C (or the launcher's SIGTERM) after
the current step, saving NAME_interrupted. With data-parallel workers (七) parallel.Tracker, a
subclass, sums the workers' figures (a notebook, one process, never imports it); --visualdl mixes
in visualdl_log.Logging.
"""
import contextlib
import math
import os
import signal
import sys
import time

import numpy as np
import paddle

import checkpoints
import common
import plots
from safe_files import write_json


class Interrupted(Exception):
    """Ctrl-C was honoured: a checkpoint to resume from was saved (its prefix is the message)."""


def tracker(cfg, model, optimizer, start=None, train_set=None):
    """The run's Tracker: one loop in train() for one process and for workers (七), with VisualDL's
    logging (visualdl_log.Logging) mixed in for --visualdl."""
    tracker_class = Tracker
    if common.rank_and_world()[1] > 1:  # parallel.Tracker: the workers' sums and one stop step
        import parallel
        tracker_class = parallel.Tracker
    if cfg.get('visualdl') and common.rank_and_world()[0] == 0:
        mixin = common.optional('visualdl_log', '--visualdl').Logging
        tracker_class = type('VisualDLTracker', (mixin, tracker_class), {})
    return tracker_class(cfg, model, optimizer, start, train_set)


class Tracker:
    stops_after = 'this step'  # after Ctrl-C (parallel.Tracker: where the workers next agree)

    def __init__(self, cfg, model, optimizer, start=None, train_set=None):
        start = start or {}  # a checkpoint's json: where a resumed run continues
        self.cfg, self.model, self.optimizer, self.train_set = cfg, model, optimizer, train_set
        self.per_epoch, self.new_run = cfg['steps_per_epoch'], not start
        self.start_epoch, self.start_batch = start.get('next_epoch', 0), start.get('next_batch', 0)
        self.partial = start.get('partial')
        self.rank, self.world_size = common.rank_and_world()
        self.layout = common.worker_layout()  # 七: in each checkpoint, for resume_command
        # every worker count that trained these weights (resume.py --compare: bit for bit or not)
        earlier = start.get('trained_with', [start.get('workers', self.world_size)])
        self.trained_with = sorted({*earlier, self.world_size})
        self.record = {'batch_losses': [], 'epochs': [], 'steps_per_epoch': self.per_epoch,
                       'workers': self.world_size, 'started': time.perf_counter(),
                       'first_step': self.start_epoch * self.per_epoch + self.start_batch}
        self.stop_requested = self.stop_agreed = False  # agreed: by all workers (parallel.py)
        self.terminated = False  # by SIGTERM (the launcher's, a kill's), not Ctrl-C
        self.handlers = {}

    def __enter__(self):  # what can fail first, then what must be undone (the lock, the handlers)
        refuse_used(self.model, self.optimizer)  # (a notebook's cells run again out of order)
        self.folder = checkpoints.hold_folder(self.cfg)
        self.folder.__enter__()
        for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C: on_signal, below the class
            with contextlib.suppress(ValueError):  # not the main thread: the default behaviour
                self.handlers[signum] = signal.signal(signum, lambda n, _: on_signal(self, n))
        return self

    def __exit__(self, kind, error, trace):
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)
        self.folder.__exit__(None, None, None)
        # the curves, under the training's progress lines (none where no batch was trained: a
        # run's last checkpoint, evaluated by resume.py)
        if kind is None and self.rank == 0 and self.record['batch_losses']:
            plots.training_plots(self.record, self.cfg['out'], self.cfg['script'])
        if kind is Interrupted:
            stopped(str(error), self.layout)
        return False

    # ---- the loop's calls, in the order the loop makes them ----------------------------------
    def begin_epoch(self, epoch):  # the first batch: 0, or where a resumed run stopped
        resumed = epoch == self.start_epoch and self.partial
        self.epoch, self.gathered = epoch, []
        self.sums = (dict(self.partial) if resumed
                     else {'loss': 0.0, 'correct': 0, 'seen': 0, 'seconds': 0.0})
        self.first = self.start_batch if epoch == self.start_epoch else 0
        self.epoch_start = time.perf_counter()
        return self.first

    def prints(self, batch_id):  # the tutorial's `if batch_id % 200 == 0: print(...)` (八: 100)
        return batch_id % self.cfg['log_every'] == 0

    def record_batch(self, batch_id, loss, correct, count):  # keep the loss and the accuracy
        self.batch_id, self.model.trained = batch_id, True
        self.gathered = self.gather(batch_id, [float(loss), correct, count])
        self.first_gathered = batch_id + 1 - len(self.gathered)  # the batch of gathered[0]
        for value, right, seen in self.gathered:
            self.record['batch_losses'].append(value)
            self.sums['loss'] += value * seen
            self.sums['correct'] += int(right)
            self.sums['seen'] += int(seen)

    def gather(self, batch_id, figures):  # [(loss, correct, count)] of the batches to record
        self.stop_agreed = self.stop_requested  # parallel.Tracker: the workers' sums, and agreement
        return [figures]

    def stop_if_diverged(self):  # NaN or infinity (workers: the same sums, so all stop here)
        for i, (loss, _, _) in enumerate(self.gathered):
            if not math.isfinite(loss):
                common.fail(f'the loss became {loss} at epoch {self.epoch}, '
                            f'batch {self.first_gathered + i}: training diverged. Use a smaller '
                            f'learning rate (now --lr {self.cfg["lr"]:g}); the checkpoints saved '
                            f'before this batch in {self.cfg["ckpt_dir"]} are intact')

    def save_and_stop_if_interrupted(self):
        """After Ctrl-C: save NAME_interrupted and stop (on the epoch's last batch the epoch is
        finished first, and its own checkpoint is the one)."""
        if self.stop_agreed and self.gathered and self.batch_id + 1 < self.per_epoch:
            self.sums['seconds'] += time.perf_counter() - self.epoch_start
            prefix = os.path.join(self.cfg['ckpt_dir'], f'{self.cfg["name"]}_interrupted')
            position = self.position(self.epoch, self.batch_id + 1, self.sums)
            checkpoints.save(prefix, self.model, self.optimizer, position)
            raise Interrupted(prefix)

    def print_progress(self):  # the batch's figures (workers: summed), time so far and to go
        if self.rank != 0 or not self.prints(self.batch_id):
            return
        loss, right, seen = self.gathered[-1]
        elapsed = time.perf_counter() - self.epoch_start
        eta = elapsed / (self.batch_id + 1 - self.first) * (self.per_epoch - self.batch_id - 1)
        print(f'epoch: {self.epoch}, batch: {self.batch_id}, '
              f'loss is: {loss:.8f}, '
              f'acc is {right / seen:.2f} ({elapsed:.0f}s, epoch ETA {eta:.0f}s)', flush=True)

    def end_epoch(self, valid):  # the epoch's line and row; returns its checkpoint's position
        seconds = self.sums['seconds'] + time.perf_counter() - self.epoch_start
        row = {'epoch': self.epoch, 'train_loss': self.sums['loss'] / self.sums['seen'],
               'train_acc': self.sums['correct'] / self.sums['seen'], 'valid_loss': valid['loss'],
               'valid_acc': valid['acc'], 'samples_per_s': self.sums['seen'] / max(seconds, 1e-9),
               'seconds': seconds}
        self.record['epochs'].append(row)
        valid_text = (f'{valid["loss"]:.4f} / {valid["acc"]:.4f}' if valid['acc'] is not None
                      else 'n/a')
        if self.rank == 0:
            print(f'epoch {self.epoch}: train loss {row["train_loss"]:.4f} acc '
                  f'{row["train_acc"]:.4f} | valid loss/acc {valid_text} | '
                  f'{row["samples_per_s"]:.0f} samples/s, {seconds:.1f} s', flush=True)
        return self.position(self.epoch + 1, 0, None)

    def stop_if_interrupted(self):  # Ctrl-C in an epoch's last batch or validation: stop here;
        # after the last epoch a Ctrl-C lets the run finish, the launcher's SIGTERM (it kills 30 s
        # later) does not: under the launcher every worker takes this branch alike (agree: all)
        if self.epoch + 1 < self.cfg['epochs'] or self.world_size > 1 or self.terminated:
            if self.agree(self.stop_requested):
                raise Interrupted(os.path.join(self.cfg['ckpt_dir'],
                                               f'{self.cfg["name"]}_epoch{self.epoch}'))
        elif self.stop_requested and self.rank == 0:  # the last: one evaluation from its results
            print('interrupt: that was the last epoch, so the run finishes: its evaluation and '
                  f'results ({key()} again to abort)', flush=True)

    def agree(self, stop_requested):  # one process decides alone (parallel.Tracker: all workers)
        return stop_requested

    def position(self, next_epoch, next_batch, partial):  # what a checkpoint adds to the weights
        return {'script': self.cfg['script'], 'model': self.cfg['name'],
                'run_id': self.cfg['run_id'], 'epoch': self.epoch, 'next_epoch': next_epoch,
                'next_batch': next_batch, 'global_step': next_epoch * self.per_epoch + next_batch,
                'partial': partial, 'config': self.cfg, **self.layout,
                'trained_with': self.trained_with,
                'paddle_version': paddle.__version__}


def refuse_used(model, optimizer):  # either would write checkpoints that are not the run's
    again = ('; run the cells again from step 2, a new run (in resume.ipynb: from step 3)'
             if common.in_notebook() else '; build a new model and its optimizer first')
    if getattr(model, 'trained', False):  # set by record_batch: a step was taken
        common.fail('this model was trained already (by an earlier run of this cell or of '
                    'train()): training it again would go on from those weights' + again)
    if {id(p) for p in getattr(optimizer, '_parameter_list', None) or ()} \
            - {id(p) for p in model.parameters()}:
        common.fail('the optimizer belongs to an earlier model (the model\'s cell ran again, '
                    'the optimizer\'s did not)' + again)


# ---- Ctrl-C: the handler Tracker.__enter__ installs; the Tracker's loop calls then stop ---------

def on_signal(run, signum):  # run: the Tracker. Ctrl-C or SIGTERM: stop after this step
    if run.stop_requested and signum == signal.SIGINT:  # a second Ctrl-C aborts at once (the
        raise KeyboardInterrupt(aborted(run))  # launcher's SIGTERMs not): errors.py prints it
    if not run.stop_requested:
        print(f'\ninterrupt: finishing {run.stops_after}, then saving a checkpoint '
              f'({key()} again to abort)', flush=True)
    run.stop_requested = True
    run.terminated = run.terminated or signum == signal.SIGTERM


def aborted(run):  # a second Ctrl-C's line: where this run can continue, if anywhere
    cfg, record = run.cfg, run.record
    now = record['first_step'] + len(record['batch_losses'])  # steps trained
    mine = [prefix for step, prefix, meta in checkpoints.list_checkpoints(cfg['ckpt_dir'])
            if meta.get('run_id') == cfg['run_id'] and step <= now]  # not other models'
    return f'stopped by a second interrupt ({key()}), without saving; ' + (
        f'this run\'s newest checkpoint is whole. Continue with: '
        f'{common.resume_command(mine[-1], run.layout)}' if mine
        else 'the checkpoint it resumed from is whole' if not run.new_run
        else 'this run saved no checkpoint yet: start it again')


def key():  # what interrupts: Ctrl-C in a terminal, in a notebook the kernel's Interrupt button
    return 'Interrupt' if common.in_notebook() else 'Ctrl-C'


def stopped(prefix, layout=None):  # after Ctrl-C: how to continue, in one line
    saved = stopped_line(prefix, layout)
    if common.in_notebook():
        raise common.Stopped(saved) from None
    print(saved, file=sys.stderr, flush=True)
    raise SystemExit(130)


def stopped_line(prefix, layout=None):  # (under the launcher rank 0 saves for every worker)
    saved = 'saved' if common.rank_and_world()[0] == 0 else 'rank 0 saved'
    return (f'stopped; {saved} {prefix}.pdparams/.pdopt. Continue with: '
            f'{common.resume_command(prefix, layout)}')


def print_eval(result, cfg):  # 八: the eval split's figures, printed before their pictures
    if result['acc'] is not None:
        mae = f', mean absolute error {result["mae"]:.4f}' if 'mae' in result else ''
        print(f'eval: loss {result["loss"]:.4f}, accuracy {result["acc"]:.4f}{mae}')
        if result['acc'] < 0.2:  # ten digits: 0.1 is what guessing gets
            more = ' or on more images (--epochs, --train-limit)' if cfg.get('train_limit') else \
                ' (--epochs)'
            print(f'note: that is near chance: the network has not learned yet; train '
                  f'longer{more}, or try another --lr')


def finish(model, result, cfg, record, device, extra=None):
    """After training: the final model (<out>/model.pdparams) and metrics.json (every option,
    every batch loss, each epoch, the eval result)."""
    checkpoints.save(os.path.join(cfg['out'], 'model'), model, None,
                     {'script': cfg['script'], 'config': cfg})
    record = dict(record)
    wall_s = time.perf_counter() - record.pop('started')
    metrics = dict(extra or {}, config=cfg, eval=result, wall_s=wall_s, device=device,
                   paddle_version=paddle.__version__, run_id=cfg.get('run_id'), **record)
    if common.rank_and_world()[0] == 0:
        write_json(os.path.join(cfg['out'], 'metrics.json'), metrics)
        pictures = plots.take_written(cfg['out'])  # this run's, in the order they were drawn
        print(f'wrote {cfg["out"]}/: metrics.json, model.pdparams, model.json, '
              f'{", ".join(pictures)}')
    return metrics


# ---- what a learner looks at (三, 八); plots.py draws it ----------------------------------------

def first_samples(dataset, seed, epoch, count=32):
    """The first training images of an epoch's order as the model receives them (with --shift, moved
    as in that epoch), and their labels."""
    if hasattr(dataset, 'set_epoch'):
        dataset.set_epoch(epoch)
    order = common.epoch_order(len(dataset), seed, epoch)[:count]
    images, labels = zip(*(dataset[int(i)] for i in order))
    return np.stack(images), np.array(labels)


def show_data(train_loader, cfg):  # 三: one batch's shapes, and samples.png
    images, labels = next(iter(train_loader))
    part = f' (this worker\'s part of {cfg["batch_size"]})' * (common.rank_and_world()[1] > 1)
    print(f'one batch{part}: images {list(images.shape)} {images.dtype}, labels '
          f'{list(labels.shape)} {labels.dtype}; {len(train_loader)} batches per epoch')
    if common.rank_and_world()[0] == 0:
        images, labels = first_samples(train_loader.dataset, cfg['seed'], 0)
        plots.samples_grid(os.path.join(cfg['out'], 'samples.png'), images, labels,
                           'the first training images of epoch 0, as the model receives them')


@paddle.no_grad()
def save_mistakes_and_confusion(model, loader, loss_kind, out):
    """八: mistakes.png and confusion.png from every eval image's prediction (a regression model's
    rounded output plays the class); returns the accuracy of each digit 0-9."""
    model.eval()
    batches = [(model(images).numpy(), images.numpy(), labels.numpy()) for images, labels in loader]
    model.train()
    output, images, labels = (np.concatenate(parts) for parts in zip(*batches))
    if loss_kind == 'ce':
        probability, number = common.softmax(output), None
        predicted = probability.argmax(axis=1)
    else:
        probability, number = None, output[:, 0]
        predicted = np.clip(np.round(number), 0, 9).astype(np.int64)
    matrix = plots.confusion_matrix(labels, predicted)
    if common.rank_and_world()[0] == 0:
        plots.mistakes_grid(os.path.join(out, 'mistakes.png'), images, labels, predicted,
                            probability, output=number)
        plots.confusion_figure(os.path.join(out, 'confusion.png'), matrix)
    return plots.per_class_accuracy(matrix)
