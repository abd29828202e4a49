"""`make all`: the whole course in one command -> results/RESULTS.md with a table and figures.

The story in numbers: a linear model regressing the digit fails, an MLP helps, a CNN with
cross-entropy wins; Adam converges faster than SGD; L2 trades accuracy; resumed training matches the
uninterrupted run. Every stage runs with the tutorial's settings through its script's main(), as a
notebook would call it.

    python results.py --data-dir ../shared/data/mnist-mini --housing-data ../shared/data
    python results.py --fast ...      # the same pipeline on a fraction of the data, in a few minutes
"""
import argparse
import datetime
import os
import platform
import time

import common  # first: it sets CPU switches that must precede paddle's import
import checkpoints

import numpy as np
import paddle

import housing
import mnist_cnn
import mnist_linear
import mnist_mlp
import mnist_numpy
import resume

MODULES = {'mnist_linear': mnist_linear, 'mnist_mlp': mnist_mlp, 'mnist_numpy': mnist_numpy, 'mnist_cnn': mnist_cnn}
CONSTANT = ['--schedule', 'constant']
# (name, stage, script, model, flags): the tutorial's settings unless the flags say otherwise
EXPERIMENTS = [
    ('linear-mse', '二', 'mnist_linear', 'Linear 784-1', []),
    ('linear-ce', '二', 'mnist_linear', 'Linear 784-10 (softmax)', ['--loss', 'ce']),
    ('mlp-mse', '四', 'mnist_mlp', 'MLP 784-10-10-1', []),
    ('mlp-ce', '四', 'mnist_mlp', 'MLP 784-10-10-10', ['--loss', 'ce']),
    ('mlp-ce-300', '四', 'mnist_mlp', 'MLP 784-300-10', ['--loss', 'ce', '--hidden', '300']),
    ('mlp-numpy', '四', 'mnist_numpy', 'numpy MLP 784-128-10', []),
    ('cnn-mse-sgd', '四', 'mnist_cnn', 'CNN, fc 980-1', ['--loss', 'mse', '--opt', 'sgd'] + CONSTANT),
    ('cnn-ce-sgd', '五/六', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'sgd'] + CONSTANT),
    ('cnn-ce-momentum', '六', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'momentum'] + CONSTANT),
    ('cnn-ce-adagrad', '六', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'adagrad'] + CONSTANT),
    ('cnn-ce-adam', '六/八', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'adam'] + CONSTANT),
    ('cnn-ce-adam-l2', '八', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'adam', '--l2', '0.1'] + CONSTANT),
    ('cnn-final', '九', 'mnist_cnn', 'CNN, fc 980-10', []),  # Adam + PolynomialDecay 0.01 -> 0.001
]
HOUSING = [('housing-numpy-gd', ['--impl', 'numpy', '--method', 'gd']),
           ('housing-numpy-sgd', ['--impl', 'numpy', '--method', 'sgd']),
           ('housing-paddle', ['--impl', 'paddle'])]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data-dir', default=None, help='MNIST (default: the scripts\' usual lookup)')
    parser.add_argument('--housing-data', default=None, help='housing.data or its folder (default: usual lookup)')
    parser.add_argument('--out', default='results', help='folder for RESULTS.md, figures and every run')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'gpu'])
    parser.add_argument('--fast', action='store_true',
                        help='a fraction of the data (--train-limit 1000) and 2 epochs: a few minutes')
    return parser


# ---- running the experiments ------------------------------------------------------------------

def run_mnist(args, name, script, flags):
    """One training run through the script's main(); a diverged or failed run is a row, not a crash."""
    argv = flags + ['--out', os.path.join(args.out, 'runs', name)]
    if script != 'mnist_numpy':  # the numpy network has no checkpoints and runs on the CPU
        argv += ['--ckpt-dir', os.path.join(args.out, 'checkpoints', name), '--overwrite', '--device', args.device]
    argv += ['--data-dir', args.data_dir] if args.data_dir else []
    argv += ['--train-limit', '1000', '--epochs', '2'] if args.fast else []
    try:
        return MODULES[script].main(argv)
    except common.UserError as e:
        print(f'error: {e}')
        return {'error': str(e)}


def run_resume(args):
    """Stage 九: resume the final CNN from its epoch-0 checkpoint and compare every batch loss."""
    argv = ['--ckpt', os.path.join(args.out, 'checkpoints', 'cnn-final', 'mnist_epoch0'),
            '--out', os.path.join(args.out, 'runs', 'cnn-resumed'),
            '--compare', os.path.join(args.out, 'runs', 'cnn-final', 'metrics.json')]
    try:
        return resume.main(argv), True
    except SystemExit:  # --compare found a difference
        return checkpoints.load_json(os.path.join(args.out, 'runs', 'cnn-resumed', 'metrics.json'), 'metrics'), False
    except common.UserError as e:
        print(f'error: {e}')
        return None, False


def run_housing(args, name, flags):
    argv = flags + ['--out', os.path.join(args.out, 'runs', name)]
    argv += ['--data-dir', args.housing_data] if args.housing_data else []
    argv += ['--epochs', '20' if 'paddle' in flags else '50'] if args.fast else []
    try:
        return housing.main(argv)
    except common.UserError as e:
        print(f'error: {e}')
        return {'error': str(e)}


# ---- figures --------------------------------------------------------------------------------------

def smooth(values, window=10):
    """Moving average, so curves of noisy per-batch losses can be told apart."""
    values = np.asarray(values, dtype=float)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode='valid')


def figure_optimizers(runs, folder):
    series = {}
    for opt in ('sgd', 'momentum', 'adagrad', 'adam'):
        m = runs.get(f'cnn-ce-{opt}', {})
        if 'batch_losses' in m:
            y = smooth(m['batch_losses'])
            series[opt] = (np.arange(len(y)), y)
    return common.plot_lines(os.path.join(folder, 'optimizers.png'), series,
                             'Stage 6: CNN training loss by optimizer, lr 0.01 (moving average, 10 batches)',
                             'step (batch)', 'cross-entropy loss', logy=True)


def figure_loss_kinds(runs, folder):
    series = {}
    for name, label in (('cnn-mse-sgd', 'CNN, MSE on the digit'), ('cnn-ce-sgd', 'CNN, softmax + cross-entropy'),
                        ('mlp-mse', 'MLP, MSE'), ('mlp-ce', 'MLP, cross-entropy'),
                        ('linear-mse', 'linear, MSE'), ('linear-ce', 'linear, cross-entropy')):
        m = runs.get(name, {})
        if m.get('epochs'):
            series[label] = ([r['epoch'] for r in m['epochs']], [r['valid_acc'] for r in m['epochs']])
    return common.plot_lines(os.path.join(folder, 'mse_vs_ce.png'), series,
                             'Stage 5: validation accuracy, regression (MSE) vs classification (CE)',
                             'epoch', 'validation accuracy', markers=True)


def figure_l2(runs, folder):
    series = {}
    for name, label in (('cnn-ce-adam', 'no L2'), ('cnn-ce-adam-l2', 'L2 0.1')):
        m = runs.get(name, {})
        if m.get('epochs'):
            epochs = [r['epoch'] for r in m['epochs']]
            series[f'{label}: train'] = (epochs, [r['train_acc'] for r in m['epochs']])
            series[f'{label}: valid'] = (epochs, [r['valid_acc'] for r in m['epochs']])
    return common.plot_lines(os.path.join(folder, 'l2.png'), series,
                             'Stage 8: CNN with Adam, with and without L2 regularisation',
                             'epoch', 'accuracy', markers=True)


def figure_resume(full, resumed, folder):
    """Uninterrupted and resumed losses overlaid, and their difference below (all zero when exact)."""
    plt = common.pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True,
                                      gridspec_kw={'height_ratios': [3, 1.3]})
    steps_full = np.arange(len(full['batch_losses']))
    steps_res = np.arange(len(resumed['batch_losses'])) + resumed['first_step']
    top.plot(steps_full, full['batch_losses'], color='tab:blue', linewidth=2.5, label='uninterrupted run')
    top.plot(steps_res, resumed['batch_losses'], color='tab:orange', linewidth=1, label='resumed from epoch 0')
    top.axvline(resumed['first_step'], color='gray', linestyle='--', linewidth=0.8)
    top.set_yscale('log')
    top.set_ylabel('loss')
    top.set_title('Stage 9: resumed training vs the uninterrupted run')
    top.legend()
    reference = np.asarray(full['batch_losses'])[steps_res]
    bottom.plot(steps_res, np.asarray(resumed['batch_losses']) - reference, color='tab:red')
    bottom.set_ylabel('resumed - original')
    bottom.set_xlabel('step (batch)')
    fig.tight_layout()
    return common.save_figure(fig, os.path.join(folder, 'resume.png'))


# ---- the report -------------------------------------------------------------------------------------

def mnist_row(name, stage, script, model, m):
    if 'error' in m:
        return f'| {name} | {stage} | {script}.py | {model} | | | | failed: {m["error"][:80]}… | | | | | | |'
    cfg = m['config']
    opt = f'{cfg.get("opt", "sgd")}{" + poly" if cfg.get("schedule") == "poly" else ""}' + (' (numpy)' if script == 'mnist_numpy' else '')
    opt += f', L2 {cfg["l2"]}' if cfg.get('l2') else ''
    speed = np.mean([r['samples_per_s'] for r in m['epochs']]) if m['epochs'] else 0
    mae = f' (MAE {m["eval"]["mae"]:.2f})' if 'mae' in m['eval'] else ''
    sizes = cfg['data']['sizes']
    data = f'{os.path.basename(cfg["data"]["path"])} {sizes["train"]:,}/{sizes["valid"]:,}/{sizes["eval"]:,}'
    return (f'| {name} | {stage} | {script}.py | {model} | {cfg.get("loss", "ce")} | {opt}, lr {cfg["lr"]} | {cfg["epochs"]} | '
            f'**{100 * m["eval"]["acc"]:.2f}%**{mae} | {m["eval"]["loss"]:.4f} | {m["wall_s"]:.1f} | {speed:,.0f} | '
            f'{data} | {m.get("paddle_version", "-")} | {m["device"]} |')


def write_report(args, runs, housing_runs, resume_same, figures, total_s):
    first = next((m for m in runs.values() if 'config' in m), None)
    data = first['config']['data'] if first else {'path': '?', 'sizes': {}}
    sizes = data['sizes']
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor()) if os.path.exists('/proc/cpuinfo') else platform.processor()
    lines = [
        '# Results', '',
        f'Generated by `make all{" FAST=1" if args.fast else ""}` (results.py) on {datetime.date.today()}, '
        f'in {total_s / 60:.1f} minutes. PaddlePaddle {paddle.__version__}, Python {platform.python_version()}, '
        f'{cpu} ({os.cpu_count()} cores).', '',
        f'MNIST data: `{data["path"]}` ({data.get("kind", "?")}), train {sizes.get("train", 0):,} / '
        f'valid {sizes.get("valid", 0):,} / eval {sizes.get("eval", 0):,} images'
        f'{" (--fast: the first 1,000 training images, 2 epochs)" if args.fast else ""}. Accuracy and loss are on the '
        f'eval split; "samples/s" is the training speed (mean over epochs).', '',
        '## MNIST', '',
        '| experiment | stage | script | model | loss | optimizer | epochs | eval accuracy | eval loss | wall s '
        '| samples/s | data (train/valid/eval) | paddle | device |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for name, stage, script, model, _ in EXPERIMENTS:
        lines.append(mnist_row(name, stage, script, model, runs[name]))
    resumed = runs.get('cnn-resumed')
    if resumed:
        verdict = 'identical to the uninterrupted run, every batch' if resume_same else 'DIFFERENT from the uninterrupted run'
        lines += ['', f'**Stage 九, resume**: `resume.py --ckpt .../cnn-final/mnist_epoch0` trained epochs 1 to '
                      f'{resumed["config"]["epochs"] - 1} again: its {len(resumed["batch_losses"])} batch losses are '
                      f'{verdict}; eval accuracy {100 * resumed["eval"]["acc"]:.2f}%.']
    lines += ['', '## Boston housing', '',
              '| experiment | implementation | epochs | batch | lr | test RMSE ($1000s) | test MSE (normalised) | wall s |',
              '|---|---|---|---|---|---|---|---|']
    for name, _ in HOUSING:
        m = housing_runs[name]
        if 'error' in m:
            lines.append(f'| {name} | failed: {m["error"][:80]} | | | | | | |')
            continue
        c = m['config']
        lines.append(f'| {name} | {c["impl"]} {c["method"]} | {c["epochs"]} | {c["batch_size"] or "all"} | {c["lr"]} | '
                     f'**{m["test_rmse_k"]:.2f}** | {m["test_mse"]:.4f} | {m["wall_s"]:.1f} |')
    if housing_runs and 'config' in housing_runs.get('housing-paddle', {}):
        lines += ['', f'Housing data: `{housing_runs["housing-paddle"]["config"]["data"]["path"]}`.']
    lines += ['', '## Figures', '']
    captions = {'optimizers.png': 'Stage 六: the CNN\'s training loss with SGD, Momentum, AdaGrad and Adam (lr 0.01).',
                'mse_vs_ce.png': 'Stage 五: validation accuracy per epoch, regressing the digit (MSE) vs classifying it (cross-entropy).',
                'l2.png': 'Stage 八: train and validation accuracy with and without L2 regularisation (coefficient 0.1).',
                'resume.png': 'Stage 九: losses of the uninterrupted run and of the run resumed from epoch 0, and their difference.'}
    for path in figures:
        name = os.path.basename(path)
        lines += [f'![{name}]({name})', '', captions[name], '']
    report = os.path.join(args.out, 'RESULTS.md')
    with open(report, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return report


def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    runs = {}
    for i, (name, stage, script, model, flags) in enumerate(EXPERIMENTS):
        print(f'\n===== [{i + 1}/{len(EXPERIMENTS) + 1}] {name} (stage {stage}): {script}.py {" ".join(flags)}', flush=True)
        runs[name] = run_mnist(args, name, script, flags)
    print(f'\n===== [{len(EXPERIMENTS) + 1}/{len(EXPERIMENTS) + 1}] resume cnn-final from epoch 0', flush=True)
    resume_same = None
    if 'error' not in runs['cnn-final']:
        resumed, resume_same = run_resume(args)
        if resumed:
            runs['cnn-resumed'] = resumed
    housing_runs = {}
    for name, flags in HOUSING:
        print(f'\n===== {name}: housing.py {" ".join(flags)}', flush=True)
        housing_runs[name] = run_housing(args, name, flags)
    figures = [figure_optimizers(runs, args.out), figure_loss_kinds(runs, args.out), figure_l2(runs, args.out)]
    if 'cnn-resumed' in runs:
        figures.append(figure_resume(runs['cnn-final'], runs['cnn-resumed'], args.out))
    report = write_report(args, runs, housing_runs, resume_same, figures, time.perf_counter() - start)
    print(f'\nwrote {report} and {len(figures)} figures in {args.out}/ ({(time.perf_counter() - start) / 60:.1f} min)')
    return report


if __name__ == '__main__':
    common.run_main(main)
