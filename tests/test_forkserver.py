"""run_script forks the scripts from a process that imported PaddlePaddle already
(tests/forkserver.py): that must change nothing a test looks at."""
import re

from conftest import read_metrics


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
    assert proc.returncode == 2 and proc.stderr.startswith('usage:') and 'error: argument --epochs' in proc.stderr
    proc = run_script('resume.py', '--ckpt', 'nowhere', cwd=tmp_path)
    assert proc.returncode != 0 and proc.stderr.startswith('error: ') and 'Traceback' not in proc.stderr
    assert proc.stderr.count('\n') == 1
