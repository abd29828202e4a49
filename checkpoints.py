"""九 Checkpoints that a kill, a full disk or a second run never leave damaged. NAME_epoch{N}
.pdparams (the model) and .pdopt (the optimizer with its LR schedule), as in the tutorial, then
NAME_epoch{N}.json (the run's settings, where to continue, both files' sha256), written last (and
removed first when other bytes replace the files): a json that verifies means a complete checkpoint
whose files belong together. (restore.py reads them.)
"""
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import warnings

import paddle

import common
from errors import UserError, fail
from safe_files import check_writable, file_hash, remove, write_bytes, write_error, write_json

FORMAT = 2  # the json's layout; 1 was written before the scripts showed their own loop


def save(prefix, model, optimizer, meta):  # data-parallel: rank 0 writes (all hold the same)
    if common.rank_and_world()[0] != 0:
        return prefix
    states = {'pdparams': model.state_dict()}
    if optimizer is not None:
        states['pdopt'] = optimizer.state_dict()
    files = {ext: as_bytes(state) for ext, state in states.items()}
    hashes = {ext: hashlib.sha256(data).hexdigest() for ext, data in files.items()}
    try:
        # a json kept only where it verifies with these very bytes (the same run saving again):
        # any other goes first, so a kill midway leaves this checkpoint absent, never a json
        # beside files it does not describe
        if os.path.isfile(prefix + '.json') and (verified(prefix) or {}).get('files') != hashes:
            remove(prefix + '.json')
        for ext, data in files.items():
            write_bytes(f'{prefix}.{ext}', data)
        write_json(prefix + '.json', dict(meta, format=FORMAT, files=hashes))
    except (UserError, KeyboardInterrupt):  # a full disk, or a second Ctrl-C mid-save: a prefix
        # whose json no longer verifies is no checkpoint, so its files go
        for ext in ('json', 'pdparams', 'pdopt') if not verified(prefix) else ():
            if os.path.isfile(f'{prefix}.{ext}'):
                os.remove(f'{prefix}.{ext}')
        raise
    return prefix


def as_bytes(state):  # paddle.save's bytes, as in the file; plain SGD's empty state too
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # paddle warns that there is nothing to save: we want a file
        warnings.filterwarnings('ignore', message='The input state dict is empty')
        paddle.save(state, buffer)
    return buffer.getvalue()


def verified(prefix):
    try:
        return read_meta(prefix)
    except UserError:
        return None


def read_meta(prefix):
    """The checkpoint's json, after checking that its files exist and match their sha256."""
    meta_path = prefix + '.json'
    if not os.path.isfile(meta_path):
        if os.path.isfile(prefix + '.pdparams'):
            fail(f'{meta_path} is missing: {prefix}.pdparams was not written by these scripts, '
                 f'or its writing was interrupted; resume from another checkpoint')
        fail(f'no checkpoint at {prefix} (looked for {prefix}.pdparams and {meta_path}); train '
             f'first, or {pass_ckpt()} a checkpoint that exists, a checkpoint folder, or latest')
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        hashes = meta['files']
        if not (isinstance(hashes, dict) and 'pdparams' in hashes):  # (a json edited by hand)
            raise TypeError
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


def pass_ckpt():  # how to name another checkpoint where the run started
    return ("set argv's '--ckpt' to" if common.in_notebook() else 'pass --ckpt' + (
        ' (with make: CKPT=)' * common.started_by_make()) + ' with')


def list_checkpoints(folder, starts=''):
    """[(global step, prefix, meta)] of the complete checkpoints whose names start so (only those
    are verified: their files hashed), oldest first."""
    found = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        meta = name.startswith(starts) and name.endswith('.json') and \
            verified(os.path.join(folder, name[:-5]))
        if meta and isinstance(meta.get('global_step'), int):
            found.append((meta['global_step'], os.path.join(folder, name[:-5]), meta))
    return sorted(found, key=lambda item: item[0])


def check_folders(cfg):
    """Before the run writes anything (samples.png comes before training): VisualDL's package if
    asked for, the checkpoint folder not in use by another run (rank 0 asks for all workers), then
    the folders writable. Training then holds the checkpoint folder: hold_folder."""
    if cfg.get('visualdl'):
        common.optional('visualdl_log', '--visualdl').log_writer()
    if common.rank_and_world()[0] == 0 and os.path.isdir(cfg['ckpt_dir']):  # (a new one: no one's)
        with lock(cfg['ckpt_dir']):
            pass
    check_writable(cfg['out'], *filter(None, [cfg.get('visualdl')]), cfg['ckpt_dir'])


@contextlib.contextmanager
def hold_folder(cfg):
    """While a run trains, it alone holds cfg['ckpt_dir'] (rank 0 for all workers). First the
    temporary files of runs killed mid-save go, and another run's checkpoints move, whole, to
    ckpt_dir/previous/<run id>/."""
    if common.rank_and_world()[0] != 0:
        yield
        return
    with lock(cfg['ckpt_dir']):
        for name in os.listdir(cfg['ckpt_dir']):  # safe_files.atomic_write's .NAME.tmpPID
            if re.fullmatch(r'\..+\.(pdparams|pdopt|json)\.tmp\d+', name):
                with contextlib.suppress(OSError):  # a folder, another user's file: left as is
                    os.remove(os.path.join(cfg['ckpt_dir'], name))
        runs = {}  # another run's NAME_* checkpoints, oldest first, by run id
        for _, prefix, meta in list_checkpoints(cfg['ckpt_dir'], cfg['name'] + '_'):
            if meta.get('run_id') != cfg['run_id']:
                runs.setdefault(meta.get('run_id'), []).append((prefix, meta))
        for run_id, found in runs.items():
            move_aside(found, cfg['ckpt_dir'], run_id)
        yield


def move_aside(found, folder, run_id):  # found: [(prefix, meta)] of one earlier run, oldest first
    target = os.path.join(folder, 'previous', str(run_id))
    # each checkpoint linked into target, json last, then removed here, json first (not renamed
    # file by file: a kill midway would split it), so it is whole in one folder or the other
    try:
        os.makedirs(target, exist_ok=True)
        for prefix, _ in found:
            moved = os.path.join(target, os.path.basename(prefix))
            exts = [e for e in ('pdparams', 'pdopt', 'json') if os.path.isfile(f'{prefix}.{e}')]
            for ext in exts:
                if os.path.exists(f'{moved}.{ext}'):
                    os.remove(f'{moved}.{ext}')
                try:
                    os.link(f'{prefix}.{ext}', f'{moved}.{ext}')  # the same bytes, no copy
                except OSError:
                    shutil.copy2(f'{prefix}.{ext}', f'{moved}.{ext}')  # no hard links there
            for ext in reversed(exts):
                os.remove(f'{prefix}.{ext}')
    except OSError as e:
        fail(f'cannot move the earlier run\'s checkpoints to {target}: {e.strerror or e}; '
             f'move or delete them yourself, or pass another --ckpt-dir')
    newest, meta = os.path.join(target, os.path.basename(found[-1][0])), found[-1][1]
    line = f'note: an earlier run\'s {len(found)} checkpoint(s) moved from {folder} to {target}'
    if meta['next_epoch'] < meta['config']['epochs']:  # (NAME_interrupted's too: mid-epoch)
        line += (f'; that run stopped before its last epoch: continue it (it saves there) with '
                 f'{common.resume_command(newest, meta)}')
    print(line)


@contextlib.contextmanager
def lock(folder):
    """flock (msvcrt on Windows): the operating system drops it with the process, so a killed run
    never blocks the next."""
    path = os.path.join(folder, '.lock')
    try:
        os.makedirs(folder, exist_ok=True)
        handle = open(path, 'a+')
    except OSError as e:
        write_error(folder, e)  # (the folder: its .lock is ours, not the user's); never returns
    with handle:  # closing the file releases the lock
        try:
            if os.name == 'nt':
                import msvcrt
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fail(f'the checkpoint folder {folder} is in use by another training run; wait for '
                 f'it to finish, or give this run folders of its own: another --ckpt-dir and, '
                 f'for its results, another --out')
        yield
