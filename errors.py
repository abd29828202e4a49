"""A problem the user can fix (a bad flag, file, folder or checkpoint) is raised as UserError
(fail(message)); run_main prints it as one `error:` line and exits 1, and a notebook shows the same
line instead of a traceback. A Ctrl-C that training's safe stop (progress.Tracker) does not take, a
second one or one while the data loads or the final evaluation runs, is one line too.
"""
import importlib
import os
import re
import signal
import sys

from startup import Stop as Stopped  # noqa: F401 (a run stopped on purpose in a notebook: one line)


class UserError(Exception):
    def _render_traceback_(self):  # in Jupyter/IPython: the sentence, not a traceback
        return [f'error: {self}']


def fail(message):
    raise UserError(message)


def run_main(main_fn, argv=None):
    try:
        result = main_fn(argv)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # all is written: a Ctrl-C while Python
        return result  # exits (a second or so) would end a finished run with 130 and no word
    except UserError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        raise SystemExit(1)
    except KeyboardInterrupt as e:  # its words, where it has them (a second Ctrl-C: progress.py)
        print(str(e) or 'stopped (Ctrl-C) before the run finished; every file written so far is '
              'whole; after its training, resume.py with its last checkpoint writes its evaluation',
              file=sys.stderr, flush=True)
        if os.name != 'posix':
            raise SystemExit(130)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # then end by the interrupt, as Python does:
        os.kill(os.getpid(), signal.SIGINT)  # a shell's loop or make sees a Ctrl-C, not an error


def optional(module, flag):
    """The module of an optional feature, imported when its flag asks for it: a notebook carries
    only what its script imports at the top, so there a missing one is one sentence."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        fail(f'{flag} needs {module}.py beside this notebook (it is in the repository); '
             f'or run the script')


def one_line_errors(cells):
    """In a notebook: a name used before the cell that makes it ran, or after that cell stopped with
    an error, is one line naming that cell, not a NameError traceback. cells: {a cell's heading: the
    names it makes, space-separated}. A NameError raised in a module's code, or for a name no cell
    makes (a typo), keeps its traceback; so does one inside IPython 8's %%time. The Interrupt button
    outside training's safe stop (progress.Tracker: the data, the curves, the evaluation) is one
    line too, as Ctrl-C is for a script (run_main)."""
    from IPython import get_ipython  # only ever called in a notebook's kernel
    made_by = {name: heading for heading, names in cells.items() for name in names.split()}

    def handler(shell, kind, error, trace, tb_offset=None):
        name, raised = re.match(r"name '(\w+)' is not defined", str(error)), trace
        while raised.tb_next:  # to where it was raised: the notebook's code, or a module's
            raised = raised.tb_next
        line, here = None, raised.tb_frame.f_globals is shell.user_global_ns
        if kind is KeyboardInterrupt:
            line = str(error) or ('stopped (interrupt) before this cell finished; every file '
                                  'written so far is whole; after training, resume.ipynb with its '
                                  'last checkpoint evaluates it')
        elif name and name.group(1) in made_by and here:
            line = (f'error: {name.group(1)} is not defined yet: the cell under '
                    f'"{made_by[name.group(1)]}" makes it; run the cells from there down to this '
                    f'one')
        if line:
            error._render_traceback_ = lambda: [line]  # shown instead of the traceback
        shell.showtraceback((kind, error, trace), tb_offset=tb_offset)
    get_ipython().set_custom_exc((NameError, KeyboardInterrupt), handler)
