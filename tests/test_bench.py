"""tools/bench.py runs end to end and writes its JSON (a smoke test: no timing thresholds; figures live
in `make bench`). PyTorch is measured when .venv-torch exists, else reported as skipped.

Run by `make bench` before the measurement, not by `make test` (it proves nothing about the course,
and its runs cost `make test` half a minute): `.venv/bin/python -m pytest -q tests/test_bench.py`."""
import json

from conftest import read_metrics  # noqa: F401  (conftest puts the project on sys.path)


def test_bench_smoke(run_script, idx_dir, tmp_path):
    out = tmp_path / 'bench.json'
    proc = run_script('tools/bench.py', '--rounds', '1', '--epochs', '2', '--steps', '3', '--data-dir', idx_dir, '--out', out,
                      '--only', 'ours: mnist', 'tutorial', 'PyTorch, its', cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = json.loads(out.read_text())['table']
    assert set(table) == {'ours: mnist_cnn.py', "tutorial's way", 'PyTorch, its defaults (all cores)'}
    ours = table['ours: mnist_cnn.py']
    assert ours['epoch_samples_per_s'] > 0 and ours['step_ms'] > 0 and 0 <= ours['data_share'] < 1
    assert table["tutorial's way"]['epoch_samples_per_s'] > 0
    torch = table['PyTorch, its defaults (all cores)']
    assert torch.get('epoch_samples_per_s', 0) > 0 or 'PyTorch is not installed' in torch['error']
    assert 'samples/s' in proc.stdout and 'ours / this' in proc.stdout and 'GFLOP/s' in proc.stdout
    assert json.loads(out.read_text())['sgemm_gflops']['paddle']['gflops'] > 0
