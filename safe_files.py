"""Files written whole or not at all, and one sentence when the disk says no.

Every output of these scripts (checkpoints, metrics.json, plots, models) goes through atomic_write:
the bytes go to a temporary name in the same folder, are flushed to disk, and the temporary file is
renamed over the target. A kill or a full disk leaves the old file or the new one, never half of
one.
"""
import errno
import hashlib
import json
import os

from errors import fail

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
    fail(f'cannot write {path}: {error.strerror or error}; {hint} '
         f'(checkpoints saved before are intact)')


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
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(obj, f, indent=1)
    atomic_write(path, write)


def load_json(path, what):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        fail(f'{path} does not exist; expected a {what}')
    except (ValueError, UnicodeDecodeError, IsADirectoryError, PermissionError):
        fail(f'{path} is not valid JSON; expected a {what}')


def check_writable(*folders):
    """Create each folder and write a file in it now, so that a bad path costs seconds, not an
    epoch."""
    for folder in folders:
        try:
            os.makedirs(folder, exist_ok=True)
            probe = os.path.join(folder, f'.write-test{os.getpid()}')  # one per process
            with open(probe, 'w'):
                pass
            os.remove(probe)
        except OSError as e:
            write_error(folder, e)


def file_hash(path, algorithm='sha256'):
    """The file's hash as hex (sha256 for checkpoints, md5 for the downloads' published sums)."""
    h = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()
