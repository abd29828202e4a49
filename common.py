"""What the scripts share: data, device, seeding, the training loop, checkpoints, metrics and plots.

Each script (mnist_cnn.py, resume.py, ...) reads top to bottom; this file holds only the parts
they would otherwise repeat. Sections map to the tutorial (../shared/reference/003_*.txt):
三 data processing, 六 optimizers, 七 device, 八 accuracy / evaluation / plots, 九 checkpoints.
"""
import argparse
import gzip
import hashlib
import json
import math
import os
import platform
import signal
import sys
import time
import uuid
import warnings

import numpy as np


def cpu_vendor():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('vendor_id'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


# The paddle wheel bundles an MKL that takes a slow generic code path on AMD CPUs unless this is set
# before paddle is imported (measured in bench.py). Only on AMD, and a user's own setting wins.
if cpu_vendor() == 'AuthenticAMD':
    os.environ.setdefault('MKL_DEBUG_CPU_TYPE', '5')

# paddle warns at import that ccache (a C++ build cache) is missing: irrelevant to these scripts.
# (paddle resets warning filters while importing, so catch and re-emit instead of filtering.)
with warnings.catch_warnings(record=True) as _caught:
    import paddle  # noqa: E402  (after the environment switch above)
    import paddle.nn.functional as F  # noqa: E402
for _w in _caught:
    if 'ccache' not in str(_w.message):
        warnings.warn_explicit(_w.message, _w.category, _w.filename, _w.lineno)


class UserError(Exception):
    """A problem the user can fix (bad data, flag or checkpoint); printed as one sentence, exit 1."""


def fail(message):
    raise UserError(message)


# --------------------------------------------------------------------------------------------
# Command line: shared flags, checked values, Jupyter's own "-f kernel.json" argument ignored
# --------------------------------------------------------------------------------------------

def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}')
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be greater than 0, got {value}')
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}')
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f'must be a finite number greater than 0, got {text}')
    return value


def non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}')
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f'must be a finite number >= 0, got {text}')
    return value


def add_run_args(parser, out, ckpt_dir='checkpoint'):
    """Flags every training script has: where data comes from, where results go, on which device."""
    parser.add_argument('--data-dir', default=None,
                        help='folder with the four MNIST idx files or mnist.json.gz, or the json file '
                             '(default: ./work/ (mnist.json.gz or idx files), else PaddlePaddle\'s cache, '
                             'downloading there)')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'gpu'],
                        help='auto = the first GPU when PaddlePaddle has CUDA and sees one, else CPU')
    parser.add_argument('--out', default=out, help='run folder for metrics.json, plots and the final model')
    parser.add_argument('--ckpt-dir', default=ckpt_dir, help='folder for the per-epoch checkpoints')
    parser.add_argument('--log-every', type=positive_int, default=100, help='print a line every N batches')


def add_predict_args(parser):
    parser.add_argument('--predict', metavar='IMAGE',
                        help='classify one PNG/JPG digit with the model trained into --out, then stop')
    parser.add_argument('--model', default=None, help='model file for --predict (default: <out>/model.pdparams)')


def parse_args(parser, argv=None):
    """argparse, but tolerant of the '-f /path/kernel.json' that Jupyter adds to sys.argv."""
    args = list(sys.argv[1:] if argv is None else argv)
    cleaned, i = [], 0
    while i < len(args):
        if args[i] == '-f' and i + 1 < len(args) and args[i + 1].endswith('.json'):
            i += 2
            continue
        if args[i].startswith('--f=') and args[i].endswith('.json'):
            i += 1
            continue
        cleaned.append(args[i])
        i += 1
    return parser.parse_args(cleaned)


def run_main(main_fn, argv=None):
    """Run a script's main; a UserError becomes one 'error: ...' line and exit code 1."""
    try:
        return main_fn(argv)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(1)


# --------------------------------------------------------------------------------------------
# 三 Data: MNIST from the four idx files or the tutorial's mnist.json.gz
# --------------------------------------------------------------------------------------------

IDX_FILES = {
    'train_images': 'train-images-idx3-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
}
# The canonical files and md5 sums, as PaddlePaddle's own paddle.vision.datasets.MNIST uses them.
MNIST_URL = 'https://dataset.bj.bcebos.com/mnist/'
MNIST_MD5 = {
    'train_images': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
    'train_labels': 'd53e105ee54ea40749a09fcbcd1e9432',
    'test_images': '9fb629c4189551a2d022fa330f9573f3',
    'test_labels': 'ec29112dd5afa0611ce80d1b7f02629c',
}
IDX_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dimension, images: 3 dimensions
SPLITS = ('train', 'valid', 'eval')


def read_bytes(path):
    """The file's bytes, un-gzipped when it is gzip (by content, not by name)."""
    with open(path, 'rb') as f:
        raw = f.read()
    if raw[:2] == b'\x1f\x8b':
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            fail(f'{path} is a corrupt gzip file ({e}); delete it and download it again')
    return raw


def read_idx(path):
    """One idx file as a numpy uint8 array, read in one vectorised step (no per-pixel loop)."""
    raw = read_bytes(path)
    if len(raw) < 8:
        fail(f'{path} is too short to be an idx file ({len(raw)} bytes); download it again')
    magic = int.from_bytes(raw[0:4], 'big')
    if magic not in IDX_MAGIC:
        fail(f'{path} is not an MNIST idx file (magic number {magic}, expected 2049 for labels '
             f'or 2051 for images)')
    ndim = IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        fail(f'{path} is truncated or padded: its header promises {expected} bytes, '
             f'it has {len(raw)}; download it again')
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_file(folder, key):
    for name in (IDX_FILES[key] + '.gz', IDX_FILES[key]):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def normalise_images(images_uint8):
    """uint8 [N,28,28] -> float32 [N,1,28,28] in [-1, 1], background -1 (as the tutorial's data)."""
    images = images_uint8.astype(np.float32).reshape(-1, 1, 28, 28)
    return images / np.float32(127.5) - np.float32(1.0)


def split_train_valid(images, labels):
    """Tutorial split: of 60,000 training images the first 50,000 train, the last 10,000 validate;
    for a smaller training file the last sixth validates."""
    n_valid = len(images) // 6
    n_train = len(images) - n_valid
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])


def load_idx_folder(folder):
    missing = [IDX_FILES[k] + '[.gz]' for k in IDX_FILES if find_idx_file(folder, k) is None]
    if missing:
        fail(f'{folder} lacks the MNIST file(s) {", ".join(missing)}; '
             f'pass --data-dir with a folder holding all four idx files, or a mnist.json.gz')
    arrays = {k: read_idx(find_idx_file(folder, k)) for k in IDX_FILES}
    for part in ('train', 'test'):
        images, labels = arrays[part + '_images'], arrays[part + '_labels']
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            fail(f'{find_idx_file(folder, part + "_images")} holds images of shape {images.shape[1:]}, '
                 f'expected 28x28')
        if len(images) != len(labels):
            fail(f'{folder}: the {part} images file has {len(images)} images but the labels file '
                 f'has {len(labels)} labels; one of them is from another data set')
        if len(labels) and labels.max() > 9:
            fail(f'{find_idx_file(folder, part + "_labels")} has a label {labels.max()}; MNIST labels are 0-9')
    train_images = normalise_images(arrays['train_images'])
    train_labels = arrays['train_labels'].astype(np.int64)
    train, valid = split_train_valid(train_images, train_labels)
    evaluation = (normalise_images(arrays['test_images']), arrays['test_labels'].astype(np.int64))
    return {'train': train, 'valid': valid, 'eval': evaluation}


def load_json_gz(path):
    """The tutorial's mnist.json.gz: [train, valid, eval], each [images (784 floats each), labels]."""
    try:
        data = json.loads(read_bytes(path))
    except (ValueError, UnicodeDecodeError) as e:
        fail(f'{path} is not valid JSON ({e}); download mnist.json.gz again')
    if not (isinstance(data, list) and len(data) == 3 and all(
            isinstance(part, list) and len(part) == 2 for part in data)):
        fail(f'{path} does not have the tutorial\'s layout [train, valid, eval], '
             f'each [images, labels]')
    splits = {}
    for name, (images, labels) in zip(SPLITS, data):
        try:
            x = np.asarray(images, dtype=np.float32)
            y = np.asarray(labels, dtype=np.int64)
        except (ValueError, TypeError):
            fail(f'{path}: the {name} part has images of unequal length or non-numeric values')
        if x.ndim != 2 or x.shape[1] != 784 or len(x) != len(y) or len(x) == 0:
            fail(f'{path}: the {name} part has images of shape {x.shape} and {len(y)} labels; '
                 f'expected [N, 784] images and N labels')
        splits[name] = (x.reshape(-1, 1, 28, 28), y)
    return splits


def paddle_cache_dir():
    return os.path.join(os.path.expanduser('~'), '.cache', 'paddle', 'dataset', 'mnist')


def download(url, module, md5, hint):
    """Fetch url into PaddlePaddle's cache (~/.cache/paddle/dataset/<module>/) with the framework's
    own downloader, which uses a cached file whose md5 matches, else downloads and checks it (3
    tries); one clear error when that fails, naming a cached file whose md5 is wrong."""
    from paddle.dataset.common import DATA_HOME, download as paddle_download
    try:
        return paddle_download(url, module, md5)
    except Exception as e:  # no network, or a file whose md5 never matched
        cached = os.path.join(DATA_HOME, module, url.split('/')[-1])
        if os.path.isfile(cached) and file_digest(cached, 'md5') != md5:
            hint = (f'The cached {cached} has md5 {file_digest(cached, "md5")}, not the expected {md5}: '
                    f'it is damaged or another file; delete it, or pass --data-dir')
        fail(f'the download of {url} failed ({e}). {hint}')


def download_mnist():
    """The four idx files in PaddlePaddle's cache, as paddle.vision.datasets.MNIST keeps them."""
    hint = (f'Looked for ./work/mnist.json.gz and the idx files in {paddle_cache_dir()}; on a machine '
            f'without network pass --data-dir with a folder holding the four idx files or mnist.json.gz')
    for key, name in IDX_FILES.items():
        download(MNIST_URL + name + '.gz', 'mnist', MNIST_MD5[key], hint)
    return paddle_cache_dir()


def resolve_data_source(data_dir=None):
    """Where MNIST comes from: (kind, path) with kind 'idx' (folder) or 'json' (file)."""
    if data_dir:
        if os.path.isfile(data_dir):
            return 'json', data_dir
        if not os.path.isdir(data_dir):
            fail(f'--data-dir {data_dir} does not exist; pass a folder holding the four MNIST idx '
                 f'files or a mnist.json.gz')
        json_path = os.path.join(data_dir, 'mnist.json.gz')
        if os.path.isfile(json_path) and find_idx_file(data_dir, 'train_images') is None:
            return 'json', json_path
        return 'idx', data_dir
    if os.path.isfile(os.path.join('work', 'mnist.json.gz')):  # AI Studio's layout
        return 'json', os.path.join('work', 'mnist.json.gz')
    if find_idx_file('work', 'train_images'):  # the idx files put in AI Studio's data folder
        return 'idx', 'work'
    return 'idx', download_mnist()  # PaddlePaddle's cache, md5-checked, downloading what is missing


def load_mnist_splits(data_dir=None, verbose=True):
    """All three splits {'train', 'valid', 'eval'} -> (images float32 [N,1,28,28], labels int64 [N]),
    plus a description of the source."""
    kind, path = resolve_data_source(data_dir)
    splits = load_json_gz(path) if kind == 'json' else load_idx_folder(path)
    sizes = {name: int(len(splits[name][1])) for name in SPLITS}
    if sizes['train'] == 0:
        fail(f'{path} holds no training images')
    source = {'kind': kind, 'path': os.path.abspath(path), 'sizes': sizes}
    if verbose:
        print(f'data: {kind} from {path}: train {sizes["train"]:,} / valid {sizes["valid"]:,} / '
              f'eval {sizes["eval"]:,} images')
    return splits, source


def load_mnist(split, data_dir=None):
    """One split as numpy arrays: images float32 [N,1,28,28] in [-1, 1], labels int64 [N]."""
    if split not in SPLITS:
        fail(f'unknown split {split!r}; use one of {", ".join(SPLITS)}')
    splits, _ = load_mnist_splits(data_dir, verbose=False)
    return splits[split]


def limit_train(splits, source, train_limit):
    """--train-limit N: the first N training images (clamped, with a notice, to what there is).
    Returns (splits, source) with the training split and its recorded size cut to N."""
    available = source['sizes']['train']
    if not train_limit:
        return splits, source
    if train_limit > available:
        print(f'note: --train-limit {train_limit} is more than the {available:,} training images; '
              f'using all of them')
        return splits, source
    images, labels = splits['train']
    return (dict(splits, train=(images[:train_limit], labels[:train_limit])),
            dict(source, sizes=dict(source['sizes'], train=train_limit)))


def fingerprint(*arrays):
    """A short hash of the training data, so a resumed run can prove it trains on the same images."""
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def epoch_order(n, seed, epoch):
    """The order of one epoch: a pure function of (seed, epoch), never of global random state,
    so a run resumed at any epoch (or batch) sees exactly the batches the original run saw."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batches(images, labels, batch_size, seed=None, epoch=0, start=0):
    """Yield (batch_index, images, labels); shuffled by (seed, epoch) when seed is given.
    The last batch may be smaller (as the tutorial's loader). start skips batches already done."""
    n = len(labels)
    order = epoch_order(n, seed, epoch) if seed is not None else np.arange(n)
    for b in range(start, math.ceil(n / batch_size)):
        idx = order[b * batch_size:(b + 1) * batch_size]
        yield b, images[idx], labels[idx]


# --------------------------------------------------------------------------------------------
# 七 Device and seeding
# --------------------------------------------------------------------------------------------

def select_device(name='auto'):
    """'auto' | 'cpu' | 'gpu' -> the device set in paddle; on GPU, cuDNN is made deterministic."""
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == 'gpu' and not has_gpu:
        fail('--device gpu was asked for, but this PaddlePaddle has no CUDA or sees no GPU; '
             'use --device cpu (or auto), or install paddlepaddle-gpu')
    device = 'gpu:0' if name in ('gpu', 'auto') and has_gpu else 'cpu'
    if device.startswith('gpu'):
        # Deterministic cuDNN algorithms: same seed -> same losses on the GPU too (a little slower).
        paddle.set_flags({'FLAGS_cudnn_deterministic': True})
    paddle.set_device(device)
    print(f'device: {device}')
    return device


def seed_everything(seed):
    """Seeds paddle (weight initialisation) and numpy's legacy global generator. Shuffling does not
    rely on either: see epoch_order."""
    paddle.seed(seed)
    np.random.seed(seed)


# --------------------------------------------------------------------------------------------
# 五/六 Loss and optimizer
# --------------------------------------------------------------------------------------------

OPTIMIZERS = ('sgd', 'momentum', 'adagrad', 'adam')


def add_train_args(parser, epochs, lr, opt, schedule, loss='ce', batch_size=100):
    parser.add_argument('--epochs', type=positive_int, default=epochs, help='passes over the training split')
    parser.add_argument('--batch-size', type=positive_int, default=batch_size, help='images per step')
    parser.add_argument('--lr', type=positive_float, default=lr, help='(initial) learning rate')
    parser.add_argument('--seed', type=int, default=0,
                        help='initial weights and every epoch\'s order derive from it')
    parser.add_argument('--loss', default=loss, choices=['ce', 'mse'],
                        help='ce: 10-way softmax + cross-entropy; mse: one output regressing the digit')
    parser.add_argument('--opt', default=opt, choices=OPTIMIZERS, help='optimizer (stage 六)')
    parser.add_argument('--schedule', default=schedule, choices=['poly', 'constant'],
                        help='poly: PolynomialDecay from --lr to --lr/10 over all steps (stage 九)')
    parser.add_argument('--l2', type=non_negative_float, default=0.0,
                        help='L2 regularisation coefficient (stage 八), 0 = off')
    parser.add_argument('--train-limit', type=positive_int, default=None,
                        help='use only the first N training images (quick runs)')
    parser.add_argument('--overwrite', action='store_true',
                        help='allow replacing another run\'s checkpoints in --ckpt-dir')


def build_optimizer(cfg, parameters):
    """(optimizer, LR scheduler or None) from the config (the tutorial's stage 六 and 九)."""
    lr = cfg['lr']
    if cfg['schedule'] == 'poly':
        lr = paddle.optimizer.lr.PolynomialDecay(cfg['lr'], decay_steps=cfg['schedule_steps'],
                                                 end_lr=cfg['lr'] / 10)
    l2 = paddle.regularizer.L2Decay(cfg['l2']) if cfg['l2'] else None
    optimizers = {
        'sgd': lambda: paddle.optimizer.SGD(lr, parameters=parameters, weight_decay=l2),
        'momentum': lambda: paddle.optimizer.Momentum(lr, momentum=0.9, parameters=parameters,
                                                      weight_decay=l2),
        'adagrad': lambda: paddle.optimizer.Adagrad(lr, parameters=parameters, weight_decay=l2),
        'adam': lambda: paddle.optimizer.Adam(lr, parameters=parameters, weight_decay=l2),
    }
    optimizer = optimizers[cfg['opt']]()
    return optimizer, (lr if cfg['schedule'] == 'poly' else None)


def loss_and_correct(output, labels, loss_kind):
    """Mean loss tensor and the number of correct predictions in a batch.
    ce: output is [N,10] logits; mse: output is [N,1], the digit as a number (rounded to score)."""
    if loss_kind == 'ce':
        loss = F.cross_entropy(output, labels)
        predicted = output.argmax(axis=1)
    else:
        loss = F.mse_loss(output, labels.astype('float32').reshape([-1, 1]))
        predicted = output.reshape([-1]).round().clip(0, 9).astype('int64')
    correct = int((predicted == labels).astype('int64').sum())
    return loss, correct


@paddle.no_grad()
def evaluate(model, images, labels, loss_kind, batch_size=500):
    """Mean loss and accuracy over a whole split (stage 八: evaluation on held-out data).
    Batches of 500: on a 2-core CPU 10,000 images take ~2.2 s; batches of 1,000+ are slower (bench.py)."""
    model.eval()
    total_loss, total_correct, total_abs = 0.0, 0, 0.0
    for _, x, y in batches(images, labels, batch_size):
        output = model(paddle.to_tensor(x))
        loss, correct = loss_and_correct(output, paddle.to_tensor(y), loss_kind)
        total_loss += float(loss) * len(y)
        total_correct += correct
        if loss_kind == 'mse':  # regression: how far off is the predicted number, on average
            total_abs += float(np.abs(output.numpy()[:, 0] - y).sum())
    model.train()
    n = max(len(labels), 1)
    result = {'loss': total_loss / n, 'acc': total_correct / n}
    if loss_kind == 'mse':
        result['mae'] = total_abs / n
    return result


# --------------------------------------------------------------------------------------------
# Files: atomic writes, checkpoints (九), metrics and plots (八)
# --------------------------------------------------------------------------------------------

def atomic_write(path, write):
    """write(tmp_path) then rename over path: readers see the old file or the new one, never half."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.tmp{os.getpid()}')
    try:
        write(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
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
    except (ValueError, UnicodeDecodeError):
        fail(f'{path} is not valid JSON; expected a {what}')


def file_digest(path, algorithm='sha256'):
    h = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(prefix, model, optimizer, meta):
    """prefix.pdparams (model), prefix.pdopt (optimizer + LR schedule), then prefix.json with
    progress, config and the two files' sha256: the json is written last, so a checkpoint whose
    json verifies is complete and its two files belong together."""
    files = {'pdparams': model.state_dict()}
    if optimizer is not None:
        files['pdopt'] = optimizer.state_dict()
    hashes = {}
    for ext, state in files.items():
        path = f'{prefix}.{ext}'
        with warnings.catch_warnings():  # plain SGD has no optimizer state: paddle warns, we still
            warnings.filterwarnings('ignore', message='The input state dict is empty')  # want the file
            atomic_write(path, lambda tmp, state=state: paddle.save(state, tmp))
        hashes[ext] = file_digest(path)
    write_json(prefix + '.json', dict(meta, files=hashes))


def checkpoint_prefix(path):
    for ext in ('.pdparams', '.pdopt', '.json'):
        if path.endswith(ext):
            return path[:-len(ext)]
    return path


def read_checkpoint_meta(prefix):
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
    except (ValueError, KeyError, TypeError):
        fail(f'{meta_path} is not a checkpoint description written by these scripts')
    for ext, digest in hashes.items():
        path = f'{prefix}.{ext}'
        if not os.path.isfile(path):
            fail(f'{path} is missing: the checkpoint {prefix} needs both its .pdparams and .pdopt files')
        if file_digest(path) != digest:
            fail(f'{path} is damaged or belongs to another run (its sha256 differs from the one '
                 f'recorded in {meta_path}); resume from another checkpoint')
    return meta


def list_checkpoints(folder):
    """Complete checkpoints in a folder (json present and verified), oldest first by progress."""
    found = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith('.json') and not name.startswith('.'):
                prefix = os.path.join(folder, name[:-5])
                try:
                    meta = read_checkpoint_meta(prefix)
                except UserError:
                    continue
                if 'global_step' in meta:
                    found.append((meta['global_step'], prefix, meta))
    found.sort(key=lambda item: item[0])
    return found


def find_checkpoint(path):
    """--ckpt: a prefix (checkpoint/mnist_epoch0), one of its files, a folder, or 'latest'
    (the newest complete checkpoint in ./checkpoint). Returns (prefix, meta)."""
    if path == 'latest':
        path = 'checkpoint'
    if os.path.isdir(path):
        found = list_checkpoints(path)
        if not found:
            fail(f'{path} holds no complete checkpoint; train first (make cnn) or pass --ckpt-dir')
        _, prefix, meta = found[-1]
        print(f'newest complete checkpoint in {path}: {prefix}')
        return prefix, meta
    prefix = checkpoint_prefix(path)
    return prefix, read_checkpoint_meta(prefix)


def load_state(path, what):
    try:
        return paddle.load(path)
    except Exception as e:
        fail(f'{path} cannot be read as a PaddlePaddle {what} ({type(e).__name__}); it is damaged')


def load_model_state(model, path):
    """Load parameters, naming every parameter that is missing, extra or of another shape."""
    state = load_state(path, 'parameter file')
    if not isinstance(state, dict):
        fail(f'{path} is not a parameter file (it holds a {type(state).__name__})')
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    found = {k: list(np.shape(v)) for k, v in state.items()}
    def names(keys):
        return ', '.join(keys[:6]) + (f' and {len(keys) - 6} more' if len(keys) > 6 else '')
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [f'{k} is {found[k]}, needs {expected[k]}' for k in expected
                if k in found and found[k] != expected[k]]
    problems = [f'{label} {names(keys)}' for label, keys in
                (('missing', missing), ('unexpected', unexpected), ('wrong shape:', reshaped)) if keys]
    if problems:
        fail(f'{path} does not fit this model ({type(model).__name__}): {"; ".join(problems)}; '
             f'it is a checkpoint of another model or other settings')
    model.set_state_dict(state)


def load_optimizer_state(optimizer, path):
    state = load_state(path, 'optimizer file')
    try:
        optimizer.set_state_dict(state)
    except Exception as e:
        fail(f'{path} does not fit this optimizer ({e}); it is from another model or optimizer')


# Settings that do not change what training computes (where files go, how the data was named).
NOT_TRAJECTORY = ('out', 'ckpt_dir', 'device', 'data_dir', 'data')


def same_trajectory(cfg_a, cfg_b):
    strip = lambda cfg: {k: v for k, v in cfg.items() if k not in NOT_TRAJECTORY}
    return strip(cfg_a) == strip(cfg_b)


def check_ckpt_dir_free(ckpt_dir, name, cfg, overwrite):
    """Never silently overwrite another run's checkpoints: the same settings rewrite the same bits
    (training is deterministic), anything else needs --overwrite or another --ckpt-dir."""
    if overwrite:
        return
    for _, prefix, meta in list_checkpoints(ckpt_dir):
        if os.path.basename(prefix).startswith(name + '_') and not same_trajectory(meta.get('config', {}), cfg):
            fail(f'{ckpt_dir} holds checkpoints of another run ({prefix}, other settings); pass '
                 f'--overwrite to replace them or --ckpt-dir to keep them')


# --------------------------------------------------------------------------------------------
# The training loop (stages 五-九): one per-batch step, per-epoch evaluation, checkpoints
# --------------------------------------------------------------------------------------------

class Interrupted(Exception):
    pass


class _StopOnSigint:
    """Ctrl-C sets a flag; the loop finishes the current step, saves a checkpoint and stops,
    so the saved state is always between two whole steps."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C keeps its default behaviour
            pass
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        print('\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort)',
              flush=True)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(model, optimizer, scheduler, cfg, splits, run, start_epoch=0, start_batch=0, partial=None):
    """Train from (start_epoch, start_batch) to cfg['epochs']; checkpoint at every epoch's end.

    run: {'name', 'script', 'run_id', 'ckpt_dir', 'log_every'}; partial: the running sums of an
    epoch interrupted mid-way (from its checkpoint). Returns the metrics of what this call trained.
    """
    train_x, train_y = splits['train']
    valid_x, valid_y = splits['valid']
    batch_size, loss_kind = cfg['batch_size'], cfg['loss']
    steps_per_epoch = math.ceil(len(train_y) / batch_size)
    first_step = start_epoch * steps_per_epoch + start_batch
    record = {'batch_losses': [], 'epochs': [], 'first_step': first_step,
              'steps_per_epoch': steps_per_epoch}
    model.train()

    def checkpoint(prefix_name, epoch, next_epoch, next_batch, sums):
        meta = {'format': 1, 'script': run['script'], 'model': run['name'], 'run_id': run['run_id'],
                'epoch': epoch, 'next_epoch': next_epoch, 'next_batch': next_batch,
                'global_step': next_epoch * steps_per_epoch + next_batch, 'partial': sums,
                'config': cfg, 'paddle_version': paddle.__version__}
        prefix = os.path.join(run['ckpt_dir'], prefix_name)
        save_checkpoint(prefix, model, optimizer, meta)
        return prefix

    with _StopOnSigint() as sigint:
        for epoch in range(start_epoch, cfg['epochs']):
            first = start_batch if epoch == start_epoch else 0
            sums = dict(partial) if (partial and epoch == start_epoch) else {
                'loss': 0.0, 'correct': 0, 'seen': 0, 'seconds': 0.0}
            epoch_start = time.perf_counter()
            for b, x, y in batches(train_x, train_y, batch_size, cfg['seed'], epoch, first):
                images, labels = paddle.to_tensor(x), paddle.to_tensor(y)
                loss, correct = loss_and_correct(model(images), labels, loss_kind)
                loss.backward()
                optimizer.step()
                optimizer.clear_grad()
                if scheduler is not None:
                    scheduler.step()
                value = float(loss)
                if not math.isfinite(value):
                    fail(f'the loss became {value} at epoch {epoch}, batch {b}: training diverged. '
                         f'Use a smaller learning rate (now --lr {cfg["lr"]}); the checkpoints saved '
                         f'before this batch in {run["ckpt_dir"]} are intact')
                record['batch_losses'].append(value)
                sums['loss'] += value * len(y)
                sums['correct'] += correct
                sums['seen'] += len(y)
                if b % run['log_every'] == 0:
                    elapsed = time.perf_counter() - epoch_start
                    eta = elapsed / (b + 1 - first) * (steps_per_epoch - b - 1)
                    print(f'epoch: {epoch}, batch: {b}, loss is: {value:.8f}, acc is {correct / len(y):.2f} '
                          f'({elapsed:.0f}s, epoch ETA {eta:.0f}s)', flush=True)
                if sigint.requested and b + 1 < steps_per_epoch:  # on the last batch: finish the epoch
                    sums['seconds'] += time.perf_counter() - epoch_start
                    prefix = checkpoint(f'{run["name"]}_interrupted', epoch, epoch, b + 1, sums)
                    raise Interrupted(prefix)
            seconds = sums['seconds'] + time.perf_counter() - epoch_start
            valid = evaluate(model, valid_x, valid_y, loss_kind) if len(valid_y) else {'loss': None, 'acc': None}
            row = {'epoch': epoch, 'train_loss': sums['loss'] / sums['seen'],
                   'train_acc': sums['correct'] / sums['seen'],
                   'valid_loss': valid['loss'], 'valid_acc': valid['acc'],
                   'samples_per_s': sums['seen'] / max(seconds, 1e-9), 'seconds': seconds}
            record['epochs'].append(row)
            prefix = checkpoint(f'{run["name"]}_epoch{epoch}', epoch, epoch + 1, 0, None)
            valid_text = f'{row["valid_loss"]:.4f} / {row["valid_acc"]:.4f}' if len(valid_y) else 'n/a'
            print(f'epoch {epoch}: train loss {row["train_loss"]:.4f} acc {row["train_acc"]:.4f} | '
                  f'valid loss/acc {valid_text} | {row["samples_per_s"]:.0f} samples/s, '
                  f'{seconds:.1f} s | saved {prefix}.pdparams/.pdopt', flush=True)
            if sigint.requested and epoch + 1 < cfg['epochs']:
                raise Interrupted(prefix)  # the epoch's own checkpoint is the place to resume
    return record


def run_and_report(train_fn):
    """Call train_fn(); turn Ctrl-C's Interrupted into the resume hint and exit code 130."""
    try:
        return train_fn()
    except Interrupted as e:
        print(f'stopped; saved {e}.pdparams/.pdopt. Continue with: python resume.py --ckpt {e}',
              file=sys.stderr)
        raise SystemExit(130)


def write_metrics(out, cfg, record, eval_result, wall_s, device, extra=None):
    """<out>/metrics.json: the keys every training script writes, so runs can be compared."""
    metrics = {'config': cfg, 'batch_losses': record['batch_losses'],
               'first_step': record['first_step'], 'steps_per_epoch': record['steps_per_epoch'],
               'epochs': record['epochs'], 'eval': eval_result, 'wall_s': wall_s,
               'paddle_version': paddle.__version__, 'device': device}
    metrics.update(extra or {})
    write_json(os.path.join(out, 'metrics.json'), metrics)
    return metrics


def prepare_run(args, name, ignore=()):
    """Data, config and a free checkpoint folder for a new training run.
    Returns (splits, cfg); cfg holds every option, the data source and sizes, and what the LR
    schedule spans, so that resume.py can rebuild the run from a checkpoint alone."""
    splits, source = load_mnist_splits(args.data_dir)
    splits, source = limit_train(splits, source, args.train_limit)
    steps_per_epoch = math.ceil(source['sizes']['train'] / args.batch_size)
    not_config = ('predict', 'model', 'overwrite', 'log_every') + tuple(ignore)
    cfg = {k: v for k, v in vars(args).items() if k not in not_config}
    cfg.update(data=source, schedule_steps=args.epochs * steps_per_epoch,
               train_fingerprint=fingerprint(*splits['train']))
    check_ckpt_dir_free(args.ckpt_dir, name, cfg, args.overwrite)
    return splits, cfg


def new_run(name, script, ckpt_dir, log_every, run_id=None):
    return {'name': name, 'script': script, 'run_id': run_id or uuid.uuid4().hex[:12],
            'ckpt_dir': ckpt_dir, 'log_every': log_every}


def finish_run(model, cfg, splits, record, run, out, device, wall_start, title, extra=None):
    """After training: evaluate on the eval split (八), save the final model, metrics.json, plots."""
    result = None
    if len(splits['eval'][1]):
        result = evaluate(model, *splits['eval'], cfg['loss'])
        mae = f', mean absolute error {result["mae"]:.4f}' if 'mae' in result else ''
        print(f'eval: loss {result["loss"]:.4f}, accuracy {result["acc"]:.4f}{mae} '
              f'on {len(splits["eval"][1]):,} images')
    save_checkpoint(os.path.join(out, 'model'), model, None,
                    {'script': run['script'], 'run_id': run['run_id'], 'config': cfg})
    metrics = write_metrics(out, cfg, record, result, time.perf_counter() - wall_start, device,
                            dict(extra or {}, run_id=run['run_id']))
    plots = save_plots(metrics, out, title)
    print(f'wrote {out}/metrics.json, {", ".join(plots)} and {out}/model.pdparams')
    return metrics


def predict_from_run(args, script, build_model):
    """--predict IMAGE: rebuild the model trained into --out (or --model) and classify one image."""
    prefix = checkpoint_prefix(args.model or os.path.join(args.out, 'model'))
    meta = read_checkpoint_meta(prefix)
    if meta.get('script') != script:
        fail(f'{prefix}.pdparams was trained by {meta.get("script")}.py, not {script}.py; '
             f'use that script\'s --predict')
    image = load_digit_image(args.predict)  # check the image before building anything
    with paddle.utils.unique_name.guard():
        model = build_model(meta['config'])
        load_model_state(model, prefix + '.pdparams')
        digit, prob = predict_digit(model, image, meta['config']['loss'])
    detail = f' (probability {prob:.4f})' if prob is not None else ' (regression output, rounded)'
    print(f'predicted digit: {digit}{detail}')
    return digit, prob


def in_notebook():
    return 'ipykernel' in sys.modules


def pyplot():
    import matplotlib
    if not in_notebook():
        matplotlib.use('Agg')  # headless: files only
    import matplotlib.pyplot as plt
    return plt


def plot_lines(path, series, title, xlabel, ylabel, markers=False, logy=False):
    """One PNG with a line per entry of series {label: (x, y)}; shown inline in a notebook too."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (x, y) in series.items():
        ax.plot(x, y, marker='o' if markers else None, linewidth=1 if not markers else 1.5, label=label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale('log')
    if markers:  # per-epoch plots: whole-number ticks
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    if in_notebook():
        plt.show()
    plt.close(fig)
    return path


def save_plots(metrics, out, title):
    """loss.png (training loss of every batch) and acc.png (train/valid accuracy per epoch)."""
    steps = np.arange(len(metrics['batch_losses'])) + metrics.get('first_step', 0)
    paths = [plot_lines(os.path.join(out, 'loss.png'),
                        {'train loss (per batch)': (steps, metrics['batch_losses'])},
                        f'{title}: training loss', 'step (batch)', 'loss')]
    rows = metrics['epochs']
    if rows:
        epochs = [r['epoch'] for r in rows]
        series = {'train': (epochs, [r['train_acc'] for r in rows])}
        if rows[0]['valid_acc'] is not None:
            series['valid'] = (epochs, [r['valid_acc'] for r in rows])
        paths.append(plot_lines(os.path.join(out, 'acc.png'), series, f'{title}: accuracy per epoch',
                                'epoch', 'accuracy', markers=True))
    return paths


# --------------------------------------------------------------------------------------------
# Prediction on one image file (stage 五's load_image)
# --------------------------------------------------------------------------------------------

def load_digit_image(path):
    """A PNG/JPG digit -> float32 [1,1,28,28] normalised like the data (background -1, ink +1).
    Dark-on-light images (ink on paper) are inverted to MNIST's light-on-dark."""
    from PIL import Image, UnidentifiedImageError
    if not os.path.isfile(path):
        fail(f'--predict {path}: no such file')
    try:
        with Image.open(path) as im:
            gray = np.asarray(im.convert('L').resize((28, 28), Image.LANCZOS), dtype=np.float32)
    except (UnidentifiedImageError, OSError) as e:
        fail(f'--predict {path} is not an image PIL can read ({e}); give a PNG or JPG of one digit')
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.mean() > 127:
        gray = 255.0 - gray
    return (gray / 127.5 - 1.0).reshape(1, 1, 28, 28).astype(np.float32)


@paddle.no_grad()
def predict_digit(model, image, loss_kind):
    """(digit, probability or None) for one [1,1,28,28] image."""
    model.eval()
    output = model(paddle.to_tensor(image)).numpy()[0]
    if loss_kind == 'ce':
        probs = np.exp(output - output.max())
        probs /= probs.sum()
        return int(probs.argmax()), float(probs.max())
    return int(np.clip(np.round(output[0]), 0, 9)), None
