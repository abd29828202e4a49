"""九 Checkpoints on disk, written so that a kill, a full disk or a second run never leaves a damaged one.

A checkpoint is NAME_epoch{N}.pdparams (the model) + .pdopt (the optimizer, with its LR schedule),
as in the tutorial, plus NAME_epoch{N}.json: the run's settings, where to continue, and the sha256
of both files. Every file is written to a temporary name, flushed and renamed; the json comes last.
So a checkpoint whose json verifies is complete, and its two files belong together.
"""
import errno
import hashlib
import json
import os
import warnings

import common
from common import UserError, fail

import paddle

FORMAT = 2  # the checkpoint json's layout; 1 was written before the scripts showed their own loop

# What to do about a failed write, by the operating system's reason.
WRITE_HINTS = {errno.ENOSPC: 'free some space there, or pass a folder on another disk',
               errno.EDQUOT: 'free some space there, or pass a folder on another disk',
               errno.EROFS: 'that file system is read-only; pass a folder you can write to',
               errno.EACCES: 'you may not write there; pass a folder of your own',
               errno.EPERM: 'you may not write there; pass a folder of your own',
               errno.ENOTDIR: 'part of that path is a file, not a folder; pass another path',
               errno.EEXIST: 'part of that path is a file, not a folder; pass another path'}


def write_error(path, error):
    hint = WRITE_HINTS.get(error.errno, 'pass another folder')
    fail(f'cannot write {path}: {error.strerror or error}; {hint} (checkpoints saved before are intact)')


def atomic_write(path, write):
    """write(tmp) then rename over path: readers see the old file or the new one, never half of one.
    Any OSError (full disk, read-only, no permission, a file in the path) removes the temporary file
    and becomes one sentence naming the path."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.tmp{os.getpid()}')
    try:
        os.makedirs(folder, exist_ok=True)
        write(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        write_error(path, e)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    def write(tmp):
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=1)
    atomic_write(path, write)


def load_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        fail(f'{path} does not exist; expected a {what}')
    except (ValueError, UnicodeDecodeError, IsADirectoryError):
        fail(f'{path} is not valid JSON; expected a {what}')


def file_digest(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


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
            with warnings.catch_warnings():  # plain SGD has no optimizer state: paddle warns, we still
                warnings.filterwarnings('ignore', message='The input state dict is empty')  # want the file
                atomic_write(f'{prefix}.{ext}', lambda tmp, state=state: paddle.save(state, tmp))
            hashes[ext] = file_digest(f'{prefix}.{ext}')
        write_json(prefix + '.json', dict(meta, format=FORMAT, files=hashes))
    except UserError:
        remove_if_incomplete(prefix)
        raise
    return prefix


def remove_if_incomplete(prefix):
    """After a failed save: a prefix whose json no longer verifies is no checkpoint; remove its files."""
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
            fail(f'{meta_path} is missing: {prefix}.pdparams was not written by these scripts, or its '
                 f'writing was interrupted; resume from another checkpoint')
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
             f'{meta.get("format", 1)}, now {FORMAT}); train again to get checkpoints this version resumes')
    for ext, digest in hashes.items():
        path = f'{prefix}.{ext}'
        if not os.path.isfile(path):
            fail(f'{path} is missing: the checkpoint {prefix} needs both its .pdparams and .pdopt files')
        if file_digest(path) != digest:
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
    names = lambda keys: ', '.join(keys[:6]) + (f' and {len(keys) - 6} more' if len(keys) > 6 else '')
    problems = [f'{label} {names(keys)}' for label, keys in (
        ('missing', [k for k in expected if k not in found]),
        ('unexpected', [k for k in found if k not in expected]),
        ('wrong shape:', [f'{k} is {found[k]}, needs {v}' for k, v in expected.items() if k in found and found[k] != v]))
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


# Settings that do not change what training computes (where files go, how it reports, who runs it).
NOT_TRAJECTORY = ('out', 'ckpt_dir', 'device', 'data_dir', 'data', 'log_every', 'visualdl', 'run_id',
                  'num_workers', 'overwrite')


def same_trajectory(cfg_a, cfg_b):
    strip = lambda cfg: {k: v for k, v in cfg.items() if k not in NOT_TRAJECTORY}
    return strip(cfg_a) == strip(cfg_b)


class claim:
    """with checkpoints.claim(ckpt_dir, out, cfg, overwrite): before any training, check that both
    folders can be written, take an OS lock on ckpt_dir for the run's life (released when the run
    ends or its process dies, so a killed run never blocks the next), and refuse to mix this run's
    checkpoints with another run's. Data-parallel: rank 0 claims for all."""

    def __init__(self, ckpt_dir, out, cfg, overwrite=False):
        self.ckpt_dir, self.out, self.cfg, self.overwrite, self.fd = ckpt_dir, out, cfg, overwrite, None

    def __enter__(self):
        if common.rank_and_world()[0] != 0:
            return self
        check_writable(self.out)
        check_writable(self.ckpt_dir)
        self.fd = lock_folder(self.ckpt_dir)
        for _, prefix, meta in list_checkpoints(self.ckpt_dir):
            other = meta.get('run_id') != self.cfg['run_id'] and not same_trajectory(meta.get('config', {}), self.cfg)
            if os.path.basename(prefix).startswith(self.cfg['name'] + '_') and other and not self.overwrite:
                self.__exit__()
                fail(f'{self.ckpt_dir} holds checkpoints of another run ({prefix}, other settings); pass '
                     f'--overwrite to replace them or --ckpt-dir to keep them')
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing the file releases its lock
            self.fd = None


def check_writable(folder):
    """Create folder and write a file in it now, so that a bad path costs seconds, not an epoch."""
    try:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, '.write-test'), 'w'):
            pass
        os.remove(os.path.join(folder, '.write-test'))
    except OSError as e:
        write_error(folder, e)


def lock_folder(folder):
    """An exclusive flock on folder/.lock, or one sentence naming the run that holds it."""
    import fcntl
    path = os.path.join(folder, '.lock')
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        write_error(path, e)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 100).decode(errors='replace').strip() or 'another process'
        os.close(fd)
        fail(f'{folder} is in use by another training run ({holder}); wait for it to finish, '
             f'or pass another --ckpt-dir')
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()}'.encode())  # only for the message above, so a full disk is no matter
    except OSError:
        pass
    return fd
