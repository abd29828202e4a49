"""九 What resume.py (and --predict) need, and a training run does not: a checkpoint found from
--ckpt, its model and optimizer state read back (each problem one sentence), and the resumed run's
losses compared with the uninterrupted run's. (Training writes checkpoints: checkpoints.py.)
"""
import json
import os

import numpy as np
import paddle

import common
from checkpoints import list_checkpoints, pass_ckpt, read_meta
from errors import fail


def checkpoint_prefix(path):
    path = str(path)
    for ext in ('.pdparams', '.pdopt', '.json'):
        if path.endswith(ext):
            return path[:-len(ext)]
    return path


def find(path):
    """--ckpt: a prefix (checkpoint/mnist_epoch0), one of its files, a folder (its newest complete
    checkpoint), or 'latest' (the same in ./checkpoint; in a notebook work/checkpoint). Returns
    (prefix, meta)."""
    path = common.kept('checkpoint') if str(path) == 'latest' else str(path)
    if not os.path.isdir(path):
        if path == common.kept('checkpoint'):  # latest, before anything was trained
            fail(f'there is no {path} folder yet, so no checkpoint in it; train first (make cnn, '
                 f'or the mnist_cnn notebook)')
        prefix = checkpoint_prefix(path)
        if not (os.path.exists(prefix + '.json') or os.path.exists(prefix + '.pdparams')):
            no_checkpoint_at(prefix)
        return prefix, read_meta(prefix)
    found = list_checkpoints(path)
    if not found:  # a newer run may have moved earlier ones to path/previous/ (or path is that)
        moved = moved_aside(path)
        if not moved and os.path.basename(os.path.normpath(path)) == 'previous':
            moved = moved_aside(os.path.dirname(os.path.normpath(path)) or '.')
        fail(f'{path} holds no complete checkpoint; ' + (
            f'a newer run moved earlier ones aside, the furthest trained first: '
            f'{", ".join(moved)}; {pass_ckpt()} one of them' if moved else
            f'train first (make cnn), or {pass_ckpt()} another checkpoint or folder'))
    print(f'newest complete checkpoint in {path}: {found[-1][1]}')
    return found[-1][1], found[-1][2]


def no_checkpoint_at(prefix):
    """Name where it is now, if a newer run moved it aside (checkpoints.move_aside), else the newest
    checkpoint of the same model in that folder (a Ctrl-C in epoch 0 leaves mnist_interrupted, not
    the mnist_epoch0 that make resume passes), else those of its kind moved aside."""
    folder, name = os.path.dirname(prefix) or '.', os.path.basename(prefix)
    model = name.rsplit('_', 1)[0] + '_'
    moved = moved_aside(folder, name)
    if moved:
        fail(f'no checkpoint at {prefix}: a newer run moved it aside to ' + (
            moved[0] if len(moved) == 1 else f'one of {", ".join(moved)} (the last written first)')
            + f'; pass {ckpt_words(moved[0])}')
    newest = [found[1] for found in list_checkpoints(folder, model)][-1:]
    if newest:
        fail(f'no checkpoint at {prefix}; the newest of its run\'s kind there is {newest[0]}: '
             f'pass {ckpt_words(newest[0])}')
    moved = moved_aside(folder, kind=model)
    if moved:
        fail(f'no checkpoint at {prefix}, nor of its kind there; a newer run moved earlier ones '
             f'aside, the furthest trained first: {", ".join(moved)}; pass {ckpt_words(moved[0])}')
    read_meta(prefix)  # its own sentence: no checkpoint there at all


def ckpt_words(path):  # --ckpt PATH as the run was started: a notebook's argv, make's CKPT= too
    word = common.shell_word(path)  # (make splits a quoted path: no make form then)
    make = f' (with make: CKPT={word})' * (word == path and common.started_by_make())
    return f"argv = ['--ckpt', {path!r}]" if common.in_notebook() else f'--ckpt {word}{make}'


def moved_aside(folder, name=None, kind=''):
    """Checkpoints a newer run moved to folder/previous/<run id>/: those named name, else the
    newest of each run of this kind; the furthest trained first, then the last written."""
    previous, found = os.path.join(folder, 'previous'), []
    for run in sorted(os.listdir(previous)) if os.path.isdir(previous) else []:
        in_run = list_checkpoints(os.path.join(previous, run), name or kind)  # ([]: junk)
        found += [(step, os.path.getmtime(prefix + '.json'), prefix) for step, prefix, _ in in_run
                  if name in (None, os.path.basename(prefix))][-1:]
    return [prefix for _, _, prefix in sorted(found, reverse=True)]


def load_reference(path):  # --compare: an uninterrupted run's metrics.json, checked before training
    reference = load_json(path, 'metrics.json of the uninterrupted run (or leave out --compare)')
    if not (isinstance(reference, dict) and isinstance(reference.get('batch_losses'), list)):
        fail(f'{path} is not a run\'s metrics.json (it has no batch_losses); pass --compare with '
             f'the uninterrupted run\'s, e.g. runs/cnn/metrics.json')
    return reference


def load_state(path, what):
    try:
        return paddle.load(path)
    except Exception as e:
        fail(f'{path} cannot be read as a PaddlePaddle {what} ({type(e).__name__}); it is damaged')


def load_model(model, path):
    """Load parameters, naming every parameter that is missing, extra or of another shape."""
    state = load_state(path, 'parameter file')
    if not isinstance(state, dict):
        fail(f'{path} is not a parameter file (it holds a {type(state).__name__})')
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    found = {k: [int(d) for d in v.shape] for k, v in state.items()}
    problems = [f'{label} {", ".join(keys[:6])}' + (f' and {len(keys) - 6} more' * (len(keys) > 6))
                for label, keys in (
                    ('missing', [k for k in expected if k not in found]),
                    ('unexpected', [k for k in found if k not in expected]),
                    ('wrong shape:', [f'{k} is {found[k]}, needs {v}' for k, v in expected.items()
                                      if k in found and found[k] != v])) if keys]
    if problems:
        fail(f'{path} does not fit this model ({type(model).__name__}): {"; ".join(problems)}; '
             f'it is a checkpoint of another model or other settings')
    model.set_state_dict(state)


def load_optimizer(optimizer, path):
    state = load_state(path, 'optimizer file')
    try:
        optimizer.set_state_dict(state)
    except Exception as e:
        fail(f'{path} does not fit this optimizer ({e}); it is from another model or optimizer')


def load_json(path, what):  # resume.py --compare: the uninterrupted run's metrics.json
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        fail(f'{path} does not exist; expected a {what}')
    except IsADirectoryError:
        fail(f'{path} is a folder; pass {os.path.join(path, "metrics.json")}, the {what}')
    except PermissionError:
        fail(f'{path} cannot be read (permission denied); expected a {what}')
    except (ValueError, UnicodeDecodeError):
        fail(f'{path} is not valid JSON; expected a {what}')


# what decides a run's losses: a run with these the same gives the same losses, bit for bit
LOSS_SETTINGS = ('script', 'seed', 'batch_size', 'lr', 'loss', 'opt', 'schedule', 'l2', 'shift',
                 'hidden', 'schedule_steps', 'train_fingerprint')


def same_settings(cfg, reference):  # else there is nothing to compare: says so
    theirs = reference.get('config')
    other = ['it records none'] if not isinstance(theirs, dict) else [
        f'{k} {theirs.get(k)}, here {cfg.get(k)}' for k in LOSS_SETTINGS
        if theirs.get(k) != cfg.get(k)]  # e.g. runs/cnn holds a later run's, other flags
    if other:
        print(f'nothing to compare: the reference run has other settings ({"; ".join(other)}); '
              f'pass --compare with the metrics.json of a run with this checkpoint\'s settings')
    return not other


def compare_losses(resumed, reference, trained_with=None):
    """Per epoch: are the resumed run's batch losses the reference run's at the same steps? (Nothing
    trained, from a run's last checkpoint: its evaluation, where the reference run ended there.)
    False only when they should be identical, bit for bit (the same settings and number of
    workers), and are not. trained_with: every worker count that trained the checkpoint's weights
    (None: the reference's)."""
    per_epoch, ref_first = resumed['steps_per_epoch'], reference.get('first_step', 0)
    if not same_settings(resumed['config'], reference):
        return True
    if not resumed['batch_losses']:  # the checkpoint ended its run: its evaluation, compared
        if ref_first + len(reference['batch_losses']) != resumed['first_step']:
            print('nothing trained, and the reference run did not end at this checkpoint: not '
                  'compared')
            return True
        same = resumed['eval'] == reference.get('eval')
        print(f'nothing trained, so no losses to compare; the evaluation '
              f'{"equals" if same else "DIFFERS from"} the uninterrupted run\'s')
        return same
    by_epoch, all_same, compared = {}, True, 0
    for i, loss in enumerate(resumed['batch_losses']):
        step = resumed['first_step'] + i
        by_epoch.setdefault(step // per_epoch, []).append((step - ref_first, loss))
    for epoch, pairs in sorted(by_epoch.items()):
        if any(not 0 <= i < len(reference['batch_losses']) for i, _ in pairs):
            print(f'epoch {epoch}: the reference run has no losses for these batches (it trained '
                  f'fewer epochs): not compared')
            continue
        compared += 1
        ours = np.array([loss for _, loss in pairs])
        ref = np.array([reference['batch_losses'][i] for i, _ in pairs])
        if compared == 1:
            first = (ours[:3], ref[:3])  # the resume's first batches
        same = int((ours == ref).sum())
        print(f'epoch {epoch}: {same}/{len(pairs)} batch losses identical, largest |difference| '
              f'{np.abs(ours - ref).max():.3g}' + ('' if same == len(pairs) else '  <-- DIFFERENT'))
        all_same = all_same and same == len(pairs)
    if not compared:
        print('nothing to compare: the reference run has none of these batches')
        return True
    print('resumed losses are bit-identical to the uninterrupted run' if all_same
          else 'resumed losses DIFFER from the reference run')
    others = sorted(set(trained_with or ()) - {reference.get('workers', 1)})
    if not all_same and others:  # weights trained (in part) by another worker count
        print(f'note: the checkpoint\'s weights were trained (in part) by {others[0]} '
              f'data-parallel worker(s), the reference ran with {reference.get("workers", 1)}: the '
              f'two had parted by rounding before this resume, so these figures show how close '
              f'they stay, not whether the resume was exact (for that: a reference run of those '
              f'workers)')
        if np.allclose(*first, rtol=0.5):  # drift between worker counts: 9% at most (README)
            return True
        print('but its first batches differ by more than such drift: the resume itself went wrong')
        return False
    if not all_same and reference.get('workers', 1) != resumed.get('workers', 1):
        print(f'note: the reference ran with {reference.get("workers", 1)} data-parallel '
              f'worker(s), this run with {resumed.get("workers", 1)}: the gradient sums round in '
              f'another order, so the losses follow within rounding, not bit for bit; resume '
              f'with the same number of workers for identical losses')
        if np.allclose(*first, rtol=1e-3):  # before rounding differences grow: a sound resume
            return True
        print('but its first batches differ by more than rounding: the resume itself went wrong')
    return all_same
