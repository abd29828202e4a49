"""Downloads into PaddlePaddle's data cache, as the framework's own datasets do, without it.

A learner's machine downloads MNIST and housing.data on first use; a file already in the cache is
used when its md5 matches. Written with Python's urllib (not paddle's downloader), so that the
numpy chapters need no PaddlePaddle. Offline machines pass --data-dir instead.
"""
import os
import urllib.request

from errors import fail
from safe_files import atomic_write, file_hash


def data_cache(module):
    """PaddlePaddle's data cache, where its own datasets keep their downloads."""
    return os.path.join(os.path.expanduser('~'), '.cache', 'paddle', 'dataset', module)


def save_stream(stream, path):
    with open(path, 'wb') as f:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            f.write(chunk)


def fetch(url, module, md5, hint):
    """url into data_cache(module), as paddle's own downloader does: a cached file whose md5
    matches is used; else it downloads (3 tries) and checks the md5."""
    path = os.path.join(data_cache(module), url.split('/')[-1])
    error = None
    for _ in range(3):
        if os.path.isfile(path) and file_hash(path, 'md5') == md5:
            return path
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                atomic_write(path, lambda tmp: save_stream(response, tmp))
            error = f'its md5 is {file_hash(path, "md5")}, not the expected {md5}'
        except OSError as e:  # no network (urllib's URLError is an OSError)
            error = str(getattr(e, 'reason', e))
    cached_md5 = file_hash(path, 'md5') if os.path.isfile(path) else md5
    if cached_md5 != md5:
        hint = (f'The cached {path} has md5 {cached_md5}, not the expected {md5}: it is damaged '
                f'or another file; delete it, or pass --data-dir')
    fail(f'the download of {url} failed ({error}). {hint}')
