"""Python 3.9 to 3.13 are supported (requirements.txt pins per version): no syntax and no
standard-library call newer than 3.9. vermin reads every file and names each construct's minimum
version. (`make compat` also installs and runs the scripts on each Python 3.9-3.13 found.)"""
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_no_python_newer_than_3_9_is_needed():
    files = sorted(map(str, [*ROOT.glob('*.py'), *(ROOT / 'tools').glob('*.py'), *(ROOT / 'tests').glob('*.py')]))
    vermin = Path(sys.executable).parent / 'vermin'
    proc = subprocess.run([str(vermin), '-t=3.9-', '--violations', '--no-tips', '--eval-annotations', *files],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
