"""MNIST loading from both formats, the split, batching order, and clear errors for bad data."""
import ast
import gzip
import json
import os
import re
import shlex
import shutil
import sys

import numpy as np
import pytest

import common
import fixtures
import flags
import parallel


def test_idx_folder_splits_shapes_and_values(idx_dir):
    splits, source = common.load_mnist_splits(idx_dir)
    # 600 training images: the last sixth (100) validates, as 60,000 -> 50,000 + 10,000
    assert source['sizes'] == {'train': 500, 'valid': 100, 'eval': 200}
    for name, (x, y) in splits.items():
        assert x.dtype == np.float32 and x.shape == (len(y), 1, 28, 28)
        assert y.dtype == np.int64 and set(np.unique(y)) <= set(range(10))
        assert x.min() == -1.0 and x.max() <= 1.0  # background -1, as the tutorial's data
    raw_images, raw_labels = fixtures.synthetic_digits(fixtures.TRAIN_N, seed=1)
    np.testing.assert_array_equal(splits['valid'][1], raw_labels[500:])  # valid = the last images
    np.testing.assert_array_equal(splits['train'][0][0, 0], raw_images[0] / np.float32(127.5) - 1)


def test_uncompressed_idx_files_read_the_same(idx_dir, tmp_path):
    plain = fixtures.write_idx_folder(str(tmp_path / 'plain'), gz=False)
    a, _ = common.load_mnist_splits(idx_dir)
    b, _ = common.load_mnist_splits(plain)
    for name in common.SPLITS:
        np.testing.assert_array_equal(a[name][0], b[name][0])


def test_json_gz_format(json_gz):
    for path in (json_gz, os.path.dirname(json_gz)):  # the file, or a folder holding it
        splits, source = common.load_mnist_splits(path)
        assert source['kind'] == 'json'
        assert source['sizes'] == {'train': 120, 'valid': 30, 'eval': 50}
        x, y = splits['eval']
        assert x.shape == (50, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
        assert -1.0 <= x.min() and x.max() <= 1.0


def test_work_folder_is_looked_up_first(json_gz, tmp_path, monkeypatch):
    (tmp_path / 'work').mkdir()
    shutil.copy(json_gz, tmp_path / 'work' / 'mnist.json.gz')
    monkeypatch.chdir(tmp_path)
    assert common.resolve_data_source(None) == ('json', os.path.join('work', 'mnist.json.gz'))


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = common.epoch_order(1000, seed=0, epoch=3)
    np.random.seed(123)  # global state must not matter
    np.testing.assert_array_equal(a, common.epoch_order(1000, seed=0, epoch=3))
    assert not np.array_equal(a, common.epoch_order(1000, seed=0, epoch=4))
    assert not np.array_equal(a, common.epoch_order(1000, seed=1, epoch=3))
    assert sorted(a) == list(range(1000))


def test_batches_cover_every_image_once_and_can_start_midway():
    sampler = common.EpochBatchSampler(250, 100, seed=5)
    sampler.set_epoch(2)
    seen = list(sampler)
    assert [len(b) for b in seen] == [100, 100, 50] == [len(b) for b in seen]  # the last batch is smaller
    assert sorted(np.concatenate(seen)) == list(range(250))
    np.testing.assert_array_equal(np.concatenate(seen), common.epoch_order(250, 5, 2))
    sampler.set_epoch(2, start=1)  # a run resumed at batch 1 of epoch 2
    assert len(sampler) == 2 and list(sampler) == seen[1:]


def test_dataloader_batches_equal_plain_indexing(idx_dir):
    """The DataLoader (三) hands the model exactly the arrays numpy indexing would: same values,
    dtypes and order, so it changes no loss."""
    import mnist_linear
    import paddle
    x, y = common.load_mnist_splits(idx_dir)[0]['train']
    sampler = common.EpochBatchSampler(len(y), 64, seed=3)
    sampler.set_epoch(1)
    expected = list(sampler)
    loader = paddle.io.DataLoader(mnist_linear.MNISTDataset(x, y), batch_sampler=sampler)
    batches = list(loader)
    assert len(batches) == len(expected) == 8
    for (images, labels), indices in zip(batches, expected):
        assert images.dtype == paddle.float32 and labels.dtype == paddle.int64
        np.testing.assert_array_equal(images.numpy(), x[indices])
        np.testing.assert_array_equal(labels.numpy(), y[indices])


@pytest.mark.parametrize('n, batch, world', [(250, 100, 2), (251, 100, 2), (203, 100, 3), (6667, 100, 2)])
def test_data_parallel_shares_make_up_each_global_batch(n, batch, world):
    """七: worker r's batch b is its part of global batch b; the parts, in rank order, are the global
    batch; and with each part's loss weight, the workers' mean of their mean losses is the mean loss
    of the whole global batch (what one process computes)."""
    per_image_loss = np.random.default_rng(0).uniform(0, 3, n)
    whole = common.EpochBatchSampler(n, batch, seed=1)
    parts = [parallel.WorkerBatchSampler(n, batch, 1, r, world) for r in range(world)]
    for s in [whole, *parts]:
        s.set_epoch(4)
    for b, (global_batch, *shares) in enumerate(zip(whole, *parts)):
        assert sum(shares, []) == global_batch
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        weighted = [per_image_loss[share].mean() * p.share_weight(b) for share, p in zip(shares, parts)]
        assert np.mean(weighted) == pytest.approx(per_image_loss[global_batch].mean(), rel=1e-12)
        assert all(p.share_weight(b) == 1.0 for p in parts) or len(global_batch) % world


def test_a_batch_smaller_than_the_workers_is_refused():
    with pytest.raises(common.UserError, match='a batch of 1 image.s. cannot be shared by 2 workers'):
        parallel.WorkerBatchSampler(201, 100, 0, 0, 2)


def test_train_limit_clamps_with_a_notice(idx_dir, capsys):
    splits, source = common.load_mnist_splits(idx_dir, train_limit=50)
    assert len(splits['train'][1]) == 50 and source['sizes']['train'] == 50
    splits, source = common.load_mnist_splits(idx_dir, train_limit=10_000)
    assert len(splits['train'][1]) == 500 and source['sizes']['train'] == 500
    assert 'more than the 500 training images' in capsys.readouterr().out


# ---- bad data: one clear sentence each ---------------------------------------------------------

def broken_copy(idx_dir, tmp_path):
    folder = tmp_path / 'broken'
    shutil.copytree(idx_dir, folder)
    return folder


def rewrite(path, data):
    with gzip.open(path, 'wb') as f:
        f.write(data)


def raw(path):
    with gzip.open(path, 'rb') as f:
        return f.read()


@pytest.mark.parametrize('damage, message', [
    (lambda f: os.remove(f / 't10k-labels-idx1-ubyte.gz'), 'lacks the MNIST file(s) t10k-labels'),
    (lambda f: rewrite(f / 'train-images-idx3-ubyte.gz', b'\x00\x00\x08\x99' + raw(
        f / 'train-images-idx3-ubyte.gz')[4:]), 'not an MNIST idx file (magic number 2201'),
    (lambda f: rewrite(f / 'train-images-idx3-ubyte.gz', raw(f / 'train-images-idx3-ubyte.gz')[:-100]),
     'truncated'),
    (lambda f: rewrite(f / 'train-labels-idx1-ubyte.gz', fixtures.idx_bytes(np.zeros(599, np.uint8))),
     '600 images but the labels file has 599'),
    (lambda f: (f / 't10k-images-idx3-ubyte.gz').write_bytes(
        (f / 't10k-images-idx3-ubyte.gz').read_bytes()[:200]), 'corrupt gzip'),
    (lambda f: (rewrite(f / 't10k-images-idx3-ubyte.gz', fixtures.idx_bytes(np.zeros((0, 28, 28), np.uint8))),
                rewrite(f / 't10k-labels-idx1-ubyte.gz', fixtures.idx_bytes(np.zeros(0, np.uint8)))),
     't10k-images-idx3-ubyte.gz holds no images'),
])
def test_bad_idx_data(idx_dir, tmp_path, damage, message):
    folder = broken_copy(idx_dir, tmp_path)
    damage(folder)
    with pytest.raises(common.UserError) as err:
        common.load_mnist_splits(str(folder))
    assert message in str(err.value)


def test_empty_and_missing_data_dirs(tmp_path):
    with pytest.raises(common.UserError, match='does not exist'):
        common.load_mnist_splits(str(tmp_path / 'nowhere'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(common.UserError, match='lacks the MNIST file'):
        common.load_mnist_splits(str(tmp_path / 'empty'))


@pytest.mark.parametrize('content, message', [
    ([[[[0.0] * 784], [1]], [[[0.0] * 784], [1]]], 'layout [train, valid, eval]'),
    ([[[[0.0] * 783], [1]]] * 3, 'expected [N, 784] images'),
    ([[[[0.0] * 784] * 2, [1]]] * 3, 'expected [N, 784] images and N labels'),
])
def test_bad_json_gz(tmp_path, content, message):
    path = tmp_path / 'mnist.json.gz'
    with gzip.open(path, 'wt') as f:
        json.dump(content, f)
    with pytest.raises(common.UserError) as err:
        common.load_mnist_splits(str(path))
    assert message in str(err.value)


def test_another_file_as_data_dir_is_named_as_not_the_course_file(tmp_path):
    path = tmp_path / 'digit7.png'  # a picture meant for --predict
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(40))
    with pytest.raises(common.UserError, match=r"digit7\.png is not the course's mnist\.json\.gz \(not JSON: "
                                               r".*\); pass --data-dir with that file, or a folder"):
        common.load_mnist_splits(str(path))


def test_no_data_and_no_network_says_where_it_looked(tmp_path, monkeypatch):
    """A real download attempt through PaddlePaddle's downloader, to a closed local port."""
    monkeypatch.setenv('HOME', str(tmp_path))
    for var in ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'):
        monkeypatch.setenv(var, 'http://127.0.0.1:9')
    monkeypatch.delenv('NO_PROXY', raising=False)
    monkeypatch.delenv('no_proxy', raising=False)
    monkeypatch.chdir(tmp_path)
    import paddle.dataset.common as pdc
    monkeypatch.setattr(pdc, 'DATA_HOME', str(tmp_path / '.cache' / 'paddle' / 'dataset'))
    with pytest.raises(common.UserError) as err:
        common.load_mnist_splits(None)
    text = str(err.value)
    assert 'data/data*/' in text and 'mnist.json.gz' in text and '--data-dir' in text and 'download' in text


def test_ai_studios_mounted_dataset_is_found(idx_dir, tmp_path, monkeypatch):
    """AI Studio mounts the course's dataset as data/data65/ beside the notebook and in the home folder;
    ./work/ comes first, then ./, then data/data*/."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    shutil.copytree(idx_dir, tmp_path / 'home' / 'data' / 'data65')
    assert common.resolve_data_source(None) == ('idx', str(tmp_path / 'home' / 'data' / 'data65'))
    shutil.copytree(idx_dir, tmp_path / 'data' / 'data65')
    assert common.resolve_data_source(None) == ('idx', os.path.join('data', 'data65'))
    shutil.copytree(idx_dir, tmp_path / 'work')
    assert common.resolve_data_source(None) == ('idx', 'work')


def test_under_the_launcher_each_worker_samples_its_part(monkeypatch):
    monkeypatch.setenv('PADDLE_TRAINERS_NUM', '2')
    monkeypatch.setenv('PADDLE_TRAINER_ID', '1')
    sampler = common.batch_sampler(475, 25, 0)
    assert isinstance(sampler, parallel.WorkerBatchSampler) and (sampler.rank, sampler.world_size) == (1, 2)
    assert [len(b) for b in sampler][:2] == [12, 12]  # 25 = 13 (rank 0) + 12 (rank 1)
    monkeypatch.delenv('PADDLE_TRAINERS_NUM')
    assert type(common.batch_sampler(475, 25, 0)) is common.EpochBatchSampler


def test_one_idx_file_as_data_dir_names_its_folder(idx_dir):
    path = os.path.join(idx_dir, 'train-labels-idx1-ubyte.gz')  # the file, not its folder
    with pytest.raises(common.UserError, match=r'is one of the four MNIST idx files; pass the folder that holds '
                                               r'all four: --data-dir ' + re.escape(str(idx_dir))):
        common.load_mnist_splits(path)


def test_the_resume_command_names_the_launcher_for_workers(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # not the project's folder: its .venv would be named (next test)
    assert common.resume_command('checkpoint/mnist_interrupted') == 'python resume.py --ckpt checkpoint/mnist_interrupted'
    monkeypatch.setenv('MAKELEVEL', '1')  # under make too: a command to paste whole (make resume would
    # add its own --compare runs/cnn/metrics.json, which another run's checkpoint need not match)
    assert common.resume_command('checkpoint/mnist_interrupted') == 'python resume.py --ckpt checkpoint/mnist_interrupted'
    monkeypatch.delenv('MAKELEVEL')
    assert common.resume_command('c/m', {'workers': 2}) == \
        '`python -m paddle.distributed.launch --nproc_per_node 2 resume.py --ckpt c/m` (with make: `make resume NPROC=2 CKPT=c/m`)'
    assert common.resume_command('c/m', {'workers': 16, 'nodes': 2}) == ('python -m paddle.distributed.launch '
        '--nproc_per_node 8 resume.py --ckpt c/m on each of the 2 machines, with their --nnodes and --master')


def test_the_launcher_command_names_the_projects_python(monkeypatch, tmp_path):
    """`python -m paddle.distributed.launch` cannot re-run into .venv as `python resume.py` does: run
    from the project's folder with .venv's Python (make cnn NPROC=2), the command names that Python."""
    import parallel
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'executable', str(tmp_path / '.venv' / 'bin' / 'python'))
    assert common.resume_command('c/m', {'workers': 2}).startswith(
        f'`{os.path.join(".venv", "bin", "python")} -m paddle.distributed.launch --nproc_per_node 2 ')
    monkeypatch.setattr(sys, 'executable', str(tmp_path / '..venv' / 'bin' / 'python'))  # a name, not '..'
    assert parallel.launch_python() == os.path.join('..venv', 'bin', 'python')
    monkeypatch.setattr(sys, 'executable', str(tmp_path / 'python'))  # here: not a name PATH would find
    assert parallel.launch_python() == os.path.join('.', 'python')
    monkeypatch.setattr(sys, 'executable', str(tmp_path.parent / 'elsewhere' / 'python'))
    assert parallel.launch_python() == 'python'


def test_a_printed_resume_command_gives_back_the_path_it_names(monkeypatch):
    """Pasted into a shell, the command passes the very path, spaces and quotes too; in a notebook the
    argv line is Python that gives it back (a Windows path's backslashes too). On Windows (not run
    here: the quoting only) a path with anything but letters, digits, _ . - : / \\ is in double quotes,
    which cmd and PowerShell both take."""
    paths = ('my checkpoints/mnist_interrupted', "it's here/mnist_epoch0", 'C:\\new\\mnist_epoch0')
    for path in paths:
        assert shlex.split(common.resume_command(path))[-1] == path
    assert [common.shell_word(p, windows=True) for p in (*paths, 'R&D\\ck', 'C:\\ck\\mnist_epoch0')] == [
        '"my checkpoints/mnist_interrupted"', '"it\'s here/mnist_epoch0"', 'C:\\new\\mnist_epoch0', '"R&D\\ck"',
        'C:\\ck\\mnist_epoch0']
    monkeypatch.setattr(flags, 'in_notebook', lambda: True)  # resume_command's own
    for path in paths:
        line = common.resume_command(path)
        assert line.startswith('argv = ') and line.endswith(' in resume.ipynb'), line
        assert ast.literal_eval(line[len('argv = '):-len(' in resume.ipynb')]) == ['--ckpt', path]


def test_compare_across_worker_counts_passes_rounding_and_fails_a_broken_resume(capsys):
    """--compare with a reference of another number of workers: the losses follow within rounding,
    which is no failure; but first batches that differ by more than rounding are (a wrong schedule,
    a wrong order), however the worker counts differ."""
    import restore
    config = {'seed': 0}
    reference = {'config': config, 'batch_losses': [2.3, 2.1, 1.9, 1.7, 1.5, 1.3], 'workers': 1}
    resumed = {'config': config, 'steps_per_epoch': 3, 'first_step': 3, 'workers': 2}
    rounded = dict(resumed, batch_losses=[1.7 + 1e-7, 1.5 - 2e-7, 1.3 + 3e-4])  # drift grows later
    assert restore.compare_losses(rounded, reference) is True
    assert 'not bit for bit' in capsys.readouterr().out
    broken = dict(resumed, batch_losses=[1.7, 1.6, 1.5])
    assert restore.compare_losses(broken, reference) is False
    assert 'the resume itself went wrong' in capsys.readouterr().out
    # weights trained (in part) by another worker count than the reference's: the two had parted
    # before the resume (rounding grows over its steps), so no verdict on drift, in either
    # direction; a difference far beyond drift still fails
    drifted = dict(resumed, batch_losses=[1.7 + 2e-3, 1.5, 1.3])
    for workers, history in ((1, [2]), (2, [2]), (2, [1, 2])):
        assert restore.compare_losses(dict(drifted, workers=workers), reference, trained_with=history) is True
        assert 'not whether the resume was exact' in capsys.readouterr().out
    assert restore.compare_losses(dict(drifted, workers=2), reference, trained_with=[1]) is False
    far = dict(resumed, batch_losses=[9.9, 9.8, 9.7], workers=1)
    assert restore.compare_losses(far, reference, trained_with=[1, 2]) is False
    assert 'more than such drift: the resume itself went wrong' in capsys.readouterr().out
