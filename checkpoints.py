"""九 Checkpoints on disk, written so that a kill, a full disk or a second run never leaves a
damaged one.

A checkpoint is NAME_epoch{N}.pdparams (the model) + .pdopt (the optimizer, with its LR schedule),
as in the tutorial, plus NAME_epoch{N}.json: the run's settings, where to continue, and the sha256
of both files. Every file is written to a temporary name, flushed and renamed; the json comes last.
So a checkpoint whose json verifies is complete, and its two files belong together.
"""
import contextlib
import json
import os
import shutil
import warnings

import common
from errors import UserError, fail
from safe_files import atomic_write, file_hash, write_error, write_json

import paddle
from filelock import FileLock, Timeout

FORMAT = 2  # the checkpoint json's layout; 1 was written before the scripts showed their own loop

def save(prefix, model, optimizer, meta):
    """prefix.pdparams (model), prefix.pdopt (optimizer + LR schedule), then prefix.json. Only
    data-parallel rank 0 writes (the workers hold the same weights). A failed save leaves no
    incomplete checkpoint behind."""
    if common.rank_and_world()[0] != 0:
        return prefix
    files = {'pdparams': model.state_dict()}
    if optimizer is not None:
        files['pdopt'] = optimizer.state_dict()
    try:
        hashes = {}
        for ext, state in files.items():
            # plain SGD has no optimizer state: paddle warns, we still want the file
            with warnings.catch_warnings():
                warnings.filterwarnings('ignore', message='The input state dict is empty')
                atomic_write(f'{prefix}.{ext}', lambda tmp, state=state: paddle.save(state, tmp))
            hashes[ext] = file_hash(f'{prefix}.{ext}')
        write_json(prefix + '.json', dict(meta, format=FORMAT, files=hashes))
    except UserError:
        remove_if_incomplete(prefix)
        raise
    return prefix


def remove_if_incomplete(prefix):
    """After a failed save: a prefix whose json no longer verifies is no checkpoint; remove its
    files."""
    try:
        read_meta(prefix)
    except UserError:
        for ext in ('json', 'pdparams', 'pdopt'):
            if os.path.isfile(f'{prefix}.{ext}'):
                os.remove(f'{prefix}.{ext}')


def checkpoint_prefix(path):
    path = str(path)
    for ext in ('.pdparams', '.pdopt', '.json'):
        if path.endswith(ext):
            return path[:-len(ext)]
    return path


def read_meta(prefix):
    """The checkpoint's json, after checking both files exist and match the hashes recorded."""
    meta_path = prefix + '.json'
    if not os.path.isfile(meta_path):
        if os.path.isfile(prefix + '.pdparams'):
            fail(f'{meta_path} is missing: {prefix}.pdparams was not written by these scripts, '
                 f'or its writing was interrupted; resume from another checkpoint')
        fail(f'no checkpoint at {prefix} (looked for {prefix}.pdparams and {meta_path}); '
             f'pass --ckpt checkpoint/mnist_epoch0, a checkpoint folder, or latest')
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        hashes = meta['files']
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        fail(f'{meta_path} is not a checkpoint description written by these scripts')
    if meta.get('format') != FORMAT:
        fail(f'{prefix} was written by an older version of these scripts (checkpoint format '
             f'{meta.get("format", 1)}, now {FORMAT}); train again to get checkpoints this '
             f'version resumes')
    for ext, digest in hashes.items():
        path = f'{prefix}.{ext}'
        if not os.path.isfile(path):
            fail(f'{path} is missing: the checkpoint {prefix} needs both its .pdparams and '
                 f'.pdopt files')
        if file_hash(path) != digest:
            fail(f'{path} is damaged or belongs to another run (its sha256 differs from the one '
                 f'recorded in {meta_path}); resume from another checkpoint')
    return meta


def list_checkpoints(folder):
    """Complete training checkpoints in a folder (json present and verified), oldest first."""
    found = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith('.json') and not name.startswith('.'):
                try:
                    meta = read_meta(os.path.join(folder, name[:-5]))
                except UserError:
                    continue
                if 'global_step' in meta:
                    found.append((meta['global_step'], os.path.join(folder, name[:-5]), meta))
    return sorted(found, key=lambda item: item[0])


def find(path):
    """--ckpt: a prefix (checkpoint/mnist_epoch0), one of its files, a folder (its newest complete
    checkpoint), or 'latest' (the same in ./checkpoint). Returns (prefix, meta)."""
    path = 'checkpoint' if str(path) == 'latest' else str(path)
    if os.path.isdir(path):
        found = list_checkpoints(path)
        if not found:
            fail(f'{path} holds no complete checkpoint; train first (make cnn) or pass --ckpt-dir')
        print(f'newest complete checkpoint in {path}: {found[-1][1]}')
        return found[-1][1], found[-1][2]
    prefix = checkpoint_prefix(path)
    return prefix, read_meta(prefix)


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
    def names(keys):
        return ', '.join(keys[:6]) + (f' and {len(keys) - 6} more' if len(keys) > 6 else '')
    problems = [f'{label} {names(keys)}' for label, keys in (
        ('missing', [k for k in expected if k not in found]),
        ('unexpected', [k for k in found if k not in expected]),
        ('wrong shape:', [f'{k} is {found[k]}, needs {v}' for k, v in expected.items()
                          if k in found and found[k] != v]))
        if keys]
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


def earlier_runs(ckpt_dir, cfg):
    """{run id: its checkpoint prefixes, oldest first} of the other runs under this run's NAME."""
    runs = {}
    for _, prefix, meta in list_checkpoints(ckpt_dir):  # sorted by training step
        mine = os.path.basename(prefix).startswith(cfg['name'] + '_')
        if mine and meta.get('run_id') != cfg['run_id']:
            runs.setdefault(meta.get('run_id'), []).append((prefix, meta))
    return runs


def refuse_if_unfinished_run(ckpt_dir, cfg):
    """A run in ckpt_dir that stopped before its last epoch (Ctrl-C, a kill) is continued with
    resume.py, not silently replaced: stop with one sentence (--overwrite moves it aside)."""
    if common.rank_and_world()[0] != 0:
        return
    for saved in earlier_runs(ckpt_dir, cfg).values():
        prefix, meta = saved[-1]
        if prefix.endswith('_interrupted') or meta['next_epoch'] < meta['config']['epochs']:
            fail(f'{prefix} is the newest checkpoint of an unfinished run; continue it with '
                 f'`python resume.py --ckpt {prefix}`, or pass --overwrite to move it aside '
                 f'and start anew')


def move_aside_earlier_runs(ckpt_dir, cfg):
    """Before a new run writes NAME_epoch{N} into ckpt_dir, the checkpoints other runs left there
    under the same NAME move to ckpt_dir/previous/<run id>/ (one line says so): the folder holds
    one run, and nothing is lost. Each checkpoint is linked into place first and its json removed
    first, so a kill midway leaves it whole in one folder or the other. Data-parallel: rank 0."""
    if common.rank_and_world()[0] != 0:
        return
    for run_id, saved in earlier_runs(ckpt_dir, cfg).items():
        target = os.path.join(ckpt_dir, 'previous', str(run_id))
        try:
            os.makedirs(target, exist_ok=True)
            for prefix, _ in saved:
                moved = os.path.join(target, os.path.basename(prefix))
                for ext in ('pdparams', 'pdopt', 'json'):  # the json last: it makes one whole
                    if os.path.isfile(f'{prefix}.{ext}'):
                        link_or_copy(f'{prefix}.{ext}', f'{moved}.{ext}')
                for ext in ('json', 'pdparams', 'pdopt'):  # the json first: no half checkpoint
                    if os.path.isfile(f'{prefix}.{ext}'):
                        os.remove(f'{prefix}.{ext}')
        except OSError as e:
            fail(f'cannot move the earlier run\'s checkpoints to {target}: {e.strerror or e}; '
                 f'move or delete them yourself, or pass another --ckpt-dir')
        print(f'note: {ckpt_dir} held {len(saved)} checkpoint(s) of an earlier run; '
              f'moved to {target}')


def link_or_copy(source, target):
    if os.path.exists(target):
        os.remove(target)
    try:
        os.link(source, target)  # the same bytes, no copy (NTFS too)
    except OSError:
        shutil.copy2(source, target)  # a file system without hard links


@contextlib.contextmanager
def lock_folder(folder):
    """with lock_folder(ckpt_dir): an operating-system lock on folder/.lock for the block's life. A
    second run into the same folder stops with one sentence naming the holder; the lock dies with
    its process, so a killed run never blocks the next. filelock uses flock on Linux and macOS and
    msvcrt on Windows. Data-parallel: rank 0 locks for all."""
    if common.rank_and_world()[0] != 0:
        yield
        return
    lock, holder = (FileLock(os.path.join(folder, '.lock'), timeout=0),
                    os.path.join(folder, '.lock-holder'))
    try:
        lock.acquire()
    except Timeout:
        fail(f'{folder} is in use by another training run '
             f'({read_text(holder) or "another process"}); '
             f'wait for it to finish, or pass another --ckpt-dir')
    except OSError as e:
        write_error(os.path.join(folder, '.lock'), e)
    try:
        try:
            # only for the sentence above, so a full disk is no matter
            with open(holder, 'w') as f:
                f.write(f'pid {os.getpid()}')
        except OSError:
            pass
        yield
    finally:
        lock.release()


def read_text(path):
    try:
        with open(path) as f:
            return f.read(100).strip()
    except OSError:
        return ''
