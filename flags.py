"""The command line: the flags the stage scripts share (checked as they are parsed), a bad flag
as one `error:` line with the closest flag, a notebook's flags and its work/ folder, and the
commands printed for a learner to paste (quoted where a shell would split a path).
common.py passes these on (common.parse_args, ...)."""
import argparse
import difflib
import math
import os
import re
import shlex
import sys

from errors import Stopped, fail
from startup import in_kernel as in_notebook


def number(kind, low, strict):  # an argparse type: a finite int/float above (strict) or >= low
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = 'whole number' if kind is int else 'number'
            raise argparse.ArgumentTypeError(f'expected a {what}, got {text!r}')
        if not math.isfinite(value) or value < low or (strict and value == low):
            finite = 'a finite number ' if kind is float else ''
            relation = 'greater than' if strict else '>='
            raise argparse.ArgumentTypeError(f'must be {finite}{relation} {low}, got {text}')
        return value
    return parse


positive_int, non_negative_int = number(int, 0, True), number(int, 0, False)
positive_float, non_negative_float = number(float, 0, True), number(float, 0, False)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):  # --help: no "(default: None)"
    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def add_run_args(parser, out, ckpt_dir='checkpoint', new_run=True):
    add = parser.add_argument
    add('--data-dir', help='folder with the four MNIST idx files or mnist.json.gz, or that file '
                           + ('(default: the first of ./work/, ./, AI Studio\'s data/data*/ that '
                              'has them, else PaddlePaddle\'s cache, downloading there)' if new_run
                              else '(default: the data the checkpoint\'s run trained on)'))
    add('--device', default='auto', choices=['auto', 'cpu', 'gpu'], help='auto: a GPU if any')
    add('--out', default=kept(out), help='run folder: metrics.json, plots, the final model')
    add('--ckpt-dir', default=ckpt_dir and kept(ckpt_dir), help='the per-epoch checkpoints' + (
        '' if ckpt_dir else ' (default: the folder of the checkpoint resumed)'))
    if new_run:  # resume.py takes these from the checkpoint
        add('--train-limit', type=positive_int, help='train on the first N training images only')
        add('--predict', metavar='IMAGE', help='classify one PNG/JPG digit with the model trained '
                                               'into --out (or --model), then stop')
        add('--model', help='model file for --predict (default: <out>/model.pdparams)')
    add('--log-every', type=positive_int, default=100, help='a progress line every N batches')
    add('--visualdl', metavar='DIR', help='also log loss and accuracy for VisualDL into DIR')


def kept(path):  # in a notebook, under work/: the folder AI Studio keeps across restarts
    here = os.path.basename(os.path.abspath('.'))
    return os.path.join('work', path) if in_notebook() and here != 'work' else path


def parse_args(parser, argv=None):
    """The flags; a bad one is one `error:` line (with the closest flag for a typo), exit 2."""
    parser.allow_abbrev = False  # --ckpt is not silently --ckpt-dir
    if in_notebook():
        return parse_in_notebook(parser, argv)

    def error(message):  # instead of argparse's usage lines, then its message
        print(f'error: {message}{closest_flag(parser, message)}; see python '
              f'{shell_word(sys.argv[0])} --help', file=sys.stderr)
        raise SystemExit(2)
    parser.error = error
    return parser.parse_args(sys.argv[1:] if argv is None else list(argv))


def closest_flag(parser, message):  # '... --epoch 3' -> ' (did you mean --epochs?)'
    if not message.startswith('unrecognized arguments'):
        return ''
    flags = [flag for action in parser._actions for flag in action.option_strings]
    typed = [word.split('=')[0] for word in message.split() if word.startswith('-')]
    if '--ckpt' in typed and '--ckpt' not in flags:  # the course resumes in its training script
        return ' (to continue a run from a checkpoint: python resume.py --ckpt CHECKPOINT)'
    close = []
    for word in typed:  # --batch: --batch-size (the one flag it begins), else the most alike
        longer = [flag for flag in flags if flag.startswith(word + '-')]
        close += longer if len(longer) == 1 else difflib.get_close_matches(word, flags, n=1)
    return f' (did you mean {", ".join(dict.fromkeys(close))}?)' if close else ''


def parse_in_notebook(parser, argv):
    """No flags by default (the kernel's own are not the script's), and a bad flag is one `error:`
    line (argparse's exit shows as a traceback there, or crashes IPython 8.18)."""
    parser.prog = 'main()'

    def error(message):
        fail(f'{message}{closest_flag(parser, message)}; see build_parser().print_help()')

    def exit(status=0, message=None):  # after --help: no SystemExit in the kernel
        raise Stopped(message or '')
    parser.error, parser.exit = error, exit
    args = parser.parse_args([] if argv is None else list(argv))
    where = [f'{k} {v}' for k, v in (('--out', getattr(args, 'out', None)),
                                     ('--ckpt-dir', getattr(args, 'ckpt_dir', None))) if v]
    if where and kept('x') != 'x':
        print(f'note: in a notebook outputs go under work/, which AI Studio keeps across '
              f'restarts: {", ".join(where)}')
    return args


# ---- commands printed for a learner to paste -------------------------------------------------

def resume_command(prefix, layout=None):  # layout: common.worker_layout(); the same resumes exactly
    if in_notebook():
        return f"argv = ['--ckpt', {prefix!r}] in resume.ipynb"
    if (layout or {}).get('workers', 1) > 1:  # 七: the launcher's command, in parallel.py
        import parallel
        return parallel.resume_command(prefix, layout)
    return f'python resume.py --ckpt {shell_word(prefix)}'  # (a Python without paddle re-runs it)


def pass_flag(*words, make_variable=None):  # flags (and values) where the run started: a
    # notebook's argv, the command line, make's variable for a flag's value (else ARGS)
    if in_notebook():
        return f'add {", ".join(map(repr, words))} to argv'
    under_make = f'{make_variable}={words[-1]}' if make_variable else f'ARGS="{" ".join(words)}"'
    return f'pass {" ".join(words)}' + (f' (with make: {under_make})' * started_by_make())


def started_by_make():  # make sets MAKELEVEL for the commands it runs: advice names its variables
    return 'MAKELEVEL' in os.environ


def shell_word(text, windows=os.name == 'nt'):  # a path in a printed command, quoted if need be
    if windows:  # cmd and PowerShell: in double quotes (no Windows path holds one)
        return f'"{text}"' if re.search(r'[^\w\\/:.-]', text) else text
    return shlex.quote(text)
