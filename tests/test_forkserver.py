"""run_script forks the scripts from a process that imported PaddlePaddle already
(tests/forkserver.py): that must change nothing a test looks at."""
import re
import subprocess
import sys

import pytest

from conftest import FORKED, ROOT, read_metrics, script_env


def test_a_forked_run_equals_a_fresh_interpreters(run_script, idx_dir, tmp_path):
    runs = {}
    for fresh in (True, False):
        work = tmp_path / str(fresh)
        work.mkdir()
        proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, '--epochs', '2', '--log-every', '3',
                          cwd=work, fresh=fresh)
        assert proc.returncode == 0, proc.stderr
        untimed = re.sub(r'\d+(\.\d+)? ?s\b|\d+ samples/s|[0-9a-f]{12}', 'T', proc.stdout)
        runs[fresh] = (read_metrics(work / 'runs' / 'cnn'), untimed, proc.stderr)
    (fresh, fresh_out, fresh_err), (forked, forked_out, forked_err) = runs[True], runs[False]
    assert forked['batch_losses'] == fresh['batch_losses'] and forked['eval'] == fresh['eval']
    assert forked_out == fresh_out and forked_err == fresh_err == ''


def test_a_forked_run_exits_as_python_does(run_script, tmp_path):
    proc = run_script('mnist_cnn.py', '--epochs', '0', cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith('error: argument --epochs')
    proc = run_script('resume.py', '--ckpt', 'nowhere', cwd=tmp_path)
    assert proc.returncode != 0 and proc.stderr.startswith('error: ') and 'Traceback' not in proc.stderr
    assert proc.stderr.count('\n') == 1


# In one fresh Python, each forked script runs with --help until its first `import paddle`, which
# is stopped there (no PaddlePaddle import: 3 s a script saved) and must come from inside
# startup.import_paddle(). (startup.lacks' find_spec, which checks paddle is installed, imports nothing.)
FIRST_PADDLE_IMPORT = """
import os, runpy, sys, traceback
root, scripts = sys.argv[1], sys.argv[2:]
startup_py = os.path.join(root, 'startup.py')
class Reached(BaseException):
    pass
class WatchPaddle:  # on sys.meta_path: asked first for every module
    def find_spec(self, name, path=None, target=None):
        inside = [f.name for f in traceback.extract_stack() if f.filename == startup_py]
        if name != 'paddle' or 'lacks' in inside:
            return None
        raise Reached('in import_paddle' if 'import_paddle' in inside else ''.join(traceback.format_stack()))
sys.meta_path.insert(0, WatchPaddle())
sys.path.insert(0, root)
for script in scripts:
    for name in [n for n, m in list(sys.modules.items()) if os.path.dirname(getattr(m, '__file__', None) or '') == root]:
        del sys.modules[name]  # the project's modules imported anew for each script
    sys.argv = [script, '--help']
    try:
        runpy.run_path(os.path.join(root, script), run_name='__main__')
        print(script, 'ended without importing paddle')
    except Reached as e:
        print(script, 'imported paddle first', e)
"""


def test_each_forked_script_imports_paddle_first_in_startup(tmp_path):
    """A forked script finds paddle imported already, so one that imported paddle before
    startup.import_paddle() (whose CPU settings then come too late: other last bits) would pass every
    forked test. Started fresh, each one's first `import paddle` comes from import_paddle."""
    proc = subprocess.run([sys.executable, '-c', FIRST_PADDLE_IMPORT, str(ROOT), *sorted(FORKED)], cwd=tmp_path,
                          env=script_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f'{s} imported paddle first in import_paddle' for s in sorted(FORKED)], \
        proc.stdout


# How a Python program can end, each compared between `python -c CODE` and a forked run (which
# ends without the teardown of the modules: forkserver.end)
ENDINGS = {'exit 3': 'import sys; sys.exit(3)', 'exit text': 'import sys; sys.exit("text")',
           'exit -2': 'import sys; sys.exit(-2)', 'an exception': 'raise ValueError("x")',
           'KeyboardInterrupt': 'raise KeyboardInterrupt',
           'an atexit handler raises': 'import atexit\ndef f(): raise ValueError("in atexit")\natexit.register(f)',
           'stdout buffered by the script': 'import io, sys\nsys.stdout = io.TextIOWrapper(io.BufferedWriter('
                                            'io.FileIO(1, "w", closefd=False)))\nprint("buffered")',
           'C prints': 'import ctypes\nctypes.CDLL(None).printf(b"from C\\n")'}


@pytest.mark.parametrize('ending', ENDINGS)
def test_a_forked_run_ends_as_python_does(ending, tmp_path):
    from conftest import FORKING, ROOT, fork_server, python_run, script_env
    env = script_env(tmp_path)
    assert fork_server([ROOT / 'mnist_cnn.py'], env) or not FORKING  # the second run below is forked
    fresh, forked = (python_run([ROOT / 'mnist_cnn.py'], tmp_path, env, code=ENDINGS[ending], fresh=fresh)
                     for fresh in (True, False))
    assert (forked.returncode, forked.stdout) == (fresh.returncode, fresh.stdout)
    assert forked.stderr.splitlines()[-1:] == fresh.stderr.splitlines()[-1:], forked.stderr
