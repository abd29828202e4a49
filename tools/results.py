"""`make all`: the whole course in one command -> results/RESULTS.md, a table and figures.

Every stage runs through its script's main(), as a notebook would call it, with the tutorial's
settings; each row stands beside the figure the tutorial printed (its MNIST text, "深度学习入门必看-
手写数字识别", quoted in EXPERIMENTS below, so no copy of the course is needed) and the published one. Where the tutorial's settings leave a model unconverged, a row with
settings that converge follows. Stage 九 is run three ways: resume.py, and the tutorial's train_again()
(tutorial_resume.py) with a restarted rate, with and without a reshuffle. Finally the course's mnist.json.gz
is written from the idx files (tools/mnist_json.py) and trained on, to show it gives the same losses.

    python tools/results.py --data-dir ../shared/data/mnist --housing-data ../shared/data
    python tools/results.py --fast ...      # the same pipeline on 1,000 training images, 2 epochs: minutes
"""
import argparse
import datetime
import os
import platform
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the stage scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # mnist_json beside this file
import startup
paddle = startup.import_paddle()  # first the project's Python and the CPU settings: see startup.py

import numpy as np

import common
import plots
from safe_files import atomic_write

import bench  # cpu_model
import housing
import mnist_cnn
import mnist_json
import mnist_linear
import mnist_mlp
import mnist_numpy
import resume
import tutorial_resume

MODULES = {'mnist_linear': mnist_linear, 'mnist_mlp': mnist_mlp, 'mnist_numpy': mnist_numpy, 'mnist_cnn': mnist_cnn}
CONSTANT = ['--schedule', 'constant']
LINEAR = 'LeCun 1998, linear classifier: 88.0%; Paddle book, softmax regression: 92.34%'
MLP = 'LeCun 1998, MLP 300 hidden: 95.3%; Paddle book, MLP: 97.66%'
CNN = 'LeCun 1998, LeNet-5: 99.05%; Paddle book, CNN: 99.20%'
# name, stage, script, model, flags (the tutorial's settings unless said), the tutorial's printed figure
# ((epoch, batch, loss) of one batch, or a text), the published figure, why ours differs
EXPERIMENTS = [
    ('linear-mse', '二', 'mnist_linear', 'Linear 784-1, MSE', [], (9, 400, 3.3174), '',
     'one batch\'s loss, a different shuffle; the digit as a number is rarely rounded right'),
    ('linear-ce', '二/五', 'mnist_linear', 'Linear 784-10, softmax', ['--loss', 'ce'], None, LINEAR,
     'the tutorial\'s lr 0.001 for 5,000 steps leaves it far from converged'),
    ('linear-ce-converged', '二/五', 'mnist_linear', 'Linear 784-10, softmax', ['--loss', 'ce', '--lr', '0.1', '--epochs', '20'],
     None, LINEAR, 'lr 0.1, 20 epochs: converged; LeCun\'s 88% had no bias and another preprocessing'),
    ('mlp-mse', '四', 'mnist_mlp', 'MLP 784-10-10-1 sigmoid, MSE', [], (4, 400, 1.6902), '',
     'one batch\'s loss, a different shuffle'),
    ('mlp-ce', '四/五', 'mnist_mlp', 'MLP 784-10-10-10 sigmoid', ['--loss', 'ce'], None, MLP,
     'ten sigmoid units and SGD at 0.01 for 2,500 steps: barely trained'),
    ('mlp-ce-300', '四/五', 'mnist_mlp', 'MLP 784-300-10 sigmoid', ['--loss', 'ce', '--hidden', '300'], None, MLP,
     'the tutorial\'s lr 0.01, 5 epochs: unconverged'),
    ('mlp-ce-300-converged', '四/五', 'mnist_mlp', 'MLP 784-300-10 sigmoid',
     ['--loss', 'ce', '--hidden', '300', '--lr', '0.5', '--epochs', '20'], None, MLP, 'lr 0.5, 20 epochs: converged'),
    ('mlp-numpy', '四', 'mnist_numpy', 'numpy MLP 784-128-10', [], '83.96% after 1 epoch (004)', MLP,
     'the reference trains image by image, 1 epoch; here batches of 100, 5 epochs'),
    ('cnn-mse-sgd', '四', 'mnist_cnn', 'CNN, fc 980-1, MSE', ['--loss', 'mse', '--opt', 'sgd'] + CONSTANT,
     (4, 400, 8.1900), '', 'regression of the digit: it learns to predict the mean'),
    ('cnn-ce-sgd', '五', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'sgd'] + CONSTANT, (4, 400, 0.1485), CNN,
     'one batch\'s loss, a different shuffle'),
    ('cnn-eval-1-epoch', '八', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'sgd', '--epochs', '1'] + CONSTANT,
     'eval loss 0.1901, accuracy 94.37%', CNN, 'the model its evaluation section loads: 1 epoch of SGD'),
    ('cnn-ce-momentum', '六', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'momentum'] + CONSTANT, None, CNN, ''),
    ('cnn-ce-adagrad', '六', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'adagrad'] + CONSTANT, None, CNN, ''),
    ('cnn-ce-adam', '六', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'adam'] + CONSTANT, (4, 400, 0.0047), CNN,
     'one batch\'s loss, a different shuffle'),
    ('cnn-ce-adam-l2', '八', 'mnist_cnn', 'CNN, fc 980-10', ['--opt', 'adam', '--l2', '0.1', '--epochs', '10'] + CONSTANT,
     (9, 400, 0.2712), CNN, 'L2 0.1 is strong: it holds training accuracy near the tutorial\'s 92%'),
    ('cnn-final', '九', 'mnist_cnn', 'CNN, fc 980-10', [], (4, 400, 0.0393), CNN,
     'Adam at 0.01 is high for this network; its schedule ends at 0.001 (the tutorial\'s at 0.0025)'),
    ('cnn-best', '九', 'mnist_cnn', 'CNN, fc 980-10, --shift 1', ['--lr', '0.001', '--epochs', '15', '--shift', '1'], None,
     CNN, 'the same CNN, Adam 0.001 -> 0.0001 over 15 epochs, images moved by up to 1 pixel each epoch'),
]
HOUSING = [('housing-numpy-gd', ['--impl', 'numpy', '--method', 'gd']),
           ('housing-numpy-sgd', ['--impl', 'numpy', '--method', 'sgd']),
           ('housing-paddle', ['--impl', 'paddle'])]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=common.HelpFormatter)
    parser.add_argument('--data-dir', help='MNIST idx files (default: the scripts\' usual lookup)')
    parser.add_argument('--housing-data', help='housing.data or its folder (default: usual lookup)')
    parser.add_argument('--out', default='results', help='folder for RESULTS.md, figures and every run')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'gpu'])
    parser.add_argument('--fast', action='store_true', help='1,000 training images and 2 epochs: a few minutes (a check that every stage runs, not figures)')
    return parser


# ---- running the experiments ------------------------------------------------------------------

def guarded(run, *args):
    """A failed run becomes a row saying why, not the end of `make all`."""
    try:
        return run(*args)
    except common.UserError as e:
        print(f'error: {e}')
        return {'error': str(e)}


def run_mnist(args, name, script, flags, data_dir=None):
    argv = flags + ['--out', os.path.join(args.out, 'runs', name), '--log-every', '100']
    if script != 'mnist_numpy':  # the numpy network has no checkpoints and runs on the CPU
        argv += ['--ckpt-dir', os.path.join(args.out, 'checkpoints', name), '--device', args.device]
    argv += ['--data-dir', data_dir or args.data_dir] if (data_dir or args.data_dir) else []
    argv += ['--train-limit', '1000', '--epochs', '2'] if args.fast else []
    return guarded(MODULES[script].main, argv)


def run_resumes(args):
    """Stage 九 three ways from cnn-final's epoch-0 checkpoint: ours and train_again() with one or two faults."""
    ckpt = os.path.join(args.out, 'checkpoints', 'cnn-final', 'mnist_epoch0')
    full = os.path.join(args.out, 'runs', 'cnn-final', 'metrics.json')

    def out(name):
        return ['--out', os.path.join(args.out, 'runs', name)]
    runs = {'ours': guarded(resume.main, ['--ckpt', ckpt, '--ckpt-dir', os.path.join(args.out, 'checkpoints', 'resumed')]
                            + out('cnn-resumed'))}
    for name, extra in (('rate restarted', ['--keep-order']), ('rate restarted, reshuffled', [])):
        folder = 'tutorial-' + name.replace(', ', '-').replace(' ', '-')
        runs[name] = guarded(tutorial_resume.main, ['--ckpt', ckpt, '--compare', full, '--ckpt-dir',
                                                    os.path.join(args.out, 'checkpoints', folder)] + out(folder) + extra)
    return runs


def run_json(args):
    """make data-json, then cnn-final on that file: its losses against the idx files' run."""
    path = os.path.join(args.out, 'work', 'mnist.json.gz')
    written = guarded(mnist_json.main, ['--out', path] + (['--data-dir', args.data_dir] if args.data_dir else []))
    if isinstance(written, dict):
        return written
    return run_mnist(args, 'cnn-final-json', 'mnist_cnn', [], data_dir=path)


def run_housing(args, name, flags):
    argv = flags + ['--out', os.path.join(args.out, 'runs', name)]
    argv += ['--data-dir', args.housing_data] if args.housing_data else []
    argv += ['--epochs', '20' if 'paddle' in flags else '50'] if args.fast else []
    return guarded(housing.main, argv)


# ---- figures ----------------------------------------------------------------------------------------

def smooth(values, window=10):
    values = np.asarray(values, dtype=float)
    return values if len(values) < window else np.convolve(values, np.ones(window) / window, mode='valid')


def figures(runs, resumes, folder):
    def series(names, key):
        return {label: ([r['epoch'] for r in runs[n]['epochs']], [r[key] for r in runs[n]['epochs']])
                for n, label in names if runs.get(n, {}).get('epochs')}
    opt = {o: (np.arange(len(smooth(runs[f'cnn-ce-{o}']['batch_losses']))), smooth(runs[f'cnn-ce-{o}']['batch_losses']))
           for o in ('sgd', 'momentum', 'adagrad', 'adam') if 'batch_losses' in runs.get(f'cnn-ce-{o}', {})}
    paths = [plots.plot_lines(os.path.join(folder, 'optimizers.png'), opt, 'Stage 6: the CNN\'s training loss by '
                               'optimizer, lr 0.01 (moving average of 10 batches)', 'step (batch)', 'loss', logy=True),
             plots.plot_lines(os.path.join(folder, 'mse_vs_ce.png'), series(
                 [('cnn-mse-sgd', 'CNN, MSE'), ('cnn-ce-sgd', 'CNN, cross-entropy'), ('mlp-mse', 'MLP, MSE'),
                  ('mlp-ce', 'MLP, cross-entropy'), ('linear-mse', 'linear, MSE'), ('linear-ce', 'linear, cross-entropy')],
                 'valid_acc'), 'Stage 5: validation accuracy, the digit regressed (MSE) or classified (cross-entropy)',
                 'epoch', 'validation accuracy', markers=True),
             plots.plot_lines(os.path.join(folder, 'l2.png'), {
                 f'{label}: {part}': xy for part in ('train', 'valid') for label, xy in
                 series([('cnn-ce-adam', 'no L2'), ('cnn-ce-adam-l2', 'L2 0.1')], f'{part}_acc').items()},
                 'Stage 8: the CNN with Adam, with and without L2 regularisation', 'epoch', 'accuracy', markers=True)]
    full = runs.get('cnn-final', {})
    if 'batch_losses' in full and all('batch_losses' in r for r in resumes.values()):
        paths.append(figure_resume(full, resumes, folder))
    return paths


def figure_resume(full, resumes, folder):
    """The central claim made visible: each resumed run's loss minus the uninterrupted run's, batch by batch."""
    fig, (top, bottom) = plots.pyplot().subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={'height_ratios': [2, 2]})
    reference = np.asarray(full['batch_losses'])
    top.plot(np.arange(len(reference)), reference, color='black', linewidth=1, label='uninterrupted run')
    colours = {'ours': 'tab:green', 'rate restarted': 'tab:orange', 'rate restarted, reshuffled': 'tab:red'}
    for name, run in resumes.items():  # ours drawn last and thicker: a flat line on top of the others
        steps = np.arange(len(run['batch_losses'])) + run['first_step']
        label = 'resume.py (ours): 0 at every batch' if name == 'ours' else f'train_again() with {name}'
        bottom.plot(steps, np.asarray(run['batch_losses']) - reference[steps], color=colours[name], label=label,
                    linewidth=2 if name == 'ours' else 0.7, zorder=3 if name == 'ours' else 2)
    top.axvline(resumes['ours']['first_step'], color='gray', linestyle='--', linewidth=0.8)
    top.set(yscale='log', ylabel='loss')
    top.set_title('Stage 9: training resumed from the end of epoch 0', fontsize=10)
    top.legend(fontsize=8)
    bottom.set(xlabel='step (batch)', ylabel='resumed - uninterrupted')
    bottom.legend(fontsize=8)
    fig.tight_layout()
    return plots.save_figure(fig, os.path.join(folder, 'resume.png'))


# ---- the report ---------------------------------------------------------------------------------------

def tutorial_cells(m, tutorial):
    """(ours at the tutorial's printed batch, the tutorial's figure)."""
    if tutorial is None:
        return '', ''
    if isinstance(tutorial, str):
        return '', tutorial
    epoch, batch, loss = tutorial
    index = epoch * m['steps_per_epoch'] + batch
    ours = f'{m["batch_losses"][index]:.4f}' if index < len(m['batch_losses']) else 'n/a (shorter run)'
    return ours, f'{loss:.4f} (epoch {epoch}, batch {batch})'


def mnist_row(row, m):
    name, stage, script, model, flags, tutorial, literature, why = row
    if 'error' in m:
        return f'| {name} | {stage} | {model} | failed: {m["error"][:100]} | | | | | | | |'
    cfg, ev = m['config'], m['eval']
    opt = 'sgd (numpy)' if script == 'mnist_numpy' else cfg.get('opt', 'sgd') + (' + poly' if cfg.get('schedule') == 'poly' else '')
    opt += f', L2 {cfg["l2"]}' if cfg.get('l2') else ''
    seconds = np.mean([r['seconds'] for r in m['epochs']])
    speed = np.mean([r['samples_per_s'] for r in m['epochs']])
    mae = f', MAE {ev["mae"]:.2f}' if 'mae' in ev else ''
    ours_at, printed = tutorial_cells(m, tutorial)
    return (f'| {name} | {stage} | {model}; {opt}, lr {cfg["lr"]}, batch {cfg["batch_size"]}, {cfg["epochs"]} epochs | '
            f'**{100 * ev["acc"]:.2f}%** | {ev["loss"]:.4f}{mae} | {ours_at} | {printed} | {literature} | '
            f'{seconds:.1f} | {speed:,.0f} | {why} |')


def resume_lines(full, resumes):
    per_epoch = full['steps_per_epoch']
    at = per_epoch + 200 if per_epoch > 200 else per_epoch  # the tutorial's printed batch, where there is one
    lines = ['', '## Stage 九: resuming from the end of epoch 0', '',
             f'| resume | batches compared | identical | largest difference | loss at epoch 1, batch {at - per_epoch} |',
             '|---|---|---|---|---|']
    lines.append(f'| the uninterrupted run | | | | {full["batch_losses"][at]:.8f} |' if at < len(full['batch_losses']) else '')
    for name, run in resumes.items():
        if 'batch_losses' not in run:
            lines.append(f'| {name} | failed: {run.get("error", "?")[:100]} | | | |')
            continue
        ours, ref = np.asarray(run['batch_losses']), np.asarray(full['batch_losses'])[run['first_step']:]
        value = f'{ours[at - run["first_step"]]:.8f}' if 0 <= at - run['first_step'] < len(ours) else ''
        label = 'resume.py (ours)' if name == 'ours' else ('faults: ' if ',' in name else 'fault: ') + name
        lines.append(f'| {label} | {len(ours):,} | {int((ours == ref).sum()):,} | {np.abs(ours - ref).max():.3g} | {value} |')
    lines += ['', 'The faults (tutorial_resume.py, the tutorial\'s train_again() in today\'s API): the PolynomialDecay '
              'starts anew, so the learning rate is back at 0.01; and each epoch reshuffled from global random state, '
              'as the course\'s loaders of stages 三 to 八 do. Either alone breaks the match; resume.py has neither. '
              'The tutorial printed 0.2429442 (uninterrupted) and 0.22038987 (resumed) at epoch 1, batch 200, from '
              'neither fault (its stage 九 loader does not shuffle; its fluid optimizer restored the schedule\'s '
              'step): most likely from its GPU\'s non-deterministic cuDNN (README, "Stage 九").']
    return lines


def cnn_final_pictures(out):
    """cnn-final's samples.png (三), mistakes.png and confusion.png (八), copied into results/."""
    copied = []
    for name in ('samples.png', 'mistakes.png', 'confusion.png'):
        source = os.path.join(out, 'runs', 'cnn-final', name)
        if os.path.isfile(source):
            atomic_write(os.path.join(out, name), lambda tmp, source=source: shutil.copyfile(source, tmp))
            copied.append(os.path.join(out, name))
    return copied


def write_report(args, runs, resumes, json_run, housing_runs, figure_paths, total_s):
    first = next((m for m in runs.values() if 'config' in m), {'config': {'data': {'path': '?', 'sizes': {}, 'kind': '?'}}})
    data = first['config']['data']
    cpu = bench.cpu_model()
    lines = ['# Results', '',
             f'`make all{" FAST=1" if args.fast else ""}` (tools/results.py), {datetime.date.today()}, {total_s / 60:.1f} minutes; '
             f'PaddlePaddle {paddle.__version__}, Python {platform.python_version()}, {cpu}, {os.cpu_count()} cores, '
             f'device {first.get("device", "?")}.', '',
             f'MNIST: `{data["path"]}` ({data["kind"]}), train {data["sizes"].get("train", 0):,} / valid '
             f'{data["sizes"].get("valid", 0):,} / eval {data["sizes"].get("eval", 0):,} images'
             f'{" (--fast: the first 1,000 training images, 2 epochs: a check that every stage runs, not figures to compare with the tutorial)" if args.fast else ""}. Accuracy and loss are on the '
             f'eval split (the {data["sizes"].get("eval", 0):,} test images). "Ours at the tutorial\'s batch" is our loss at the batch where the '
             f'tutorial printed one; both are single batches, shuffled differently. s/epoch and samples/s: the training '
             f'loop, mean over epochs.', '',
             '| experiment | stage | model and settings | ours: eval accuracy | ours: eval loss | ours at the tutorial\'s batch '
             '| the tutorial printed | published | s/epoch | samples/s | why they differ |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    fast = ' (--fast: 2 epochs on 1,000 images, not the setting this note is about)' if args.fast else ''
    lines += [mnist_row(row[:-1] + (row[-1] + fast,), runs[row[0]]) for row in EXPERIMENTS]
    if 'batch_losses' in runs.get('cnn-final', {}):
        lines += resume_lines(runs['cnn-final'], resumes)
    if 'batch_losses' in json_run and 'batch_losses' in runs.get('cnn-final', {}):
        same = json_run['batch_losses'] == runs['cnn-final']['batch_losses']
        lines += ['', f'**The course\'s mnist.json.gz** (written by `make data-json` from the idx files): cnn-final trained on '
                      f'it gives {"the same" if same else "DIFFERENT"} {len(json_run["batch_losses"]):,} batch losses as on '
                      f'the idx files{" (bit for bit)" if same else ""}; eval accuracy {100 * json_run["eval"]["acc"]:.2f}%.']
    lines += ['', '## Boston housing', '', '| experiment | implementation | epochs | batch | lr | test RMSE ($1000s) '
              '| test MSE (normalised) | wall s |', '|---|---|---|---|---|---|---|---|']
    for name, _ in HOUSING:
        m = housing_runs[name]
        c = m.get('config', {})
        lines.append(f'| {name} | failed: {m["error"][:80]} | | | | | | |' if 'error' in m else
                     f'| {name} | {c["impl"]} {c["method"]} | {c["epochs"]} | {c["batch_size"] or "all"} | {c["lr"]} | '
                     f'**{m["test_rmse_k"]:.2f}** | {m["test_mse"]:.4f} | {m["wall_s"]:.1f} |')
    captions = {'optimizers.png': 'Stage 6: the CNN\'s training loss with SGD, Momentum, AdaGrad and Adam (lr 0.01).',
                'mse_vs_ce.png': 'Stage 5: validation accuracy per epoch, the digit regressed (MSE) or classified.',
                'l2.png': 'Stage 八: train and validation accuracy with and without L2 regularisation (0.1).',
                'resume.png': 'Stage 九: each resumed run\'s loss minus the uninterrupted run\'s, batch by batch: '
                              'resume.py is zero everywhere, the tutorial\'s resume is not.',
                'samples.png': 'Stage 三: the first training images of cnn-final\'s epoch 0 as the model receives '
                               'them (normalised to [-1, 1]), with their labels.',
                'mistakes.png': 'Stage 八: cnn-final\'s misclassified eval images, the most confident mistakes first '
                                '(true digit / predicted digit (probability)).',
                'confusion.png': 'Stage 八: cnn-final\'s confusion matrix on the eval split, true digit (rows) '
                                 'against predicted digit (columns).'}
    lines += ['', '## Figures', '']
    for path in figure_paths:
        name = os.path.basename(path)
        lines += [f'![{name}]({name})', '', captions[name], '']
    report = os.path.join(args.out, 'RESULTS.md')

    def write(tmp):
        with open(tmp, 'w') as f:
            f.write('\n'.join(lines) + '\n')
    atomic_write(report, write)
    return report


def main(argv=None):
    args = common.parse_args(build_parser(), argv)
    start = time.perf_counter()
    runs = {}
    for i, row in enumerate(EXPERIMENTS):
        name, stage, script, _, flags = row[:5]
        print(f'\n===== [{i + 1}/{len(EXPERIMENTS) + 3}] {name} (stage {stage}): {script}.py {" ".join(flags)}'
              + (' (--fast: --train-limit 1000 --epochs 2)' if args.fast else ''), flush=True)
        runs[name] = run_mnist(args, name, script, flags)
    print(f'\n===== [{len(EXPERIMENTS) + 1}/{len(EXPERIMENTS) + 3}] stage 九: resume cnn-final three ways', flush=True)
    resumes = run_resumes(args) if 'error' not in runs['cnn-final'] else {}
    print(f'\n===== [{len(EXPERIMENTS) + 2}/{len(EXPERIMENTS) + 3}] mnist.json.gz: write it, train on it', flush=True)
    json_run = run_json(args)
    print(f'\n===== [{len(EXPERIMENTS) + 3}/{len(EXPERIMENTS) + 3}] Boston housing', flush=True)
    housing_runs = {name: run_housing(args, name, flags) for name, flags in HOUSING}
    figure_paths = figures(runs, resumes, args.out) + cnn_final_pictures(args.out)
    report = write_report(args, runs, resumes, json_run, housing_runs, figure_paths, time.perf_counter() - start)
    print(f'\nwrote {report} and {len(figure_paths)} figures in {args.out}/ ({(time.perf_counter() - start) / 60:.1f} min)')
    return report


if __name__ == '__main__':
    common.run_main(main)
