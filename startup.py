"""What a script does before it imports PaddlePaddle (`paddle = startup.import_paddle()`): the
right Python (else .venv's, else one sentence), the CPU settings paddle's math libraries read only
at its import, a quiet import. Standard library, Python 3.7 syntax: any Python can say what's wrong.
"""
import contextlib
import importlib.util
import io
import os
import platform
import sys
import warnings

IMPORTED_HERE = []  # non-empty once import_paddle has imported paddle itself


def in_kernel():  # a running Jupyter/IPython kernel (AI Studio): no re-run, no exit, %pip advice
    app = getattr(sys.modules.get('ipykernel.kernelapp'), 'IPKernelApp', None)
    return app is not None and app.initialized()  # not just imported (a Jupyter client does)


class Stop(Exception):
    def _render_traceback_(self):  # IPython shows this one sentence, not a traceback
        return [str(self)]


def stop(message):
    raise Stop(message) if in_kernel() else SystemExit(message)


# OMP_NUM_THREADS=2: 11-16% faster than paddle's 1, same losses (tools/bench.py). On AMD (Windows'
# processor() ends in ', AuthenticAMD'), MKL_DEBUG_CPU_TYPE=5, or MKL takes a slow generic path.
def cpu_switches():
    switches = {'OMP_NUM_THREADS': str(min(2, os.cpu_count() or 1))}
    if 'AuthenticAMD' in (linux_cpu_info('vendor_id') or platform.processor()):
        switches['MKL_DEBUG_CPU_TYPE'] = '5'
    return switches


def linux_cpu_info(key):  # a field of /proc/cpuinfo; None elsewhere
    if os.path.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            for line in f:
                if line.startswith(key):
                    return line.split(':', 1)[1].strip()
    return None


def lacks(name):
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return True


def use_project_python(needs=('paddle', 'numpy', 'matplotlib')):  # Python 3.9+ with these
    if sys.version_info < (3, 9):
        stop('error: this is Python {}; these scripts need Python 3.9 to 3.13 with PaddlePaddle '
             '2.6 or newer'.format(platform.python_version()) + switch_hint(
                 '; install one of those and run `make install PYTHON=python3.12`'))
    missing = [name for name in needs if lacks(name)]
    if missing:
        rerun_or_stop(missing)


def rerun_or_stop(missing):
    """This Python lacks a package: run the script with .venv's Python, else one sentence (rerun.py,
    read only then; a notebook does not carry it: a kernel is never re-run)."""
    if not in_kernel():
        import rerun
        rerun.rerun_or_stop(missing)  # never returns
    names = ' '.join('pillow' if m == 'PIL' else m for m in missing)
    stop('error: this notebook\'s Python has no {}; run `%pip install {}` in a cell, then '
         'Kernel > Restart'.format(', '.join(missing), names))


def switch_hint(outside_a_notebook):
    if in_kernel():  # AI Studio's forked course projects keep their old environment
        return ('; in AI Studio choose a PaddlePaddle 3.x environment for this project (项目环境 '
                '/ 切换环境), then run the notebook again')
    return outside_a_notebook


def import_paddle():
    """The right Python, the CPU settings (a value you set wins), then a quiet `import paddle`."""
    use_project_python()
    if 'paddle' in sys.modules:  # too late for the CPU settings: paddle read them at its import
        return sys.modules['paddle'] if IMPORTED_HERE else imported_before()
    for key, value in cpu_switches().items():
        os.environ.setdefault(key, value)
    IMPORTED_HERE.append(True)  # a second call (resume.py importing mnist_cnn.py) says nothing
    import zlib  # noqa: F401 (before paddle: PaddlePaddle 2.6 loaded first breaks gzip reading)
    # paddle resets warning filters while it imports: its warnings and stderr are caught, then
    # passed on without its advice about ccache and OMP_NUM_THREADS
    with warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stderr(io.StringIO()) as said:
        import paddle
    for w in caught:
        if 'ccache' not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    sys.stderr.write(''.join(line for line in said.getvalue().splitlines(True)
                             if 'OMP_NUM_THREADS' not in line))
    warnings.filterwarnings('ignore', message='No ccache found')
    version = paddle.__version__  # 0.0.0: a source build
    if version != '0.0.0' and tuple(int(p) for p in version.split('.')[:2]) < (2, 6):
        stop('error: these scripts need PaddlePaddle 2.6 or newer (tested: 2.6.2 to 3.3.1), not {}'
             .format(version) + switch_hint('; upgrade it: pip install -U paddlepaddle '
                                            '(paddlepaddle-gpu on a GPU machine)'))
    return paddle


def imported_before():
    missed = {k: v for k, v in cpu_switches().items() if os.environ.get(k) != v}
    if missed:
        print('note: paddle was imported before this script, so its CPU settings ({}) have no '
              'effect; for the speed the README reports, restart the kernel and run this '
              'first'.format(', '.join(k + '=' + v for k, v in missed.items())), file=sys.stderr)
    return sys.modules['paddle']
