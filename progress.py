"""The bookkeeping around a training loop, so that the loop itself stays in view in each script.

    with progress.Tracker(cfg, model, optimizer, start) as tracker:
        ...  loss.backward(); optimizer.step(); ...
        loss_value, acc = tracker.step(epoch, batch_id, loss, correct, len(labels))

A Tracker keeps every batch's loss and each epoch's summary (metrics.json, the plots, VisualDL),
prints the progress line with an ETA, and stops safely: a NaN or infinite loss stops at once;
Ctrl-C (or the SIGTERM that paddle.distributed.launch sends its workers) finishes the current
step, saves NAME_interrupted and stops; a run resumed mid-epoch starts at the batch where it
stopped, with that epoch's partial sums. With data-parallel workers (七) every figure is the
mean over all workers, and all of them stop at the same step.
"""
import hashlib
import math
import os
import signal
import sys
import time

import checkpoints
import common

import numpy as np
import paddle


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
    def __init__(self, cfg, model, optimizer, start=None):
        start = start or {}
        self.cfg, self.model, self.optimizer = cfg, model, optimizer
        self.per_epoch = cfg['steps_per_epoch']
        self.start_epoch, self.start_batch = start.get('next_epoch', 0), start.get('next_batch', 0)
        self.partial = start.get('partial')
        self.world_size = common.rank_and_world()[1]
        self.record = {'batch_losses': [], 'epochs': [], 'steps_per_epoch': self.per_epoch, 'workers': self.world_size,
                       'first_step': self.start_epoch * self.per_epoch + self.start_batch}
        self.stop_requested, self.handlers, self.visualdl = False, {}, None

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
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once (the launcher's repeated SIGTERMs do not)
        if not self.stop_requested:
            print('\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort)', flush=True)
        self.stop_requested = True

    def __exit__(self, kind, error, trace):
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)
        if self.visualdl is not None:
            self.visualdl.close()
        if kind is Interrupted:
            print(f'stopped; saved {error}.pdparams/.pdopt. Continue with: python resume.py --ckpt {error}',
                  file=sys.stderr, flush=True)
            raise SystemExit(130)
        if self.world_size > 1 and isinstance(error, (RuntimeError, OSError)) and not isinstance(error, common.UserError):
            common.fail(f'a data-parallel worker stopped, so this one cannot go on ({type(error).__name__}: '
                        f'{str(error).strip().splitlines()[-1][:200]}); the first error is in the launcher\'s '
                        f'log folder (log/workerlog.N); checkpoints saved before are intact')
        return False

    # ---- the loop's one-line calls -----------------------------------------------------------
    def first_batch(self, epoch):
        """The batch epoch starts at (0, or where a resumed run stopped) and a fresh epoch summary.
        A stop asked for between epochs takes effect here, at the last epoch checkpoint."""
        if epoch > self.start_epoch and all_reduce_sum([self.stop_requested])[0]:
            raise Interrupted(os.path.join(self.cfg['ckpt_dir'], f'{self.cfg["name"]}_epoch{epoch - 1}'))
        resumed = epoch == self.start_epoch and self.partial
        self.sums = dict(self.partial) if resumed else {'loss': 0.0, 'correct': 0, 'seen': 0, 'seconds': 0.0}
        self.first = self.start_batch if epoch == self.start_epoch else 0
        self.epoch_start = time.perf_counter()
        return self.first

    def step(self, epoch, batch_id, loss, correct, count):
        """After optimizer.step(): (loss, accuracy) of the whole batch, all workers together. Keeps
        them for metrics.json; stops on a NaN/inf loss; on Ctrl-C saves a checkpoint and stops."""
        loss_sum, correct, count, stop = all_reduce_sum([float(loss), correct, count, self.stop_requested])
        value = loss_sum / self.world_size  # each worker's loss is weighted by its share (EpochBatchSampler)
        if not math.isfinite(value):
            common.fail(f'the loss became {value} at epoch {epoch}, batch {batch_id}: training diverged. Use a '
                        f'smaller learning rate (now --lr {self.cfg["lr"]}); the checkpoints saved before this '
                        f'batch in {self.cfg["ckpt_dir"]} are intact')
        self.record['batch_losses'].append(value)
        self.sums['loss'] += value * count
        self.sums['correct'] += int(correct)
        self.sums['seen'] += int(count)
        global_step = epoch * self.per_epoch + batch_id
        if self.visualdl is not None:
            self.visualdl.add_scalar('train/loss', value, global_step)
            self.visualdl.add_scalar('train/acc', correct / count, global_step)
        if stop and batch_id + 1 < self.per_epoch:  # on an epoch's last batch: finish the epoch first
            self.sums['seconds'] += time.perf_counter() - self.epoch_start
            prefix = os.path.join(self.cfg['ckpt_dir'], f'{self.cfg["name"]}_interrupted')
            checkpoints.save(prefix, self.model, self.optimizer, self.position(epoch, epoch, batch_id + 1, self.sums))
            raise Interrupted(prefix)
        self.stop_requested = self.stop_requested or bool(stop)
        self.batch_id = batch_id
        return value, correct / count

    def log(self, text):
        """The progress line, with the time spent in this epoch and an estimate of what remains."""
        elapsed = time.perf_counter() - self.epoch_start
        eta = elapsed / (self.batch_id + 1 - self.first) * (self.per_epoch - self.batch_id - 1)
        print(f'{text} ({elapsed:.0f}s, epoch ETA {eta:.0f}s)', flush=True)

    def end_epoch(self, epoch, valid):
        """The epoch's summary line and row; returns the position to save with its checkpoint."""
        seconds = self.sums['seconds'] + time.perf_counter() - self.epoch_start
        row = {'epoch': epoch, 'train_loss': self.sums['loss'] / self.sums['seen'],
               'train_acc': self.sums['correct'] / self.sums['seen'], 'valid_loss': valid['loss'],
               'valid_acc': valid['acc'], 'samples_per_s': self.sums['seen'] / max(seconds, 1e-9), 'seconds': seconds}
        self.record['epochs'].append(row)
        valid_text = f'{valid["loss"]:.4f} / {valid["acc"]:.4f}' if valid['acc'] is not None else 'n/a'
        print(f'epoch {epoch}: train loss {row["train_loss"]:.4f} acc {row["train_acc"]:.4f} | valid loss/acc '
              f'{valid_text} | {row["samples_per_s"]:.0f} samples/s, {seconds:.1f} s', flush=True)
        if self.visualdl is not None:
            for key in ('train_loss', 'train_acc', 'valid_loss', 'valid_acc'):
                if row[key] is not None:
                    self.visualdl.add_scalar(f'epoch/{key}', row[key], epoch)
        return self.position(epoch, epoch + 1, 0, None)

    def position(self, epoch, next_epoch, next_batch, partial):
        """What a checkpoint records besides the weights: the run, and where to continue."""
        return {'script': self.cfg['script'], 'model': self.cfg['name'], 'run_id': self.cfg['run_id'],
                'epoch': epoch, 'next_epoch': next_epoch, 'next_batch': next_batch,
                'global_step': next_epoch * self.per_epoch + next_batch, 'partial': partial,
                'config': self.cfg, 'paddle_version': paddle.__version__}


def open_visualdl(cfg):
    """A VisualDL writer appending to the run's own log file, so a resumed run continues its curves."""
    try:
        from visualdl import LogWriter
    except ImportError:
        common.fail('--visualdl needs the VisualDL package: pip install visualdl==2.5.3 (or drop --visualdl)')
    name = f'vdlrecords.{cfg["name"]}-{cfg["run_id"]}.log'
    return LogWriter(logdir=cfg['visualdl'], file_name=name, flush_secs=10)  # a killed run loses <= 10 s


def finish(model, result, cfg, record, device, wall_start, title, extra=None):
    """After training: print the eval split's result, save the final model (<out>/model.pdparams),
    metrics.json (every option, every batch loss, each epoch, the eval result) and the plots
    loss.png and acc.png. Data-parallel: rank 0 writes."""
    if result['acc'] is not None:
        mae = f', mean absolute error {result["mae"]:.4f}' if 'mae' in result else ''
        print(f'eval: loss {result["loss"]:.4f}, accuracy {result["acc"]:.4f}{mae}')
    checkpoints.save(os.path.join(cfg['out'], 'model'), model, None, {'script': cfg['script'], 'config': cfg})
    metrics = dict(extra or {}, config=cfg, eval=result, wall_s=time.perf_counter() - wall_start,
                   paddle_version=paddle.__version__, device=device, run_id=cfg.get('run_id'), **record)
    if common.rank_and_world()[0] == 0:
        checkpoints.write_json(os.path.join(cfg['out'], 'metrics.json'), metrics)
        plots = save_plots(metrics, cfg['out'], title)
        print(f'wrote {cfg["out"]}/metrics.json, {", ".join(plots)} and {cfg["out"]}/model.pdparams')
    return metrics


def new_config(args, name, script, source, splits, ignore=()):
    """Every option of a new run, its data, and the span of its LR schedule: a checkpoint holds all
    that resume.py needs to rebuild the run."""
    import uuid
    cfg = {k: v for k, v in vars(args).items() if k not in ('predict', 'model', 'overwrite') + tuple(ignore)}
    steps_per_epoch = math.ceil(source['sizes']['train'] / args.batch_size)
    cfg.update(name=name, script=script, run_id=uuid.uuid4().hex[:12], data=source, steps_per_epoch=steps_per_epoch,
               schedule_steps=args.epochs * steps_per_epoch, train_fingerprint=fingerprint(*splits['train']))
    return cfg


def save_plots(metrics, out, title):
    """loss.png (training loss of every batch) and acc.png (train/valid accuracy per epoch)."""
    steps = np.arange(len(metrics['batch_losses'])) + metrics.get('first_step', 0)
    paths = [common.plot_lines(os.path.join(out, 'loss.png'), {'train loss (per batch)': (steps, metrics['batch_losses'])},
                        f'{title}: training loss', 'step (batch)', 'loss')]
    rows = metrics['epochs']
    if rows:
        epochs = [r['epoch'] for r in rows]
        series = {'train': (epochs, [r['train_acc'] for r in rows])}
        if rows[0]['valid_acc'] is not None:
            series['valid'] = (epochs, [r['valid_acc'] for r in rows])
        paths.append(common.plot_lines(os.path.join(out, 'acc.png'), series, f'{title}: accuracy per epoch',
                                'epoch', 'accuracy', markers=True))
    return paths


def fingerprint(*arrays):
    """A short hash of the training data, so a resumed run can prove it trains on the same images."""
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]
