"""What a learner on AI Studio meets before the lesson runs: an old environment (a forked course
project keeps Python 3.7 or an old PaddlePaddle), a package missing, each told in one sentence that
works in a notebook. (The notebooks themselves run in a real kernel in test_notebooks.py.)"""
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def kernel_like(tmp_path, code, fake_paddle=None, block=()):
    """Run code in a Python that is a kernel as far as the scripts can tell (an IPKernelApp exists, as
    in a notebook's kernel; its sockets are not started), optionally with an old `paddle` package
    first on the path, or packages made unimportable."""
    path = [str(ROOT)]
    if fake_paddle:
        pkg = tmp_path / 'old' / 'paddle'
        pkg.mkdir(parents=True)
        (pkg / '__init__.py').write_text(f'__version__ = {fake_paddle!r}\n')
        path.insert(0, str(tmp_path / 'old'))
    prelude = ('import sys\nfrom ipykernel.kernelapp import IPKernelApp\nIPKernelApp.instance()\n' + ''.join(f'sys.modules[{m!r}] = None\n' for m in block)
               + f'sys.path[:0] = {path!r}\nimport startup\n'
               'try:\n    startup.import_paddle()\nexcept startup.Stop as e:\n    print("STOP", e)\n')
    proc = subprocess.run([sys.executable, '-c', prelude + code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_an_old_paddlepaddle_in_a_notebook_is_told_to_switch_the_environment(tmp_path):
    out = kernel_like(tmp_path, '', fake_paddle='2.4.2')
    assert out.startswith('STOP error: these scripts need PaddlePaddle 2.6 or newer'), out
    assert 'PaddlePaddle 3.x environment' in out and 'pip install' not in out  # never the CPU wheel


def test_an_old_paddlepaddle_on_the_command_line_gets_one_sentence(tmp_path):
    pkg = tmp_path / 'old' / 'paddle'
    pkg.mkdir(parents=True)
    (pkg / '__init__.py').write_text("__version__ = '2.4.2'\n")
    proc = subprocess.run([sys.executable, str(ROOT / 'mnist_cnn.py')], capture_output=True, text=True,
                          cwd=tmp_path, env={'PYTHONPATH': str(tmp_path / 'old'), 'PATH': '/usr/bin:/bin'})
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        'error: these scripts need PaddlePaddle 2.6 or newer (tested: 2.6.2 to 3.3.1), not 2.4.2; upgrade it: '
        'pip install -U paddlepaddle (paddlepaddle-gpu on a GPU machine)']


def test_a_missing_package_in_a_notebook_says_pip_install_in_a_cell(tmp_path):
    out = kernel_like(tmp_path, '', block=('matplotlib',))
    assert out.startswith("STOP error: this notebook's Python has no matplotlib; run `%pip install matplotlib`"), out
    assert 'make install' not in out


def test_startup_reads_on_python_3_7():
    """So that an old AI Studio environment reaches the sentence above instead of a SyntaxError (and an
    old Python on the command line, the re-run with .venv's or one sentence: rerun.py)."""
    vermin = Path(sys.executable).parent / 'vermin'
    proc = subprocess.run([str(vermin), '-t=3.7-', '--no-tips', '--violations', str(ROOT / 'startup.py'),
                           str(ROOT / 'rerun.py')],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
