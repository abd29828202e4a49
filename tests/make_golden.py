"""`make golden`: rerun the golden fixture run and rewrite tests/golden/cnn_fixture.json.

Run it only when a change is meant to alter the losses (a new paddle version, a deliberate change
of model, data order or numerics); review the diff and say why in the commit message.
"""
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures  # noqa: E402
from conftest import GOLDEN_ARGS, ROOT, script_env  # noqa: E402


def main():
    with tempfile.TemporaryDirectory() as tmp:
        data = fixtures.write_idx_folder(str(Path(tmp) / 'data'))
        subprocess.run([sys.executable, str(ROOT / 'mnist_cnn.py'), '--data-dir', data, *GOLDEN_ARGS],
                       cwd=tmp, env=script_env(tmp), check=True)
        metrics = json.loads((Path(tmp) / 'runs' / 'cnn' / 'metrics.json').read_text())
    golden = {'args': GOLDEN_ARGS, 'batch_losses': metrics['batch_losses'], 'eval': metrics['eval'],
              'paddle_version': metrics['paddle_version'], 'machine': platform.processor() or platform.machine()}
    out = ROOT / 'tests' / 'golden' / 'cnn_fixture.json'
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(golden, indent=1) + '\n')
    print(f'wrote {out} ({len(golden["batch_losses"])} losses, eval {golden["eval"]})')


if __name__ == '__main__':
    main()
