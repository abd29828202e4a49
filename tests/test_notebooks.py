"""The generated notebooks (notebooks/*.ipynb, tools/make_notebooks.py) as a learner uses them on AI
Studio as it is: the one .ipynb alone in an empty folder, the course's dataset mounted under
data/data65/ (mnist_linear.ipynb: uploaded into ~/work/, the dataset in ~/data/data65/), Run All in
a real IPython kernel (nbclient), no network, nothing of the repository on
the kernel's path, and the packages only the project pins (visualdl, filelock, torch) made
unimportable, as AI Studio has only PaddlePaddle, numpy, matplotlib and Pillow. Also: the committed
notebooks are what the generator writes from today's scripts; every step's cell shows its output;
the losses equal the script's, bit for bit; Run All twice in one kernel gives the same numbers."""
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys

from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import fixtures
from conftest import ROOT, python_run, script_env

NOTEBOOKS = ROOT / 'notebooks'
BLOCKED = ('visualdl', 'filelock', 'torch')  # pinned by the project, not on AI Studio
# The smallest settings that still train, validate, checkpoint, evaluate and plot (they replace the
# first step's `argv = []`): one epoch of the fixture's first 100 training images (one batch).
FAST_ARGS = {'housing': ['--epochs', '5'], 'mnist_linear': ['--epochs', '1', '--train-limit', '100'],
             'mnist_mlp': ['--epochs', '1', '--train-limit', '100'],
             'mnist_numpy': ['--epochs', '1', '--train-limit', '100'],
             'mnist_cnn': ['--epochs', '2', '--train-limit', '200', '--log-every', '1']}
SCRIPT_OUT = {'housing': 'runs/housing', 'mnist_linear': 'runs/linear', 'mnist_mlp': 'runs/mlp',
              'mnist_numpy': 'runs/numpy', 'mnist_cnn': 'runs/cnn'}
# resume.ipynb trains first when work/checkpoint holds no run: 2 epochs of 2 batches
RESUME_TRAIN = ['--epochs', '2', '--train-limit', '200', '--log-every', '1000']
WHERE = "import common, os; print('helpers from the notebook folder:', os.path.dirname(common.__file__) == os.getcwd())"


@pytest.fixture(scope='module')
def data65(tmp_path_factory):
    """AI Studio's mounted course dataset (data/data65/: the four idx .gz files), and housing.data."""
    folder = fixtures.write_idx_folder(str(tmp_path_factory.mktemp('nb_data') / 'data65'))
    features = np.random.default_rng(7).uniform(0, 10, size=(100, 13))
    np.savetxt(os.path.join(folder, 'housing.data'), np.c_[features, features @ np.linspace(-1, 1, 13) + 3.0],
               fmt='%.6f')
    return folder


@pytest.fixture(scope='module')
def kernel_env(tmp_path_factory):
    """An empty HOME (no PaddlePaddle cache), downloads failing at once (script_env), nothing of the
    repository on the path, and the project-only packages unimportable (a sitecustomize.py)."""
    env = script_env(tmp_path_factory.mktemp('nb_home'))
    site = tmp_path_factory.mktemp('nb_block')
    (site / 'sitecustomize.py').write_text('import sys\n' + ''.join(f'sys.modules[{m!r}] = None\n' for m in BLOCKED))
    env.pop('MPLBACKEND', None)
    env['PYTHONPATH'] = str(site)
    return env


def upload(name, folder, data65):
    """The notebook copied alone into an empty folder; the dataset at data/data65/ and housing.data in
    work/ (where the housing chapter looks)."""
    folder.mkdir()
    shutil.copy(NOTEBOOKS / f'{name}.ipynb', folder)
    shutil.copytree(data65, folder / 'data' / 'data65', ignore=shutil.ignore_patterns('housing.data'))
    (folder / 'work').mkdir()
    shutil.copy(os.path.join(data65, 'housing.data'), folder / 'work')
    nb = nbformat.read(folder / f'{name}.ipynb', as_version=4)
    nbformat.validate(nb)  # what Jupyter and AI Studio accept: nbformat 4.5, with cell ids
    return nb


def cell(nb, cell_id):
    (found,) = [c for c in nb.cells if c.get('id') == cell_id]
    return found


def set_list(nb, cell_id, variable, args):
    c = cell(nb, cell_id)
    c.source, n = re.subn(rf'^{variable} = \[.*$', f'{variable} = {args!r}', c.source, flags=re.M)
    assert n == 1, c.source


def fast(name, nb):
    if name == 'resume':
        set_list(nb, 'intro-extra-0', 'train_args', RESUME_TRAIN)
    else:
        set_list(nb, 'step-1', 'argv', FAST_ARGS[name])
    nb.cells.append(nbformat.v4.new_code_cell(WHERE))
    return nb


def twice(name, nb):
    """Run All, then every cell again in the same kernel: the same losses (no stale module, no lock
    still held)."""
    nb = fast(name, nb)
    lesson = nb.cells[:-1]  # the helper files too: written and imported again, nothing stale
    again = [nbformat.v4.new_code_cell(c.source) if c.cell_type == 'code' else nbformat.v4.new_markdown_cell(c.source)
             for c in lesson]
    nb.cells += [nbformat.v4.new_code_cell("first = metrics['batch_losses']")] + again + [
        nbformat.v4.new_code_cell("print('same losses twice:', metrics['batch_losses'] == first)")]
    return nb


# The Interrupt button (SIGINT to the kernel) while the first batch trains, as test_faults.py sends
# Ctrl-C to a script: the cell stops with one line, work/checkpoint/mnist_interrupted is saved.
CTRL_C = """paddle.seed(args.seed)  # step 3 and 4 again: fresh weights (a trained model is refused)
model = build_model(cfg)
optimizer, scheduler = build_optimizer(cfg, model.parameters())
import os, signal
before = signal.getsignal(signal.SIGINT)
real_loss_and_correct = loss_and_correct

def loss_and_correct(output, labels, loss_kind):
    if not getattr(loss_and_correct, 'pressed', False):
        loss_and_correct.pressed = True
        os.kill(os.getpid(), signal.SIGINT)
    return real_loss_and_correct(output, labels, loss_kind)

try:
    record = train(model, optimizer, scheduler, loaders, cfg)
finally:
    loss_and_correct = real_loss_and_correct"""
MISTAKES = ["args = common.parse_args(build_parser(), ['--epoch', '0'])",  # a misspelt flag in the first step's line
            "common.load_mnist_splits('nowhere')",  # bad data
            "record = train(model, optimizer, scheduler, loaders, cfg)",  # the training cell again
            # the model's cell again, not the optimizer's: the optimizer holds the earlier model's weights
            "paddle.seed(args.seed)\nmodel = build_model(cfg)\nrecord = train(model, optimizer, scheduler, loaders, cfg)",
            CTRL_C,
            "print('Ctrl-C handler given back:', signal.getsignal(signal.SIGINT) is before)",
            "del loaders  # as if step 2 had not run\nrecord = train(model, optimizer, scheduler, loaders, cfg)",
            "modle",  # a typo: Python's own NameError
            # a module's own bug, raised in its code for a name a lesson cell makes: its traceback
            "import types\nbuggy = types.ModuleType('buggy')\nexec('def f():\\n    return loaders', buggy.__dict__)\n"
            "buggy.f()",
            # the Interrupt button outside training (the data, the curves, the evaluation)
            "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)",
            "print('alive')"]


def twice_then_mistakes(name, nb):
    """twice, then a learner's mistakes in the same kernel: a misspelt flag in the first step's line,
    bad data, the training cell again, the Interrupt button during training, a cell run before the one it needs, a typo, a
    module's own NameError, then a cell that should still run."""
    nb = twice(name, nb)
    nb.cells += [nbformat.v4.new_code_cell(source) for source in MISTAKES]
    return nb


# job: (notebook, edit), the longest first, so that two at a time finish together. mnist_linear.ipynb
# is uploaded into ~/work/ (AI Studio's kept folder) with the dataset at ~/data/data65/; the others
# into a folder of their own holding data/data65/.
JOBS = {'resume': ('resume', fast), 'mnist_cnn': ('mnist_cnn', twice_then_mistakes), 'housing': ('housing', fast),
        'mnist_mlp': ('mnist_mlp', fast), 'mnist_linear': ('mnist_linear', fast),
        'mnist_numpy': ('mnist_numpy', fast)}
IN_HOME_WORK = 'mnist_linear'


@pytest.fixture(scope='module')
def executed(request, tmp_path_factory, data65, kernel_env):
    """Run All for every job a selected test needs, each in its own fresh kernel in its own folder, two
    at a time: {job: (folder, notebook or the exception that stopped it)}. Errors in cells do not
    stop a run: the tests read the outputs."""
    base, results = tmp_path_factory.mktemp('notebooks'), {}
    wanted = {item.callspec.params.get('job') for item in request.session.items if hasattr(item, 'callspec')}

    async def run(job, name, edit, gate):
        folder = base / job
        nb = edit(name, upload(name, folder, data65))
        if job == IN_HOME_WORK:  # the notebook in ~/work/, the dataset in ~/data/data65/
            home = Path(kernel_env['HOME'])
            shutil.move(str(folder / 'data'), str(home / 'data'))
            shutil.rmtree(folder / 'work')
            folder = folder.rename(home / 'work')
        async with gate:
            for start in (1, 2):
                try:
                    await NotebookClient(nb, timeout=600, kernel_name='python3', allow_errors=True,
                                         resources={'metadata': {'path': str(folder)}}).async_execute(env=kernel_env)
                    results[job] = folder, nb
                except Exception as e:  # a dead kernel or a timeout: that job's test reports it
                    # ipykernel 7 at times never answers its first kernel_info (reported upstream; once
                    # in about ten make test runs here): no cell ran, so a second kernel, as Restart
                    if start == 1 and "Kernel didn't respond" in str(e):
                        continue
                    results[job] = folder, e
                break

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


def errors_in(c):
    return [(c.get('id'), o.ename, o.evalue) for o in c.get('outputs', []) if o.output_type == 'error']


def errors(nb):
    return [e for c in nb.cells if c.cell_type == 'code' for e in errors_in(c)]


def text(c, stream='stdout'):
    return ''.join(o.get('text', '') for o in c.outputs if o.output_type == 'stream' and o.name == stream)


def pngs(c):
    return [o for o in c.outputs if o.output_type == 'display_data' and 'image/png' in o.get('data', {})]


def check_self_contained(nb, folder):
    """Every %%writefile cell wrote exactly its text, collapsed, and the kernel imported those files."""
    written = [c for c in nb.cells if c.get('id', '').startswith('file-')]  # the notebook's own
    assert written
    for c in written:
        magic, body = c.source.split('\n', 1)
        assert (folder / magic.split()[1]).read_text(encoding='utf-8') == body, magic
        assert c.metadata.get('jupyter', {}).get('source_hidden') is True, magic
    assert len({c.source.split('\n', 1)[0] for c in written}) == len(written)  # each module once
    assert any('helpers from the notebook folder: True' in text(c) for c in nb.cells if c.cell_type == 'code')


def test_the_cell_order_cell_names_only_what_a_cell_surely_makes():
    """make_notebooks' collapsed cell-order cell: the names a lesson cell binds at its top level, each
    with the first cell's heading (backticks dropped); not a branch's, a loop's, a function's or a
    comprehension's own, nor anything of a cell in IPython's own syntax."""
    import make_notebooks
    cells = [{'cell_type': 'markdown', 'source': '## 2. data (三)\n\nwords'},
             {'cell_type': 'code', 'source': 'import numpy as np, os.path\nfrom x import y as z\n'
                                             'a, (b, c) = 1, (2, 3)\nd: int = 4\ndef f(p):\n    q = p\n'
                                             'class K:\n    r = 1\nif a:\n    e = 5\nfor i in []:\n    g = i\n'
                                             'h = [j for j in ()]\nk = lambda m: m'},
             {'cell_type': 'markdown', 'source': '### `later()`'},
             {'cell_type': 'code', 'source': 'a = 2\nlater = 3'},
             {'cell_type': 'code', 'source': '%pip install x\nnever = 1'}]
    source = make_notebooks.cell_order_cell(cells)['source']
    made = eval(source[source.index('{'):source.rindex('}') + 1])  # the dict literal passed on
    assert made == {'2. data (三)': 'np os z a b c d f K h k', 'later()': 'later'}


def test_notebooks_are_up_to_date():
    """The committed notebooks are what the generator writes from today's scripts."""
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_notebooks.py'), '--check'],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def script_losses(name, tmp_path, data65):
    """The same stage run as a script with the same flags: its batch losses."""
    shutil.copytree(data65, tmp_path / 'data' / 'data65')
    args = FAST_ARGS[name] + (['--data-dir', str(tmp_path / 'data' / 'data65')] if name == 'housing' else [])
    proc = python_run([ROOT / f'{name}.py', *args], tmp_path, script_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / SCRIPT_OUT[name] / 'metrics.json').read_text())['batch_losses']


@pytest.mark.parametrize('job', ['mnist_cnn', 'housing', 'mnist_mlp', 'mnist_linear', 'mnist_numpy'])
def test_stage_notebook_runs_cell_by_cell_like_its_script(job, executed, data65, tmp_path):
    """Run All succeeds without installing anything; every step shows its output under its cell; the
    data came from data/data65/ (~/data/data65/ for the one in ~/work/); the outputs are under work/;
    the losses equal the script's."""
    folder, nb = result(executed, job)
    lesson = nb.cells[:-len(MISTAKES)] if job == 'mnist_cnn' else nb.cells
    found = [e for c in lesson for e in errors_in(c)]
    assert not found, found
    check_self_contained(nb, folder)
    steps = [c for c in nb.cells if c.cell_type == 'code' and re.fullmatch(r'step-\d+', c.get('id', ''))]
    assert len(steps) >= 4, [c.get('id') for c in nb.cells]
    for c in steps:
        assert c.outputs, f'{c.id} shows no output:\n{c.source}'
    if job != 'housing':  # AI Studio's mount beside the notebook, or in ~/data/ for one in ~/work/
        mount = 'from data/data65' if job != IN_HOME_WORK else '/data/data65'
        assert mount in ''.join(text(c) for c in steps), text(steps[0]) + text(steps[1])
    work = folder if job == IN_HOME_WORK else folder / 'work'  # in ~/work/: its outputs there, not in work/work/
    metrics = json.loads((work / SCRIPT_OUT[job] / 'metrics.json').read_text())
    assert metrics['batch_losses'] == script_losses(job, tmp_path, data65)  # bit for bit
    if job == 'mnist_cnn':  # the pictures arrive under their steps: samples, curves, mistakes, confusion
        assert len(pngs(cell(nb, 'step-2'))) == 1 and len(pngs(cell(nb, 'step-5'))) == 2
        step6 = cell(nb, 'step-6')
        shown = pngs(step6)
        assert len(shown) == 2
        kinds = [('eval' if 'eval: loss' in o.get('text', '') else 'png' if o in shown else '')
                 for o in step6.outputs]
        assert kinds.index('eval') < kinds.index('png'), kinds  # the accuracy, then its pictures
        assert 'fc: [' in text(cell(nb, 'step-3'))  # 八: the layer shapes
        assert 'note: in a notebook outputs go under work/' in text(cell(nb, 'step-1'))
        assert (folder / 'work' / 'checkpoint' / 'mnist_epoch1.json').is_file()
        assert 'same losses twice: True' in text(nb.cells[-len(MISTAKES) - 1]), text(nb.cells[-len(MISTAKES) - 1])


@pytest.mark.parametrize('job', ['resume'])
def test_resume_notebook_resumes_bit_identically(job, executed):
    folder, nb = result(executed, job)
    assert not errors(nb), errors(nb)
    check_self_contained(nb, folder)
    out = ''.join(text(c) for c in nb.cells if c.cell_type == 'code')
    assert 'resumed losses are bit-identical to the uninterrupted run' in out, out[-3000:]
    assert 'resumed losses DIFFER from the reference run' in out  # train_again() with the faults, at the end
    assert not [c for c in nb.cells if c.source.startswith('%%writefile resume.py')]  # the lesson, once


@pytest.mark.parametrize('job', ['mnist_cnn'])
def test_a_mistake_shows_one_sentence_and_the_kernel_lives_on(job, executed):
    check_mistakes(*result(executed, job))


def check_mistakes(folder, nb):
    """The MISTAKES cells at the end of nb, run in folder: a misspelt flag, bad data, the training cell
    run a second time (its model trained already: exactness), the model's cell run again but not the
    optimizer's, Ctrl-C (the Interrupt button) during training and outside it, and a cell
    run before the cell it needs show one line each, no traceback, and the kernel lives on. Ctrl-C saved a whole checkpoint, named the argv for resume.ipynb and gave the
    kernel its own Ctrl-C handler back; a typo, and a NameError raised in a module's code, keep
    Python's traceback. (make compat checks the same in
    its AI Studio stand-in, with that environment's IPython.)"""
    flag, data, again, old_optimizer, ctrl_c, handler, skipped, typo, in_module, interrupt, alive = \
        nb.cells[-len(MISTAKES):]
    cells = (flag, data, again, old_optimizer, ctrl_c, handler, skipped, typo, in_module, interrupt)
    assert [[e[1] for e in errors_in(c)] for c in cells] == [['UserError']] * 4 + [['Stop'], []] + \
        [['NameError']] * 3 + [['KeyboardInterrupt']], errors(nb)[-9:]
    lines = {}
    for key, c in (('flag', flag), ('data', data), ('again', again), ('old_optimizer', old_optimizer),
                   ('ctrl_c', ctrl_c), ('skipped', skipped), ('interrupt', interrupt)):
        (out,) = [o for o in c.outputs if o.output_type == 'error']
        assert len(out.traceback) == 1, out.traceback  # no traceback
        lines[key] = out.traceback[0]
    assert lines['flag'] == ('error: unrecognized arguments: --epoch 0 (did you mean --epochs?); see '
                             'build_parser().print_help()')
    assert lines['data'].startswith('error: ') and 'nowhere' in lines['data']
    assert lines['again'] == ('error: this model was trained already (by an earlier run of this cell or of '
                              'train()): training it again would go on from those weights; run the cells again '
                              'from step 2, a new run (in resume.ipynb: from step 3)')
    assert lines['old_optimizer'].startswith("error: the optimizer belongs to an earlier model (the model's cell ran")
    prefix = os.path.join('work', 'checkpoint', 'mnist_interrupted')
    assert lines['ctrl_c'] == (f'stopped; saved {prefix}.pdparams/.pdopt. Continue with: '
                               f"argv = ['--ckpt', {prefix!r}] in resume.ipynb"), lines['ctrl_c']
    import checkpoints
    assert checkpoints.read_meta(str(folder / prefix))['next_batch'] == 1  # whole: its hashes verify
    assert 'then saving a checkpoint (Interrupt again to abort)' in text(ctrl_c)  # the button, not a key
    assert 'Ctrl-C handler given back: True' in text(handler)
    assert lines['skipped'] == ('error: loaders is not defined yet: the cell under "2. data (三)" makes it; run '
                                'the cells from there down to this one')
    for c, name in ((typo, 'modle'), (in_module, 'loaders')):
        (out,) = [o for o in c.outputs if o.output_type == 'error']
        assert len(out.traceback) > 1 and f"name '{name}' is not defined" in out.evalue, out.traceback
    assert lines['interrupt'] == ('stopped (interrupt) before this cell finished; every file written so far is '
                                  'whole; after training, resume.ipynb with its last checkpoint evaluates it')
    assert 'alive' in text(alive)


@pytest.mark.parametrize('job', [IN_HOME_WORK])
def test_a_notebook_uploaded_into_work_finds_the_dataset_and_keeps_its_outputs_there(job, executed):
    folder, nb = result(executed, job)
    assert folder.name == 'work' and not errors(nb), errors(nb)
    assert 'data/data65' in text(cell(nb, 'step-2')), text(cell(nb, 'step-2'))
    assert (folder / 'runs' / 'linear' / 'metrics.json').is_file()  # not work/work/
    assert (folder / 'checkpoint' / 'linear_epoch0.json').is_file()
    assert 'note: in a notebook outputs go under work/' not in text(cell(nb, 'step-1'))
