"""Small synthetic MNIST written in the real file formats, so tests need no network and no ../shared.

Each class is a fixed pattern of three thick strokes; an image is its class pattern shifted by up
to 2 pixels with noise. Learnable in a few epochs, and the same bytes on every machine (numpy's
PCG64 generator with fixed seeds, integer pixel arithmetic).
"""
import gzip
import json
import os

import numpy as np

TRAIN_N, TEST_N = 600, 200  # the train file splits into 500 train + 100 valid (last sixth)


def prototypes():
    rng = np.random.default_rng(1234)
    protos = np.zeros((10, 28, 28), dtype=np.int32)
    t = np.linspace(0.0, 1.0, 40)
    for k in range(10):
        for _ in range(3):
            (r0, c0), (r1, c1) = rng.integers(5, 23, size=(2, 2))
            rows = np.round(r0 + (r1 - r0) * t).astype(int)
            cols = np.round(c0 + (c1 - c0) * t).astype(int)
            for dr in (0, 1):
                for dc in (0, 1):
                    protos[k, np.clip(rows + dr, 0, 27), np.clip(cols + dc, 0, 27)] = 255
    return protos


def synthetic_digits(n, seed):
    """n uint8 images [n,28,28] and their labels [n]."""
    rng = np.random.default_rng(seed)
    protos = prototypes()
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = np.empty((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        dr, dc = rng.integers(-2, 3, size=2)
        img = np.roll(np.roll(protos[label], dr, axis=0), dc, axis=1)
        noise = rng.integers(0, 60, size=(28, 28))
        images[i] = np.clip(img - noise // 2 + (noise * (img == 0)) // 2, 0, 255)
    return images, labels


def idx_bytes(array):
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, 'big') + b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder, gz=True, train_n=TRAIN_N, test_n=TEST_N):
    """The four standard idx files (gzip or not), like PaddlePaddle's cache of MNIST."""
    os.makedirs(folder, exist_ok=True)
    train = synthetic_digits(train_n, seed=1)
    test = synthetic_digits(test_n, seed=2)
    files = {'train-images-idx3-ubyte': train[0], 'train-labels-idx1-ubyte': train[1],
             't10k-images-idx3-ubyte': test[0], 't10k-labels-idx1-ubyte': test[1]}
    for name, array in files.items():
        data = idx_bytes(array)
        if gz:
            with gzip.open(os.path.join(folder, name + '.gz'), 'wb') as f:
                f.write(data)
        else:
            with open(os.path.join(folder, name), 'wb') as f:
                f.write(data)
    return folder


def write_json_gz(path, sizes=(120, 30, 50)):
    """The tutorial's mnist.json.gz: [train, valid, eval], each [images as 784 floats in [-1,1], labels]."""
    images, labels = synthetic_digits(sum(sizes), seed=3)
    floats = np.round(images.reshape(len(images), 784) / 127.5 - 1.0, 4)
    parts, start = [], 0
    for size in sizes:
        parts.append([floats[start:start + size].tolist(), labels[start:start + size].tolist()])
        start += size
    with gzip.open(path, 'wt') as f:
        json.dump(parts, f)
    return path
