"""Continue training from a checkpoint, and prove it matches the uninterrupted run (stage 九).

    python resume.py --ckpt checkpoint/mnist_epoch0
    python resume.py --ckpt checkpoint/mnist_epoch0 --compare runs/cnn/metrics.json
    python resume.py --ckpt latest          # the newest complete checkpoint in ./checkpoint
    python resume.py --ckpt checkpoint/mnist_epoch4   # a run's last: nothing to train, evaluated

The checkpoint holds everything: model, optimizer state with the LR schedule's position, the run's
settings (data, seed, hyper-parameters) and where it stopped (epoch, batch). The training script
that wrote it (mnist_cnn.py, ...) rebuilds its model and continues with its own loop. Each epoch's
order depends on (seed, epoch) alone, so the resumed run sees the same batches in the same order
and its losses equal the uninterrupted run's bit for bit. (The tutorial's own printout drifts after
the first batch, most likely from its GPU: README, "Stage 九"; tutorial_resume.py shows two faults
that break a resume anywhere.)

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
    finish(model, loaders, cfg, record, device, extra=None) -> metrics (dict)
"""
import argparse
import os

import startup
paddle = startup.import_paddle()  # first the project's Python and the CPU settings: see startup.py

import common
import restore
from checkpoints import check_folders

# The functions a training script provides for resume.py (see the docstring above).
SCRIPT_INTERFACE = {'make_loaders': ('splits', 'cfg'), 'build_model': ('cfg',),
                    'build_optimizer': ('cfg', 'parameters'),
                    'train': ('model', 'optimizer', 'scheduler', 'loaders', 'cfg', 'start'),
                    'finish': ('model', 'loaders', 'cfg', 'record', 'device', 'extra')}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=common.HelpFormatter)
    parser.add_argument('--ckpt', required=True,
                        help='checkpoint prefix (checkpoint/mnist_epoch0), one of its files, '
                             'a folder (its newest complete checkpoint), or latest')
    parser.add_argument('--epochs', type=common.positive_int,
                        help='train up to this many epochs in all (default: the run\'s own); '
                             'the LR schedule stays the original run\'s')
    parser.add_argument('--compare', metavar='METRICS_JSON',
                        help='compare every batch loss (nothing trained: the evaluation) with '
                             'this uninterrupted run\'s metrics.json; exit 1 on any difference '
                             '(with the same number of data-parallel workers)')
    common.add_run_args(parser, out='runs/resume', ckpt_dir=None, new_run=False)
    parser.set_defaults(device=None, log_every=None)  # default: the run's own settings
    return parser


def main(argv=None):
    # 1. flags: the checkpoint to resume, and the run's own settings from it
    args = common.parse_args(build_parser(), argv)
    prefix, meta = restore.find(args.ckpt)  # a missing one: its error names the newest one there
    # the reference now: a wrong --compare path should not cost a whole training run
    reference = restore.load_reference(args.compare) if args.compare else None
    if 'next_epoch' not in meta:
        common.fail(f'{prefix} is a final model, not a training checkpoint; '
                    f'pass a checkpoint/mnist_epoch{{N}} (or its folder) to resume')
    cfg = dict(meta['config'], out=args.out,
               ckpt_dir=args.ckpt_dir or os.path.dirname(prefix) or '.',
               log_every=args.log_every or meta['config']['log_every'],
               visualdl=args.visualdl or meta['config'].get('visualdl'))
    cfg['epochs'] = args.epochs or cfg['epochs']  # schedule_steps stays: the run's own LR schedule
    if reference is not None and not restore.same_settings(cfg, reference):
        reference = None  # said now (make resume adds runs/cnn's), not after the training
    if args.epochs and (args.epochs, 0) < (meta['next_epoch'], meta['next_batch']):
        common.fail(f'{prefix} has trained past --epochs {args.epochs} (it continues at epoch '
                    f'{meta["next_epoch"]}, batch {meta["next_batch"]}); pass N > '
                    f'{meta["next_epoch"]} to train further, or leave it out')
    script = common.optional(meta['script'], '--ckpt')  # the script whose model and loop these are
    device = common.select_device(args.device or cfg['device'])
    # 2. the same data: the run's own unless --data-dir points elsewhere, checked by fingerprint
    splits, source = common.load_mnist_splits(args.data_dir or cfg['data']['path'],
                                              cfg['train_limit'])
    if common.fingerprint(*splits['train']) != cfg['train_fingerprint']:
        common.fail(f'the training data at {source["path"]} differs from the data {prefix} was '
                    f'trained on ({cfg["data"]["path"]}); pass --data-dir with the original data')
    check_folders(cfg)  # a bad path, a folder in use: refused now, not later
    loaders = script.make_loaders(splits, cfg)
    # 3. the model and the optimizer as the checkpoint left them (with the LR schedule's position)
    model = script.build_model(cfg)
    optimizer, scheduler = script.build_optimizer(cfg, model.parameters())
    # = model.set_state_dict(paddle.load(prefix + '.pdparams')), the same for the optimizer, with
    # one sentence for a file that does not fit
    restore.load_model(model, prefix + '.pdparams')
    restore.load_optimizer(optimizer, prefix + '.pdopt')
    if meta['next_epoch'] >= cfg['epochs']:  # its run ended (a Ctrl-C in its evaluation?), or
        ended = (f'is the end of its {cfg["epochs"]}-epoch run'  # --epochs stops here
                 if cfg['epochs'] == meta['config']['epochs']
                 else f'has trained the {cfg["epochs"]} epochs of --epochs')
        print(f'{prefix} (run {meta["run_id"]}) {ended}: nothing left to train; evaluating it '
              f'into {cfg["out"]}/ (--epochs N with N > {cfg["epochs"]} trains further)')
    else:
        print(f'resuming {prefix} (run {meta["run_id"]}) at epoch {meta["next_epoch"]}, batch '
              f'{meta["next_batch"]}; training through epoch {cfg["epochs"] - 1}, the last of '
              f'{cfg["epochs"]}')
    # 4. train on with the script's own loop (a run's last checkpoint: nothing), evaluate, save
    record = script.train(model, optimizer, scheduler, loaders, cfg, start=meta)
    metrics = script.finish(model, loaders, cfg, record, device, {'resumed_from': prefix})
    # 5. compare every batch loss with the uninterrupted run's (a run's last checkpoint: the eval)
    # (七: rank 0 alone, which prints; every worker holds the same summed losses, but one exiting 1
    # first would make the launcher stop rank 0 before it printed the comparison)
    if reference is not None and common.rank_and_world()[0] == 0 \
            and not restore.compare_losses(metrics, reference, meta.get('trained_with')):
        common.fail('the resumed run differs from the uninterrupted run (above)')
    return metrics


if __name__ == '__main__':
    common.run_main(main)
