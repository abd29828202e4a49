"""run_script forks the scripts from a process that imported PaddlePaddle already
(tests/forkserver.py): that must change nothing a test looks at."""
import re

import pytest

from conftest import FORKED, read_metrics


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


@pytest.mark.parametrize('script', sorted(FORKED))
def test_each_forked_script_started_fresh_imports_paddle_only_through_startup(script, run_script, tmp_path):
    """A forked script finds paddle imported already, so one that imported paddle before
    startup.import_paddle() (whose CPU settings then come too late: other last bits) would pass every
    forked test. Started fresh, such a script says so on stderr ('note: paddle was imported before')."""
    proc = run_script(script, '--help', cwd=tmp_path, fresh=True)
    assert proc.returncode == 0 and proc.stdout.startswith('usage:') and proc.stderr == '', proc.stderr


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
