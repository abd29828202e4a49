"""Notebooks as learners use them (Jupyter, AI Studio): real notebooks executed in a real IPython
kernel by nbclient, the way JupyterLab runs them. The scripts and helper modules sit beside the
notebook and the data in ./work/, as in an AI Studio project. Also: `make all --fast` end to end,
and DataLoader workers under a /dev/shm as small as AI Studio's."""
import os
import shutil
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import results
from conftest import ROOT, read_metrics, script_env

SCRIPTS = ['mnist_linear.py', 'mnist_mlp.py', 'mnist_numpy.py', 'mnist_cnn.py', 'housing.py']


@pytest.fixture
def project(tmp_path, idx_dir):
    """An AI Studio-like folder: every .py of the package, the MNIST idx files and housing.data in work/."""
    for name in os.listdir(ROOT):
        if name.endswith('.py'):
            shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(idx_dir, tmp_path / 'work')
    from test_housing import TRUE_W
    features = np.random.default_rng(7).uniform(0, 10, size=(100, 13))
    np.savetxt(tmp_path / 'work' / 'housing.data', np.c_[features, features @ TRUE_W + 3.0], fmt='%.6f')
    return tmp_path


def run_notebook(folder, cells, timeout=600):
    """Execute the cells in a fresh kernel started in folder; returns the executed notebook.
    Errors do not stop the run: each test looks at the outputs it expects."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    NotebookClient(nb, timeout=timeout, kernel_name='python3', allow_errors=True,
                   resources={'metadata': {'path': str(folder)}}).execute()
    return nb


def text(cell, stream='stdout'):
    return ''.join(o.get('text', '') for o in cell.outputs if o.output_type == 'stream' and o.name == stream)


def errors(cell):
    return [o for o in cell.outputs if o.output_type == 'error']


def test_every_stage_script_pasted_whole_into_a_cell_trains(project):
    """The kernel's own command line (-f connection file, --HistoryManager... from nbclient) is
    not the script's: a pasted script runs with its defaults. The plots arrive as inline PNGs."""
    cells = ['import sys; print(sys.argv)'] + [(project / name).read_text() for name in SCRIPTS]
    nb = run_notebook(project, cells)
    assert '-f' in text(nb.cells[0]) and '--HistoryManager' in text(nb.cells[0])  # a real kernel's argv
    for name, cell in zip(SCRIPTS, nb.cells[1:]):
        assert errors(cell) == [], (name, errors(cell))
        pngs = [o for o in cell.outputs if o.output_type == 'display_data' and 'image/png' in o.data]
        assert len(pngs) >= 1, name
    assert read_metrics(project / 'runs' / 'cnn')['config']['epochs'] == 5  # the defaults
    assert len(read_metrics(project / 'runs' / 'cnn')['epochs']) == 5
    for run in ('linear', 'mlp', 'numpy', 'housing'):
        assert (project / 'runs' / run / 'metrics.json').is_file(), run
    cnn_cell = nb.cells[1 + SCRIPTS.index('mnist_cnn.py')]
    assert 'eval: loss' in text(cnn_cell)
    # samples.png before training; mistakes.png, confusion.png, loss.png, acc.png after it
    assert sum('image/png' in o.get('data', {}) for o in cnn_cell.outputs) == 5


def test_train_then_resume_in_one_kernel_is_bit_identical(project):
    nb = run_notebook(project, [
        "import mnist_cnn, resume\n"
        "args = ['--epochs', '3', '--log-every', '1000']\n"
        "full = mnist_cnn.main(args)",
        "again = mnist_cnn.main(args + ['--out', 'runs/again'])  # a second model in the same kernel\n"
        "print('again identical:', again['batch_losses'] == full['batch_losses'])",
        "res = resume.main(['--ckpt', 'checkpoint/mnist_epoch0', '--compare', 'runs/cnn/metrics.json'])\n"
        "print('resume identical:', res['batch_losses'] == full['batch_losses'][full['steps_per_epoch']:])",
    ])
    assert all(errors(cell) == [] for cell in nb.cells), [errors(c) for c in nb.cells]
    assert 'again identical: True' in text(nb.cells[1])
    assert 'resume identical: True' in text(nb.cells[2])
    assert 'resumed losses are bit-identical to the uninterrupted run' in text(nb.cells[2])


def test_mistakes_in_a_notebook_show_one_sentence_and_the_kernel_lives_on(project):
    nb = run_notebook(project, [
        "import mnist_cnn\nmnist_cnn.main(['--epochs', '0'])",
        "mnist_cnn.main(['--data-dir', 'nowhere'])",
        "print('the kernel is alive')",
    ])
    (flag_error,), (data_error,) = errors(nb.cells[0]), errors(nb.cells[1])
    # a bad flag is one `error:` line, as bad data is (argparse's SystemExit crashes IPython 8.18)
    assert flag_error.ename == 'UserError'
    assert flag_error.traceback == ["error: argument --epochs: must be greater than 0, got 0; see main(['--help'])"]
    assert data_error.ename == 'UserError'
    assert data_error.traceback == ['error: --data-dir nowhere does not exist; pass a folder holding the four '
                                    'MNIST idx files or a mnist.json.gz']
    assert text(nb.cells[2]) == 'the kernel is alive\n'


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which('unshare') is None,
                    reason='a private /dev/shm needs root and unshare')
def test_dataloader_workers_need_no_shared_memory(run_script, idx_dir, tmp_path):
    """AI Studio's /dev/shm is 64 MB; DataLoader workers that pass batches through shared memory
    die there (Paddle#25211). The scripts' workers use pipes: they train under a 512 KB /dev/shm,
    where a shared-memory loader fails (checked when this test was written)."""
    cmd = (f'mount -t tmpfs -o size=512k tmpfs /dev/shm && {sys.executable} {ROOT / "mnist_cnn.py"} '
           f'--data-dir {idx_dir} --epochs 1 --num-workers 2 --log-every 1000')
    proc = subprocess.run(['unshare', '-m', 'sh', '-c', cmd], cwd=tmp_path, env=script_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    if 'mount' in proc.stderr and proc.returncode != 0 and 'epoch' not in proc.stdout:
        pytest.skip(f'cannot mount a private /dev/shm here: {proc.stderr.strip()[:200]}')
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'eval: loss' in proc.stdout


def test_make_all_fast_pipeline(idx_dir, tmp_path):
    """results.py --fast end to end: every stage runs; resume.py matches every batch and the tutorial's
    resume does not; the course's mnist.json.gz written from the idx files trains to the same losses."""
    import re
    from test_housing import TRUE_W
    features = np.random.default_rng(7).uniform(0, 10, size=(200, 13))
    np.savetxt(tmp_path / 'housing.data', np.c_[features, features @ TRUE_W + 3.0], fmt='%.6f')
    report = results.main(['--data-dir', idx_dir, '--housing-data', str(tmp_path / 'housing.data'),
                           '--out', str(tmp_path / 'results'), '--fast'])
    text_ = open(report).read()
    for name, *_ in results.EXPERIMENTS:
        assert f'| {name} |' in text_
    assert 'failed' not in text_
    compared, identical = map(int, re.search(r'\| resume\.py \(ours\) \| (\d+) \| (\d+) \| 0 \|', text_).groups())
    assert compared == identical > 0
    for way in ('rate restarted', 'rate restarted, reshuffled'):
        compared, identical = map(int, re.search(rf"\| the tutorial's: {way} \| (\d+) \| (\d+) \|", text_).groups())
        assert identical < compared
    assert 'gives the same' in text_ and '(bit for bit)' in text_
    for figure in ('optimizers.png', 'mse_vs_ce.png', 'l2.png', 'resume.png'):
        assert os.path.getsize(tmp_path / 'results' / figure) > 10_000
        assert f'![{figure}]({figure})' in text_
