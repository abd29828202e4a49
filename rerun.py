"""A script started by a Python that lacks a package (startup.use_project_python) runs again with
.venv's Python, else says so in one sentence. Imported only then, so a run in the right Python never
reads this, and a notebook (whose kernel is never re-run) does not carry it. Standard library,
Python 3.7 syntax, as startup.py: any Python can say what's wrong.
"""
import contextlib
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
RERUN_MARK = 'MNIST_COURSE_RERUN'  # set in the re-run's environment, so it never loops


def venv_python():  # ./.venv's Python (Scripts\python.exe on Windows), or None
    for path in (os.path.join(ROOT, '.venv', 'bin', 'python'),
                 os.path.join(ROOT, '.venv', 'Scripts', 'python.exe')):
        if os.path.isfile(path):
            return path
    return None


def rerun_or_stop(missing):  # outside a notebook (startup.rerun_or_stop)
    this = '{} (Python {})'.format(sys.executable, platform.python_version())
    project = venv_python()
    same = project and os.path.realpath(sys.prefix) == os.path.realpath(os.path.dirname(
        os.path.dirname(project)))
    if project and not same and os.environ.get(RERUN_MARK) != '1':
        print('note: {} has no {}; running this with {}'.format(this, missing[0], project),
              file=sys.stderr, flush=True)
        command, env = [project] + sys.argv, dict(os.environ, **{RERUN_MARK: '1'})
        if os.name == 'posix':
            os.execve(project, command, env)  # becomes that Python: same process, same Ctrl-C
        with contextlib.suppress(KeyboardInterrupt):  # Windows: the child gets Ctrl-C itself
            raise SystemExit(subprocess.call(command, env=env))
        raise SystemExit(130)
    raise SystemExit('error: {} has no {}; install the project first: `make install`, or `python '
                     '-m pip install -r requirements.txt` with the Python you run the scripts '
                     'with (supported: Python 3.9 to 3.13)'.format(this, ', '.join(missing)))
