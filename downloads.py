"""Downloads into PaddlePaddle's data cache (~/.cache/paddle/dataset), as its own datasets do, with
Python's urllib so that the numpy chapters need no PaddlePaddle. Offline: pass --data-dir."""
import os
import shutil
import urllib.request

from errors import fail
from safe_files import atomic_write, file_hash


def data_cache(module):
    return os.path.join(os.path.expanduser('~'), '.cache', 'paddle', 'dataset', module)


def save_stream(response, tmp):
    with open(tmp, 'wb') as f:
        shutil.copyfileobj(response, f)


def fetch(url, module, md5, hint):
    """A cached file whose md5 matches, else a download (3 tries) checked against md5."""
    path = os.path.join(data_cache(module), url.split('/')[-1])
    for _ in range(3):
        if os.path.isfile(path) and file_hash(path, 'md5') == md5:
            return path
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                atomic_write(path, lambda tmp: save_stream(response, tmp))
            error = f'its md5 is {file_hash(path, "md5")}, not the expected {md5}'
        except OSError as e:  # no network (urllib's URLError is an OSError)
            error = str(getattr(e, 'reason', e))
    if os.path.isfile(path) and file_hash(path, 'md5') != md5:
        hint = (f'The cached {path} has md5 {file_hash(path, "md5")}, not the expected {md5}: '
                f'it is damaged or another file; delete it, or pass --data-dir')
    fail(f'the download of {url} failed ({error}). {hint}')
