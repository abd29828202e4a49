"""Stage 九 the tutorial's way, to see why its "resumed training matches" claim fails in its own output.

The tutorial's train_again() loads the model and optimizer state from checkpoint/mnist_epoch0 but
builds a new PolynomialDecay, so the learning rate starts again at 0.01 instead of where epoch 0
left it; and its loader shuffles with the process's global random state, so the resumed epochs
see other batches. This script does the same with a checkpoint of mnist_cnn.py and compares every
batch loss with the uninterrupted run (resume.py, which restores both, matches every batch).

    python tutorial_resume.py --ckpt checkpoint/mnist_epoch0 --compare runs/cnn/metrics.json
    python tutorial_resume.py ... --keep-order     # only the restarted learning rate
"""  # noqa: E501 (the first line, printed whole by --help, is 101 columns)
import argparse

import startup
paddle = startup.import_paddle()  # first the project's Python and the CPU settings: see startup.py

import numpy as np

import common
import mnist_cnn
import restore
from safe_files import check_writable


class GlobalShuffleSampler(common.EpochBatchSampler):
    """The tutorial's order: a new shuffle from a process-wide generator every epoch, whatever the
    epoch number (seeded once per run, with another seed than the run's, so that this figure
    repeats)."""

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
                    f'{{N}}); the tutorial\'s resume is about its CNN')
    cfg = dict(meta['config'], out=args.out, ckpt_dir=args.ckpt_dir, visualdl=None)
    if meta['next_epoch'] >= cfg['epochs']:
        common.fail(f'{prefix} is the end of its run: nothing is left to resume; pass an earlier '
                    f'checkpoint, such as checkpoint/mnist_epoch0 of a run of 2 epochs or more')
    if cfg['schedule'] != 'poly':
        common.fail(f'{prefix} was trained at a constant rate (--schedule constant): the '
                    f'tutorial\'s resume restarts a decaying schedule; pass a checkpoint of a '
                    f'poly run')
    device = common.select_device(cfg['device'])
    splits, _ = common.load_mnist_splits(cfg['data']['path'], cfg['train_limit'])
    train_loader, valid_loader, eval_loader = mnist_cnn.make_loaders(splits, cfg)
    if not args.keep_order:
        sampler = GlobalShuffleSampler(len(splits['train'][1]), cfg['batch_size'], cfg['seed'])
        sampler.generator = np.random.RandomState(1)  # the process's generator, seeded once
        train_set = mnist_cnn.TrainSet(*splits['train'], cfg.get('shift', 0), cfg['seed'])
        train_loader = paddle.io.DataLoader(train_set, batch_sampler=sampler)
    check_writable(args.out, args.ckpt_dir)
    model = mnist_cnn.build_model(cfg)
    optimizer, scheduler = mnist_cnn.build_optimizer(cfg, model.parameters())  # a new schedule
    restore.load_model(model, prefix + '.pdparams')
    state = restore.load_state(prefix + '.pdopt', 'optimizer file')
    state['LR_Scheduler'] = scheduler.state_dict()  # as the tutorial: Adam's moments, the rate anew
    try:
        optimizer.set_state_dict(state)
    except Exception as e:
        common.fail(f'{prefix}.pdopt does not fit this optimizer ({e}); it is from another model')
    print(f'resuming {prefix} the tutorial\'s way: learning rate back at {scheduler.get_lr():g}, '
          + ('the same batch order' if args.keep_order
             else 'batches reshuffled from a global generator'))
    loaders = (train_loader, valid_loader, eval_loader)
    record = mnist_cnn.train(model, optimizer, scheduler, loaders, cfg, start=meta)
    way = 'rate restarted' + ('' if args.keep_order else ', reshuffled')
    metrics = mnist_cnn.finish(model, loaders, cfg, record, device,
                               {'resumed_from': prefix, 'tutorial_way': way})
    restore.compare_losses(metrics, reference)  # expected to differ: that is the point
    return metrics


if __name__ == '__main__':
    common.run_main(main)
