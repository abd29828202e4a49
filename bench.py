"""`make bench`: how fast is our training step, next to the tutorial's way and PyTorch, on this machine.

Every configuration runs in its own process (switches like MKL_DEBUG_CPU_TYPE act at import), one
after another, in one invocation, so the ratios compare like with like. A step is the whole
training step of mnist_cnn.py: batch -> forward -> loss -> backward -> optimizer -> LR step, batch
100. Figures are medians over --steps steps after --warmup steps; each configuration runs --rounds
times and the best median is kept (these machines are noisy; the best is the least disturbed).

    python bench.py --data-dir ../shared/data/mnist-mini      # prints a table, writes results/bench.json
    python bench.py --steps 3 --rounds 1 --skip-full-run      # a smoke run
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__)) if '__file__' in globals() else os.getcwd()

# (label, worker, environment changes): the peers, then "ours" with one lever turned off at a time
CONFIGS = [
    ('ours', 'ours', {}),
    ('tutorial\'s way', 'tutorial', {'MKL_DEBUG_CPU_TYPE': None, 'BENCH_NO_MKL_SWITCH': '1'}),
    ('PyTorch', 'torch', {}),
    ('ours without MKL_DEBUG_CPU_TYPE=5', 'ours', {'MKL_DEBUG_CPU_TYPE': None, 'BENCH_NO_MKL_SWITCH': '1'}),
    ('ours with nn.Conv2D\'s own bias add', 'ours-plain-conv', {}),
    ('ours with OMP_NUM_THREADS=2', 'ours', {'OMP_NUM_THREADS': '2'}),
]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data-dir', default=None, help='MNIST for the images and the full run '
                        '(default: the scripts\' usual lookup)')
    parser.add_argument('--steps', type=int, default=30, help='timed steps per configuration')
    parser.add_argument('--warmup', type=int, default=5, help='untimed steps first')
    parser.add_argument('--rounds', type=int, default=2, help='runs of each configuration; best kept')
    parser.add_argument('--full-epochs', type=int, default=1,
                        help='epochs of the full mnist_cnn.py run timed for start-up and peak memory')
    parser.add_argument('--skip-full-run', action='store_true')
    parser.add_argument('--out', default='results/bench.json')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser


# ---- workers: each runs in a fresh process and prints one JSON line ---------------------------

IMAGES = {'kind': 'real'}  # what the timed steps ran on, reported with the figures


def load_images(data_dir, n):
    """Real training images when the data is there; random ones otherwise (speed does not care)."""
    import numpy as np
    try:
        import common
        x, y = common.load_mnist_splits(data_dir)[0]['train']
        return x[:n], y[:n]
    except Exception:  # no data: the step costs the same on random pixels
        IMAGES['kind'] = 'random (no MNIST found)'
        rng = np.random.default_rng(0)
        return (rng.uniform(-1, 1, (n, 1, 28, 28)).astype('float32'), rng.integers(0, 10, n).astype('int64'))


def timed_steps(step, total):
    """step(i) -> (data seconds, step seconds); medians over the timed steps."""
    data_times, step_times = [], []
    for i in range(total):
        data_s, step_s = step(i)
        data_times.append(data_s)
        step_times.append(step_s)
    return data_times, step_times


def worker_ours(args, plain_conv=False):
    import common
    import paddle
    import mnist_cnn
    if plain_conv:
        mnist_cnn.Conv2D = paddle.nn.Conv2D  # the framework's own bias add, for comparison
    total = args.warmup + args.steps
    x, y = load_images(args.data_dir, 100 * max(total, 10))
    cfg = {'loss': 'ce', 'lr': 0.01, 'schedule': 'poly', 'schedule_steps': 10_000, 'l2': 0.0, 'opt': 'adam'}
    with paddle.utils.unique_name.guard():
        paddle.seed(0)
        model = mnist_cnn.build_model(cfg)
        optimizer, scheduler = mnist_cnn.build_optimizer(cfg, model.parameters())
        sampler = common.EpochBatchSampler(len(y), 100, seed=0)
        batches = iter(paddle.io.DataLoader(common.MNISTDataset(x, y), batch_sampler=sampler))

        def step(i):  # the body of common.train's loop
            t0 = time.perf_counter()
            images, labels = next(batches)
            t1 = time.perf_counter()
            loss, correct = mnist_cnn.loss_and_correct(model(images), labels, 'ce')
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            scheduler.step()
            float(loss)
            return t1 - t0, time.perf_counter() - t0
        data_times, step_times = timed_steps(step, total)
        # evaluation of 10,000 images, as common.evaluate does it after every epoch
        ex, ey = load_images(args.data_dir, 10_000)
        if len(ey) < 10_000:  # a small data set: repeat it up to 10,000 images
            import numpy as np
            reps = -(-10_000 // len(ey))
            ex, ey = np.concatenate([ex] * reps)[:10_000], np.concatenate([ey] * reps)[:10_000]
        t0 = time.perf_counter()
        mnist_cnn.evaluate(model, paddle.io.DataLoader(common.MNISTDataset(ex, ey), batch_size=500), 'ce')
        eval_s = time.perf_counter() - t0
    return data_times[args.warmup:], step_times[args.warmup:], {'eval_10k_s': eval_s}


def worker_tutorial(args):
    """The tutorial's stage 九 loop in today's API: images as Python lists (as json.load gives them),
    batches built one sample at a time, plain nn.Conv2D, accuracy each batch, default settings."""
    import random
    import numpy as np
    import paddle
    import paddle.nn as nn
    import paddle.nn.functional as F
    total = args.warmup + args.steps
    x, y = load_images(args.data_dir, 100 * max(total, 10))
    imgs, labels = x.reshape(len(x), 784).tolist(), y.tolist()

    class MNIST(nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2D(1, 20, 5, stride=1, padding=2)
            self.max_pool1 = nn.MaxPool2D(kernel_size=2, stride=2)
            self.conv2 = nn.Conv2D(20, 20, 5, stride=1, padding=2)
            self.max_pool2 = nn.MaxPool2D(kernel_size=2, stride=2)
            self.fc = nn.Linear(980, 10)

        def forward(self, inputs):
            x = self.max_pool1(F.relu(self.conv1(inputs)))
            x = self.max_pool2(F.relu(self.conv2(x)))
            return self.fc(paddle.reshape(x, [x.shape[0], 980]))

    def data_generator():
        index_list = list(range(len(imgs)))
        random.shuffle(index_list)
        imgs_list, labels_list = [], []
        for i in index_list:
            imgs_list.append(np.reshape(imgs[i], [1, 28, 28]).astype('float32'))
            labels_list.append(np.reshape(labels[i], [1]).astype('int64'))
            if len(imgs_list) == 100:
                yield np.array(imgs_list), np.array(labels_list)
                imgs_list, labels_list = [], []

    paddle.seed(0)
    model = MNIST()
    lr = paddle.optimizer.lr.PolynomialDecay(0.01, 10_000, 0.001)
    optimizer = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters())
    loader = data_generator()

    def step(i):
        t0 = time.perf_counter()
        image_data, label_data = next(loader)
        image, label = paddle.to_tensor(image_data), paddle.to_tensor(label_data)
        t1 = time.perf_counter()
        predict = model(image)
        acc = paddle.metric.accuracy(F.softmax(predict), label)
        avg_loss = paddle.mean(F.cross_entropy(predict, label))
        avg_loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        lr.step()
        float(avg_loss), float(acc)
        return t1 - t0, time.perf_counter() - t0
    data_times, step_times = timed_steps(step, total)
    return data_times[args.warmup:], step_times[args.warmup:], {}


def worker_torch(args):
    try:
        import torch
    except ImportError:
        return None
    import torch.nn as tnn
    import torch.nn.functional as TF
    total = args.warmup + args.steps
    x, y = load_images(args.data_dir, 100 * max(total, 10))
    torch.manual_seed(0)
    model = tnn.Sequential(tnn.Conv2d(1, 20, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                           tnn.Conv2d(20, 20, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                           tnn.Flatten(), tnn.Linear(980, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    decay = lambda step: (1 - min(step, 10_000) / 10_000) * 0.9 + 0.1  # 0.01 -> 0.001 linearly, as paddle's
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)

    def step(i):
        t0 = time.perf_counter()
        xb, yb = torch.from_numpy(x[i * 100:(i + 1) * 100]), torch.from_numpy(y[i * 100:(i + 1) * 100])
        t1 = time.perf_counter()
        loss = TF.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        loss.item()
        return t1 - t0, time.perf_counter() - t0
    data_times, step_times = timed_steps(step, total)
    return data_times[args.warmup:], step_times[args.warmup:], {
        'torch_version': torch.__version__, 'torch_threads': torch.get_num_threads()}


def run_worker(args):
    sys.path.insert(0, HERE)
    if os.environ.get('BENCH_NO_MKL_SWITCH'):
        os.environ['MKL_DEBUG_CPU_TYPE'] = ''  # an empty value: common.py's default does not apply
    work = {'ours': worker_ours, 'ours-plain-conv': lambda a: worker_ours(a, plain_conv=True),
            'tutorial': worker_tutorial, 'torch': worker_torch}[args.worker]
    result = work(args)
    if result is None:
        print(json.dumps({'skipped': 'torch not installed'}))
        return
    data_times, step_times, extra = result
    step_s = statistics.median(step_times)
    print(json.dumps(dict(extra, step_ms=step_s * 1000, samples_per_s=100 / step_s,
                          data_share=statistics.median(data_times) / step_s, steps=len(step_times), images=IMAGES['kind'],
                          omp_threads=os.environ.get('OMP_NUM_THREADS'),
                          mkl_debug_cpu_type=os.environ.get('MKL_DEBUG_CPU_TYPE'))))


# ---- the driver ---------------------------------------------------------------------------------

def spawn(args, worker, env_changes):
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    cmd = [sys.executable, os.path.join(HERE, 'bench.py'), '--worker', worker, '--steps', str(args.steps),
           '--warmup', str(args.warmup)] + (['--data-dir', args.data_dir] if args.data_dir else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {'error': proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def full_run(args):
    """mnist_cnn.py as a user runs it: seconds to the first training step, peak RSS, wall time."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(HERE, 'mnist_cnn.py'), '--epochs', str(args.full_epochs),
               '--out', os.path.join(tmp, 'run'), '--ckpt-dir', os.path.join(tmp, 'ckpt'), '--log-every', '1']
        cmd += ['--data-dir', args.data_dir] if args.data_dir else []
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first_step = None
        for line in proc.stdout:
            if first_step is None and line.startswith('epoch: 0, batch: 0'):
                first_step = time.perf_counter() - start  # import + data load + first step done
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        return {'error': 'mnist_cnn.py failed (is the data there? pass --data-dir)'}
    return {'first_step_s': first_step, 'peak_rss_mb': usage.ru_maxrss / 1024, 'wall_s': wall,
            'epochs': args.full_epochs}


def machine():
    info = {'python': platform.python_version(), 'cores': os.cpu_count()}
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    info['cpu'] = line.split(':', 1)[1].strip()
                    break
    except OSError:
        info['cpu'] = platform.processor()
    sys.path.insert(0, HERE)
    import common  # noqa: F401  (applies the same switches as the scripts)
    import paddle
    info.update(paddle=paddle.__version__, cpu_vendor=common.cpu_vendor(),
                MKL_DEBUG_CPU_TYPE=os.environ.get('MKL_DEBUG_CPU_TYPE'),
                OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS'))
    return info


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        return run_worker(args)
    info = machine()
    print(f'machine: {info["cpu"]} ({info["cores"]} cores), python {info["python"]}, paddle {info["paddle"]}; '
          f'MKL_DEBUG_CPU_TYPE={info["MKL_DEBUG_CPU_TYPE"]}, OMP_NUM_THREADS={info["OMP_NUM_THREADS"]}')
    results = {}
    for round_ in range(args.rounds):
        for label, worker, env in CONFIGS:
            r = spawn(args, worker, env)
            best = results.get(label)
            if best is None or r.get('samples_per_s', 0) > best.get('samples_per_s', 0):
                results[label] = r
    ours = results['ours'].get('samples_per_s')
    print(f'\ntraining step, batch 100 (median of {args.steps} steps after {args.warmup}, best of {args.rounds} rounds; '
          f'images: {results["ours"].get("images", "?")})')
    print(f'{"":38s} {"samples/s":>10s} {"step ms":>8s} {"data %":>7s}   ours / this')
    for label, _, _ in CONFIGS:
        r = results[label]
        if 'samples_per_s' not in r:
            print(f'{label:38s} {"skipped: " + r.get("skipped", r.get("error", "?"))}')
            continue
        ratio = '' if label == 'ours' else f'{ours / r["samples_per_s"]:.2f}x'
        print(f'{label:38s} {r["samples_per_s"]:10.0f} {r["step_ms"]:8.1f} {100 * r["data_share"]:6.1f}%   {ratio}')
    report = {'machine': info, 'args': vars(args), 'steps': results}
    if 'samples_per_s' in results['ours']:
        print(f'\neval of 10,000 images: {results["ours"]["eval_10k_s"]:.2f} s')
        for peer, key in (('tutorial\'s way', 'ours_vs_tutorial'), ('PyTorch', 'ours_vs_pytorch')):
            if 'samples_per_s' in results[peer]:
                report[key] = ours / results[peer]['samples_per_s']
    if not args.skip_full_run:
        full = full_run(args)
        report['full_run'] = full
        if 'error' in full:
            print(f'full run: {full["error"]}')
        else:
            print(f'mnist_cnn.py, {full["epochs"]} epoch(s): first training step after {full["first_step_s"]:.1f} s '
                  f'(imports + data), peak RSS {full["peak_rss_mb"]:.0f} MB, wall {full["wall_s"]:.1f} s')
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    print(f'wrote {args.out}')
    return report


if __name__ == '__main__':
    main()
