"""bench.py runs and writes its JSON (a smoke test: no timing thresholds; figures live in the script)."""
import json

from conftest import read_metrics  # noqa: F401  (conftest puts the project on sys.path)


def test_bench_smoke(run_script, idx_dir, tmp_path):
    out = tmp_path / 'bench.json'
    proc = run_script('bench.py', '--steps', '3', '--warmup', '1', '--rounds', '1', '--full-epochs', '1',
                      '--data-dir', idx_dir, '--out', out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report['steps']['ours']['samples_per_s'] > 0
    assert report['steps']["tutorial's way"]['samples_per_s'] > 0
    assert 'ours_vs_tutorial' in report
    torch = report['steps']['PyTorch']
    assert 'samples_per_s' in torch or torch == {'skipped': 'torch not installed'}
    assert report['full_run']['peak_rss_mb'] > 0 and report['full_run']['first_step_s'] > 0
    assert 'ours' in proc.stdout and 'samples/s' in proc.stdout
