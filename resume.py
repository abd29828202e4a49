"""Continue training from a checkpoint, and prove it matches the uninterrupted run (stage 九).

    python resume.py --ckpt checkpoint/mnist_epoch0
    python resume.py --ckpt checkpoint/mnist_epoch0 --compare runs/cnn/metrics.json
    python resume.py --ckpt latest          # the newest complete checkpoint in ./checkpoint

The checkpoint holds everything: model, optimizer state with the LR schedule's position, the run's
settings (data, seed, hyper-parameters) and where it stopped (epoch, batch). The training script
that wrote it (mnist_cnn.py, ...) rebuilds its model and continues with its own loop. Each epoch's
order depends on (seed, epoch) alone, so the resumed run sees the same batches in the same order
and its losses equal the uninterrupted run's bit for bit. (The tutorial's own resume diverged after
the first batch: it restarted the LR schedule and reshuffled from global random state.)

What resume.py needs from a training script (mnist_cnn.py, mnist_mlp.py, mnist_linear.py), named in
the checkpoint as meta['script']; tests/test_stages.py checks every such script has them:

    make_loaders(splits, cfg) -> (train_loader, valid_loader, eval_loader)
        splits as common.load_mnist_splits returns them; the train loader's batch_sampler is a
        common.EpochBatchSampler (set_epoch(epoch, first_batch)).
    build_model(cfg) -> paddle.nn.Layer
    build_optimizer(cfg, parameters) -> (optimizer, scheduler or None)
    train(model, optimizer, scheduler, loaders, cfg, start=None) -> record
        start: the checkpoint's json (next_epoch, next_batch, partial); record: batch_losses,
        epochs, ...
    finish(model, loaders, cfg, record, device, wall_start, extra=None) -> metrics (dict)
"""
import argparse
import importlib
import os
import time

import startup
paddle = startup.import_paddle()  # first the project's Python and the CPU settings: see startup.py

import numpy as np

import checkpoints
import common
from safe_files import check_writable, load_json

# The functions a training script provides for resume.py (see the docstring above).
SCRIPT_INTERFACE = {'make_loaders': ('splits', 'cfg'), 'build_model': ('cfg',),
                    'build_optimizer': ('cfg', 'parameters'),
                    'train': ('model', 'optimizer', 'scheduler', 'loaders', 'cfg', 'start'),
                    'finish': ('model', 'loaders', 'cfg', 'record', 'device', 'wall_start',
                               'extra')}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--ckpt', required=True,
                        help='checkpoint prefix (checkpoint/mnist_epoch0), one of its files, '
                             'a folder (its newest complete checkpoint), or latest')
    parser.add_argument('--epochs', type=common.positive_int,
                        help='train up to this many epochs in all (default: the run\'s own); '
                             'the LR schedule stays the original run\'s')
    parser.add_argument('--compare', metavar='METRICS_JSON',
                        help='compare every batch loss with this uninterrupted run\'s '
                             'metrics.json; exit 1 on any difference')
    common.add_run_args(parser, out='runs/resume', ckpt_dir=None, new_run=False)
    parser.set_defaults(device=None)  # default: the device setting the run was started with
    return parser


def compare_losses(resumed, reference):
    """Per epoch: do the resumed run's batch losses equal the reference run's at the same steps?
    True when every one is identical (exact float equality: the promise is bit-identity)."""
    per_epoch, ref_first = resumed['steps_per_epoch'], reference.get('first_step', 0)
    if reference.get('steps_per_epoch') != per_epoch:
        print(f'compare: the reference run has {reference.get("steps_per_epoch")} batches per '
              f'epoch, this one {per_epoch}: not the same run settings')
        return False
    by_epoch, all_same = {}, True
    for i, loss in enumerate(resumed['batch_losses']):
        step = resumed['first_step'] + i
        by_epoch.setdefault(step // per_epoch, []).append((step - ref_first, loss))
    for epoch, pairs in sorted(by_epoch.items()):
        if any(not 0 <= i < len(reference['batch_losses']) for i, _ in pairs):
            print(f'epoch {epoch}: the reference run has no losses for these batches')
            all_same = False
            continue
        ours = np.array([loss for _, loss in pairs])
        ref = np.array([reference['batch_losses'][i] for i, _ in pairs])
        same = int((ours == ref).sum())
        print(f'epoch {epoch}: {same}/{len(pairs)} batch losses identical, largest |difference| '
              f'{np.abs(ours - ref).max():.3g}' + ('' if same == len(pairs) else '  <-- DIFFERENT'))
        all_same = all_same and same == len(pairs)
    print('resumed losses are bit-identical to the uninterrupted run' if all_same
          else 'resumed losses DIFFER from the reference run')
    if not all_same and reference.get('workers', 1) != resumed.get('workers', 1):
        print(f'note: the reference ran with {reference.get("workers", 1)} data-parallel '
              f'worker(s), this run with {resumed.get("workers", 1)}: the gradient sums round in '
              f'another order, so the losses follow within rounding, not bit for bit; resume '
              f'with the same number of workers for identical losses')
    return all_same


def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    wall_start = time.perf_counter()
    # read the reference first: a wrong --compare path should not cost a whole training run
    reference = (load_json(args.compare, 'metrics.json of the uninterrupted run') if args.compare
                 else None)
    prefix, meta = checkpoints.find(args.ckpt)
    if 'next_epoch' not in meta:
        common.fail(f'{prefix} is a final model, not a training checkpoint; '
                    f'pass a checkpoint/mnist_epoch{{N}} (or its folder) to resume')
    cfg = dict(meta['config'], out=args.out,
               ckpt_dir=args.ckpt_dir or os.path.dirname(prefix) or '.',
               log_every=args.log_every, visualdl=args.visualdl or meta['config'].get('visualdl'))
    # schedule_steps stays: the LR schedule is the original run's
    cfg['epochs'] = args.epochs or cfg['epochs']
    if meta['next_epoch'] >= cfg['epochs']:
        common.fail(f'{prefix} is already at the end of the run ({cfg["epochs"]} epochs); '
                    f'pass --epochs N with N > {meta["next_epoch"]} to train further')
    script = importlib.import_module(meta['script'])  # the script whose model and loop these are
    device = common.select_device(args.device or cfg['device'])

    # the same data: the run's own source unless --data-dir points elsewhere, checked by fingerprint
    splits, source = common.load_mnist_splits(args.data_dir or cfg['data']['path'],
                                              cfg['train_limit'])
    if common.fingerprint(*splits['train']) != cfg['train_fingerprint']:
        common.fail(f'the training data at {source["path"]} differs from the data {prefix} was '
                    f'trained on ({cfg["data"]["path"]}); pass --data-dir with the original data')
    loaders = script.make_loaders(splits, cfg)
    check_writable(cfg['out'], cfg['ckpt_dir'])  # a bad path fails now, not after an epoch
    with checkpoints.lock_folder(cfg['ckpt_dir']), paddle.utils.unique_name.guard():
        checkpoints.move_aside_earlier_runs(cfg['ckpt_dir'], cfg)  # another run's, not this one's
        model = script.build_model(cfg)
        optimizer, scheduler = script.build_optimizer(cfg, model.parameters())
        checkpoints.load_model(model, prefix + '.pdparams')
        # includes the LR schedule's position
        checkpoints.load_optimizer(optimizer, prefix + '.pdopt')
        print(f'resuming {prefix} (run {meta["run_id"]}) at epoch {meta["next_epoch"]}, batch '
              f'{meta["next_batch"]}; training to epoch {cfg["epochs"] - 1}')
        record = script.train(model, optimizer, scheduler, loaders, cfg, start=meta)
        metrics = script.finish(model, loaders, cfg, record, device, wall_start,
                                {'resumed_from': prefix})
    if reference is not None and not compare_losses(metrics, reference):
        raise SystemExit(1)
    return metrics


if __name__ == '__main__':
    common.run_main(main)
