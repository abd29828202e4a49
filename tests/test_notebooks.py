"""The generated notebooks (notebooks/*.ipynb, written by tools/make_notebooks.py) as a learner uses
them in AI Studio: the one .ipynb alone in an empty folder, the data in ./work/, Run All in a real
IPython kernel (nbclient), without network and without the repository on the kernel's path. Also:
the committed notebooks are what the generator writes from today's scripts."""
import asyncio
import os
import re
import shutil
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import fixtures
from conftest import ROOT, script_env

NOTEBOOKS = ROOT / 'notebooks'
# The smallest settings that still train, validate, checkpoint, evaluate and plot: one epoch of the
# fixture's first 100 training images (one batch). They replace the run cell's `args = []`.
FAST_ARGS = {'housing': ['--epochs', '5'], 'mnist_linear': ['--epochs', '1', '--train-limit', '100'],
             'mnist_mlp': ['--epochs', '1', '--train-limit', '100'],
             'mnist_numpy': ['--epochs', '1', '--train-limit', '100'],
             'mnist_cnn': ['--epochs', '1', '--train-limit', '100']}
# resume.ipynb: 2 epochs of 2 batches, so that the run resumed from epoch 0 has a whole epoch to compare
RESUME_ARGS = ['--epochs', '2', '--train-limit', '200', '--log-every', '1000']
# Printed last by the notebook's kernel: the helper modules were imported from the notebook's folder.
WHERE = "import common, os; print('helpers from the notebook folder:', os.path.dirname(common.__file__) == os.getcwd())"


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """AI Studio's data folder: the four MNIST idx files and a housing.data (a known linear relation)."""
    folder = fixtures.write_idx_folder(str(tmp_path_factory.mktemp('nb_data') / 'work'))
    features = np.random.default_rng(7).uniform(0, 10, size=(100, 13))
    np.savetxt(os.path.join(folder, 'housing.data'), np.c_[features, features @ np.linspace(-1, 1, 13) + 3.0],
               fmt='%.6f')
    return folder


@pytest.fixture(scope='module')
def kernel_env(tmp_path_factory):
    """An empty HOME (no PaddlePaddle cache), downloads failing at once (script_env), and nothing of
    the repository on the path: the notebook has to bring its modules itself."""
    env = script_env(tmp_path_factory.mktemp('nb_home'))
    for var in ('PYTHONPATH', 'MPLBACKEND'):
        env.pop(var, None)
    return env


def upload(name, folder, work):
    """The notebook copied alone into an empty folder, with work/ beside it; returns the notebook."""
    folder.mkdir()
    shutil.copy(NOTEBOOKS / f'{name}.ipynb', folder)
    shutil.copytree(work, folder / 'work')
    nb = nbformat.read(folder / f'{name}.ipynb', as_version=4)
    nbformat.validate(nb)  # what Jupyter and AI Studio accept: nbformat 4.5, with cell ids
    return nb


def cell(nb, cell_id):
    (found,) = [c for c in nb.cells if c.get('id') == cell_id]
    return found


def set_args(nb, cell_id, variable, args):
    """Replace the run cell's `variable = [...]` line (the tutorial's settings) with args."""
    c = cell(nb, cell_id)
    c.source, n = re.subn(rf'^{variable} = \[.*$', f'{variable} = {args!r}', c.source, flags=re.M)
    assert n == 1, c.source


def fast(name, nb):
    """The notebook as a test runs it: the fastest settings, then a cell saying where `common` came from."""
    if name == 'resume':
        set_args(nb, 'train', 'train_args', RESUME_ARGS)
    else:
        set_args(nb, 'run', 'args', FAST_ARGS[name])
    nb.cells.append(nbformat.v4.new_code_cell(WHERE))
    return nb


def with_mistakes(name, nb):
    """mnist_cnn.ipynb with a bad flag in its run cell, then bad data, then a cell that should still run."""
    cell(nb, 'run').source = "main(['--epochs', '0'])"
    nb.cells += [nbformat.v4.new_code_cell("main(['--data-dir', 'nowhere'])"),
                 nbformat.v4.new_code_cell("print('alive')")]
    return nb


# job: (notebook, edit), the longest first, so that two at a time finish together
JOBS = {'resume': ('resume', fast), 'mnist_cnn': ('mnist_cnn', fast), 'housing': ('housing', fast),
        'mnist_mlp': ('mnist_mlp', fast), 'mnist_linear': ('mnist_linear', fast),
        'mistakes': ('mnist_cnn', with_mistakes), 'mnist_numpy': ('mnist_numpy', fast)}


@pytest.fixture(scope='module')
def executed(request, tmp_path_factory, work, kernel_env):
    """Run All for every job a selected test needs (its `job` parameter), each in its own fresh kernel
    started in its own folder, two at a time (the kernels are separate processes; nbclient is
    asynchronous): {job: (folder, notebook or the exception that stopped it)}. Errors in cells do not
    stop a run: the tests read the outputs."""
    base, results = tmp_path_factory.mktemp('notebooks'), {}
    wanted = {item.callspec.params.get('job') for item in request.session.items if hasattr(item, 'callspec')}

    async def run(job, name, edit, gate):
        folder = base / job
        nb = edit(name, upload(name, folder, work))
        async with gate:
            try:
                await NotebookClient(nb, timeout=600, kernel_name='python3', allow_errors=True,
                                     resources={'metadata': {'path': str(folder)}}).async_execute(env=kernel_env)
                results[job] = folder, nb
            except Exception as e:  # a dead kernel or a timeout: that job's test reports it
                results[job] = folder, e

    async def run_all():
        gate = asyncio.Semaphore(2)  # made in the running loop (Python 3.9 binds it to the loop of its making)
        await asyncio.gather(*(run(job, name, edit, gate) for job, (name, edit) in JOBS.items() if job in wanted))
    asyncio.run(run_all())
    return results


def result(executed, job):
    folder, nb = executed[job]
    if isinstance(nb, Exception):
        raise nb
    return folder, nb


def errors(nb):
    return [(c.get('id'), o.ename, o.evalue) for c in nb.cells if c.cell_type == 'code'
            for o in c.outputs if o.output_type == 'error']


def text(c, stream='stdout'):
    return ''.join(o.get('text', '') for o in c.outputs if o.output_type == 'stream' and o.name == stream)


def pngs(nb):
    return [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if o.output_type == 'display_data' and 'image/png' in o.get('data', {})]


def check_self_contained(nb, folder):
    """Every %%writefile cell wrote exactly its text, and the kernel imported those files."""
    written = [c for c in nb.cells if c.cell_type == 'code' and c.source.startswith('%%writefile ')]
    assert written
    for c in written:
        magic, body = c.source.split('\n', 1)
        assert (folder / magic.split()[1]).read_text(encoding='utf-8') == body, magic
    assert 'helpers from the notebook folder: True' in text(nb.cells[-1])


def test_notebooks_are_up_to_date():
    """notebooks/ holds exactly what the generator writes from today's scripts (make notebooks)."""
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_notebooks.py'), '--check'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize('job', sorted(FAST_ARGS))
def test_stage_notebook_runs_alone(job, executed):
    folder, nb = result(executed, job)
    assert errors(nb) == []
    check_self_contained(nb, folder)
    assert len(pngs(nb)) >= 1  # the plots show inline, and are saved
    assert list(folder.glob('runs/*/metrics.json')) and list(folder.glob('runs/*/*.png'))


@pytest.mark.parametrize('job', ['resume'])
def test_resume_notebook_resumes_bit_identically(job, executed):
    folder, nb = result(executed, job)
    assert errors(nb) == []
    check_self_contained(nb, folder)
    assert 'resumed losses are bit-identical to the uninterrupted run' in text(cell(nb, 'resume'))
    assert 'resumed == uninterrupted, batch for batch: True' in text(cell(nb, 'resume'))  # ==, every float
    assert 'resumed losses DIFFER from the reference run' in text(cell(nb, 'tutorial'))  # the tutorial's drift
    assert len(pngs(nb)) >= 1


@pytest.mark.parametrize('job', ['mistakes'])
def test_a_mistake_in_the_run_cell_shows_one_sentence_and_the_kernel_lives_on(job, executed):
    _, nb = result(executed, job)
    flag_cell, data_cell, alive_cell = nb.cells[-3:]
    (flag_error,) = [o for o in flag_cell.outputs if o.output_type == 'error']
    # one `error:` line, as for bad data (argparse's SystemExit would crash IPython 8.18 on Python 3.9)
    assert flag_error.ename == 'UserError'
    assert flag_error.traceback == ["error: argument --epochs: must be greater than 0, got 0; see main(['--help'])"]
    (data_error,) = [o for o in data_cell.outputs if o.output_type == 'error']
    assert data_error.ename == 'UserError' and len(data_error.traceback) == 1
    assert data_error.traceback[0].startswith('error: --data-dir nowhere does not exist')
    assert text(alive_cell) == 'alive\n'
    assert [e[1] for e in errors(nb)] == ['UserError', 'UserError']  # and nothing else failed
