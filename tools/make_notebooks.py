"""Write one self-contained Jupyter notebook per stage script into notebooks/ (for AI Studio, where a
learner uploads a single .ipynb, and for Jupyter), generated from the scripts themselves.

    python tools/make_notebooks.py            # (re)write notebooks/*.ipynb (make notebooks)
    python tools/make_notebooks.py --check    # exit 1 naming each notebook that is out of date

Each notebook, top to bottom:
  1. the script's docstring, and where the data goes (./work/ beside the notebook);
  2. one `%%writefile NAME.py` cell per project module the script imports, directly or through another
     module (found by reading the imports with `ast`, so the set follows the code as it changes);
  3. the script's own code, one cell per section (`# ---- 2. data (三) ----...` lines), each under a
     Markdown cell naming the section and its course stage; a script without such lines is split at its
     top-level functions and classes;
  4. a last cell in place of `if __name__ == '__main__':` that calls main(args) with the tutorial's
     settings (the flags' defaults): a mistake shows one sentence, as on the command line.
notebooks/resume.ipynb (stage 九): resume.py's code; train mnist_cnn.py, resume from epoch 0 with
identical losses, then the tutorial's way (tutorial_resume.py). The output is deterministic (fixed
ids and metadata, no outputs, JSON as nbformat writes it): unchanged scripts give identical bytes.
"""
import argparse
import ast
import functools
import io
import json
import os
import re
import sys
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tools/ sits in the repository root
OUT_DIR = 'notebooks'
STAGE_SCRIPTS = ['housing', 'mnist_linear', 'mnist_mlp', 'mnist_numpy', 'mnist_cnn']

# The course's stages (深度学习入门), as the scripts' section lines and docstrings name them.
STAGES = {'二': ('线性模型', 'linear model'), '三': ('数据处理', 'data processing'),
          '四': ('网络结构', 'network'), '五': ('损失函数', 'loss'), '六': ('优化算法', 'optimizer'),
          '七': ('资源配置', 'device / multi-GPU'), '八': ('训练调试与优化', 'evaluation / checks'),
          '九': ('恢复训练', 'checkpoint / resume')}
# A section line without a stage numeral: the stage its words name.
STAGE_WORDS = [(re.compile(r'\bloss\b'), '五'), (re.compile(r'\boptimi[sz]er\b'), '六')]

# The words of section lines, in Chinese (longer phrases first when they overlap).
SECTION_WORDS = {'training loop': '训练循环', 'the loop': '训练循环', 'flags': '命令行参数', 'config': '参数设置',
                 'data': '数据', 'model': '模型', 'loss': '损失函数', 'optimizer': '优化器', 'main': '主程序',
                 'train': '训练', 'evaluate': '评估', 'evaluation': '评估', 'save': '保存', 'device': '设备',
                 'checkpoint': '检查点', 'resume': '恢复训练', 'plots': '画图'}

# `# ---- 2. data (三) -------` at the start of a line: a section of a stage script
SECTION = re.compile(r'^# -{2,} (?P<title>.*?) -{3,}\s*$')

MNIST_DATA = ('**Data / 数据**: put the four MNIST idx files (`train-images-idx3-ubyte.gz`, ...) or the '
              'course\'s `mnist.json.gz` in `./work/` beside this notebook; without them the first run '
              'downloads MNIST into PaddlePaddle\'s cache. 把 MNIST 数据(四个 idx 文件或 `mnist.json.gz`)'
              '放在 notebook 旁边的 `./work/` 目录;没有时第一次运行会下载到 PaddlePaddle 的缓存目录。')
HOUSING_DATA = ('**Data / 数据**: put `housing.data` (UCI Boston housing) in `./work/` beside this notebook; '
                'without it the first run downloads it into PaddlePaddle\'s cache. 把 `housing.data` 放在 '
                'notebook 旁边的 `./work/` 目录;没有时第一次运行会下载到 PaddlePaddle 的缓存目录。')


# ---- reading the scripts ------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def read(module):
    path = os.path.join(ROOT, module + '.py')
    if not os.path.isfile(path):
        raise SystemExit(f'error: {path} does not exist; tools/make_notebooks.py makes notebooks of '
                         f'{", ".join(STAGE_SCRIPTS)} and resume (edit STAGE_SCRIPTS if a script was renamed)')
    with open(path, encoding='utf-8') as f:
        return f.read()


@functools.lru_cache(maxsize=None)
def parse(module):
    try:
        return ast.parse(read(module))
    except SyntaxError as e:
        raise SystemExit(f'error: {module}.py line {e.lineno}: {e.msg}; fix it, then run this again')


def is_project_module(name):
    return os.path.isfile(os.path.join(ROOT, name + '.py'))


def project_imports(module):
    """The project modules (NAME.py in the repository root) that module imports anywhere in its file:
    `import X`, `from X import ...`, and importlib.import_module('X') with a literal name."""
    found = set()
    for node in ast.walk(parse(module)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in ('importlib.import_module', 'import_module', '__import__')):
            names = [node.args[0].value]
        found.update(n.split('.')[0] for n in names if is_project_module(n.split('.')[0]))
    found.discard(module)
    return found


def modules_to_write(script, extras=()):
    """The project modules the notebook must write beside itself: everything script and extras import,
    transitively, and the extras themselves; helper modules first, dependencies before the modules
    that import them (then by name), then the scripts among them (files with a __main__ block). The
    script's own code is in the notebook's cells, so it is written only if another of these imports it.
    Returns (modules, {module: the modules among them that import it})."""
    imports, order = {}, []

    def visit(module):
        if module in imports:
            return
        imports[module] = project_imports(module)
        for dep in sorted(imports[module]):
            visit(dep)
        order.append(module)

    for root in [script, *extras]:
        visit(root)
    importers = {m: sorted(k for k, deps in imports.items() if m in deps) for m in order}
    order = [m for m in order if m != script or importers[m]]
    return sorted(order, key=lambda m: is_script(m)), importers


def is_script(module):
    return any(is_main_guard(node) for node in parse(module).body)


def is_main_guard(node):
    """`if __name__ == '__main__':`"""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == '__name__')


def docstring_node(tree):
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def stage_labels(text):
    """'三 数据处理 (data processing)' for each stage numeral in text (in order), or for the words that
    name one (loss, optimizer) when it has no numeral."""
    numerals = [c for c in dict.fromkeys(re.findall('|'.join(STAGES), text))]
    if not numerals:
        numerals = [stage for pattern, stage in STAGE_WORDS if pattern.search(text.lower())]
    return [f'{n} {STAGES[n][0]} ({STAGES[n][1]})' for n in numerals]


def chinese_words(title):
    """'数据、模型' for a section line's words that SECTION_WORDS knows, in order ('' if none)."""
    pattern = r'\b(' + '|'.join(map(re.escape, sorted(SECTION_WORDS, key=len, reverse=True))) + r')\b'
    return '、'.join(dict.fromkeys(SECTION_WORDS[w] for w in re.findall(pattern, title.lower())))


def strip_blank(lines):
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return ''.join(lines).rstrip('\n')


def split_script(module):
    """(docstring, [(kind, title, code)]): the script's code without its docstring and its
    `if __name__ == '__main__':` tail, in pieces. kind 'prelude' (the code before the first section),
    'section' (a `# ---- title ----` section) or 'def' (no section lines: a top-level def/class group)."""
    source, tree = read(module), parse(module)
    lines = source.splitlines(True)
    keep = [True] * (len(lines) + 1)  # by line number, 1-based
    doc = docstring_node(tree)
    dropped = [doc] if doc else []
    dropped += [node for node in tree.body if is_main_guard(node)]
    for node in dropped:
        for n in range(node.lineno, node.end_lineno + 1):
            keep[n] = False
    comments = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT and tok.start[1] == 0]
    starts = [(n, 'section', SECTION.match(text).group('title')) for n, text in comments if SECTION.match(text)]
    if not starts:  # no section lines: top-level defs/classes with their decorators and the comments right
        comment_lines = {n for n, _ in comments}  # above; a short one without a docstring joins the next
        group = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                while first - 1 in comment_lines:
                    first -= 1
                group.append((first, node.name + ('' if isinstance(node, ast.ClassDef) else '()')))
                if ast.get_docstring(node) or node.end_lineno - node.lineno >= 3 or node is tree.body[-1]:
                    starts.append((group[0][0], 'def', ', '.join(f'`{name}`' for _, name in group)))
                    group = []
        if group:
            starts.append((group[0][0], 'def', ', '.join(f'`{name}`' for _, name in group)))
    bounds = [(1, 'prelude', None)] + starts + [(len(lines) + 1, None, None)]
    pieces = []
    for (begin, kind, title), (end, _, _) in zip(bounds, bounds[1:]):
        first_code = begin + 1 if kind == 'section' else begin  # the section line itself becomes Markdown
        code = strip_blank([lines[n - 1] for n in range(first_code, end) if keep[n]])
        if code or kind == 'section':
            pieces.append((kind, title, code))
    return (doc.value.value if doc else ''), pieces


def uses_docstring(module):
    return '__doc__' in read(module)


def def_summary(module, names):
    """The first line of the docstring of the first of names (a def group's `a()`, `B`) that has one."""
    docs = {node.name: ast.get_docstring(node) for node in parse(module).body if hasattr(node, 'name')}
    for name in re.findall(r'`(\w+)', names):
        if docs.get(name):
            return docs[name].strip().split('\n')[0]
    return ''


# ---- the notebook ------------------------------------------------------------------------------------

def markdown(cell_id, text):
    return {'cell_type': 'markdown', 'id': cell_id, 'metadata': {}, 'source': text}


def code(cell_id, text):
    return {'cell_type': 'code', 'execution_count': None, 'id': cell_id, 'metadata': {}, 'outputs': [],
            'source': text}


def intro_cells(script, title, data_note, doc):
    generated = (f'*Generated from `{script}.py` by `tools/make_notebooks.py`: to change it, edit the script '
                 f'and run `make notebooks`. 本 notebook 由脚本自动生成,请修改脚本而不是 notebook。*')
    run_all = ('**Run All / 运行全部**: the first cells write the helper files this notebook needs beside it, '
               'then the script\'s code follows section by section, and the last cell runs it. '
               '先写出辅助文件,再按节给出脚本的代码,最后一个单元格运行整个阶段。')
    return [markdown('intro', f'# {title}\n\n{doc.strip()}\n\n{data_note}\n\n{run_all}\n\n{generated}')]


def helper_cells(script, extras=()):
    modules, importers = modules_to_write(script, extras)
    helpers = [m for m in modules if not is_script(m)]
    text = (f'## Helper files / 辅助文件\n\n'
            f'The next cells write the project\'s helper modules beside this notebook '
            f'({", ".join(f"`{m}.py`" for m in helpers)}), so that it runs on its own: in AI Studio, upload '
            f'this one notebook. They are copies of the repository\'s files, written by the generator: do '
            f'not edit them here (a regenerated notebook replaces them); read them if you like.\n\n'
            f'下面的单元格把本项目的辅助模块写到 notebook 所在目录,因此只上传这一个 notebook 就能运行。'
            f'它们是仓库中文件的副本,请勿在此修改。')
    why = []
    for m in modules:
        if m in extras:
            why.append(f'`{m}.py` (the cells at the end call it)')
        elif is_script(m):
            users = ', '.join(f'{u}.py' for u in importers[m])
            why.append(f'`{m}.py` (imported by {users}' + ('; the same code as this notebook\'s cells)'
                                                          if m == script else ')'))
    if why:
        text += (f'\n\nAlso written: the stage scripts this notebook uses as modules: {", ".join(why)}. '
                 f'同时写出本 notebook 作为模块使用的阶段脚本。')
    return [markdown('helpers', text)] + [code(f'file-{m}', f'%%writefile {m}.py\n' + read(m)) for m in modules]


def script_cells(module):
    doc, pieces = split_script(module)
    cells, number = [], 0
    for kind, title, text in pieces:
        if kind == 'prelude':
            if uses_docstring(module) and doc:  # argparse's description reads __doc__, the script's docstring
                first = doc.split('\n')[0]
                text = f'__doc__ = {first!r}  # the first line of the script\'s docstring (above), for --help\n' + text
            cells.append(markdown('imports-md', f'## Imports and constants / 导入与常量\n\n`{module}.py` from its top.'))
            cells.append(code('imports', text))
            continue
        number += 1
        labels = stage_labels(title)
        if kind == 'section':
            chinese = chinese_words(title)
            heading = f'## {title}' + (f' / {chinese}' if chinese else '')
        else:
            summary = def_summary(module, title)
            heading = f'### {title}' + (f'\n\n{summary}' if summary else '')
            labels = stage_labels(summary)
        stage = f'\n\n课程阶段 / course stage: {"; ".join(labels)}' if labels else ''
        cells.append(markdown(f'section-{number}-md', heading + stage))
        if text:
            cells.append(code(f'section-{number}', text))
    return cells


def run_cells():
    text = ('## Run / 运行\n\n'
            'The whole stage with the tutorial\'s settings (the flags\' defaults), the data from `./work/`. '
            'Put other flags in the list to try them, as on the command line (`build_parser().print_help()` '
            'lists every flag). A mistake shows one `error:` sentence (a bad flag: with argparse\'s usage '
            'lines), not a traceback, and the kernel lives on.\n\n'
            '用教程的设置(各参数的默认值)运行整个阶段。可在列表中加入命令行参数,'
            '如 `[\'--epochs\', \'2\']`;`build_parser().print_help()` 列出全部参数。')
    return [markdown('run-md', text),
            code('run', 'args = []  # the tutorial\'s settings; e.g. [\'--epochs\', \'2\'] for a quicker run\n'
                        'metrics = main(args)')]


def stage_notebook(module):
    doc, _ = split_script(module)
    cells = intro_cells(module, f'`{module}.py`', HOUSING_DATA if module == 'housing' else MNIST_DATA, doc)
    cells += helper_cells(module)
    cells += script_cells(module)
    cells += run_cells()
    return cells


def resume_notebook():
    """Stage 九: resume.py's code; train mnist_cnn.py, resume it with identical losses, then the tutorial's way."""
    doc, _ = split_script('resume')
    title = '`resume.py`: stage 九, checkpoint and resume / 恢复训练'
    cells = intro_cells('resume', title, MNIST_DATA, doc)
    cells += helper_cells('resume', extras=('mnist_cnn', 'tutorial_resume'))
    cells += script_cells('resume')
    cells += [
        markdown('train-md', '## 1. The uninterrupted run / 不中断的训练\n\n'
                 '`mnist_cnn.py` with the tutorial\'s settings (5 epochs): a checkpoint after every epoch in '
                 '`checkpoint/mnist_epoch{N}`, every batch\'s loss in `runs/cnn/metrics.json`.\n\n'
                 '用教程的设置训练卷积网络,每轮结束保存一个检查点。'),
        code('train', 'import mnist_cnn\n'
                      'train_args = []  # the tutorial\'s settings; e.g. [\'--epochs\', \'2\'] for a quicker run\n'
                      'full = mnist_cnn.main(train_args)'),
        markdown('resume-md', '## 2. Resume from the end of epoch 0 / 从第 0 轮的检查点恢复训练\n\n'
                 'With this notebook\'s `main` (resume.py, above): the model, the optimizer with the learning '
                 'rate schedule\'s position, and the batch order of every epoch come back, so every batch '
                 'loss equals the uninterrupted run\'s, bit for bit.\n\n'
                 '恢复模型、优化器(含学习率调度的位置)与每轮的批次顺序,因此每一批的损失与不中断的训练完全一致。'),
        code('resume', 'resumed = main([\'--ckpt\', \'checkpoint/mnist_epoch0\', \'--compare\', \'runs/cnn/metrics.json\'])\n'
                       'after_epoch0 = full[\'batch_losses\'][full[\'steps_per_epoch\']:]  # the uninterrupted run from epoch 1 on\n'
                       'print(\'resumed == uninterrupted, batch for batch:\', resumed[\'batch_losses\'] == after_epoch0)'),
        markdown('tutorial-md', '## 3. The tutorial\'s resume / 教程的恢复方式\n\n'
                 '`tutorial_resume.py` resumes as the tutorial does: a new learning-rate schedule, back at '
                 'the initial rate, and batches reshuffled from a global generator. Its losses drift from the '
                 'uninterrupted run\'s.\n\n'
                 '教程的做法:学习率调度从头开始,批次顺序重新打乱,损失因此与不中断的训练不同。'),
        code('tutorial', 'import tutorial_resume\n'
                         'tutorial = tutorial_resume.main([\'--ckpt\', \'checkpoint/mnist_epoch0\', '
                         '\'--compare\', \'runs/cnn/metrics.json\'])'),
    ]
    return cells


def notebook_text(cells):
    """The notebook as nbformat.write would write it: JSON, keys sorted, indent 1, sources as lists of lines."""
    ids = [c['id'] for c in cells]
    assert len(set(ids)) == len(ids), f'duplicate cell ids: {ids}'
    for cell in cells:
        cell['source'] = cell['source'].splitlines(True)
    nb = {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python',
                                                      'name': 'python3'},
                                       'language_info': {'name': 'python'}},
          'nbformat': 4, 'nbformat_minor': 5}
    return json.dumps(nb, indent=1, sort_keys=True, separators=(',', ': '), ensure_ascii=False) + '\n'


def notebooks():
    """{path relative to the repository root: the notebook's text}"""
    made = {f'{OUT_DIR}/{m}.ipynb': notebook_text(stage_notebook(m)) for m in STAGE_SCRIPTS}
    made[f'{OUT_DIR}/resume.ipynb'] = notebook_text(resume_notebook())
    return made


def main(argv=None):
    if sys.version_info < (3, 9):  # ast.unparse, end_lineno
        raise SystemExit(f'error: tools/make_notebooks.py needs Python 3.9 or newer, not {sys.version.split()[0]}')
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true', help='write nothing; exit 1 if a notebook differs')
    args = parser.parse_args(argv)
    stale = []
    for rel, text in notebooks().items():
        path = os.path.join(ROOT, rel)
        old = None
        if os.path.isfile(path):
            with open(path, encoding='utf-8', newline='') as f:
                old = f.read()
        if args.check:
            if old != text:
                stale.append(rel)
                print(f'{rel}: {"missing" if old is None else "differs from what the generator writes"}')
        elif old != text:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w', encoding='utf-8', newline='') as f:
                f.write(text)
            print(f'wrote {rel} ({len(text.encode()) / 1024:.0f} KB)')
        else:
            print(f'{rel} is up to date ({len(text.encode()) / 1024:.0f} KB)')
    if stale:
        print(f'{len(stale)} notebook(s) out of date: run `make notebooks` (python tools/make_notebooks.py)')
        return 1
    if args.check:
        print('notebooks are up to date')
    return 0


if __name__ == '__main__':
    sys.exit(main())
