"""AI Studio's notebooks run Python 3.10: no syntax and no standard-library call newer than that.
vermin reads every file and names each construct's minimum version. (`make compat` also runs the
scripts themselves on Python 3.10 with PaddlePaddle 2.6.2, 3.0.0, 3.2.2 and 3.3.1.)"""
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_no_python_newer_than_3_10_is_needed():
    files = sorted(map(str, ROOT.glob('*.py'))) + sorted(map(str, (ROOT / 'tests').glob('*.py')))
    vermin = Path(sys.executable).parent / 'vermin'
    proc = subprocess.run([str(vermin), '-t=3.10-', '--violations', '--no-tips', '--eval-annotations', *files],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
