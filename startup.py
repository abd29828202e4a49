"""What a script does before it imports PaddlePaddle, in one place:
`paddle = startup.import_paddle()`.

1. The right Python. A learner often types `python mnist_cnn.py` in a shell whose `python` is not
   the project's .venv. If this Python lacks a package the script needs and ./.venv exists, the
   script runs again with .venv's Python (one line says so); with no .venv, one sentence says how
   to install. No traceback.
2. CPU settings, read by PaddlePaddle's math libraries only when paddle is imported
   (tools/bench.py measures both):
     OMP_NUM_THREADS=2 (at most the core count): 2 threads train 11-16% faster than paddle's 1,
       with the same losses;
     MKL_DEBUG_CPU_TYPE=5 on AMD processors: Intel's MKL takes a slow generic path on them
       otherwise.
   A value the user set already wins. If paddle was imported before (a notebook cell that ran
   `import paddle` first), they cannot take effect, and one line says so.
3. A quiet import: paddle's import-time advice about ccache (a C++ build cache) and about
   OMP_NUM_THREADS is dropped; everything else it prints passes.
Only the standard library is used here, so it works in a Python that has nothing installed.
"""
import contextlib
import importlib.util
import io
import os
import platform
import subprocess
import sys
import warnings

ROOT = os.path.dirname(os.path.abspath(__file__))
RERUN_MARK = 'MNIST_COURSE_RERUN'  # set in the re-run's environment, so it never loops


def cpu_switches():
    """The environment settings above, for this machine."""
    switches = {'OMP_NUM_THREADS': str(min(2, os.cpu_count() or 1))}
    if 'AuthenticAMD' in cpu_vendor():
        switches['MKL_DEBUG_CPU_TYPE'] = '5'
    return switches


def cpu_vendor():
    """'AuthenticAMD', 'GenuineIntel', ... ; on Windows platform.processor() reads like
    'AMD64 Family 25 Model 33 Stepping 0, AuthenticAMD'."""
    return linux_cpu_info('vendor_id') or platform.processor()


def cpu_model():
    """The processor's name, for reports: 'AMD EPYC 9B14', 'Apple M2', ..."""
    if sys.platform == 'darwin':
        try:
            return subprocess.run(['sysctl', '-n', 'machdep.cpu.brand_string'], capture_output=True,
                                  text=True, timeout=10).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return linux_cpu_info('model name') or platform.processor() or platform.machine()


def linux_cpu_info(key):
    """A field of /proc/cpuinfo (Linux only; None elsewhere)."""
    if not os.path.exists('/proc/cpuinfo'):
        return None
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
        for line in f:
            if line.startswith(key):
                return line.split(':', 1)[1].strip()
    return None


def venv_python():
    """The project's .venv Python, or None (bin/python on Linux and macOS, Scripts\\python.exe on
    Windows)."""
    for path in (os.path.join(ROOT, '.venv', 'bin', 'python'),
                 os.path.join(ROOT, '.venv', 'Scripts', 'python.exe')):
        if os.path.isfile(path):
            return path
    return None


def in_project_venv():
    """Is this Python the .venv's? (Not by the executable's path: a venv's python is a link to the
    Python it was made from.)"""
    venv = os.path.join(ROOT, '.venv')
    return os.path.isdir(venv) and os.path.normcase(os.path.realpath(sys.prefix)) == \
        os.path.normcase(os.path.realpath(venv))


def lacks(name):
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return True


def in_kernel():
    return 'ipykernel' in sys.modules


def use_project_python(needs=('paddle', 'numpy', 'matplotlib', 'filelock')):
    """Re-run this script with .venv's Python when this one lacks a needed package (see above)."""
    missing = [name for name in needs if lacks(name)]
    if not missing:
        return
    this = f'{sys.executable} (Python {platform.python_version()})'
    project = venv_python()
    if project and not in_kernel() and not in_project_venv() and os.environ.get(RERUN_MARK) != '1':
        print(f'note: {this} has no {missing[0]}; running this with {project}', file=sys.stderr,
              flush=True)
        command, env = [project] + sys.argv, dict(os.environ, **{RERUN_MARK: '1'})
        if os.name == 'posix':
            os.execve(project, command, env)  # becomes that Python: same process, same Ctrl-C
        # Windows: the child gets Ctrl-C and stops itself
        with contextlib.suppress(KeyboardInterrupt):
            raise SystemExit(subprocess.call(command, env=env))
        raise SystemExit(130)
    raise SystemExit(f'error: {this} has no {", ".join(missing)}; install the project first: '
                     f'`make install`, or `python -m pip install -r requirements.txt` with the '
                     f'Python you run the scripts with (supported: Python 3.9 to 3.13)')


def import_paddle():
    """The right Python, the CPU settings, then a quiet `import paddle`; returns the module."""
    use_project_python()
    if 'paddle' in sys.modules:  # too late: paddle read the environment when it was imported
        missed = {k: v for k, v in cpu_switches().items() if os.environ.get(k) != v}
        if missed:
            print(f'note: paddle was imported before this script, so its CPU settings '
                  f'({", ".join(f"{k}={v}" for k, v in missed.items())}) have no effect; for the '
                  f'speed the README reports, restart the kernel and run this first',
                  file=sys.stderr)
        return sys.modules['paddle']
    switches = {k: v for k, v in cpu_switches().items() if k not in os.environ}  # the user's win
    os.environ.update(switches)
    import zlib  # noqa: F401 (before paddle: PaddlePaddle 2.6 loaded first breaks gzip reading)
    # paddle resets warning filters while it imports, so its warnings are caught and passed on here
    with warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stderr(io.StringIO()) as said:
        import paddle
    for w in caught:
        if 'ccache' not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    sys.stderr.write(''.join(line for line in said.getvalue().splitlines(True)
                             if 'OMP_NUM_THREADS' not in line))
    warnings.filterwarnings('ignore', message='No ccache found')
    version = paddle.__version__
    # 0.0.0: a source build
    if version != '0.0.0' and tuple(int(p) for p in version.split('.')[:2]) < (2, 6):
        raise SystemExit(f'error: these scripts need PaddlePaddle 2.6 or newer '
                         f'(tested: 2.6.2 to 3.3.1), not {version}; '
                         f'pip install paddlepaddle==3.3.1')
    return paddle
