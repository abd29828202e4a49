"""Shared fixtures: synthetic data in the real formats, and a runner for the scripts as subprocesses
(the real use: every run is a process of its own, as a user's would be; see python_run)."""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tests'))
sys.path.insert(0, str(ROOT / 'tools'))  # results.py, bench.py, mnist_json.py

import fixtures  # noqa: E402

# A pytest that a shell started in the background (make test's first half, `make test &`) has
# SIGINT ignored, and every script it starts would inherit that; the scripts' own Ctrl-C is what
# the tests prove, so the scripts start as from a terminal: SIGINT at Python's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# One fixed run of the CNN on the synthetic data: the golden-loss and resume tests all use it.
GOLDEN_ARGS = ['--epochs', '3', '--seed', '0', '--log-every', '1000']


# Thread settings as a learner's fresh shell has them: none. A plain `import paddle` in the test
# process sets OMP_NUM_THREADS=1 in os.environ, and the scripts would inherit it (other bits).
THREAD_SETTINGS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_DEBUG_CPU_TYPE')


# `make test`'s MAKELEVEL: the scripts word their advice for make where it is set (flags.pass_flag,
# resume_command), so here, in-process and in every script run, it is unset unless a test sets it:
# `make test` and plain pytest see the same sentences
os.environ.pop('MAKELEVEL', None)


def script_env(home):
    env = {k: v for k, v in os.environ.items() if k not in THREAD_SETTINGS}
    env['HOME'] = str(home)  # PaddlePaddle's data cache (~/.cache/paddle) is empty here
    # OpenMP threads sleep at once when idle instead of spinning (Intel's runtime 200 ms, GNU's
    # a while): the two pytest processes of `make test` share 2 cores (scheduling only: the same
    # number of threads, the same results)
    env['KMP_BLOCKTIME'], env['OMP_WAIT_POLICY'] = '0', 'PASSIVE'
    # Any download attempt fails at once (a closed local port), as on a machine without network.
    for var in ('HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'ALL_PROXY'):
        env[var] = 'http://127.0.0.1:9'
    env.pop('NO_PROXY', None)
    env.pop('no_proxy', None)
    return env


# The scripts that import PaddlePaddle at their top: python_run forks them from a process that
# imported it already (tests/forkserver.py), a real process all the same, about 3 CPU-seconds
# cheaper. test_forkserver.py proves a forked run equals a fresh interpreter's, bit for bit, and
# that each of these scripts, started fresh, imports paddle only through startup.import_paddle.
# Linux only: Windows has no fork, and on macOS a process forked after its libraries started
# threads is not safe; there every run starts fresh.
FORKED = {'mnist_cnn.py', 'mnist_linear.py', 'mnist_mlp.py', 'resume.py', 'tutorial_resume.py'}
FORKING = sys.platform.startswith('linux')
_servers = []  # this pytest process's fork server, started at the first forked run


class ForkServer:
    def __init__(self):
        self.home = tempfile.mkdtemp()
        self.env = script_env(self.home)
        self.server = subprocess.Popen([sys.executable, str(ROOT / 'tests' / 'forkserver.py')],
                                       env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.started = None  # the Started run of start(), until it has been waited for

    def serves(self, env):  # what Python reads at its start (PYTHONPATH, PYTHONIOENCODING...) fits
        return all(env.get(k) == self.env.get(k) for k in {*env, *self.env} if k.startswith('PYTHON'))

    def answer(self, timeout=None):  # one line of the server's, or None after timeout seconds
        line = b''
        while not line.endswith(b'\n'):
            if not select.select([self.server.stdout], [], [], timeout)[0]:
                return None
            byte = os.read(self.server.stdout.fileno(), 1)
            if not byte:
                raise RuntimeError(f'tests/forkserver.py ended (exit code {self.server.wait()})')
            line += byte
        return int(line)

    def send(self, argv, cwd, env, code, folder):  # one request; the child's output in folder
        self.end_started()
        request = {'argv': [str(a) for a in argv], 'cwd': str(cwd), 'env': env, 'code': code,
                   'stdout': str(folder / 'stdout'), 'stderr': str(folder / 'stderr')}
        self.server.stdin.write(json.dumps(request).encode() + b'\n')
        self.server.stdin.flush()
        return request

    def run(self, argv, cwd, env, timeout, code):
        folder = Path(tempfile.mkdtemp())
        request = self.send(argv, cwd, env, code, folder)
        try:
            pid = self.answer()
            status = self.answer(timeout)
            if status is None:  # as subprocess.run: kill it, then say so
                os.kill(pid, signal.SIGKILL)
                self.answer()
                raise subprocess.TimeoutExpired(request['argv'], timeout)
            return subprocess.CompletedProcess(
                [sys.executable, *request['argv']], status,
                *(Path(request[f]).read_text() for f in ('stdout', 'stderr')))
        finally:
            shutil.rmtree(folder)

    def start(self, argv, cwd, env):
        """A forked run the test talks to while it runs (its output read line by line, signals sent
        to it): a Started, used as subprocess.Popen(text=True). The server serves no other run until
        it has ended: a run started and not waited for is killed before the next one."""
        folder = Path(tempfile.mkdtemp())
        os.mkfifo(folder / 'stdout')  # read while the child writes
        (folder / 'stderr').touch()
        self.send(argv, cwd, env, None, folder)
        self.started = Started(self, self.answer(), folder, argv)
        return self.started

    def end_started(self):
        started, self.started = self.started, None
        if started is not None:
            if started.returncode is None:
                started.kill()
                started.wait()
            started.close()

    def close(self):
        self.end_started()
        self.server.stdin.close()
        self.server.wait(timeout=60)
        shutil.rmtree(self.home, ignore_errors=True)


class Started:
    """A run of ForkServer.start, as subprocess.Popen(stdout=PIPE, stderr=PIPE, text=True) has it:
    pid, stdout (lines as they come), stderr, send_signal, kill, poll, wait, communicate."""
    def __init__(self, server, pid, folder, argv):
        self.server, self.pid, self.folder, self.args = server, pid, folder, argv
        self.returncode = None
        self.stdout = open(folder / 'stdout', encoding='utf-8')  # once the child has opened it
        self.stderr = open(folder / 'stderr', encoding='utf-8')

    def send_signal(self, signum):
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout=None):
        if self.returncode is None:
            status = self.server.answer(timeout)
            if status is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = status
        return self.returncode

    def poll(self):
        return self.returncode if self.returncode is not None else (
            None if not select.select([self.server.server.stdout], [], [], 0)[0] else self.wait())

    def communicate(self, timeout=None):  # the rest of stdout (to the child's end), then stderr
        out = self.stdout.read()
        self.wait(timeout)
        err = self.stderr.read()
        self.close()
        return out, err

    def close(self):  # its output folder goes (after communicate, or when the server moves on)
        self.stdout.close()
        self.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def fork_server(argv, env):
    """This pytest process's ForkServer (started at the first call) when it may run `python ARGV`
    with env: a script in FORKED, on Linux, with no thread settings and the server's PYTHON*
    variables; else None (a new interpreter)."""
    if not FORKING or os.path.basename(str(argv[0])) not in FORKED or any(k in env for k in THREAD_SETTINGS):
        return None
    if not _servers:
        _servers.append(ForkServer())
    return _servers[0] if _servers[0].serves(env) else None


def python_start(argv, cwd, env):
    """`python ARGV` in cwd with env, started: forked as in python_run (a Started), else
    subprocess.Popen; either way read stdout while it runs, signal it, then communicate()."""
    server = fork_server(argv, env)
    if server:
        return server.start(argv, cwd, env)
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def blocking_env(tmp_path, home, *modules):
    """A script environment in which `import <module>` fails, as where the module does not exist."""
    site = tmp_path / 'block'
    site.mkdir(exist_ok=True)
    (site / 'sitecustomize.py').write_text(
        'import sys\n' + ''.join(f'sys.modules[{m!r}] = None\n' for m in modules))
    env = script_env(home)
    env['PYTHONPATH'] = str(site)
    return env


def python_run(argv, cwd, env, timeout=600, code=None, fresh=False):
    """`python ARGV` (or `python -c CODE ARGV`) in cwd with env -> CompletedProcess (text): forked
    for the scripts in FORKED, unless fresh; else a new interpreter. A forked run differs from a
    fresh one only in what Python and paddle read at their start: the PYTHON* variables (a run
    whose differ from the server's starts fresh), the thread settings (likewise), the string-hash
    seed (one per server: forked runs compared with each other share it; test_forkserver compares
    with a fresh run) and the modules the server imported (startup, paddle, matplotlib)."""
    server = None if fresh else fork_server(argv, env)
    if server:
        return server.run(argv, cwd, env, timeout, code)
    return subprocess.run([sys.executable, *(['-c', code] if code else []), *map(str, argv)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='session')
def run_script(tmp_path_factory):
    """run_script('mnist_cnn.py', *args, cwd=folder) -> CompletedProcess (text output), as
    `python mnist_cnn.py ARGS` run in that folder. fresh=True: a new interpreter even for the
    scripts in FORKED (for tests of the start itself)."""
    home = tmp_path_factory.mktemp('home')

    def run(script, *args, cwd, timeout=600, fresh=False):
        return python_run([ROOT / script, *args], cwd, script_env(home), timeout, fresh=fresh)
    yield run


@pytest.fixture(scope='session')
def idx_dir(tmp_path_factory):
    return fixtures.write_idx_folder(str(tmp_path_factory.mktemp('mnist_idx')))


@pytest.fixture(scope='session')
def json_gz(tmp_path_factory):
    return fixtures.write_json_gz(str(tmp_path_factory.mktemp('mnist_json') / 'mnist.json.gz'))


def read_metrics(folder):
    with open(Path(folder) / 'metrics.json') as f:
        return json.load(f)


def record_new_weights(prefix):
    """The checkpoint's json takes the sha256 of its .pdparams as it is now (weights replaced by
    hand, as a user copying files would): the checkpoint verifies again."""
    from safe_files import file_hash
    meta_path = Path(f'{prefix}.json')
    meta = json.loads(meta_path.read_text())
    meta['files']['pdparams'] = file_hash(f'{prefix}.pdparams')
    meta_path.write_text(json.dumps(meta))


@pytest.fixture(scope='session')
def cnn_run(tmp_path_factory, run_script, idx_dir):
    """The uninterrupted 3-epoch CNN run with a checkpoint after every epoch."""
    work = tmp_path_factory.mktemp('cnn_run')
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *GOLDEN_ARGS, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {'dir': work, 'ckpt': work / 'checkpoint', 'out': work / 'runs' / 'cnn',
            'metrics': read_metrics(work / 'runs' / 'cnn'), 'stdout': proc.stdout}


def gpu_present():
    """True where this PaddlePaddle has CUDA and sees a GPU (--device auto then trains on it).
    The expectations of a machine without one (e.g. `--device gpu` refused) are skipped there."""
    import startup
    paddle = startup.import_paddle()  # the scripts' own import (thread settings before paddle)
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


GPU_ONLY_SKIP = 'GPU present: '  # every skip for that reason starts so (.ci/run allows these)


# ---- STRICT_SKIPS=1 (set by .ci/run): a test skipped for a reason CI does not allow fails the run --
# A skip is meant for a machine that cannot run a test (it has a GPU, it is not Linux). On CI, a
# Linux machine without a GPU where everything the tests need is installed, any other skip (no
# root for a tmpfs, no visualdl, no plain Python, no `make`) means a promise went unchecked, so the
# run fails and lists each such test with its reason. Allowed: the reasons that start with these.
ALLOWED_SKIPS = (GPU_ONLY_SKIP, 'Windows only: ', 'macOS only: ')
_unexpected_skips = []


def _strict_skips():
    return os.environ.get('STRICT_SKIPS') == '1'


def pytest_runtest_logreport(report):
    if not (_strict_skips() and report.skipped) or hasattr(report, 'wasxfail'):
        return  # xfail is not a skip: it ran, and its reason names the script's behaviour
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason[len('Skipped: '):] if reason.startswith('Skipped: ') else reason
    if not reason.startswith(ALLOWED_SKIPS):
        _unexpected_skips.append(f'{report.nodeid}: {reason}')


def pytest_terminal_summary(terminalreporter):
    if _unexpected_skips:
        terminalreporter.section('skips not allowed on CI (STRICT_SKIPS=1)', red=True)
        for line in _unexpected_skips:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    try:
        for server in _servers:  # started by any test's first forked run: its home folder goes too
            server.close()
    finally:
        _servers.clear()
        if _unexpected_skips and exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config):
    config.addinivalue_line('markers', 'install: builds a .venv from the package index, minutes; `make test` '
                                       'deselects it, `make test-whole` (and so .ci/run) runs it')
    config.addinivalue_line('markers', 'whole: the whole course or the whole README end to end, minutes of fresh '
                                       'processes; `make test` deselects it, `make test-whole` (and so .ci/run) runs it')
