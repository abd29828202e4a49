"""Continue training from a checkpoint, and prove it matches the uninterrupted run (stage 九).

    python resume.py --ckpt checkpoint/mnist_epoch0
    python resume.py --ckpt checkpoint/mnist_epoch0 --compare runs/cnn/metrics.json
    python resume.py --ckpt latest          # the newest complete checkpoint in ./checkpoint

Everything comes from the checkpoint alone: model, optimizer state, LR schedule position, the
run's settings (data, seed, hyper-parameters) and where it stopped (epoch, batch). Because every
epoch's order is a function of (seed, epoch), the resumed run sees the same batches in the same
order, and its per-batch losses equal the uninterrupted run's bit for bit. (The tutorial's own
resume diverged after the first batch: it rebuilt the LR schedule from step 0 and reshuffled
from global random state.)
"""
import argparse
import importlib
import os
import time

import common  # first: it sets CPU switches that must precede paddle's import

import numpy as np
import paddle


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--ckpt', required=True,
                        help='checkpoint prefix (checkpoint/mnist_epoch0), one of its files, a folder '
                             '(its newest complete checkpoint), or latest')
    parser.add_argument('--epochs', type=common.positive_int, default=None,
                        help='train up to this many epochs in all (default: the run\'s own --epochs); '
                             'the LR schedule stays the original run\'s')
    parser.add_argument('--compare', metavar='METRICS_JSON',
                        help='compare every per-batch loss with this uninterrupted run\'s metrics.json; '
                             'exit 1 on any difference')
    common.add_run_args(parser, out='runs/resume', ckpt_dir=None)
    parser.set_defaults(device=None)  # default: the device setting the run was started with
    return parser


def compare_losses(resumed, reference):
    """Per epoch: do the resumed run's batch losses equal the reference run's at the same steps?
    Returns True when every one is identical (exact float equality: the promise is bit-identity)."""
    ref_losses, ref_first = reference['batch_losses'], reference.get('first_step', 0)
    per_epoch = resumed['steps_per_epoch']
    if reference.get('steps_per_epoch') != per_epoch:
        print(f'compare: the reference run has {reference.get("steps_per_epoch")} batches per epoch, '
              f'this one {per_epoch}: not the same run settings')
        return False
    all_same = True
    by_epoch = {}
    for i, loss in enumerate(resumed['batch_losses']):
        step = resumed['first_step'] + i
        by_epoch.setdefault(step // per_epoch, []).append((step, loss))
    for epoch, pairs in sorted(by_epoch.items()):
        ref = [ref_losses[s - ref_first] if 0 <= s - ref_first < len(ref_losses) else None
               for s, _ in pairs]
        if any(r is None for r in ref):
            print(f'epoch {epoch}: the reference run has no losses for these batches')
            all_same = False
            continue
        ours = np.array([loss for _, loss in pairs])
        diff = np.abs(ours - np.array(ref))
        same = int((ours == np.array(ref)).sum())
        print(f'epoch {epoch}: {same}/{len(pairs)} batch losses identical, '
              f'largest |difference| {diff.max():.3g}' + ('' if same == len(pairs) else '  <-- DIFFERENT'))
        all_same = all_same and same == len(pairs)
    print('resumed losses are bit-identical to the uninterrupted run' if all_same
          else 'resumed losses DIFFER from the reference run')
    return all_same


def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    wall_start = time.perf_counter()
    # read the reference first: a wrong --compare path should not cost a whole training run
    reference = common.load_json(args.compare, 'metrics.json of the uninterrupted run') if args.compare else None
    prefix, meta = common.find_checkpoint(args.ckpt)
    if 'next_epoch' not in meta:
        common.fail(f'{prefix} is a final model, not a training checkpoint; pass a '
                    f'checkpoint/mnist_epoch{{N}} (or its folder) to resume')
    cfg = dict(meta['config'])
    if args.epochs is not None:
        cfg['epochs'] = args.epochs  # schedule_steps stays: the LR schedule is the original run's
    if meta['next_epoch'] >= cfg['epochs']:
        common.fail(f'{prefix} is already at the end of the run ({cfg["epochs"]} epochs); '
                    f'pass --epochs N with N > {meta["next_epoch"]} to train further')
    script = importlib.import_module(meta['script'])  # the script whose model this is
    device = common.select_device(args.device or cfg['device'])

    # the same data: the run's own source unless --data-dir points elsewhere, checked by fingerprint
    splits, source = common.load_mnist_splits(args.data_dir or cfg['data']['path'])
    splits, source = common.limit_train(splits, source, cfg['train_limit'])
    if common.fingerprint(*splits['train']) != cfg['train_fingerprint']:
        common.fail(f'the training data at {source["path"]} differs from the data {prefix} was '
                    f'trained on ({cfg["data"]["path"]}); pass --data-dir with the original data')

    ckpt_dir = args.ckpt_dir or os.path.dirname(prefix) or '.'
    with paddle.utils.unique_name.guard():  # fresh names: the optimizer state's keys must match
        model = script.build_model(cfg)
        optimizer, scheduler = common.build_optimizer(cfg, model.parameters())
        common.load_model_state(model, prefix + '.pdparams')
        common.load_optimizer_state(optimizer, prefix + '.pdopt')  # includes the LR scheduler
        print(f'resuming {prefix} (run {meta["run_id"]}) at epoch {meta["next_epoch"]}, '
              f'batch {meta["next_batch"]}; training to epoch {cfg["epochs"] - 1}')
        run = common.new_run(meta['model'], meta['script'], ckpt_dir, args.log_every, meta['run_id'])
        record = common.run_and_report(lambda: common.train(
            model, optimizer, scheduler, cfg, splits, run,
            start_epoch=meta['next_epoch'], start_batch=meta['next_batch'], partial=meta['partial']))
        metrics = common.finish_run(model, cfg, splits, record, run, args.out, device, wall_start,
                                    f'{meta["model"]} (resumed)', {'resumed_from': prefix})

    if reference is not None:
        if not compare_losses(metrics, reference):
            raise SystemExit(1)
    return metrics


if __name__ == '__main__':
    common.run_main(main)
