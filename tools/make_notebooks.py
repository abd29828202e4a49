"""Write one self-contained Jupyter notebook per stage script into notebooks/ (for AI Studio, where a
learner uploads a single .ipynb, and for Jupyter), generated from the scripts themselves: the scripts
stay the one source (as keras-io's literate examples).

    python tools/make_notebooks.py            # (re)write notebooks/*.ipynb (make notebooks)
    python tools/make_notebooks.py --check    # exit 1 naming each notebook that is out of date

Each notebook, top to bottom:
  1. the script's docstring, where the data goes, and how to run it;
  2. the project modules the script imports at its top (found with `ast`, followed transitively; an
     import inside a function is an optional feature, such as --predict, and is not carried), each
     written by a `%%writefile NAME.py` cell whose source JupyterLab shows collapsed;
  3. the lesson, cell by cell: the script's imports, then for each section `# ---- N. title ----` a
     Markdown cell (its title, its course stage, and the explanation from notebooks/text/SCRIPT.md),
     the section's definitions, and the step of main() numbered N (`    # N. ...` comments in main()
     split its body into steps), run at top level so that its output shows right under it. The
     step's code is main()'s, dedented: `argv = [...]` comes first (the flags, as on the command line),
     a top-level `if ...: return ...` (a command-line-only path such as --predict) is left out, and
     `return X` at the end becomes `metrics = X`. Steps with no section of their number follow the
     sections. A fenced python block in the text file becomes a notebook-only cell after that step.
The output is deterministic (fixed ids and metadata, no outputs): unchanged scripts give identical bytes.
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

MNIST_DATA = ('**Data / 数据**: on AI Studio, add the course\'s MNIST dataset to the project: it is mounted '
              'under `data/data65/` and found there. Elsewhere put the four MNIST idx files or `mnist.json.gz` '
              'in `./work/` beside this notebook; with none of these, the first run downloads MNIST. '
              '**Outputs / 输出** go under `work/`, which AI Studio keeps across restarts.\n\n'
              '在 AI Studio 上把课程的 MNIST 数据集添加到项目中,它挂载在 `data/data65/`,程序会自动找到;'
              '也可以把四个 idx 文件或 `mnist.json.gz` 放在 `./work/`;都没有时第一次运行会下载。'
              '输出与检查点写在 `work/` 下,AI Studio 重启后仍保留。')
HOUSING_DATA = ('**Data / 数据**: put `housing.data` (UCI Boston housing) in `./work/` beside this notebook; '
                'without it the first run downloads it into PaddlePaddle\'s cache. 把 `housing.data` 放在 '
                'notebook 旁边的 `./work/` 目录;没有时第一次运行会下载到 PaddlePaddle 的缓存目录。')
# notebook -> (its script, modules it uses besides the script's own imports, the flags of its first cell)
NOTEBOOKS = {'housing': ('housing', ('housing_paddle',), '[]'),  # layer_plots: mnist_cnn's --check-content
             'mnist_linear': ('mnist_linear', (), '[]'), 'mnist_mlp': ('mnist_mlp', (), '[]'),
             'mnist_numpy': ('mnist_numpy', (), '[]'), 'mnist_cnn': ('mnist_cnn', ('layer_plots',), '[]'),
             'resume': ('resume', ('mnist_cnn', 'tutorial_resume'),
                        "['--ckpt', common.kept('checkpoint/mnist_epoch0'),\n"
                        "        '--compare', common.kept('runs/cnn/metrics.json')]")}
TEXT_DIR = os.path.join('notebooks', 'text')  # SCRIPT.md: what each step does, for a learner
STEP = re.compile(r'^    # (?P<number>\d+)\. (?P<title>.*)$')


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
    """The project modules (NAME.py in the repository root) that module imports at its top level."""
    found = set()
    for node in parse(module).body:
        if isinstance(node, ast.Import):
            found.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split('.')[0])
    return {name for name in found if is_project_module(name) and name != module}


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


# ---- main() as steps -----------------------------------------------------------------------

def main_steps(module):
    """{number: (title, code)}: main()'s body split at its `    # N. title` comments, dedented and made
    to run at top level (see the module docstring)."""
    lines = read(module).splitlines(True)
    (main,) = [n for n in parse(module).body if isinstance(n, ast.FunctionDef) and n.name == 'main']
    keep = set(range(main.body[0].lineno, main.end_lineno + 1))
    instead = {}  # line -> what a notebook runs there
    for node in main.body:
        if isinstance(node, ast.If) and any(isinstance(n, ast.Return) for n in ast.walk(node)):
            keep -= set(range(node.lineno, node.end_lineno + 1))  # a command-line-only path
            instead[node.lineno] = (f'if {ast.unparse(node.test)}:  # the command line\'s, not a notebook\'s\n'
                                    f'    common.fail(\'this is for the command line: python {module}.py ...\')\n')
    last = main.body[-1]
    if isinstance(last, ast.Return):
        keep -= set(range(last.lineno, last.end_lineno + 1))
    steps, current = {}, None
    first_body = min(keep)
    for n in range(main.lineno + 1, main.end_lineno + 1):
        text = lines[n - 1]
        found = STEP.match(text.rstrip('\n'))
        if found:
            current = int(found.group('number'))
            steps[current] = [found.group('title'), []]
        elif n in instead and current is not None:
            steps[current][1].append(instead[n])
        elif n in keep and n >= first_body and current is not None:
            steps[current][1].append(text[4:] if text.startswith('    ') else text)
    if isinstance(last, ast.Return) and not isinstance(last.value, ast.Name):
        value = ''.join(lines[n - 1] for n in range(last.lineno, last.end_lineno + 1)).strip()
        steps[current][1].append('metrics = ' + value[len('return '):] + '\n')
    return {number: (title, strip_blank(code)) for number, (title, code) in steps.items()}


def step_text(module):
    """{key: Markdown}: notebooks/text/MODULE.md split at its `## key` lines (keys: intro, numbers)."""
    path = os.path.join(ROOT, TEXT_DIR, module + '.md')
    if not os.path.isfile(path):
        raise SystemExit(f'error: {path} is missing: it holds the explanation of each step of {module}.py')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    parts = re.split(r'^## (\S+)[^\n]*\n', text, flags=re.M)
    return {key: body.strip() for key, body in zip(parts[1::2], parts[2::2])}


def with_code_blocks(key, text):
    """(Markdown without its ```python blocks, the blocks as notebook-only code cells)."""
    blocks = re.findall(r'^```python\n(.*?)^```\n?', text + '\n', flags=re.M | re.S)
    prose = re.sub(r'^```python\n.*?^```\n?', '', text + '\n', flags=re.M | re.S).strip()
    return prose, [code(f'{key}-extra-{i}', block.rstrip('\n')) for i, block in enumerate(blocks)]


# ---- the notebook ------------------------------------------------------------------------------------

def markdown(cell_id, text):
    return {'cell_type': 'markdown', 'id': cell_id, 'metadata': {}, 'source': text}


def code(cell_id, text, hidden=False):
    metadata = {'jupyter': {'source_hidden': True}} if hidden else {}
    return {'cell_type': 'code', 'execution_count': None, 'id': cell_id, 'metadata': metadata,
            'outputs': [], 'source': text}


def helper_cells(script, extras):
    modules, _ = modules_to_write(script, extras)
    names = ', '.join(f'`{m}.py`' for m in modules)
    text = (f'## Helper files / 辅助文件\n\n'
            f'The collapsed cells below write the modules this lesson imports ({names}) beside the '
            f'notebook, so that this one file runs on its own. Run them and read on; they are the '
            f'repository\'s files, so edit the scripts, not these cells.\n\n'
            f'下面折叠的单元格把本课用到的模块写到 notebook 旁边,运行即可,无需修改。')
    return [markdown('helpers', text)] + [code(f'file-{m}', f'%%writefile {m}.py\n' + read(m), hidden=True)
                                          for m in modules]


def lesson_cells(module, argv):
    doc, pieces = split_script(module)
    texts, steps = step_text(module), main_steps(module)
    cells, shown = [], set()

    def step_cells(number):
        title, body = steps[number]
        if number == min(steps):
            body = f'argv = {argv}  # the flags, as on the command line: e.g. [\'--epochs\', \'2\']\n' + body
        prose, extra = with_code_blocks(str(number), texts.get(str(number), ''))
        shown.add(number)
        return [code(f'step-{number}', body)] + extra, prose

    for kind, title, text in pieces:
        if kind == 'prelude':
            if uses_docstring(module) and doc:  # argparse's description reads __doc__
                text = f'__doc__ = {doc.split(chr(10))[0]!r}  # the script\'s first line, for --help\n' + text
            cells += [markdown('imports-md', f'## Imports / 导入\n\n`{module}.py` from its top.'),
                      code('imports', text)]
            continue
        number = re.match(r'(\d+)\. ', title or '')
        if (kind == 'section' and title.startswith('main')) or (kind == 'def' and '`main()`' in title):
            if kind == 'def' and title != '`main()`':  # main() shares a group: keep the others
                text = text[:text.index('def main(')].rstrip()
                title = title.replace(', `main()`', '')
            else:
                continue  # main() itself: its steps are the cells
        heading = f'## {title}' if kind == 'section' else f'### {title}'
        words = title if kind == 'section' else def_summary(module, title)
        labels = stage_labels(words) if kind == 'section' else [  # a docstring's numerals only
            f'{n} {STAGES[n][0]} ({STAGES[n][1]})' for n in dict.fromkeys(re.findall('|'.join(STAGES), words))]
        stage = f'\n\n课程阶段 / course stage: {"; ".join(labels)}' if labels else ''
        code_cells, prose = [], ''
        if number and int(number.group(1)) in steps:
            code_cells, prose = step_cells(int(number.group(1)))
        key = f'section-{len(cells)}'
        cells.append(markdown(f'{key}-md', heading + stage + (f'\n\n{prose}' if prose else '')))
        if text:
            cells.append(code(key, text))
        cells += code_cells
    for number in sorted(set(steps) - shown):
        title = steps[number][0]
        code_cells, prose = step_cells(number)
        labels = [f'{n} {STAGES[n][0]} ({STAGES[n][1]})' for n in dict.fromkeys(re.findall('|'.join(STAGES), title))]
        stage = f'\n\n课程阶段 / course stage: {"; ".join(labels)}' if labels else ''
        cells += [markdown(f'step-{number}-md', f'## {number}. {title}{stage}\n\n{prose}')] + code_cells
    return cells


def notebook_cells(name):
    module, extras, argv = NOTEBOOKS[name]
    doc, _ = split_script(module)
    texts = step_text(module)
    prose, extra = with_code_blocks('intro', texts.get('intro', ''))
    generated = (f'*Generated from `{module}.py` by `tools/make_notebooks.py`: to change it, edit the script '
                 f'and run `make notebooks`. 本 notebook 由脚本自动生成,请修改脚本而不是 notebook。*')
    how = ('**Run / 运行**: Run All, or run the cells one by one and read each output under its cell; '
           'to try a change (the model, the optimizer, the rate), edit its section and run on from step 2 (a new run: '
           'new checkpoints) or step 3 (fresh weights). '
           '可以“全部运行”,也可以逐个运行单元格,在每个单元格下查看输出。')
    data = HOUSING_DATA if module == 'housing' else MNIST_DATA
    cells = [markdown('intro', f'# `{module}.py`\n\n{doc.strip()}\n\n{prose}\n\n{data}\n\n{how}\n\n{generated}')]
    cells += helper_cells(module, extras)
    lesson = lesson_cells(module, argv)
    cells += lesson[:2] + extra + lesson[2:]  # notebook-only cells of the intro: after the imports
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
    return {f'{OUT_DIR}/{name}.ipynb': notebook_text(notebook_cells(name)) for name in NOTEBOOKS}


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
