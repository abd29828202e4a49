"""Stage 九: the tutorial's train_again() with two faults added that break a resume anywhere.

Like train_again(), it loads the model and optimizer state of checkpoint/mnist_epoch0 into a new
model, optimizer and PolynomialDecay, then trains on. Fault 1: the schedule's own state is not
restored (Adam's moments are), so the rate starts again at 0.01. Fault 2 (unless --keep-order): each
epoch is reshuffled from the process's global random state, as the course's loaders of stages 三
to 八 do with random.shuffle, so the resumed epochs see other batches. It compares every batch loss
with the uninterrupted run (resume.py, which has neither fault, matches every batch). The course's
own resume had neither fault (README, "Stage 九"); its drift is most likely its GPU's.

    python tutorial_resume.py --ckpt checkpoint/mnist_epoch0 --compare runs/cnn/metrics.json
    python tutorial_resume.py ... --keep-order     # fault 1 only: the restarted learning rate
"""
import argparse

import startup
paddle = startup.import_paddle()  # first the project's Python and the CPU settings: see startup.py

import numpy as np

import common
import mnist_cnn
import restore
from checkpoints import check_folders


class GlobalShuffleSampler(common.EpochBatchSampler):
    """Fault 2, the order of the course's loaders of stages 三 to 八 (random.shuffle): a new
    shuffle from a process-wide generator every epoch, whatever the epoch number (seeded once per
    run, with another seed than the run's, so that this figure repeats)."""

    def __iter__(self):
        order = self.generator.permutation(self.n)
        for b in range(self.start, self.batches):
            yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=common.HelpFormatter)
    parser.add_argument('--ckpt', required=True,
                        help='a checkpoint of mnist_cnn.py (checkpoint/mnist_epoch0)')
    parser.add_argument('--compare', required=True, metavar='METRICS_JSON',
                        help='the uninterrupted run\'s metrics.json')
    parser.add_argument('--keep-order', action='store_true',
                        help='keep the run\'s batch order: only restart the rate')
    parser.add_argument('--out', default=common.kept('runs/tutorial-resume'),
                        help='metrics.json and plots of this run')
    parser.add_argument('--ckpt-dir', default=common.kept('checkpoint/tutorial-resume'),
                        help='its own checkpoints (not the run\'s)')
    return parser


def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    reference = restore.load_reference(args.compare)
    prefix, meta = restore.find(args.ckpt)
    if meta.get('script') != 'mnist_cnn' or 'next_epoch' not in meta:
        common.fail(f'{prefix} is not a training checkpoint of mnist_cnn.py (checkpoint/mnist_epoch'
                    f'{{N}}); train_again() is about the course\'s CNN')
    cfg = dict(meta['config'], out=args.out, ckpt_dir=args.ckpt_dir, visualdl=None)
    if meta['next_epoch'] >= cfg['epochs']:
        ended = f'{prefix} is the end of its run: nothing is left to resume'
        if common.in_notebook():  # resume.ipynb's last cell after a 1-epoch run: nothing to show
            print(f'note: {ended}; for train_again(), train mnist_cnn.ipynb 2 epochs or more')
            return None
        common.fail(f'{ended}; pass an earlier checkpoint, such as checkpoint/mnist_epoch0 of a '
                    f'run of 2 epochs or more')
    if cfg['schedule'] != 'poly':
        common.fail(f'{prefix} was trained at a constant rate (--schedule constant): this '
                    f'script restarts a decaying schedule; pass a checkpoint of a poly run')
    device = common.select_device(cfg['device'])
    splits, _ = common.load_mnist_splits(cfg['data']['path'], cfg['train_limit'])
    train_loader, valid_loader, eval_loader = mnist_cnn.make_loaders(splits, cfg)
    if not args.keep_order:
        sampler = GlobalShuffleSampler(len(splits['train'][1]), cfg['batch_size'], cfg['seed'])
        sampler.generator = np.random.RandomState(1)  # the process's generator, seeded once
        train_set = mnist_cnn.TrainSet(*splits['train'], cfg.get('shift', 0), cfg['seed'])
        train_loader = paddle.io.DataLoader(train_set, batch_sampler=sampler)
    check_folders(cfg)
    model = mnist_cnn.build_model(cfg)
    optimizer, scheduler = mnist_cnn.build_optimizer(cfg, model.parameters())  # a new schedule
    restore.load_model(model, prefix + '.pdparams')
    state = restore.load_state(prefix + '.pdopt', 'optimizer file')
    state['LR_Scheduler'] = scheduler.state_dict()  # fault 1: Adam's moments, the rate anew
    try:
        optimizer.set_state_dict(state)
    except Exception as e:
        common.fail(f'{prefix}.pdopt does not fit this optimizer ({e}); it is from another model')
    print(f'resuming {prefix} with train_again()\'s loop and '
          + ('one fault: learning rate back at {:g}, the same batch order' if args.keep_order else
             'two faults: learning rate back at {:g}, batches reshuffled from a global generator')
          .format(scheduler.get_lr()))
    loaders = (train_loader, valid_loader, eval_loader)
    record = mnist_cnn.train(model, optimizer, scheduler, loaders, cfg, start=meta)
    way = 'rate restarted' + ('' if args.keep_order else ', reshuffled')
    metrics = mnist_cnn.finish(model, loaders, cfg, record, device,
                               {'resumed_from': prefix, 'tutorial_way': way})
    restore.compare_losses(metrics, reference)  # expected to differ: that is the point of a fault
    return metrics


if __name__ == '__main__':
    common.run_main(main)
