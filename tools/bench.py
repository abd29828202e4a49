"""`make bench`: how fast does mnist_cnn.py train, next to the tutorial's way and PyTorch, on this machine?

Each configuration runs in a fresh process started from the environment `make bench` was given
(this driver never imports paddle, which sets OMP_NUM_THREADS=1 for itself and its children).
PyTorch runs in its own virtual environment (.venv-torch, `make bench-env`) at its defaults, so
it uses every core as its users get it; a second row pins it to one thread. All configurations
run --rounds times, interleaved, and the table shows the median and the spread across rounds.

The headline is what a user waits for: samples/s of the training loop over whole epochs (the
figure mnist_cnn.py prints per epoch; the first epoch is warm-up and left out). The step median
(batch 100, Adam) is a second column. The last rows turn one lever of ours on or off at a time.

    python tools/bench.py --data-dir ../shared/data/mnist-mini                  # writes results/bench.json
    python tools/bench.py --data-dir ../shared/data/mnist-mini --rounds 1 --epochs 2   # quicker
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__)) if '__file__' in globals() else os.getcwd()
ROOT = os.path.dirname(HERE)  # the stage scripts
CLEAN_ENV = dict(os.environ)  # before anything could import paddle
TORCH_PYTHON = os.path.join(ROOT, '.venv-torch', 'bin', 'python')

# One training step of this CNN at batch 100, counted by hand (a multiply-add is 2 FLOPs):
# forward, per image: conv1 28*28*20*25 + conv2 14*14*20*20*25 + fc 980*10 = 2.36 M multiply-adds;
# backward: the weight gradients of all three layers (2.36 M) and the input gradients of conv2 and fc
# (1.97 M; conv1's input needs none). (2.36 + 4.33) M * 2 FLOPs * 100 images = 1.34 GFLOP.
FLOP_PER_STEP = 2 * 100 * (2 * (28 * 28 * 20 * 25 + 14 * 14 * 20 * 20 * 25 + 980 * 10) + 14 * 14 * 20 * 20 * 25 + 980 * 10)

# (label, worker, options, environment changes). 'script': mnist_cnn.main in a fresh process.
CONFIGS = [
    ('ours: mnist_cnn.py', 'script', {}, {}),
    ('ours: 2 data-parallel workers (launcher)', 'script', {'nproc': 2}, {}),
    ('tutorial\'s way', 'tutorial', {}, {}),
    ('PyTorch, its defaults (all cores)', 'torch', {}, {}),
    ('PyTorch, 1 thread', 'torch', {'threads': 1}, {}),
    ('lever: ours with paddle\'s 1 thread', 'script', {}, {'OMP_NUM_THREADS': '1'}),
    ('lever: ours with --num-workers 2', 'script', {'args': ['--num-workers', '2']}, {}),
    ('lever: ours without MKL_DEBUG_CPU_TYPE=5', 'script', {}, {'MKL_DEBUG_CPU_TYPE': ''}),
    ('lever: ours with nn.Conv2D\'s own bias add', 'script', {'plain_conv': True}, {}),
]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data-dir', help='MNIST (default: the scripts\' usual lookup)')
    parser.add_argument('--epochs', type=int, default=3, help='epochs per run; the first is warm-up')
    parser.add_argument('--steps', type=int, default=30, help='timed steps for the step median')
    parser.add_argument('--rounds', type=int, default=3, help='runs of every configuration, interleaved')
    parser.add_argument('--only', nargs='*', help='labels (prefixes) of the configurations to run')
    parser.add_argument('--out', default='results/bench.json')
    parser.add_argument('--profile', action='store_true', help='instead: paddle.profiler\'s top operators of --steps steps')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--options', default='{}', help=argparse.SUPPRESS)
    return parser


# ---- workers: each runs in a fresh process and prints one JSON line -------------------------------

def worker_dump(args, options):
    """The training split as .npz, for the peers that must not import paddle (PyTorch)."""
    sys.path.insert(0, ROOT)
    import numpy as np
    import common
    x, y = common.load_mnist_splits(args.data_dir)[0]['train']
    np.savez(options['path'], x=x, y=y)
    return {'images': len(y)}


def epoch_rate(rows):
    """samples/s over the epochs after the first (warm-up), as the scripts report them."""
    timed = rows[1:] or rows
    return sum(r['seen'] for r in timed) / sum(r['seconds'] for r in timed)


def worker_script(args, options):
    """mnist_cnn.py's own main(): its real loop, DataLoader, validation and checkpoints; then the
    median of steps of the same loop body."""
    sys.path.insert(0, ROOT)
    import mnist_cnn  # first, as a learner runs it: startup.import_paddle() sets the CPU settings
    import common
    import paddle
    if options.get('plain_conv'):
        mnist_cnn.Conv2D = paddle.nn.Conv2D  # the framework's own bias add, for comparison
    with tempfile.TemporaryDirectory() as tmp:
        argv = ['--epochs', str(args.epochs), '--out', tmp + '/run', '--ckpt-dir', tmp + '/ckpt', '--log-every', '100000']
        metrics = mnist_cnn.main(argv + (['--data-dir', args.data_dir] if args.data_dir else []) + options.get('args', []))
    rows = [dict(r, seen=r['samples_per_s'] * r['seconds']) for r in metrics['epochs']]
    result = {'epoch_samples_per_s': epoch_rate(rows)}
    if options.get('nproc'):
        return result
    splits = common.load_mnist_splits(args.data_dir)[0]
    times, data_times, eval_s, eval_images = time_steps(args, metrics['config'], splits)
    return dict(result, step_ms=1000 * statistics.median(times), data_share=sum(data_times) / sum(times),
                eval_s=eval_s, eval_images=eval_images)


def time_steps(args, cfg, splits, each_step=lambda: None):
    """The loop body of mnist_cnn.train, steps 5 to 5 + --steps timed, on batches of its DataLoader;
    then one evaluation of the eval split."""
    import mnist_cnn
    import paddle
    loaders = mnist_cnn.make_loaders(splits, cfg)
    with paddle.utils.unique_name.guard():
        model = mnist_cnn.build_model(cfg)
        optimizer, scheduler = mnist_cnn.build_optimizer(cfg, model.parameters())
        epochs = range(1 + (5 + args.steps) // max(len(loaders[0]), 1))  # enough epochs for the steps
        batches, times, data_times = (batch for _ in epochs for batch in loaders[0]), [], []
        for i in range(5 + args.steps):
            start = time.perf_counter()
            images, labels = next(batches)
            fetched = time.perf_counter()
            loss, _ = mnist_cnn.loss_and_correct(model(images), labels, 'ce')
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            scheduler.step()
            float(loss)
            if i >= 5:
                times.append(time.perf_counter() - start)
                data_times.append(fetched - start)
            each_step()
        t0 = time.perf_counter()
        mnist_cnn.evaluate(model, loaders[2], 'ce')
        return times, data_times, time.perf_counter() - t0, len(loaders[2].dataset)


def worker_profile(args, options):
    """`--profile`: where a step of ours spends its time, by paddle.profiler (the operators of
    --steps steps after 5 warm-up steps, sorted by total CPU time)."""
    sys.path.insert(0, ROOT)
    import mnist_cnn  # first: startup.import_paddle() sets the CPU settings
    import common
    import paddle.profiler as profiler
    cli = mnist_cnn.build_parser().parse_args(['--epochs', str(args.epochs)])
    splits, source = common.load_mnist_splits(args.data_dir)
    cfg = common.new_config(cli, 'profile', 'mnist_cnn', source, splits)
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], scheduler=(5, 5 + args.steps),
                             on_trace_ready=lambda p: None)
    prof.start()
    times = time_steps(args, cfg, splits, prof.step)[0]
    prof.stop()
    prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False, time_unit='ms',
                 views=[profiler.SummaryView.OperatorView])
    return {'step_ms': 1000 * statistics.median(times)}


def worker_tutorial(args, options):
    """The tutorial's stage 九 loop in today's API: images as Python lists (as json.load gives them),
    batches built one sample at a time, plain nn.Conv2D, accuracy every batch, paddle's defaults."""
    import random
    import numpy as np
    import paddle  # without startup.py, so without its CPU settings: as a learner runs the tutorial
    import paddle.nn as nn
    import paddle.nn.functional as F
    data = np.load(options['path'])
    x, y = data['x'], data['y']
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
            t = self.max_pool1(F.relu(self.conv1(inputs)))
            t = self.max_pool2(F.relu(self.conv2(t)))
            return self.fc(paddle.reshape(t, [t.shape[0], 980]))

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
        if imgs_list:
            yield np.array(imgs_list), np.array(labels_list)

    paddle.seed(0)
    model = MNIST()
    lr = paddle.optimizer.lr.PolynomialDecay(0.01, 10_000, 0.001)
    optimizer = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters())
    rows, times = [], []
    for epoch in range(args.epochs):
        start, seen = time.perf_counter(), 0
        for image_data, label_data in data_generator():
            t = time.perf_counter()
            image, label = paddle.to_tensor(image_data), paddle.to_tensor(label_data)
            predict = model(image)
            acc = paddle.metric.accuracy(F.softmax(predict), label)
            avg_loss = paddle.mean(F.cross_entropy(predict, label))
            avg_loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            lr.step()
            float(avg_loss), float(acc)
            seen += len(label_data)
            if epoch > 0 and len(times) < args.steps:
                times.append(time.perf_counter() - t)
        rows.append({'seen': seen, 'seconds': time.perf_counter() - start})
    return {'epoch_samples_per_s': epoch_rate(rows), 'step_ms': 1000 * statistics.median(times)}


def worker_torch(args, options):
    """The same network, optimizer and schedule as its users write it (pytorch/examples mnist):
    a DataLoader over the arrays, shuffle=True, batch 100, Adam + a linear LR decay."""
    import numpy as np
    import torch
    import torch.nn as tnn
    import torch.nn.functional as TF
    if options.get('threads'):
        torch.set_num_threads(options['threads'])
    data = np.load(options['path'])
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(data['x']), torch.from_numpy(data['y']))
    loader = torch.utils.data.DataLoader(dataset, batch_size=100, shuffle=True)
    torch.manual_seed(0)
    model = tnn.Sequential(tnn.Conv2d(1, 20, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                           tnn.Conv2d(20, 20, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                           tnn.Flatten(), tnn.Linear(980, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    total = args.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - 0.9 * min(s, total) / total)
    rows, times = [], []
    model.train()
    for epoch in range(args.epochs):
        start, seen = time.perf_counter(), 0
        for images, labels in loader:
            t = time.perf_counter()
            optimizer.zero_grad()
            loss = TF.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss.item()
            seen += len(labels)
            if epoch > 0 and len(times) < args.steps:
                times.append(time.perf_counter() - t)
        rows.append({'seen': seen, 'seconds': time.perf_counter() - start})
    return {'epoch_samples_per_s': epoch_rate(rows), 'step_ms': 1000 * statistics.median(times),
            'torch': torch.__version__, 'threads': torch.get_num_threads()}


def worker_sgemm(args, options):
    """What this machine's cores reach in the best case: a 2048 x 2048 float32 matmul (threaded
    MKL/oneDNN sgemm), in paddle with our settings and in PyTorch at its defaults."""
    n, times = 2048, []
    if options['lib'] == 'torch':
        import torch
        a = torch.rand(n, n)

        def run():
            return torch.matmul(a, a)
    else:
        sys.path.insert(0, ROOT)
        import startup
        paddle = startup.import_paddle()  # with the scripts' CPU settings
        a = paddle.rand([n, n])

        def run():
            return float(paddle.matmul(a, a)[0, 0])
    for _ in range(12):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {'gflops': 2 * n ** 3 / min(times[2:]) / 1e9}


# ---- the driver ------------------------------------------------------------------------------------------

def spawn(args, worker, options, env_changes, python=sys.executable):
    env = dict(CLEAN_ENV)
    env.update(env_changes)
    cmd = [python, os.path.join(HERE, 'bench.py'), '--worker', worker, '--epochs', str(args.epochs),
           '--steps', str(args.steps), '--options', json.dumps(options)]
    cmd += ['--data-dir', args.data_dir] if args.data_dir else []
    if options.get('nproc'):  # PaddlePaddle's own launcher; rank 0 prints the result
        cmd = [python, '-m', 'paddle.distributed.launch', '--nproc_per_node', str(options['nproc']),
               '--log_dir', os.path.join(options['tmp'], 'log')] + cmd[1:]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return {'error': tail[-1][:200] if tail else f'exit {proc.returncode}'}
    return json.loads(lines[-1])


def cpu_model():  # for reports (here, tools/results.py, tests/goldens.py): 'AMD EPYC 9B14', 'Apple M2', ...
    if sys.platform == 'darwin':
        return subprocess.run(['sysctl', '-n', 'machdep.cpu.brand_string'], capture_output=True,
                              text=True).stdout.strip() or platform.processor()
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import startup  # standard library only: the driver itself never imports paddle
    return startup.linux_cpu_info('model name') or platform.processor() or platform.machine()


def machine():
    cpu = cpu_model()
    versions = {}
    for package in ('paddlepaddle', 'numpy'):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return dict(versions, cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
                load=os.getloadavg()[0], OMP_NUM_THREADS=CLEAN_ENV.get('OMP_NUM_THREADS'))


def summary(runs):
    """Median and spread across rounds of each figure."""
    ok = [r for r in runs if 'epoch_samples_per_s' in r]
    if not ok:
        return {'error': runs[-1].get('error', runs[-1].get('skipped', '?'))}
    out = {k: statistics.median(r[k] for r in ok) for k in ok[0] if isinstance(ok[0][k], float)}
    rates = [r['epoch_samples_per_s'] for r in ok]
    out.update({k: v for k, v in ok[0].items() if not isinstance(v, float)}, rounds=rates,
               spread=(max(rates) - min(rates)) / statistics.median(rates))
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        work = {'dump': worker_dump, 'script': worker_script, 'tutorial': worker_tutorial, 'torch': worker_torch,
                'sgemm': worker_sgemm, 'profile': worker_profile}
        print(json.dumps(work[args.worker](args, json.loads(args.options))))
        return None
    if args.profile:  # the table goes straight to the terminal
        cmd = [sys.executable, os.path.join(HERE, 'bench.py'), '--worker', 'profile', '--steps', str(args.steps)]
        return subprocess.run(cmd + (['--data-dir', args.data_dir] if args.data_dir else []), env=CLEAN_ENV).returncode
    configs = [c for c in CONFIGS if not args.only or any(c[0].startswith(p) for p in args.only)]
    info = machine()
    print(f'machine: {info["cpu"]} ({info["cores"]} cores), python {info["python"]}, paddlepaddle {info["paddlepaddle"]}, '
          f'load average {info["load"]:.2f}; OMP_NUM_THREADS={info["OMP_NUM_THREADS"]} in the environment')
    torch_python = TORCH_PYTHON if os.path.exists(TORCH_PYTHON) else sys.executable
    runs = {label: [] for label, *_ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, 'train.npz')
        dumped = spawn(args, 'dump', {'path': npz}, {})
        if 'error' in dumped:
            sys.exit(f'error: could not load MNIST for the bench ({dumped["error"]}); pass --data-dir')
        for round_ in range(args.rounds):
            for label, worker, options, env in configs:
                options = dict(options, path=npz, tmp=tmp)
                r = spawn(args, worker, options, env, torch_python if worker == 'torch' else sys.executable)
                if worker == 'torch' and 'error' in r and 'torch' in r['error']:
                    r = {'skipped': 'PyTorch is not installed: make bench-env (or pip install torch into .venv-torch)'}
                runs[label].append(r)
                print(f'  round {round_ + 1}: {label}: {r.get("epoch_samples_per_s", r.get("error", r.get("skipped")))}', flush=True)
        sgemm = {'paddle': spawn(args, 'sgemm', {'lib': 'paddle'}, {}),
                 'PyTorch': spawn(args, 'sgemm', {'lib': 'torch'}, {}, torch_python)}
        if 'torch' in sgemm['PyTorch'].get('error', ''):
            sgemm['PyTorch'] = {'error': 'not installed: make bench-env'}
    table = {label: summary(rs) for label, rs in runs.items()}
    ours = table[configs[0][0]].get('epoch_samples_per_s')
    print(f'\nsamples/s of the training loop over epochs 2-{args.epochs} (median of {args.rounds} rounds; spread = '
          f'(max - min) / median), and the median step of batch 100')
    print(f'{"":44s} {"samples/s":>9s} {"spread":>7s} {"step ms":>8s} {"GFLOP/s":>8s}   ours / this')
    for label, r in table.items():
        if 'epoch_samples_per_s' not in r:
            print(f'{label:44s} {r["error"]}')
            continue
        ratio = '' if label == configs[0][0] or not ours else f'{ours / r["epoch_samples_per_s"]:.2f}x'
        step = f'{r["step_ms"]:8.1f} {FLOP_PER_STEP / r["step_ms"] / 1e6:8.1f}' if 'step_ms' in r else f'{"":8s} {"":8s}'
        print(f'{label:44s} {r["epoch_samples_per_s"]:9.0f} {100 * r["spread"]:6.1f}% {step}   {ratio}')
    peaks = ', '.join(f'{lib} {r["gflops"]:.0f}' if 'gflops' in r else f'{lib} not measured ({r["error"]})'
                      for lib, r in sgemm.items())
    print(f'one step = {FLOP_PER_STEP / 1e9:.2f} GFLOP; the best case here, a 2048x2048 float32 matmul: {peaks} GFLOP/s')
    first = table[configs[0][0]]
    if 'eval_s' in first:
        print(f'\nevaluation of {first["eval_images"]:,} images: {first["eval_s"]:.2f} s; DataLoader share of a step: '
              f'{100 * first["data_share"]:.1f}%')
    report = {'machine': info, 'args': vars(args), 'runs': runs, 'table': table, 'sgemm_gflops': sgemm,
              'flop_per_step': FLOP_PER_STEP}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    print(f'wrote {args.out}')
    return report


if __name__ == '__main__':
    main()
