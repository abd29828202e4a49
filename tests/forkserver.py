"""Runs the stage scripts as real processes without paying `import paddle` (about 3 CPU-seconds)
and matplotlib's import for each one: this server imports PaddlePaddle once, the way every script
does (startup.import_paddle()), and matplotlib as plots.py does, then forks a child per request.
The child is a new process with its own pid, signals, exit status and files: it takes the
request's folder, environment, argv and output files and runs the script as `__main__`, exiting as
`python SCRIPT ARGS` would (SystemExit, an uncaught exception, KeyboardInterrupt by SIGINT, the
atexit handlers). What it does not repeat is the teardown of the modules at the end (see end()),
and the start itself: the Python check, the CPU settings and the import (so a script importing
paddle before startup would pass here: test_forkserver.py checks each script's first paddle import
in a fresh Python),
what Python reads at its start (conftest.python_run starts fresh when PYTHON* variables differ),
the string-hash seed (one per server). The tests of the start itself (test_platforms.py,
test_aistudio.py) start their own interpreters.

Protocol (conftest.ForkServer): one JSON line per request on stdin {"argv": [...], "cwd": ...,
"env": {...}, "code": null or the CODE of `python -c CODE ARGV`, "stdout": file, "stderr": file};
the server answers the child's pid, then, when it ended, its exit status as subprocess reports it
(-N: killed by signal N). The stdout file may be a named pipe that the test reads while the child
runs (conftest.ForkServer.start).
"""
import atexit
import ctypes
import json
import os
import runpy
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = ROOT  # as for `python mnist_cnn.py`: the project's folder first

import startup  # noqa: E402

before = dict(os.environ)
startup.import_paddle()
IMPORT_SET = {k: v for k, v in os.environ.items() if before.get(k) != v}  # the CPU settings...
import matplotlib  # noqa: E402 (and matplotlib as plots.pyplot() imports it outside a notebook)
matplotlib.use('Agg')
import matplotlib.pyplot  # noqa: E402,F401


def serve():
    """Answers requests until stdin closes; returns (only in a forked child) the request to run."""
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request
        print(pid, flush=True)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    raise SystemExit(0)


def become(request):
    """This process takes the request's files, folder, environment and argv."""
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY),
                           (1, request['stdout'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                           (2, request['stderr'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        new = os.open(path, mode, 0o644)
        os.dup2(new, fd)
        os.close(new)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    for key, value in IMPORT_SET.items():  # what import_paddle set before importing paddle
        os.environ.setdefault(key, value)
    sys.argv = ['-c', *request['argv']] if request.get('code') else list(request['argv'])
    sys.path[0] = '' if request.get('code') else os.path.dirname(os.path.abspath(sys.argv[0]))


BY_SIGINT = 'SIGINT'  # run()'s status for an uncaught KeyboardInterrupt: the process ends by it


def run(request):
    """The script as `__main__`; its exit status as Python's would be (or BY_SIGINT)."""
    try:
        if request.get('code'):  # python -c CODE ARGS
            exec(compile(request['code'], '<string>', 'exec'), {'__name__': '__main__'})
        else:
            runpy.run_path(sys.argv[0], run_name='__main__')
    except SystemExit as e:  # None: 0; a number: itself (outside a C long: -1); else printed, 1
        if e.code is None or isinstance(e.code, int):
            return e.code if e.code and -2 ** 63 <= e.code < 2 ** 63 else -1 if e.code else 0
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Python prints the traceback, then ends by the signal itself
        sys.excepthook(*sys.exc_info())
        return BY_SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        return 1
    return 0


def end(status):
    """Python's end without its teardown of the modules (PaddlePaddle's takes about 1 CPU-second a
    process, and changes nothing a test looks at): the threads that are not daemons waited for,
    the atexit handlers (their errors printed, as Python does; 3.9 also raises the last one), the
    streams flushed (Python's own and C's; a failure: status 120), then the status, or SIGINT."""
    try:
        if 'threading' in sys.modules:  # first the threads that are not daemons, as Python waits
            sys.modules['threading']._shutdown()
        atexit._run_exitfuncs()
    except BaseException:
        pass
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)  # the script's, Python's
    for stream in {id(s): s for s in streams}.values():  # each once
        try:
            if stream is not None and not stream.closed:  # as Python: those it skips
                stream.flush()
        except OSError:
            status = status or 120
    ctypes.CDLL(None).fflush(None)  # what C code printed (paddle's C++)
    if status == BY_SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status & 0xFF)


if __name__ == '__main__':
    request = serve()
    become(request)
    end(run(request))
