"""`make compat`, the AI Studio half: do the notebooks run in an environment holding only what AI Studio
has, and does a later session resume what an earlier one left in work/?

For each PaddlePaddle version (--versions; default 3.2.2, AI Studio's, and 2.6.2), a Python 3.10 venv
under .compat/ (pyenv's 3.10.13; --python) with ONLY paddlepaddle==V, matplotlib==3.10.8,
pillow==10.4.0, numpy as pip resolves it for those, and ipykernel with what it needs: nothing else of
requirements.txt (no filelock, no visualdl). A venv is reused while its pins are unchanged.
In it, in .compat/aistudio-runs/<venv>/:
  1. notebooks/mnist_cnn.ipynb copied ALONE into an empty project folder, the course dataset mounted
     at data/data65/ (the four MNIST idx .gz files: tests/fixtures.py's synthetic digits, or
     --data mnist-mini for ../shared/data/mnist-mini's real ones), the first step's `argv = []` set to
     FAST_ARGS; Run All with nbclient in a real kernel of that venv's Python (a kernelspec written by
     the venv's own `ipykernel install`), with an empty HOME (no PaddlePaddle cache), no network, and
     nothing of this repository on its path. Checks: no cell errors; every step-N cell shows output;
     the data came from data/data65/; work/runs/cnn/metrics.json and work/checkpoint/mnist_epoch0.json
     exist; the batch losses == those of mnist_cnn.py run with the same flags in the same venv (from
     a copy of the repository's *.py files, --data-dir the same data).
  2. A FRESH kernel (a later session) runs notebooks/resume.ipynb copied into the SAME folder: it
     finds the checkpoint in work/checkpoint (so it does not train) and must print 'resumed losses are
     bit-identical to the uninterrupted run'.
  3. Another fresh kernel runs mnist_cnn.ipynb in a folder of its own, then a learner's mistakes
     (tests/test_notebooks.py's MISTAKES: a bad flag, bad data, Kernel > Interrupt during training, a
     cell run before the cell it needs, a typo), checked as make test checks them: one line each in
     this environment's IPython, a whole mnist_interrupted, the kernel alive.
The executed notebooks are kept in .compat/aistudio-runs/<venv>/executed/. Prints a table (Python,
paddlepaddle, numpy, data, Run All time of each notebook, result) and writes .compat/aistudio.json;
exits 1 on any failure.

Not like the real AI Studio: no JupyterLab UI (nbclient runs the cells in order, as Run All does); no
network at all (AI Studio has some; here a download must fail, so the data must come from data/data65);
HOME is an empty folder, where AI Studio's is the project folder /home/aistudio; AI Studio's image has
many more packages (and its own numpy/protobuf builds), a GPU or a different CPU, and other ipykernel
and IPython versions; the dataset is a stand-in for the course's (synthetic or mnist-mini digits).

    python tests/compat_aistudio.py                      # paddlepaddle 3.2.2 and 2.6.2 on Python 3.10
    python tests/compat_aistudio.py --versions 3.2.2 --data mnist-mini
"""
import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import fixtures  # noqa: E402
import test_notebooks  # noqa: E402 (its MISTAKES cells and their check)
from conftest import script_env  # noqa: E402

PYTHON = '~/.pyenv/versions/3.10.13/bin/python3.10'  # AI Studio's Python is 3.10
# AI Studio's packages, as far as the notebooks use them; numpy: whatever pip resolves for these.
AISTUDIO = ['matplotlib==3.10.8', 'pillow==10.4.0', 'ipykernel']
# Extra pins per PaddlePaddle version, should one need them (e.g. 'numpy<2'). None so far: for 2.6.2
# pip picks numpy 2.2.6 and protobuf 7 (as for 3.2.2), and the notebooks run with them.
EXTRA = {'2.6.2': []}
NOT_ON_AISTUDIO = ('filelock', 'visualdl')  # in requirements*.txt, not on AI Studio
FAST_ARGS = ['--epochs', '2', '--train-limit', '200', '--log-every', '1']
DATA = {'fixture': 'tests/fixtures.py synthetic', 'mnist-mini': '../shared/data/mnist-mini (real)'}
BIT_IDENTICAL = 'resumed losses are bit-identical to the uninterrupted run'
# Appended to each notebook as its last cell: which Python ran it, and from where the helpers came.
WHO = ("import sys, os, numpy, paddle, common\n"
       "print('kernel:', sys.executable, sys.version.split()[0], 'paddle', paddle.__version__, "
       "'numpy', numpy.__version__)\n"
       "print('repository on the path:', any(os.path.realpath(p) == {root!r} for p in sys.path))\n"
       "print('helpers from the notebook folder:', os.path.dirname(common.__file__) == os.getcwd())")
ANSI = re.compile(r'\x1b\[[0-9;]*m')


def environment(folder, python, version):
    """The venv for paddlepaddle==version (made again when its pins or Python change) -> (python, error)."""
    pip_args = [f'paddlepaddle=={version}', *AISTUDIO, *EXTRA.get(version, [])]
    env_dir = folder / f'aistudio-py3.10-paddle-{version}'
    py, stamp_file = env_dir / 'bin' / 'python', env_dir / '.installed'
    stamp = hashlib.sha256(json.dumps([os.path.realpath(python), pip_args]).encode()).hexdigest()
    if stamp_file.exists() and stamp_file.read_text() == stamp and py.exists():
        return py, None
    print(f'  installing {" ".join(pip_args)} into {env_dir.relative_to(ROOT)} ...', flush=True)
    shutil.rmtree(env_dir, ignore_errors=True)
    subprocess.run([python, '-m', 'venv', str(env_dir)], check=True)
    proc = subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--disable-pip-version-check', *pip_args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(env_dir, ignore_errors=True)
        errors = [line for line in proc.stderr.splitlines() if line.startswith('ERROR')] or ['pip failed']
        return None, errors[0][:160]
    stamp_file.write_text(stamp)
    return py, None


def kernel_env(py, home):
    """A fresh session's environment: an empty HOME, the venv first on PATH, no download possible
    (script_env), nothing of this repository or its .venv, no matplotlib backend or thread settings."""
    env = script_env(home)
    for var in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'MPLBACKEND', 'MPLCONFIGDIR', 'IPYTHONDIR',
                'XDG_CACHE_HOME', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME'):
        env.pop(var, None)
    for var in [v for v in env if v.startswith('JUPYTER')]:
        env.pop(var)
    path = [p for p in env.get('PATH', '').split(os.pathsep) if p and not p.startswith(str(ROOT))]
    env['PATH'] = os.pathsep.join([str(py.parent), *path])
    home.mkdir(parents=True)
    return env


def run_notebook(nb, folder, kernelspecs, env, log):
    """Run All in a new kernel process (the venv's, through its kernelspec; its stderr into log)
    -> (seconds, exception or None)."""
    async def run():
        km = AsyncKernelManager(kernel_name='aistudio',
                                kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernelspecs]))
        try:
            await NotebookClient(nb, km=km, timeout=1800, allow_errors=True,
                                 resources={'metadata': {'path': str(folder)}}).async_execute(env=env, stderr=err)
        finally:
            if km.has_kernel:
                await km.shutdown_kernel(now=True)
    start = time.perf_counter()
    try:
        with open(log, 'w') as err:
            asyncio.run(run())
        failure = None
    except Exception as e:  # a dead kernel or a timeout
        failure = e
    return time.perf_counter() - start, failure


def cell(nb, cell_id):
    (found,) = [c for c in nb.cells if c.get('id') == cell_id]
    return found


def text(c):
    return ''.join(o.get('text', '') for o in c.get('outputs', []) if o.output_type == 'stream' and o.name == 'stdout')


def errors(nb):
    return [(c.get('id'), o.ename, o.evalue, ANSI.sub('', '\n'.join(o.traceback))) for c in nb.cells
            if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']


def downloaded(home):
    """The files in HOME's PaddlePaddle cache (importing paddle makes its empty dataset/ folder)."""
    return [str(f.relative_to(home)) for f in (home / '.cache' / 'paddle').rglob('*') if f.is_file()]


def upload(name, project):
    shutil.copy(ROOT / 'notebooks' / f'{name}.ipynb', project)
    nb = nbformat.read(project / f'{name}.ipynb', as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(WHO.format(root=str(ROOT))))
    return nb


def notebook_problems(name, nb, failure, out):
    """What went wrong in a Run All: [] when nothing; the executed notebook is saved in out/."""
    nbformat.write(nb, out / f'{name}.executed.ipynb')
    if failure is not None:
        return [f'{type(failure).__name__}: {str(failure).strip().splitlines()[-1][:200] if str(failure).strip() else ""}']
    problems, found = [], errors(nb)
    if found:  # the first error; the later cells' errors usually follow from it
        cell_id, ename, evalue, traceback = found[0]
        more = f' (then errors in {len(found) - 1} more cells)' if len(found) > 1 else ''
        problems.append(f'cell {cell_id}: {ename}: {evalue[:200]}{more}')
        print(f'  --- {name}, cell {cell_id}:\n' + traceback[-3000:], flush=True)
    for c in nb.cells:
        if c.cell_type == 'code' and re.fullmatch(r'step-\d+', c.get('id', '')) and not c.outputs:
            problems.append(f'cell {c.id} shows no output')
    who = text(nb.cells[-1])
    print('  ' + who.strip().replace('\n', '\n  '), flush=True)
    if 'repository on the path: False' not in who or 'helpers from the notebook folder: True' not in who:
        problems.append(f'kernel check: {who.strip()!r}')
    return problems


def script_losses(py, data, work):
    """mnist_cnn.py with FAST_ARGS in the same venv, from a copy of the repository's *.py files."""
    code = work / 'code'
    code.mkdir(parents=True)
    for f in ROOT.glob('*.py'):
        shutil.copy(f, code)
    run_dir = work / 'run'
    run_dir.mkdir()
    proc = subprocess.run([str(py), str(code / 'mnist_cnn.py'), *FAST_ARGS, '--data-dir', str(data)], cwd=run_dir,
                          env=kernel_env(py, work / 'home'), capture_output=True, text=True, timeout=1800)
    (work / 'output.txt').write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        return None, f'script failed: {lines[-1][:200] if lines else proc.returncode}'
    return json.loads((run_dir / 'runs' / 'cnn' / 'metrics.json').read_text())['batch_losses'], None


def check(py, version, data_kind, base):
    """Both notebooks in one venv -> a row of the table."""
    row = {'paddlepaddle': version, 'data': DATA[data_kind], 'seconds': {}, 'problems': {}}
    proc = subprocess.run([str(py), '-c', 'import sys, numpy, paddle, ipykernel, importlib.util as u; '
                           'print(sys.version.split()[0], numpy.__version__, paddle.__version__, ipykernel.__version__, '
                           f'*[m for m in {NOT_ON_AISTUDIO!r} if u.find_spec(m)])'],
                          capture_output=True, text=True, env=kernel_env(py, base / 'home-import'))
    if proc.returncode != 0:
        row['problems']['import'] = [proc.stderr.strip().splitlines()[-1][:200]]
        return row
    row['python'], row['numpy'], row['paddle'], row['ipykernel'], *extra = proc.stdout.split()
    if extra:
        row['problems']['environment'] = [f'has {", ".join(extra)}, which AI Studio lacks']
    spec = base / 'kernelspec'
    subprocess.run([str(py), '-m', 'ipykernel', 'install', '--prefix', str(spec), '--name', 'aistudio'],
                   check=True, capture_output=True, env=kernel_env(py, base / 'home-install'))
    kernelspecs = str(spec / 'share' / 'jupyter' / 'kernels')
    project, out = base / 'project', base / 'executed'
    project.mkdir()
    out.mkdir()
    data = project / 'data' / 'data65'
    if data_kind == 'fixture':
        fixtures.write_idx_folder(str(data))
    else:
        shutil.copytree(ROOT.parent / 'shared' / 'data' / 'mnist-mini', data)

    # 1. mnist_cnn.ipynb alone in the project folder, Run All, then the script with the same flags
    nb = upload('mnist_cnn', project)
    step1 = cell(nb, 'step-1')
    step1.source, n = re.subn(r'^argv = \[\]', f'argv = {FAST_ARGS!r}', step1.source, flags=re.M)
    assert n == 1, step1.source
    seconds, failure = run_notebook(nb, project, kernelspecs, kernel_env(py, base / 'home-session-1'),
                                    out / 'mnist_cnn.kernel-stderr.txt')
    row['seconds']['mnist_cnn'] = seconds
    problems = notebook_problems('mnist_cnn', nb, failure, out)
    if failure is None:
        if 'from data/data65' not in text(cell(nb, 'step-2')):
            problems.append('step-2 does not say the data came from data/data65')
        metrics = project / 'work' / 'runs' / 'cnn' / 'metrics.json'
        for f in (metrics, project / 'work' / 'checkpoint' / 'mnist_epoch0.json'):
            if not f.is_file():
                problems.append(f'no {f.relative_to(project)}')
        if metrics.is_file():
            losses, error = script_losses(py, data, base / 'script')
            ours = json.loads(metrics.read_text())['batch_losses']
            if error:
                problems.append(error)
            elif ours != losses:
                problems.append(f'notebook losses != script losses ({len(ours)} vs {len(losses)}; first '
                                f'difference at {next((i for i, (a, b) in enumerate(zip(ours, losses)) if a != b), "?")})')
            else:
                row['script_losses'] = f'{len(ours)} batch losses'
    if downloaded(base / 'home-session-1'):
        problems.append(f'the notebook wrote into HOME/.cache/paddle: {downloaded(base / "home-session-1")}')
    row['problems']['mnist_cnn'] = problems

    # 2. a later session: resume.ipynb in the same folder, a new kernel process
    if not (project / 'work' / 'checkpoint' / 'mnist_epoch0.json').is_file():
        row['problems']['resume'] = ['not run (mnist_cnn.ipynb left no checkpoint)']
        return row
    nb = upload('resume', project)
    seconds, failure = run_notebook(nb, project, kernelspecs, kernel_env(py, base / 'home-session-2'),
                                    out / 'resume.kernel-stderr.txt')
    row['seconds']['resume'] = seconds
    problems = notebook_problems('resume', nb, failure, out)
    if failure is None:
        said = ''.join(text(c) for c in nb.cells if c.cell_type == 'code')
        if BIT_IDENTICAL not in said:
            problems.append(f'no {BIT_IDENTICAL!r}')
        if cell(nb, 'intro-extra-0').outputs:
            problems.append('intro-extra-0 printed something: did it train again instead of resuming?')
    if downloaded(base / 'home-session-2'):
        problems.append(f'the notebook wrote into HOME/.cache/paddle: {downloaded(base / "home-session-2")}')
    row['problems']['resume'] = problems

    # 3. a learner's mistakes in one kernel of this venv (its IPython, as AI Studio's): Run All of
    # mnist_cnn.ipynb in a folder of its own, then test_notebooks.MISTAKES, checked as make test does
    mistakes = base / 'project-mistakes'
    shutil.copytree(data, mistakes / 'data' / 'data65')
    nb = upload('mnist_cnn', mistakes)
    step1 = cell(nb, 'step-1')
    step1.source = re.sub(r'^argv = \[\]', f'argv = {FAST_ARGS!r}', step1.source, flags=re.M)
    nb.cells = nb.cells[:-1] + [nbformat.v4.new_code_cell(source) for source in test_notebooks.MISTAKES]
    seconds, failure = run_notebook(nb, mistakes, kernelspecs, kernel_env(py, base / 'home-session-3'),
                                    out / 'mistakes.kernel-stderr.txt')
    row['seconds']['mistakes'] = seconds
    nbformat.write(nb, out / 'mistakes.executed.ipynb')
    try:
        if failure is not None:
            raise AssertionError(f'{type(failure).__name__}: {failure}')
        test_notebooks.check_mistakes(mistakes, nb)
        row['problems']['mistakes'] = []
    except AssertionError as e:
        row['problems']['mistakes'] = [str(e).strip().splitlines()[0][:300]]
    return row


def result(problems):
    found = [f'{where}: {p}' for where, ps in problems.items() for p in ps]
    return 'pass' if not found else 'FAIL (' + '; '.join(found) + ')'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--versions', nargs='+', default=['3.2.2', '2.6.2'], help='paddlepaddle versions, one venv each')
    parser.add_argument('--python', default=os.path.expanduser(PYTHON), help='a Python 3.10 (AI Studio\'s)')
    parser.add_argument('--data', choices=sorted(DATA), default='fixture',
                        help='what is mounted at data/data65/: the synthetic fixture or ../shared/data/mnist-mini')
    parser.add_argument('--folder', default=str(ROOT / '.compat'))
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(exist_ok=True)
    if not os.path.isfile(args.python):
        print(f'error: no Python at {args.python} (pass --python, a Python 3.10)')
        return 1
    rows = []
    for version in args.versions:
        start = time.perf_counter()
        print(f'AI Studio stand-in, paddlepaddle {version}:', flush=True)
        py, error = environment(folder, args.python, version)
        if py is None:
            row = {'paddlepaddle': version, 'data': DATA[args.data], 'seconds': {}, 'problems': {'install': [error]}}
        else:
            base = folder / 'aistudio-runs' / py.parent.parent.name
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir(parents=True)
            row = check(py, version, args.data, base)
        row['result'], row['total_seconds'] = result(row['problems']), round(time.perf_counter() - start)
        if row['result'] == 'pass':
            row['result'] += (f' (losses == the script\'s: {row["script_losses"]}; resume bit-identical; '
                              f'the mistakes one line each)')
        rows.append(row)
        print(f'  {row["result"]} ({row["total_seconds"]} s in all)', flush=True)
    (folder / 'aistudio.json').write_text(json.dumps(rows, indent=1))

    print('\n| Python | paddlepaddle | numpy | ipykernel | data at data/data65/ | mnist_cnn.ipynb Run All '
          '| resume.ipynb Run All (new kernel) | mistakes (new kernel) | result |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        times = [f'{r["seconds"][n]:.0f} s' if n in r['seconds'] else '-' for n in ('mnist_cnn', 'resume', 'mistakes')]
        print(f'| {r.get("python", "?")} | {r["paddlepaddle"]} | {r.get("numpy", "?")} | {r.get("ipykernel", "?")} '
              f'| {r["data"]} | {" | ".join(times)} | {r["result"]} |')
    print('\nRun All: kernel start to the last cell, with the flags ' + ' '.join(FAST_ARGS) + '. Not like the real '
          'AI Studio: nbclient, not the JupyterLab UI; no network; an empty HOME (AI Studio\'s is the project '
          'folder); only these packages; this machine\'s CPU. Executed notebooks: .compat/aistudio-runs/*/executed/.')
    return 0 if rows and all(r['result'].startswith('pass') for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
