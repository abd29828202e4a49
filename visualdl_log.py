"""--visualdl DIR (八): the training's figures for VisualDL, another way to watch the curves.
Imported only with that flag, so a notebook (which carries the modules its script imports at the
top) does not carry this one.
"""
import math
import sys

import numpy as np

import plots
import progress
from errors import fail
from flags import shell_word


def log_writer():  # VisualDL's LogWriter class, or one sentence (check_folders asks first)
    try:
        from visualdl import LogWriter
    except ImportError:  # into the Python running this script (.venv's, after a re-run)
        fail(f'--visualdl needs the VisualDL package: {shell_word(sys.executable)} -m pip install '
             f'visualdl==2.5.3 (in a notebook: %pip install visualdl), or drop --visualdl')
    return LogWriter


class Log:
    def __init__(self, cfg):  # appends to the run's own log file: a resumed run continues it
        name = f'vdlrecords.{cfg["name"]}-{cfg["run_id"]}.log'
        # flushed every 10 s: a kill loses at most that
        self.writer = log_writer()(logdir=cfg['visualdl'], file_name=name, flush_secs=10)
        self.seed = cfg['seed']

    def batch(self, step, loss, acc):
        if math.isfinite(loss):
            self.writer.add_scalar('train/loss', loss, step)
            self.writer.add_scalar('train/acc', acc, step)

    def epoch(self, row, model, train_set):
        """The epoch's figures, a histogram of every weight, the epoch's first training images."""
        for key in ('train_loss', 'train_acc', 'valid_loss', 'valid_acc'):
            if row[key] is not None:
                self.writer.add_scalar(f'epoch/{key}', row[key], row['epoch'])
        for name, parameter in model.named_parameters():
            self.writer.add_histogram(f'weights/{name}', parameter.numpy(), row['epoch'])
        if train_set is not None:
            images, _ = progress.first_samples(train_set, self.seed, row['epoch'])
            self.writer.add_image('train/first_images', grid_image(images, rows=4, cols=8),
                                  row['epoch'], dataformats='HW')

    def close(self):
        self.writer.close()


class Logging:
    """Mixed into the run's progress.Tracker by progress.tracker (rank 0 only): each batch's figures
    and each epoch's, written as the Tracker records them."""

    def __enter__(self):  # the folder held first: a refused run opens no log
        run = super().__enter__()
        try:
            self.log = Log(self.cfg)
        except BaseException:
            super().__exit__(*sys.exc_info())
            raise
        return run

    def __exit__(self, *exc):  # the Tracker's first (it gives Ctrl-C back), then the writer closes
        try:
            return super().__exit__(*exc)
        finally:
            self.log.close()

    def record_batch(self, batch_id, *figures):
        super().record_batch(batch_id, *figures)
        step = self.epoch * self.per_epoch + self.first_gathered  # the global step of gathered[0]
        for i, (loss, right, seen) in enumerate(self.gathered):
            self.log.batch(step + i, loss, right / seen)

    def end_epoch(self, valid):
        position = super().end_epoch(valid)
        self.log.epoch(self.record['epochs'][-1], self.model, self.train_set)
        return position


def grid_image(images, rows, cols, gap=2):
    """Images in [-1,1] tiled into one uint8 array (VisualDL's add_image): -1 black, 1 white, grey
    between the tiles."""
    tiled = plots.tile(np.clip(plots.as_2d(images), -1, 1), rows, cols, gap, fill=0.0)  # 0 -> 128
    return np.round((tiled + 1) * 127.5).astype(np.uint8)
