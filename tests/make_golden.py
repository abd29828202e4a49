"""`make golden`: rerun every golden run (tests/goldens.py RUNS) and add this machine's entry to its
tests/golden/*.json, beside the entries of other environments (only an entry of the identical
environment, goldens.EXACT_FIELDS, is replaced).

    python tests/make_golden.py                      # all of them
    python tests/make_golden.py cnn housing-paddle   # only these
    python tests/make_golden.py --fresh              # drop the other environments' entries

Run it to record the values of a new environment (a machine, Python, numpy or paddle the tests
run on: there the comparison becomes ==), or with --fresh after a change meant to alter the losses
(a deliberate change of model, data order or numerics: every other environment's entry is then
stale, and those machines record theirs again); review the diff and say why in the commit message.
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
    argv = list(argv if argv is not None else sys.argv[1:])
    fresh = '--fresh' in argv
    names = [a for a in argv if a != '--fresh'] or list(goldens.RUNS)
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
            entry = goldens.entry(name, metrics, env)
            out = goldens.GOLDEN_DIR / run['file']
            earlier = goldens.load(name) if out.exists() and not fresh else None
            golden, how = goldens.merge(name, earlier, entry, env)
            if fresh and out.exists():
                how = f'--fresh: its {len(goldens.load(name)["entries"])} earlier entries dropped'
            out.write_text(json.dumps(golden, indent=1) + '\n')
            print(f'{name:18s} {seconds:5.1f} s  {out.relative_to(ROOT)}: {how}, now {len(golden["entries"])} '
                  f'entr{"y" if len(golden["entries"]) == 1 else "ies"} ({len(entry["batch_losses"])} losses, '
                  f'eval {entry["eval"]})')


if __name__ == '__main__':
    main()
