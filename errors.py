"""Problems a user can fix (a bad flag, file, folder or checkpoint): one `error:` sentence, exit 1.

Everywhere in these scripts such a problem is raised as UserError (common.fail(message)); the
script's entry point, run_main, prints it as one line, and a notebook kernel shows the same line
instead of a traceback.
"""
import sys


class UserError(Exception):
    """A problem the user can fix (bad data, flag, checkpoint or folder): one sentence, exit 1."""

    def _render_traceback_(self):  # in Jupyter/IPython: the sentence, not a traceback
        return [f'error: {self}']


def fail(message):  # run_main prints 'error: <message>' and exits with 1
    raise UserError(message)


def run_main(main_fn, argv=None):  # a UserError becomes one 'error: ...' line and exit code 1
    try:
        return main_fn(argv)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        raise SystemExit(1)


class Stopped(Exception):
    """A run that stopped on purpose (Ctrl-C, --help) inside a notebook: its line, no traceback."""

    def _render_traceback_(self):
        return [str(self)]
