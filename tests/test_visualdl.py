"""--visualdl DIR (stage 八's second plotting tool): scalars a resumed run continues, read back with
VisualDL's own LogReader and served by VisualDL's own server on a loopback port."""
import glob
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

visualdl = pytest.importorskip('visualdl', reason='visualdl is not installed (make test installs it)')


@pytest.fixture(scope='module')
def logged_run(tmp_path_factory, run_script, idx_dir):
    """Two epochs logged, then resumed from the last checkpoint to train a third: one log."""
    work = tmp_path_factory.mktemp('vdl')
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, '--epochs', '2', '--log-every', '1000',
                      '--visualdl', 'vdl', cwd=work)
    assert proc.returncode == 0, proc.stderr
    proc = run_script('resume.py', '--ckpt', 'checkpoint/mnist_epoch1', '--epochs', '3', '--log-every', '1000', cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work


def test_a_resumed_run_continues_the_same_curves(logged_run):
    from visualdl import LogReader
    files = glob.glob(str(logged_run / 'vdl' / 'vdlrecords*'))
    assert len(files) == 1  # the resumed run appended to the run's own log file
    reader = LogReader(file_path=files[0])
    steps = [r.id for r in reader.get_data('scalar', 'train/loss')]
    assert steps == list(range(15))  # 3 epochs x 5 batches, one continuous series, nothing repeated
    full = json.loads((logged_run / 'runs' / 'cnn' / 'metrics.json').read_text())['batch_losses']
    resumed = json.loads((logged_run / 'runs' / 'resume' / 'metrics.json').read_text())['batch_losses']
    values = [r.value for r in reader.get_data('scalar', 'train/loss')]
    assert values == pytest.approx(full + resumed, rel=1e-6)  # VisualDL stores float32
    assert [r.id for r in reader.get_data('scalar', 'epoch/valid_acc')] == [0, 1, 2]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_the_visualdl_server_shows_the_scalars(logged_run):
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / 'visualdl'), '--logdir', 'vdl', '--host', '127.0.0.1',
                               '--port', str(port)], cwd=logged_run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f'http://127.0.0.1:{port}/app/api/scalar/list?run=vdl&tag=train/loss'
        data, last_error = None, None
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
        for _ in range(120):  # up to 60 s for the server to start (slow on a busy 2-core machine)
            try:
                with direct.open(url, timeout=5) as reply:
                    data = json.loads(reply.read())['data']
                if data:
                    break
            except OSError as e:
                last_error = e
            time.sleep(0.5)
        assert data, f'the VisualDL server answered no scalars within 60 s (last error: {last_error})'
        assert [step for _, step, _ in data] == list(range(15))
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_without_visualdl_the_flag_gets_one_sentence(idx_dir, tmp_path):
    """The package made unimportable by Python's own rule (None in sys.modules), as when not installed."""
    code = ("import sys; sys.modules['visualdl'] = None; sys.path.insert(0, %r); import common, mnist_cnn; "
            "common.run_main(mnist_cnn.main, ['--data-dir', %r, '--epochs', '1', '--visualdl', 'v'])" % (str(ROOT), idx_dir))
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f'error: --visualdl needs the VisualDL package: {sys.executable} -m pip install '
                                   'visualdl==2.5.3 (in a notebook: %pip install visualdl), or drop --visualdl')
    assert list(tmp_path.iterdir()) == []  # refused before anything was made: no runs/, no checkpoint/


def test_a_folder_in_use_opens_no_visualdl_log(tmp_path):
    """--visualdl where the checkpoint folder is refused as training starts (another run took it
    after the early check): one sentence, and no VisualDL log opened or left behind, since the
    writer opens only once the folder is held (visualdl_log.Logging)."""
    import paddle
    import checkpoints
    import progress
    from errors import UserError
    model = paddle.nn.Linear(2, 2)
    optimizer = paddle.optimizer.SGD(parameters=model.parameters())
    cfg = {'steps_per_epoch': 1, 'name': 'mnist', 'run_id': 'abc', 'seed': 0,
           'ckpt_dir': str(tmp_path / 'ck'), 'out': str(tmp_path / 'out'), 'visualdl': str(tmp_path / 'vdl')}
    with checkpoints.lock(cfg['ckpt_dir']):  # held here: another open of it is refused
        with pytest.raises(UserError, match='is in use by another training run'):
            with progress.tracker(cfg, model, optimizer):
                pass
    assert not glob.glob(str(tmp_path / 'vdl' / '*'))
