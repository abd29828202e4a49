"""七 What data-parallel workers (python -m paddle.distributed.launch --nproc_per_node N) add to a
one-process run; imported under the launcher, and for the launcher's resume command (a notebook
does not carry it). Each worker trains on its part of every batch; their figures and a Ctrl-C are
summed only on the batches that print and at each epoch's end, so every worker stops at the same
step.
"""
import contextlib
import os
import sys

import numpy as np
import paddle

import common
import progress


def all_reduce_sum(values):  # a few numbers summed over the workers
    total = paddle.to_tensor(np.asarray(values, dtype=np.float64))
    paddle.distributed.all_reduce(total)
    return total.numpy().tolist()


def to_terminal(line):
    """Once Ctrl-C reaches the launcher it stops showing this worker's output, so its terminal
    would never see the resume command (the worker's log does): the line goes to that terminal
    too, which the worker has as its standard input (the launcher starts it in a session of its
    own, without /dev/tty). No terminal (Windows, a pipe): nothing."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if sys.stdin.isatty():
            with open(os.ttyname(sys.stdin.fileno()), 'w') as terminal:
                terminal.write(f'\n{line}\n')


def resume_command(prefix, layout):  # the launch that saved the checkpoint resumes it exactly
    workers, nodes = layout['workers'], layout.get('nodes', 1)
    launch = (f'{launch_python()} -m paddle.distributed.launch '
              f'--nproc_per_node {workers // nodes} resume.py')
    where = f' on each of the {nodes} machines, with their --nnodes and --master' * (nodes > 1)
    if nodes == 1 and common.shell_word(prefix) == prefix:  # make's: .venv's Python (a plain
        # one may lack paddle, and -m cannot re-run itself with .venv's); in backticks: two commands
        make = f'make resume NPROC={workers} CKPT={prefix}'
        return f'`{launch} --ckpt {prefix}` (with make: `{make}`)'
    return f'{launch} --ckpt {common.shell_word(prefix)}{where}'


def launch_python():  # `-m` cannot re-run into .venv as a script does: .venv's Python by its path
    try:  # (one outside this folder, or on another drive: python, as typed)
        here = os.path.relpath(sys.executable)
    except ValueError:
        return 'python'
    if here.split(os.sep)[0] == os.pardir:
        return 'python'
    return common.shell_word(here if os.sep in here else os.path.join(os.curdir, here))


class WorkerBatchSampler(common.EpochBatchSampler):
    """Worker `rank` of `world_size` takes its near-equal part of every global batch."""
    def __init__(self, n, batch_size, seed, rank, world_size):
        super().__init__(n, batch_size, seed)
        self.rank, self.world_size = rank, world_size
        smallest = min(batch_size, n - (self.batches - 1) * batch_size)
        if smallest < world_size:
            common.fail(f'a batch of {smallest} image(s) cannot be shared by {world_size} workers; '
                        f'choose a --batch-size (or --train-limit) whose every batch has at least '
                        f'{world_size} images')

    def share_weight(self, b):  # this worker's share of global batch b over an equal one
        size = len(range(self.n)[b * self.batch_size:(b + 1) * self.batch_size])
        mine = len(np.array_split(np.arange(size), self.world_size)[self.rank])
        return mine * self.world_size / size

    def __iter__(self):
        for batch in super().__iter__():
            yield np.array_split(batch, self.world_size)[self.rank].tolist()


class Tracker(progress.Tracker):
    stops_after = 'the steps until the workers next agree'

    def begin_epoch(self, epoch):
        self.pending = []  # the figures of the batches since the last sum
        return super().begin_epoch(epoch)

    def gather(self, batch_id, figures):
        """The batches since the last sum, summed over all workers with the Ctrl-C flag, on the
        batches that print and the epoch's last: one all_reduce for all of them."""
        self.pending.append(figures)
        if not (self.prints(batch_id) or batch_id + 1 == self.per_epoch):
            return []
        summed = all_reduce_sum([x for row in self.pending for x in row] + [self.stop_requested])
        self.stop_agreed = summed.pop() > 0  # a Ctrl-C that came during the sum counts next time
        self.pending = []
        # each worker's loss is weighted by its share (share_weight): their sum / N is the mean
        return [(loss / self.world_size, right, seen)
                for loss, right, seen in zip(summed[0::3], summed[1::3], summed[2::3])]

    def agree(self, stop_requested):  # a Ctrl-C that reached any worker stops them all
        return all_reduce_sum([stop_requested])[0] > 0  # (one that comes during the sum: next time)

    def __exit__(self, kind, error, trace):
        if kind is progress.Interrupted and self.rank == 0:
            to_terminal(progress.stopped_line(str(error), self.layout))
        if kind not in (None, progress.Interrupted) and not issubclass(kind, common.UserError):
            print('note: with data-parallel workers, see each worker\'s own error in the '
                  'launcher\'s log folder (log/workerlog.N); checkpoints saved before are intact',
                  file=sys.stderr, flush=True)
        return super().__exit__(kind, error, trace)
