"""`make golden`: rerun every golden run (tests/goldens.py RUNS) and rewrite its tests/golden/*.json.

    python tests/make_golden.py                  # all of them
    python tests/make_golden.py cnn housing-paddle   # only these

Run it only when a change is meant to alter the losses (a new paddle version, a deliberate change
of model, data order or numerics), or to record them in a new environment; review the diff and say
why in the commit message.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures  # noqa: E402
import goldens  # noqa: E402
from conftest import ROOT, script_env  # noqa: E402


def main(argv=None):
    names = list(argv if argv is not None else sys.argv[1:]) or list(goldens.RUNS)
    unknown = [n for n in names if n not in goldens.RUNS]
    if unknown:
        sys.exit(f'error: no golden run named {", ".join(unknown)}; there are: {", ".join(goldens.RUNS)}')
    env = goldens.environment()
    print(f'environment: {goldens.describe(env)} ({env["machine"]}, {env["os"]})')
    goldens.GOLDEN_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = {'mnist': fixtures.write_idx_folder(str(tmp / 'mnist')),
                'housing': goldens.write_housing_data(tmp / 'housing.data')}
        for name in names:
            run = goldens.RUNS[name]
            work = tmp / 'runs' / name
            work.mkdir(parents=True)
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, str(ROOT / run['script']), *goldens.command(name, data[run['data']])],
                                  cwd=work, env=script_env(tmp), capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if proc.returncode:
                sys.exit(f'error: {name} ({run["script"]} {" ".join(run["args"])}) failed with exit code '
                         f'{proc.returncode}:\n{proc.stdout}{proc.stderr}')
            metrics = json.loads((work / run['out'] / 'metrics.json').read_text())
            golden = goldens.golden_record(name, metrics, env)
            out = goldens.GOLDEN_DIR / run['file']
            out.write_text(json.dumps(golden, indent=1) + '\n')
            print(f'{name:18s} {seconds:5.1f} s  wrote {out.relative_to(ROOT)} '
                  f'({len(golden["batch_losses"])} losses, eval {golden["eval"]})')


if __name__ == '__main__':
    main()
