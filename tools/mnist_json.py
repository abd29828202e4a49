"""Write the course's mnist.json.gz from the four standard MNIST files (`make data-json`).

The course loads ./work/mnist.json.gz, a file that exists only as an attachment to its AI Studio
project (Paddle#55146). This writes it in the tutorial's layout: a JSON list [train, valid, eval],
each [images, labels], every image 784 numbers in [-1, 1] (background -1), 50,000 / 10,000 /
10,000 images from the full MNIST. Each number is written in its shortest form that reads back
as the same float32, so training on this file gives the same losses as on the idx files.

    python tools/mnist_json.py --data-dir ../shared/data/mnist --out work/mnist.json.gz
"""
import argparse
import gzip
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the stage scripts
import startup
startup.use_project_python(needs=('numpy',))

import numpy as np

import common
from safe_files import atomic_write, check_writable


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=common.HelpFormatter)
    parser.add_argument('--data-dir', help='folder with the four MNIST idx files (default: the scripts\' lookup)')
    parser.add_argument('--out', default=os.path.join('work', 'mnist.json.gz'), help='the file to write')
    return parser


def pixel_texts():
    """The 256 possible pixel values as text: k / 127.5 - 1 in float32, shortest round-trip form."""
    values = np.arange(256, dtype=np.uint8).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return [np.format_float_positional(v, unique=True, trim='0') for v in values]


def write_json_gz(path, splits):
    texts = pixel_texts()
    codes = {name: np.rint((images.reshape(len(images), 784) + 1.0) * 127.5).astype(np.uint8)
             for name, (images, _) in splits.items()}

    def write(tmp):
        with gzip.open(tmp, 'wt', compresslevel=6) as f:
            f.write('[')
            for i, name in enumerate(common.SPLITS):
                f.write(',' * (i > 0) + '[[')
                f.write(','.join('[' + ','.join(texts[p] for p in row) + ']' for row in codes[name]))
                f.write('],[' + ','.join(str(int(label)) for label in splits[name][1]) + ']]')
            f.write(']')
    atomic_write(path, write)


def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    splits, source = common.load_mnist_splits(args.data_dir)
    if source['kind'] != 'idx':
        common.fail(f'{source["path"]} is already a json file; pass --data-dir with the four idx files')
    check_writable(os.path.dirname(os.path.abspath(args.out)))
    write_json_gz(args.out, splits)
    print(f'wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB): [train, valid, eval] = '
          f'{" / ".join(f"{len(splits[n][1]):,}" for n in common.SPLITS)} images')
    return args.out


if __name__ == '__main__':
    common.run_main(main)
