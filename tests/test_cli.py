"""The scripts end to end, as a user runs them: subprocesses, real files, exit codes, messages."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import fixtures
import predict
from conftest import GPU_ONLY_SKIP, ROOT, gpu_present, python_run, read_metrics, script_env

SCRIPTS = ['mnist_cnn.py', 'resume.py']


@pytest.mark.parametrize('script', SCRIPTS)
def test_help(run_script, tmp_path, script):
    proc = run_script(script, '--help', cwd=tmp_path)
    assert proc.returncode == 0 and '--data-dir' in proc.stdout
    assert 'ccache' not in proc.stderr  # paddle's import-time noise is filtered
    assert '(default: None)' not in proc.stdout  # an option without a default says nothing


def test_tiny_run_writes_metrics_plots_and_checkpoints(run_script, idx_dir, tmp_path):
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, '--epochs', '1', '--train-limit', '150',
                      '--batch-size', '50', '--check-content', '--opt', 'sgd',
                      '--schedule', 'constant', '--l2', '0.001', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'conv1+relu: [50, 20, 28, 28]' in proc.stdout  # the layer check, always printed
    assert 'conv1 kernel [0][0]' in proc.stdout  # --check-content
    assert 'epoch: 0, batch: 0, loss is:' in proc.stdout
    m = read_metrics(tmp_path / 'runs' / 'cnn')
    for key in ('config', 'batch_losses', 'epochs', 'eval', 'wall_s', 'paddle_version', 'device'):
        assert key in m
    assert len(m['batch_losses']) == 3
    assert set(m['epochs'][0]) >= {'epoch', 'train_loss', 'train_acc', 'valid_loss', 'valid_acc',
                                    'samples_per_s', 'seconds'}
    assert m['config']['data']['sizes'] == {'train': 150, 'valid': 100, 'eval': 200}
    assert m['config']['opt'] == 'sgd' and m['config']['l2'] == 0.001
    for name in ('loss.png', 'acc.png', 'model.pdparams', 'model.json', 'kernels.png', 'feature_maps.png'):
        assert (tmp_path / 'runs' / 'cnn' / name).is_file()
    for ext in ('pdparams', 'pdopt', 'json'):
        assert (tmp_path / 'checkpoint' / f'mnist_epoch0.{ext}').is_file()


def test_mse_variant_trains_and_resumes(run_script, idx_dir, tmp_path):
    """Stage 四's regression head (fc 980->1) goes through the same loop, checkpoint and resume; the
    resume keeps the run's own settings, --log-every too."""
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, '--epochs', '2', '--train-limit', '200',
                      '--loss', 'mse', '--log-every', '1', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    full = read_metrics(tmp_path / 'runs' / 'cnn')
    proc = run_script('resume.py', '--ckpt', 'checkpoint/mnist_epoch0', '--compare',
                      'runs/cnn/metrics.json', cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert read_metrics(tmp_path / 'runs' / 'resume')['batch_losses'] == full['batch_losses'][2:]
    assert 'epoch: 1, batch: 1,' in proc.stdout  # every batch, as the run printed (not every 100th)


def digit_png(path, label, size=56, dark_on_light=True):
    """A fixture digit drawn like a user's scan: bigger than 28x28, dark ink on white paper."""
    images, labels = fixtures.synthetic_digits(200, seed=2)
    img = images[list(labels).index(label)]
    if dark_on_light:
        img = 255 - img
    Image.fromarray(img).resize((size, size)).save(path)
    return path


def test_predict_on_a_png(cnn_run, run_script, tmp_path):
    image = digit_png(tmp_path / 'digit.png', label=3)
    proc = run_script('mnist_cnn.py', '--predict', image, '--out', cnn_run['out'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'predicted digit: 3 (probability' in proc.stdout
    assert f"by {cnn_run['out'] / 'model'}.pdparams (run {cnn_run['metrics']['run_id']})" in proc.stdout  # which model
    # --model: a model file or, as here, a checkpoint; predict.png goes to --out
    proc = run_script('mnist_cnn.py', '--predict', image, '--model', cnn_run['ckpt'] / 'mnist_epoch2',
                      '--out', tmp_path / 'p', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'predicted digit: 3 (probability' in proc.stdout and (tmp_path / 'p' / 'predict.png').is_file()


def test_image_normalisation_matches_the_data(tmp_path):
    """A dark-on-light scan, a light-on-dark one and black ink on a transparent background (as
    drawing apps save it; it was read as an empty black image) give the same input, like the data."""
    from PIL import Image
    a = predict.load_digit_image(str(digit_png(tmp_path / 'a.png', 5, size=28, dark_on_light=True)))
    b = predict.load_digit_image(str(digit_png(tmp_path / 'b.png', 5, size=28, dark_on_light=False)))
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.shape == (1, 1, 28, 28) and a.min() == -1.0
    ink = 255 - np.asarray(Image.open(tmp_path / 'a.png').convert('L'))
    Image.fromarray(np.dstack([np.zeros((28, 28, 3), np.uint8), ink])).save(tmp_path / 'c.png')  # RGBA
    c = predict.load_digit_image(str(tmp_path / 'c.png'))
    np.testing.assert_allclose(c, a, atol=1 / 127.5)


@pytest.mark.parametrize('args, message', [
    (['--epochs', '0'], 'argument --epochs: must be greater than 0'),
    (['--batch-size', '-5'], 'argument --batch-size: must be greater than 0'),
    (['--lr', '0'], 'argument --lr: must be a finite number greater than 0'),
    (['--lr', 'fast'], "argument --lr: expected a number, got 'fast'"),
    (['--opt', 'rmsprop'], "argument --opt: invalid choice: 'rmsprop'"),
    (['--l2', '-0.1'], 'argument --l2: must be a finite number >= 0, got -0.1'),
    (['--l2', 'lots'], "argument --l2: expected a number, got 'lots'"),
    (['--device', 'tpu'], "argument --device: invalid choice: 'tpu'"),
    (['--epoch', '3', '--batchsize=5'], 'unrecognized arguments: --epoch 3 --batchsize=5 (did you mean --epochs, '
                                        '--batch-size?); see python '),
    (['--epoch', '3', '--epoch', '4'], 'unrecognized arguments: --epoch 3 --epoch 4 (did you mean --epochs?); '),
    (['--batch', '50', '--log', '5'], 'unrecognized arguments: --batch 50 --log 5 (did you mean --batch-size, '
                                      '--log-every?); '),  # the one flag each begins, not --loss
    # not --ckpt-dir (the very confusion allow_abbrev=False avoids): resuming is resume.py's
    (['--ckpt', 'checkpoint/mnist_epoch0'], 'unrecognized arguments: --ckpt checkpoint/mnist_epoch0 (to continue '
                                            'a run from a checkpoint: python resume.py --ckpt CHECKPOINT); '),
])
def test_bad_flags(run_script, idx_dir, tmp_path, args, message):
    """The README's table: a bad flag is one `error:` line (no usage block), the closest flag for a typo,
    and --help named; exit 2 as argparse's."""
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith('error: ' + message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.rstrip().endswith('mnist_cnn.py --help')


@pytest.mark.parametrize('args, message', [
    (['--data-dir', 'missing_folder'], 'error: --data-dir missing_folder does not exist'),
    (['--predict', 'nothing.png', '--out', '.'], 'error: no trained model at'),
    pytest.param(['--device', 'gpu'], 'error: --device gpu was asked for, but this PaddlePaddle has no CUDA',
                 marks=pytest.mark.skipif(gpu_present(), reason=GPU_ONLY_SKIP + '--device gpu trains there, '
                                          'it is not refused')),
])
def test_clear_errors(run_script, tmp_path, args, message):
    proc = run_script('mnist_cnn.py', *args, cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one sentence


def test_predict_errors(cnn_run, run_script, tmp_path):
    proc = run_script('mnist_cnn.py', '--predict', 'missing.png', '--out', cnn_run['out'], cwd=tmp_path)
    assert proc.returncode == 1 and 'no such file' in proc.stderr
    (tmp_path / 'notes.png').write_text('not an image')
    proc = run_script('mnist_cnn.py', '--predict', 'notes.png', '--out', cnn_run['out'], cwd=tmp_path)
    assert proc.returncode == 1 and 'is not an image PIL can read' in proc.stderr


def test_the_tutorials_resume_after_a_runs_end_is_a_note_in_a_notebook(cnn_run, tmp_path, monkeypatch, capsys):
    """resume.ipynb's last cell after a run too short to resume (its checkpoint ends the run): a note
    under the cell, not an error that stops Run All; the command line's exit 1 is test_resume_errors'."""
    import common
    import flags
    import tutorial_resume
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(common, 'in_notebook', lambda: True)
    monkeypatch.setattr(flags, 'in_notebook', lambda: True)
    assert tutorial_resume.main(['--ckpt', str(cnn_run['ckpt'] / 'mnist_epoch2'),
                                 '--compare', str(cnn_run['out'] / 'metrics.json')]) is None
    assert capsys.readouterr().out.strip().endswith(
        'is the end of its run: nothing is left to resume; for train_again(), train mnist_cnn.ipynb 2 epochs or more')


def test_resume_errors(cnn_run, run_script, tmp_path):
    proc = run_script('resume.py', '--ckpt', 'checkpoint/mnist_epoch7', cwd=tmp_path)
    assert proc.returncode == 1 and 'no checkpoint at checkpoint/mnist_epoch7' in proc.stderr
    assert '--ckpt checkpoint/mnist_epoch' not in proc.stderr  # not the user's own words as advice
    assert 'or pass --ckpt with a checkpoint that exists, a checkpoint folder, or latest' in proc.stderr
    proc = python_run([ROOT / 'resume.py', '--ckpt', 'checkpoint/mnist_epoch7'], tmp_path,
                      dict(script_env(tmp_path / 'home'), MAKELEVEL='1'))  # as `make resume CKPT=...`
    assert proc.returncode == 1 and 'or pass --ckpt (with make: CKPT=) with a checkpoint that exists' in proc.stderr
    proc = run_script('resume.py', '--ckpt', 'latest', cwd=tmp_path)  # nothing trained here yet
    assert proc.returncode == 1 and proc.stderr == ('error: there is no checkpoint folder yet, so no checkpoint in it; '
                                                    'train first (make cnn, or the mnist_cnn notebook)\n')
    # after a Ctrl-C in epoch 0 the folder holds mnist_interrupted and no mnist_epoch0: named
    (tmp_path / 'ck').mkdir()
    for ext in ('json', 'pdparams', 'pdopt'):  # and a later checkpoint of another model (not named)
        shutil.copy(cnn_run['ckpt'] / f'mnist_epoch1.{ext}', tmp_path / 'ck' / f'mnist_interrupted.{ext}')
        shutil.copy(cnn_run['ckpt'] / f'mnist_epoch2.{ext}', tmp_path / 'ck' / f'mlp_epoch2.{ext}')
    # (with a --compare that is missing too, as resume.ipynb's default after an interrupted first
    # run: the checkpoint's error comes first, since it names the one to pass)
    proc = run_script('resume.py', '--ckpt', 'ck/mnist_epoch0', '--compare', 'runs/cnn/metrics.json', cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: no checkpoint at ck/mnist_epoch0; the newest of its run's kind there is ck/mnist_interrupted: "
        'pass --ckpt ck/mnist_interrupted')
    # started by make (`make resume` sets MAKELEVEL): make's variable too
    proc = python_run([ROOT / 'resume.py', '--ckpt', 'ck/mnist_epoch0'], tmp_path,
                      dict(script_env(tmp_path / 'home'), MAKELEVEL='1'))
    assert proc.returncode == 1 and proc.stderr.strip().endswith(
        'pass --ckpt ck/mnist_interrupted (with make: CKPT=ck/mnist_interrupted)')
    (tmp_path / 'notes.json').write_text('[1, 2]')  # --compare: checked before any training
    proc = run_script('resume.py', '--ckpt', 'ck/mnist_interrupted', '--compare', 'notes.json', cwd=tmp_path)
    assert proc.returncode == 1 and "notes.json is not a run's metrics.json (it has no batch_losses)" in proc.stderr
    proc = run_script('resume.py', '--ckpt', 'ck/mnist_interrupted', '--compare', 'ck', cwd=tmp_path)  # its folder
    assert proc.returncode == 1 and proc.stderr.startswith(f'error: ck is a folder; pass {os.path.join("ck", "metrics.json")}, the')
    # the last epoch's checkpoint: nothing to train, it is evaluated (a Ctrl-C in the final evaluation
    # leaves a run without its results); --epochs not beyond it: refused
    proc = run_script('resume.py', '--ckpt', cnn_run['ckpt'] / 'mnist_epoch2', '--out', 'ended', '--compare',
                      cnn_run['out'] / 'metrics.json', cwd=tmp_path)
    assert proc.returncode == 0 and 'is the end of its 3-epoch run: nothing left to train; evaluating it into ended/' \
        in proc.stdout, proc.stderr
    assert "the evaluation equals the uninterrupted run's" in proc.stdout
    ended = read_metrics(tmp_path / 'ended')
    assert ended['batch_losses'] == [] and ended['eval'] == read_metrics(cnn_run['out'])['eval']
    assert sorted(os.listdir(tmp_path / 'ended')) == ['confusion.png', 'metrics.json', 'mistakes.png', 'model.json',
                                                      'model.pdparams']  # no curves of nothing
    proc = run_script('resume.py', '--ckpt', cnn_run['ckpt'] / 'mnist_epoch2', '--epochs', '2', cwd=tmp_path)
    assert proc.returncode == 1 and 'has trained past --epochs 2 (it continues at epoch 3, batch 0); pass N > 3' in proc.stderr
    # an earlier checkpoint evaluated (--epochs: where it is): the reference run did not end there
    proc = run_script('resume.py', '--ckpt', cnn_run['ckpt'] / 'mnist_epoch1', '--epochs', '2', '--out', 'e1',
                      '--compare', cnn_run['out'] / 'metrics.json', cwd=tmp_path)
    assert proc.returncode == 0 and 'the reference run did not end at this checkpoint: not compared' in proc.stdout
    assert 'has trained the 2 epochs of --epochs: nothing left to train' in proc.stdout  # not "the end of its run"
    meta = json.loads((tmp_path / 'ck' / 'mnist_interrupted.json').read_text())  # as if stopped in epoch 2:
    (tmp_path / 'ck' / 'mnist_interrupted.json').write_text(json.dumps(dict(meta, next_batch=1)))
    proc = run_script('resume.py', '--ckpt', 'ck/mnist_interrupted', '--epochs', '2', cwd=tmp_path)  # past it
    assert proc.returncode == 1 and 'has trained past --epochs 2 (it continues at epoch 2, batch 1); pass N > 2' in proc.stderr
    proc = run_script('tutorial_resume.py', '--ckpt', cnn_run['ckpt'] / 'mnist_epoch2', '--compare',
                      cnn_run['out'] / 'metrics.json', cwd=tmp_path)  # train_again() with faults: nothing to resume
    assert proc.returncode == 1 and 'mnist_epoch2 is the end of its run: nothing is left to resume' in proc.stderr
    proc = run_script('resume.py', '--ckpt', cnn_run['ckpt'] / 'mnist_epoch0', '--compare',
                      'missing.json', '--out', tmp_path / 'o', '--ckpt-dir', tmp_path / 'c', cwd=tmp_path)
    assert proc.returncode == 1 and 'missing.json does not exist' in proc.stderr
    assert not (tmp_path / 'o').exists()  # refused before training
    # "It restores ... data source": other data under --data-dir is refused (its fingerprint differs)
    other = fixtures.write_idx_folder(str(tmp_path / 'other'), train_n=300)
    proc = run_script('resume.py', '--ckpt', cnn_run['ckpt'] / 'mnist_epoch0', '--data-dir', other,
                      '--out', tmp_path / 'o', '--ckpt-dir', tmp_path / 'c', cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f'the training data at {other} differs from the data' in proc.stderr
    assert 'pass --data-dir with the original data' in proc.stderr and not (tmp_path / 'o').exists()


@pytest.mark.skipif(shutil.which('make') is None or shutil.which('git') is None, reason='needs make and git')
def test_make_install_says_when_another_python_changes_nothing(tmp_path):
    """`make install PYTHON=...` with .venv there already keeps .venv as it is (the README: delete
    .venv first to switch); one note says so, naming both Pythons, not make's silent "Nothing to be
    done"; one that is no Python 3.9 to 3.13 gets no advice to delete .venv. `make -q install` stays
    true to make: 0 when nothing is to be done."""
    import platform
    import subprocess
    import sys
    from test_readme import fresh_copy
    copy = fresh_copy(tmp_path)  # the real .venv linked, requirements older than it: no install
    env = {k: v for k, v in os.environ.items() if k not in ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL')}  # not make test's
    here = platform.python_version()  # .venv's: this process runs in it
    other = tmp_path / 'python3.12'  # stands for another interpreter: only its version is asked
    other.write_text('#!/bin/sh\necho 3.12.99 supported\n')
    old = tmp_path / 'python3.8'
    old.write_text('#!/bin/sh\necho 3.8.20 unsupported\n')
    for path in (other, old):
        path.chmod(0o755)
    expected = {None: None, getattr(sys, '_base_executable', sys.executable): None,
                other: f'note: .venv exists with Python {here}, so PYTHON={other} (Python 3.12.99) changes '
                       f'nothing; to switch: rm -rf .venv, then make install PYTHON={other}',
                old: f'note: .venv exists with Python {here} and is used as it is; PYTHON={old} is Python 3.8.20, '
                     f'not a Python 3.9 to 3.13 to switch to',
                tmp_path / 'nowhere': f'note: .venv exists with Python {here} and is used as it is; '
                                      f'PYTHON={tmp_path / "nowhere"} is no Python found here, not a Python 3.9 to '
                                      f'3.13 to switch to'}
    for python, note in expected.items():
        proc = subprocess.run(['make', 'install'] + ([f'PYTHON={python}'] if python else []), cwd=copy, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0 and 'pip install' not in proc.stdout, proc.stdout + proc.stderr
        assert [line for line in proc.stdout.splitlines() if line.startswith('note:')] == ([note] if note else []), \
            (python, proc.stdout)
        assert subprocess.run(['make', '-q', 'install'], cwd=copy, env=env).returncode == 0
