"""What the stage scripts share: data (三), a run's settings, device (七); the command line's
helpers are flags.py's, passed on here (common.parse_args, common.positive_int, ...). No
PaddlePaddle import at the top (select_device imports it): the numpy chapters need numpy only."""
import glob
import gzip
import hashlib
import json
import math
import os
import uuid

import numpy as np

from errors import Stopped, UserError, fail, optional, run_main  # noqa: F401 (used as common.*)
from flags import (HelpFormatter, add_run_args, kept, non_negative_float,  # noqa: F401 (the same)
                   non_negative_int, parse_args, pass_flag, positive_float, positive_int,
                   resume_command, shell_word, started_by_make)
from startup import in_kernel as in_notebook  # noqa: F401 (used as common.in_notebook)


# ---- 三 data: MNIST from the four idx files or the tutorial's mnist.json.gz --------------------

IDX_FILES = {'train_images': 'train-images-idx3-ubyte', 'train_labels': 'train-labels-idx1-ubyte',
             'test_images': 't10k-images-idx3-ubyte', 'test_labels': 't10k-labels-idx1-ubyte'}
# The canonical files and md5 sums, as PaddlePaddle's own paddle.vision.datasets.MNIST uses them.
MNIST_URL = 'https://dataset.bj.bcebos.com/mnist/'
MNIST_MD5 = {'train_images': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
             'train_labels': 'd53e105ee54ea40749a09fcbcd1e9432',
             'test_images': '9fb629c4189551a2d022fa330f9573f3',
             'test_labels': 'ec29112dd5afa0611ce80d1b7f02629c'}
IDX_MAGIC, SPLITS = {2049: 1, 2051: 3}, ('train', 'valid', 'eval')  # magic: labels 1-D, images 3-D


def read_bytes(path):  # un-gzipped when it is gzip (by content, not by name)
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        return gzip.decompress(raw) if raw[:2] == b'\x1f\x8b' else raw
    except (OSError, EOFError) as e:
        fail(f'{path} is a corrupt gzip file ({e}); delete it and download it again')


def read_idx(path):  # one idx file as a numpy uint8 array
    raw = read_bytes(path)
    magic = int.from_bytes(raw[0:4], 'big') if len(raw) >= 8 else None
    if magic not in IDX_MAGIC:
        fail(f'{path} is not an MNIST idx file (magic number {magic}, expected 2049 for labels '
             f'or 2051 for images)')
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], 'big') for i in range(IDX_MAGIC[magic]))
    header = 4 + 4 * len(shape)
    if len(raw) != header + int(np.prod(shape)):
        fail(f'{path} is truncated or padded: its header promises {header + int(np.prod(shape))} '
             f'bytes, it has {len(raw)}; download it again')
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_file(folder, key):
    return next((os.path.join(folder, name) for name in (IDX_FILES[key] + '.gz', IDX_FILES[key])
                 if os.path.isfile(os.path.join(folder, name))), None)


def normalise_images(images_uint8):  # [N,28,28] -> float32 [N,1,28,28] in [-1, 1], as the tutorial
    images = images_uint8.astype(np.float32).reshape(-1, 1, 28, 28)
    return images / np.float32(127.5) - np.float32(1.0)


def load_idx_folder(folder):
    """The tutorial's split: of 60,000 training images the first 50,000 train and the last 10,000
    validate (a smaller file: its last sixth validates); the 10,000 test images evaluate."""
    files = {k: find_idx_file(folder, k) for k in IDX_FILES}
    if None in files.values():
        missing = ', '.join(IDX_FILES[k] + '[.gz]' for k, p in files.items() if not p)
        fail(f'{folder} lacks the MNIST file(s) {missing}; '
             f'pass --data-dir with a folder holding all four idx files, or a mnist.json.gz')
    arrays = {k: read_idx(path) for k, path in files.items()}
    for part in ('train', 'test'):
        images, labels = arrays[part + '_images'], arrays[part + '_labels']
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            fail(f'{files[part + "_images"]} holds images of shape {images.shape[1:]}, '
                 f'expected 28x28')
        if not len(labels):  # (the json's parts are checked alike)
            fail(f'{files[part + "_images"]} holds no images; download it again, or pass '
                 f'--data-dir with a folder holding all four MNIST files')
        if len(images) != len(labels):
            fail(f'{folder}: the {part} images file has {len(images)} images but the labels file '
                 f'has {len(labels)} labels; one of them is from another data set')
        if len(labels) and labels.max() > 9:
            fail(f'{files[part + "_labels"]} has a label {labels.max()}; MNIST labels are 0-9')
    images, labels = (normalise_images(arrays['train_images']),
                      arrays['train_labels'].astype(np.int64))
    n_train = len(labels) - len(labels) // 6
    return {'train': (images[:n_train], labels[:n_train]),
            'valid': (images[n_train:], labels[n_train:]),
            'eval': (normalise_images(arrays['test_images']),
                     arrays['test_labels'].astype(np.int64))}


def load_json_gz(path):  # the tutorial's file: [train, valid, eval], each [images, labels]
    try:
        data = json.loads(read_bytes(path))
    except (ValueError, UnicodeDecodeError) as e:
        fail(f'{path} is not the course\'s mnist.json.gz (not JSON: {e}); pass --data-dir with '
             f'that file, or a folder holding the four MNIST idx files')
    if not (isinstance(data, list) and len(data) == 3
            and all(isinstance(p, list) and len(p) == 2 for p in data)):
        fail(f'{path} does not have the tutorial\'s layout [train, valid, eval], '
             f'each [images, labels]')
    splits = {}
    for name, (images, labels) in zip(SPLITS, data):
        try:
            x, y = np.asarray(images, dtype=np.float32), np.asarray(labels, dtype=np.int64)
        except (ValueError, TypeError):
            x, y = np.zeros(0), np.zeros(0)
        if x.ndim != 2 or x.shape[1:] != (784,) or len(x) != len(y) or len(x) == 0:
            fail(f'{path}: the {name} part has images of shape {x.shape} and {len(y)} labels; '
                 f'expected [N, 784] images and N labels (numbers only)')
        splits[name] = (x.reshape(-1, 1, 28, 28), y)
    return splits


def resolve_data_source(data_dir=None):  # (kind, path): 'idx' and a folder, or 'json' and a file
    if not data_dir:
        return find_or_download()
    if os.path.isfile(data_dir):
        if os.path.basename(data_dir).split('.')[0] in IDX_FILES.values():
            fail(f'--data-dir {data_dir} is one of the four MNIST idx files; pass the folder '
                 f'that holds all four: --data-dir {shell_word(os.path.dirname(data_dir) or ".")}')
        return 'json', data_dir
    if not os.path.isdir(data_dir):
        fail(f'--data-dir {data_dir} does not exist; pass a folder holding the four MNIST idx '
             f'files or a mnist.json.gz')
    json_path = os.path.join(data_dir, 'mnist.json.gz')
    if os.path.isfile(json_path) and find_idx_file(data_dir, 'train_images') is None:
        return 'json', json_path
    return 'idx', data_dir


def find_or_download():
    """No --data-dir: ./work/, ./, AI Studio's mounted datasets (data/data*/ here or in the home
    folder), else PaddlePaddle's cache (downloading)."""
    mounted = sorted(glob.glob(os.path.join('data', 'data*'))) + sorted(glob.glob(os.path.join(
        os.path.expanduser('~'), 'data', 'data*')))
    for folder in ['work', '.'] + mounted:
        if find_idx_file(folder, 'train_images'):
            return 'idx', folder
        if os.path.isfile(os.path.join(folder, 'mnist.json.gz')):
            return 'json', os.path.join(folder, 'mnist.json.gz')
    import downloads  # only now: a run that finds its data never reads it
    cache = downloads.data_cache('mnist')
    hint = (f'Looked in ./work/, ./ and data/data*/ (here and in ~) for the idx files or '
            f'mnist.json.gz, and in {cache}; on a machine without network '
            f'{pass_flag("--data-dir", "FOLDER", make_variable="DATA_DIR")}, a folder holding them')
    for key, name in IDX_FILES.items():
        downloads.fetch(MNIST_URL + name + '.gz', 'mnist', MNIST_MD5[key], hint)
    return 'idx', cache


def load_mnist_splits(data_dir=None, train_limit=None):
    """{'train', 'valid', 'eval'}: (images float32 [N,1,28,28], labels int64 [N]); the source."""
    kind, path = resolve_data_source(data_dir)
    splits = load_json_gz(path) if kind == 'json' else load_idx_folder(path)
    if len(splits['train'][1]) == 0:
        fail(f'{path} holds no training images')
    if train_limit and train_limit > len(splits['train'][1]):
        print(f'note: --train-limit {train_limit} is more than the '
              f'{len(splits["train"][1]):,} training images; using all of them')
    elif train_limit:
        splits['train'] = tuple(a[:train_limit] for a in splits['train'])
    sizes = {name: int(len(splits[name][1])) for name in SPLITS}
    print(f'data: {kind} from {path}: train {sizes["train"]:,} / valid {sizes["valid"]:,} / '
          f'eval {sizes["eval"]:,} images')
    return splits, {'kind': kind, 'path': os.path.abspath(path), 'sizes': sizes}


def epoch_order(n, seed, epoch):
    """One epoch's order: a function of (seed, epoch) alone, never of global random state, so that a
    run resumed at any epoch (or batch) sees exactly the batches the original run saw."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_sampler(n, batch_size, seed):  # one loop in train() for one process and workers (七):
    rank, world_size = rank_and_world()
    if world_size > 1:  # under the launcher, this worker's part of each batch
        import parallel
        return parallel.WorkerBatchSampler(n, batch_size, seed, rank, world_size)
    return EpochBatchSampler(n, batch_size, seed)


class EpochBatchSampler:
    """A DataLoader's batch_sampler: batches of indices in epoch_order(seed, epoch), from the batch
    set_epoch names (a resumed run starts mid-epoch)."""
    def __init__(self, n, batch_size, seed):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.batches, self.epoch, self.start = math.ceil(n / batch_size), 0, 0

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = epoch, start

    def share_weight(self, b):  # 1: one process trains on all of batch b (workers: parallel.py)
        return 1.0

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch)
        for b in range(self.start, self.batches):
            yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()

    def __len__(self):
        return self.batches - self.start


def softmax(scores):  # shifted by the maximum first: no overflow
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def check_finite(loss, epoch, lr):  # for the scripts without a progress.Tracker
    if not math.isfinite(loss):
        fail(f'the loss became {loss} in epoch {epoch}: training diverged; use a smaller '
             f'learning rate than --lr {lr}')
    return loss


# ---- a run's settings -------------------------------------------------------------------------

def new_config(args, name, script, source, splits, ignore=()):
    """Every option of a new run, its data and the span of its LR schedule: all that resume.py needs
    to rebuild the run, saved in each checkpoint."""
    cfg = {k: v for k, v in vars(args).items()
           if k not in ('predict', 'model') + tuple(ignore)}
    steps_per_epoch = math.ceil(source['sizes']['train'] / args.batch_size)
    cfg.update(name=name, script=script, run_id=uuid.uuid4().hex[:12], data=source,
               steps_per_epoch=steps_per_epoch, schedule_steps=args.epochs * steps_per_epoch,
               train_fingerprint=fingerprint(*splits['train']))
    return cfg


def fingerprint(*arrays):  # so that a resumed run can prove it trains on the same images
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# ---- 七 device and data-parallel workers -------------------------------------------------------

def rank_and_world():  # (this worker's rank, the number of workers): (0, 1) without the launcher
    return (int(os.environ.get('PADDLE_TRAINER_ID', 0)),
            int(os.environ.get('PADDLE_TRAINERS_NUM', 1)))


def worker_layout():  # what a checkpoint records, so that resume_command names the same launch
    return {'workers': rank_and_world()[1], 'nodes': int(os.environ.get('PADDLE_NNODES', 1))}


def select_device(name='auto'):
    """'auto' | 'cpu' | 'gpu': the device set in paddle (on a GPU cuDNN made deterministic); under
    paddle.distributed.launch it also joins the workers (each prints into its own log)."""
    import paddle
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == 'gpu' and not has_gpu:
        fail('--device gpu was asked for, but this PaddlePaddle has no CUDA or sees no GPU; '
             'use --device cpu (or auto), or install paddlepaddle-gpu')
    world_size, device = rank_and_world()[1], 'cpu'
    if name in ('gpu', 'auto') and has_gpu:
        device = f'gpu:{paddle.distributed.ParallelEnv().device_id if world_size > 1 else 0}'
        paddle.set_flags({'FLAGS_cudnn_deterministic': True})  # same seed, same losses on a GPU
    paddle.set_device(device)
    if world_size > 1 and not paddle.distributed.is_initialized():
        paddle.distributed.init_parallel_env()  # gloo between CPU workers, NCCL between GPUs
    print(f'device: {device}' + (f', {world_size} data-parallel workers' if world_size > 1 else ''))
    return device
