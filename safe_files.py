"""Files written whole or not at all (atomic_write: a temporary name in the same folder, flushed to
disk, renamed over the target, so a kill or a full disk leaves the old file or the new one, never
half), and one sentence when the disk says no.
"""
import errno
import hashlib
import json
import os

from errors import fail

# What to do about a failed write, by the operating system's reason.
OTHER_DISK = 'free some space there, or pass a folder on another disk'
NOT_YOURS = 'you may not write there; pass a folder of your own'
A_FILE = 'part of that path is a file, not a folder; pass another path'
WRITE_HINTS = {errno.ENOSPC: OTHER_DISK, errno.EDQUOT: OTHER_DISK, errno.EACCES: NOT_YOURS,
               errno.EPERM: NOT_YOURS, errno.ENOTDIR: A_FILE, errno.EEXIST: A_FILE,
               errno.EROFS: 'that file system is read-only; pass a folder you can write to'}


def write_error(path, error):
    fail(f'cannot write {path}: {error.strerror or error}; '
         f'{WRITE_HINTS.get(error.errno, "pass another folder")} (every file written before, '
         f'checkpoints too, is intact)')


def remove(path):  # os.remove, a refusal as one sentence
    try:
        os.remove(path)
    except OSError as e:
        write_error(path, e)


def atomic_write(path, write):  # write(tmp), then tmp flushed to disk and renamed over path
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.tmp{os.getpid()}')  # one per process
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


def write_bytes(path, data):  # atomic_write of bytes in memory
    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(data)
    atomic_write(path, write)


def write_json(path, obj):
    write_bytes(path, json.dumps(obj, indent=1).encode('utf-8'))


def check_writable(*folders):  # a bad path costs seconds, not an epoch
    for folder in folders:
        try:
            os.makedirs(folder, exist_ok=True)
            probe = os.path.join(folder, f'.write-test{os.getpid()}')  # one per process
            open(probe, 'w').close()
            os.remove(probe)
        except OSError as e:
            write_error(folder, e)


def file_hash(path, algorithm='sha256'):  # sha256 for checkpoints, md5 for downloads
    h = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()
