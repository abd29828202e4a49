"""A SIGKILL at every file boundary of a save, placed exactly: before and after each of a
checkpoint's three files (.pdparams, .pdopt, .json), for an epoch checkpoint and for NAME_interrupted,
and while files that already hold a good version are written again (a resumed run re-saving
mnist_epoch1; a second run's final model.pdparams, model.json and metrics.json in the same --out).

The scripts are not changed: each run goes through WRAPPER (python -c), which wraps builtins.open
and os.replace so that the first call for one target file (the file itself, or its temporary
.NAME.tmpPID) sends the process SIGKILL: no cleanup code runs. Points:
  open:NAME     right after NAME's bytes begin (its temporary is created, still empty): before NAME,
                and after the file saved before it
  replace:NAME  right after the rename that puts NAME in place: after NAME
(After a kill the kernel still writes out what the process wrote, so os.fsync makes no difference
to what a later process sees; only a power cut would, which no test here can make: the last test
checks instead that each file is flushed to disk before its rename.)

Each test is a chain: every kill is followed by the next run into the same folder, as a user would
go on. After every kill each checkpoint in the folder is whole (checkpoints.read_meta verifies it),
or is the one being saved, half-written: list_checkpoints skips it and resume.py refuses it with one
`error:` sentence; a good version written again is byte for byte still there. The chain ends with an
uninterrupted run that resumes the newest whole checkpoint with `==` losses (resume.py --compare
against an uninterrupted run) and a new run that removes the dead runs' temporary files from the
checkpoint folder while it holds it (checkpoints.hold_folder); in --out they stay, hidden and never
read. Every checkpoint the legs wrote has the uninterrupted run's bytes,
so every resume along the way was exact too.
"""
import json
import os
import re
import shutil
import signal
import sys

import startup
startup.import_paddle()  # before paddle, as in the scripts

import checkpoints
import pytest
from conftest import ROOT, python_run, read_metrics, record_new_weights, script_env
from errors import UserError
from test_reliability import one_error

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='SIGKILL and /proc: Linux')

# 3 epochs of 3 batches on the first 60 training images: small, and a batch in mid-epoch to interrupt
ARGS = ['--epochs', '3', '--batch-size', '20', '--train-limit', '60', '--seed', '5', '--log-every', '1000']

WRAPPER = r'''
import builtins, os, re, runpy, signal, sys
call, target = os.environ['KILL_AT'].split(':')
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python script.py` has it

def written(path):  # the file a path stands for: NAME itself, or its temporary .NAME.tmpPID
    base = os.path.basename(os.fsdecode(path))
    match = re.fullmatch(r'\.(.+)\.tmp\d+', base)
    return match.group(1) if match else base

def kill(what):
    sys.stderr.write(f'kill point: {what}\n')
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if os.environ.get('SIGINT_AFTER_BATCHES'):  # a real Ctrl-C after that many training steps
    import startup
    startup.import_paddle()  # as the script does first (forked: imported already, nothing to do)
    import progress
    record, count = progress.Tracker.record_batch, [0]
    def record_batch(self, *args):
        record(self, *args)
        count[0] += 1
        if count[0] == int(os.environ['SIGINT_AFTER_BATCHES']):
            os.kill(os.getpid(), signal.SIGINT)
    progress.Tracker.record_batch = record_batch

real_open, real_replace = builtins.open, os.replace

def open_(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if (call == 'open' and isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set('wax+')
            and written(file) == target):
        kill(f'open:{target}')
    return f

def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if call == 'replace' and written(dst) == target:
        kill(f'replace:{target}')

builtins.open, os.replace = open_, replace
runpy.run_path(script, run_name='__main__')
'''


def run(script, args, cwd, kill_at=None, sigint_after=None, timeout=300):
    """script's run in a new process through WRAPPER (with the test's Python: .venv's, so that
    startup.py never re-executes it; forked, see conftest.python_run)."""
    env = script_env(cwd)
    env['KILL_AT'] = kill_at or 'none:none'
    if sigint_after:
        env['SIGINT_AFTER_BATCHES'] = str(sigint_after)
    return python_run([ROOT / script, *args], cwd, env, timeout, code=WRAPPER)


def killed_at(proc, point):
    assert proc.returncode == -signal.SIGKILL and f'kill point: {point}\n' in proc.stderr, \
        f'the run did not die at {point} (exit code {proc.returncode}):\n{proc.stdout}{proc.stderr}'


def temporaries(folder):
    return sorted(n for n in os.listdir(folder) if re.fullmatch(r'\..+\.tmp\d+', n)) if os.path.isdir(folder) else []


def checkpoints_in(folder):
    """({whole prefix: meta}, {half-written prefix: the sentence read_meta gives}) of every
    .pdparams/.pdopt/.json in folder (temporary files aside)."""
    whole, half = {}, {}
    stems = {os.path.splitext(n)[0] for n in os.listdir(folder)
             if not n.startswith('.') and n.endswith(('.pdparams', '.pdopt', '.json'))}
    for stem in sorted(stems):
        prefix = os.path.join(folder, stem)
        try:
            whole[stem] = checkpoints.read_meta(prefix)
        except UserError as e:
            half[stem] = str(e)
    return whole, half


@pytest.fixture(scope='module')
def reference(idx_dir, run_script, tmp_path_factory):
    """The uninterrupted run every chain must reproduce: checkpoint/mnist_epoch0-2, runs/cnn."""
    work = tmp_path_factory.mktemp('kill_reference')
    proc = run_script('mnist_cnn.py', '--data-dir', idx_dir, *ARGS, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work


def same_bytes(folder, reference, stem, exts=('pdparams', 'pdopt')):
    for ext in exts:
        ours, theirs = folder / f'{stem}.{ext}', reference / 'checkpoint' / f'{stem}.{ext}'
        assert ours.read_bytes() == theirs.read_bytes(), f'{ours} differs from the uninterrupted run\'s'


def half_gives_one_sentence(work, stem):
    """resume.py --ckpt on a half-written checkpoint: one `error:` sentence naming it."""
    proc = run('resume.py', ['--ckpt', f'checkpoint/{stem}'], work)
    one_error(proc, f'checkpoint/{stem}')


def finish_and_compare(work, reference, args):
    """The last leg, uninterrupted: resume.py from the newest whole checkpoint, its losses == the
    uninterrupted run's (--compare)."""
    proc = run('resume.py', [*args, '--compare', reference / 'runs' / 'cnn' / 'metrics.json'], work)
    assert proc.returncode == 0 and 'bit-identical' in proc.stdout, proc.stdout + proc.stderr
    return proc


def a_new_run_removes_the_dead_runs_temporaries(work, idx_dir, dead, out='runs/cnn'):
    """A new run into the folders neither trips over what the killed runs left nor keeps it."""
    proc = run('mnist_cnn.py', ['--data-dir', idx_dir, *ARGS[:-2], '--epochs', '1', '--log-every', '1000',
                                '--out', out], work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = temporaries(work / 'checkpoint')
    assert left == [], f'the killed runs\' temporary files are still there: {left} (of {sorted(dead)})'
    assert set(temporaries(work / out)) <= dead  # --out: a dead run's may stay; this run left none


# The boundaries of a checkpoint save (pdparams, pdopt, json, in that order): before the .pdparams,
# between it and the .pdopt, between the .pdopt and the .json (each: the next file's temporary just
# begun), and after the .json.
SAVE = [('open', 'pdparams'), ('open', 'pdopt'), ('open', 'json'), ('replace', 'json')]


def test_a_kill_at_every_point_of_an_epoch_and_an_interrupted_save(reference, idx_dir, tmp_path):
    """A fresh run killed at each point of mnist_epoch0's save (a fresh run each time until epoch 0
    is whole), then a run resumed from it and interrupted (Ctrl-C after one step) killed at each
    point of mnist_interrupted's save; then the newest whole checkpoint resumes ==."""
    work, ckpt, dead = tmp_path, tmp_path / 'checkpoint', set()
    legs = [(stem, call, ext) for stem in ('mnist_epoch0', 'mnist_interrupted') for call, ext in SAVE]
    for i, (stem, call, ext) in enumerate(legs):
        point = f'{call}:{stem}.{ext}'
        if stem == 'mnist_epoch0':
            proc = run('mnist_cnn.py', ['--data-dir', idx_dir, *ARGS], work, kill_at=point)
        else:
            proc = run('resume.py', ['--ckpt', 'latest'], work, kill_at=point, sigint_after=1)
        killed_at(proc, point)
        if stem == 'mnist_epoch0':  # a new run into the folder: the dead runs' temporaries are gone
            kept = [t for t in temporaries(ckpt) if t in dead]
            assert kept == [], f'{point}: the run before this one left {kept}, and this one kept them'
        whole, half = checkpoints_in(ckpt)
        done = SAVE.index((call, ext)) == len(SAVE) - 1  # the json in place: the checkpoint is whole
        expected_whole = {'mnist_epoch0'} if stem != 'mnist_epoch0' or done else set()
        assert set(whole) == expected_whole | ({stem} if done else set()), f'{point}: whole {sorted(whole)}'
        assert [os.path.basename(p) for _, p, _ in checkpoints.list_checkpoints(str(ckpt))] == \
            sorted(whole, key=lambda s: whole[s]['global_step']), point
        # what was written of the checkpoint being saved, when it is not whole: half of one
        began = SAVE.index((call, ext)) >= 1  # its .pdparams is in place
        assert set(half) == ({stem} if began and not done else set()), f'{point}: half-written {half}'
        for name, sentence in half.items():
            assert sentence.startswith(f'{ckpt / name}.json is missing'), sentence
        if point in ('open:mnist_epoch0.pdopt', 'open:mnist_interrupted.json'):  # one per save
            half_gives_one_sentence(work, stem)
        if 'mnist_epoch0' in whole:
            same_bytes(ckpt, reference, 'mnist_epoch0')
        if call == 'open':  # the temporary the kill left
            assert f'.{stem}.{ext}.tmp' in ' '.join(temporaries(ckpt)), f'{point}: {temporaries(ckpt)}'
        dead.update(temporaries(ckpt))
    assert checkpoints.read_meta(str(ckpt / 'mnist_interrupted'))['next_batch'] == 2  # epoch 1, after 2 steps
    finish_and_compare(work, reference, ['--ckpt', 'latest'])
    for stem in ('mnist_epoch1', 'mnist_epoch2'):
        same_bytes(ckpt, reference, stem)
    a_new_run_removes_the_dead_runs_temporaries(work, idx_dir, dead)


def test_a_kill_while_a_resumed_run_saves_a_good_checkpoint_again(reference, idx_dir, tmp_path):
    """A folder with mnist_epoch0 and mnist_epoch1; resume.py from mnist_epoch0 writes mnist_epoch1
    again and is killed at each point: the good mnist_epoch1 stays whole (its bytes), and resumes."""
    work, ckpt, dead = tmp_path, tmp_path / 'checkpoint', set()
    shutil.copytree(reference / 'checkpoint', ckpt, ignore=shutil.ignore_patterns('mnist_epoch2.*', '.lock*'))
    good = {ext: (ckpt / f'mnist_epoch1.{ext}').read_bytes() for ext in ('pdparams', 'pdopt', 'json')}
    for call, ext in SAVE:
        point = f'{call}:mnist_epoch1.{ext}'
        proc = run('resume.py', ['--ckpt', 'checkpoint/mnist_epoch0'], work, kill_at=point)
        killed_at(proc, point)
        for e in ('pdparams', 'pdopt'):  # the same weights and optimizer state: the same bytes
            assert (ckpt / f'mnist_epoch1.{e}').read_bytes() == good[e], f'{point}: mnist_epoch1.{e} is not the good version'
        meta = json.loads((ckpt / 'mnist_epoch1.json').read_bytes())  # the old json, or the resumed run's
        assert (ckpt / 'mnist_epoch1.json').read_bytes() == good['json'] or \
            (point == 'replace:mnist_epoch1.json' and meta['files'] == json.loads(good['json'])['files']), point
        whole, half = checkpoints_in(ckpt)
        assert (sorted(whole), half) == (['mnist_epoch0', 'mnist_epoch1'], {}), point
        dead.update(temporaries(ckpt))
    finish_and_compare(work, reference, ['--ckpt', 'latest'])  # the newest whole: mnist_epoch1
    same_bytes(ckpt, reference, 'mnist_epoch2')
    a_new_run_removes_the_dead_runs_temporaries(work, idx_dir, dead)


def test_a_kill_while_other_bytes_replace_a_checkpoint_of_the_same_run_leaves_it_whole_or_absent(
        reference, tmp_path):
    """The same run's mnist_epoch1 saved again with other bytes (resumed from an mnist_epoch0 whose
    weights were changed, as the same run resumed where float results differ in the last bits
    would): a kill at each point of the save, each in a fresh copy of the folder, leaves the old
    mnist_epoch1 whole or absent, never its json beside files it does not describe. (It failed
    before checkpoints.save compared the new files' sha256 with the old json's.)"""
    import paddle
    good = {ext: (reference / 'checkpoint' / f'mnist_epoch1.{ext}').read_bytes() for ext in ('pdparams', 'pdopt')}
    for call, ext in SAVE:
        point = f'{call}:mnist_epoch1.{ext}'
        work = tmp_path / f'{call}-{ext}'
        ckpt = work / 'checkpoint'
        shutil.copytree(reference / 'checkpoint', ckpt, ignore=shutil.ignore_patterns('mnist_epoch2.*', '.lock*'))
        start = str(ckpt / 'mnist_epoch0')
        weights = paddle.load(start + '.pdparams')
        name = sorted(weights)[0]
        weights[name] = weights[name] + 1e-3
        paddle.save(weights, start + '.pdparams')
        record_new_weights(start)
        proc = run('resume.py', ['--ckpt', 'checkpoint/mnist_epoch0'], work, kill_at=point)
        killed_at(proc, point)
        whole, half = checkpoints_in(ckpt)
        assert 'mnist_epoch0' in whole, point
        if point == 'replace:mnist_epoch1.json':  # the new checkpoint, whole, with other bytes
            assert 'mnist_epoch1' in whole and (ckpt / 'mnist_epoch1.pdparams').read_bytes() != good['pdparams']
        else:  # absent: the old json went before any file was replaced
            assert not (ckpt / 'mnist_epoch1.json').exists(), f'{point}: {half}'
        if point == 'open:mnist_epoch1.pdparams':  # the json went first: the files are still the old ones
            assert all((ckpt / f'mnist_epoch1.{e}').read_bytes() == good[e] for e in good), point


def test_a_kill_while_a_second_run_writes_its_results_into_the_same_out(reference, idx_dir, tmp_path):
    """runs/cnn holds a finished run's model and metrics; a second run into it (resume.py from
    mnist_epoch1 with --out runs/cnn) is killed at each point of its final model.pdparams,
    model.json and metrics.json: each file is the first run's or the second's, whole; the model
    still verifies and loads."""
    work = tmp_path
    shutil.copytree(reference, work, dirs_exist_ok=True)
    out = work / 'runs' / 'cnn'
    old = {name: (out / name).read_bytes() for name in ('model.pdparams', 'model.json', 'metrics.json')}
    second = read_metrics(reference / 'runs' / 'cnn')['batch_losses'][6:]  # the last epoch's losses
    dead = set()
    # before model.pdparams, between it and model.json, between model.json and metrics.json, after
    for point in ('open:model.pdparams', 'open:model.json', 'open:metrics.json', 'replace:metrics.json'):
        proc = run('resume.py', ['--ckpt', 'checkpoint/mnist_epoch1', '--out', 'runs/cnn'], work, kill_at=point)
        killed_at(proc, point)
        assert (out / 'model.pdparams').read_bytes() == old['model.pdparams'], point  # the same weights
        meta = checkpoints.read_meta(str(out / 'model'))  # the model's json verifies: --predict works
        assert (out / 'model.json').read_bytes() == old['model.json'] or \
            meta['files'] == json.loads(old['model.json'])['files'], point
        metrics = (out / 'metrics.json').read_bytes()
        assert metrics == old['metrics.json'] or json.loads(metrics)['batch_losses'] == second, point
        dead.update(temporaries(out))
    assert dead, 'no kill left a temporary file in --out'
    proc = run('mnist_cnn.py', ['--data-dir', idx_dir, *ARGS], work)  # and a new run into that --out
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(temporaries(out)) <= dead and temporaries(work / 'checkpoint') == []  # (--out: see above)
    assert read_metrics(out)['batch_losses'] == read_metrics(reference / 'runs' / 'cnn')['batch_losses']


def test_a_kill_between_the_model_and_its_json_of_another_runs_model_leaves_it_whole_or_absent(
        reference, idx_dir, tmp_path):
    """The course's own sequence, `make cnn`, then `make cnn ARGS="--opt momentum"`: a second run with
    other settings into the same --out, killed right after its model.pdparams is in place. (It failed
    before checkpoints.save removed another run's json first: a "damaged" pair, neither whole nor
    absent.)"""
    work = tmp_path
    shutil.copytree(reference / 'runs', work / 'runs')
    proc = run('mnist_cnn.py', ['--data-dir', idx_dir, *ARGS[:-2], '--opt', 'momentum', '--log-every', '1000'], work,
               kill_at='replace:model.pdparams')
    killed_at(proc, 'replace:model.pdparams')
    try:
        checkpoints.read_meta(str(work / 'runs' / 'cnn' / 'model'))  # whole: fine
    except UserError as e:
        assert 'model.json is missing' in str(e), str(e)  # absent, and said so: fine


def test_each_file_of_a_save_reaches_the_disk_before_its_rename(tmp_path, monkeypatch):
    """What a kill cannot show (the docstring above): a power cut after the rename keeps the new
    bytes only if they were flushed first. os.fsync and os.replace are watched, not replaced: each
    file of a checkpoint is renamed into place after an fsync of that very temporary."""
    import paddle
    events, fsync, replace = [], os.fsync, os.replace

    def watched_fsync(fd):
        events.append(('fsync', os.readlink(f'/proc/self/fd/{fd}')))
        fsync(fd)

    def watched_replace(src, dst):
        events.append(('replace', os.fspath(src)))
        replace(src, dst)
    monkeypatch.setattr(os, 'fsync', watched_fsync)
    monkeypatch.setattr(os, 'replace', watched_replace)
    model = paddle.nn.Linear(2, 1)
    checkpoints.save(str(tmp_path / 'm_epoch0'), model, paddle.optimizer.Adam(parameters=model.parameters()), {})
    renamed = [path for kind, path in events if kind == 'replace']
    assert [os.path.basename(p).split('.tmp')[0] for p in renamed] == ['.m_epoch0.pdparams', '.m_epoch0.pdopt',
                                                                       '.m_epoch0.json']
    for path in renamed:
        assert events.index(('fsync', path)) < events.index(('replace', path)), events
