"""Write one self-contained Jupyter notebook per stage script into notebooks/ (for AI Studio, where a
learner uploads a single .ipynb, and for Jupyter), generated from the scripts themselves: the scripts
stay the one source (as keras-io's literate examples).

    python tools/make_notebooks.py            # (re)write notebooks/*.ipynb (make notebooks)
    python tools/make_notebooks.py --check    # exit 1 naming each notebook that is out of date

Each notebook, top to bottom:
  1. the script's docstring, where the data goes, and how to run it;
  2. the project modules the script imports at its top (found with `ast`, followed transitively; an
     import inside a function is an optional feature, such as --predict, and is not carried;
     downloads, imported where no data was found, is: script_reading.NEEDED_INSIDE_FUNCTIONS), each
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
import json
import os
import re
import sys
import textwrap

from script_reading import (ROOT, def_summary, main_steps, modules_to_write, read, split_script,
                            step_text, uses_docstring)

OUT_DIR = 'notebooks'

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
NOTEBOOKS = {'housing': ('housing', ('housing_paddle',), '[]'),
             'mnist_linear': ('mnist_linear', (), '[]'), 'mnist_mlp': ('mnist_mlp', (), '[]'),
             'mnist_numpy': ('mnist_numpy', (), '[]'), 'mnist_cnn': ('mnist_cnn', (), '[]'),
             'resume': ('resume', ('mnist_cnn', 'tutorial_resume'),
                        "['--ckpt', common.kept('checkpoint/mnist_epoch0'),\n"
                        "        '--compare', common.kept('runs/cnn/metrics.json')]")}


# ---- the course's words for a section (what a script says is read by script_reading.py) -------

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
            f'notebook, so that this one file runs on its own, and the last one makes a cell run '
            f'too early say which cell to run first. Run them and read on; they are the '
            f'repository\'s files, so edit the scripts, not these cells.\n\n'
            f'下面折叠的单元格把本课用到的模块写到 notebook 旁边,运行即可,无需修改;最后一个单元格让提前运行的单元格'
            f'用一行提示先运行哪个单元格。')
    return [markdown('helpers', text)] + [code(f'file-{m}', f'%%writefile {m}.py\n' + read(m), hidden=True)
                                          for m in modules]


def names_made(source):
    """The names a cell's code surely makes: its top-level assignments, defs, classes and imports.
    Not those of an if, for, with or try (a branch may not run: mnist_numpy's loop variables,
    housing's per-method names), nor a function's own. No names (an empty list) for IPython's own
    syntax (%pip ...)."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return []
    names = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split('.')[0] for a in node.names if a.name != '*']
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [n.id for t in targets for n in ast.walk(t)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    return names


def cell_order_cell(cells):
    """A collapsed cell: a NameError for a name that a lesson cell makes names that cell's heading
    (errors.one_line_errors), for a learner who ran a cell before the one it needs; the Interrupt
    button outside training is one line too."""
    made_by, heading = {}, None
    for cell in cells:
        if cell['cell_type'] == 'markdown':
            heading = cell['source'].split('\n', 1)[0].lstrip('#').strip().replace('`', '')
            continue
        for name in names_made(cell['source']):
            if name != '__doc__':  # a kernel always has one
                made_by.setdefault(name, heading)
    names = {}  # heading -> the names its cells make first
    for name, heading in made_by.items():
        names[heading] = f'{names.get(heading, "")} {name}'.strip()
    lines = ''
    for heading, made in names.items():
        parts = textwrap.wrap(made, 80)
        lines += f'    {heading!r}:\n        ' + '\n        '.join(
            repr(part + ' ' * (i < len(parts) - 1)) for i, part in enumerate(parts)) + ',\n'
    text = ('# a cell run before the cell that makes its names (or after that cell stopped with an error)\n'
            '# says which cell to run, instead of a NameError traceback; an interrupt is one line too\n'
            'import errors\n\n'
            f'errors.one_line_errors({{\n{lines}}})')
    return code('cell-order', text, hidden=True)


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
           'to try a change (the model, the optimizer, the rate), edit its section and run on from step 2 (a new run, '
           'with checkpoints of its own). '
           '可以“全部运行”,也可以逐个运行单元格,在每个单元格下查看输出。')
    data = HOUSING_DATA if module == 'housing' else MNIST_DATA
    cells = [markdown('intro', f'# `{module}.py`\n\n{doc.strip()}\n\n{prose}\n\n{data}\n\n{how}\n\n{generated}')]
    cells += helper_cells(module, extras)
    lesson = lesson_cells(module, argv)
    lesson = lesson[:2] + extra + lesson[2:]  # notebook-only cells of the intro: after the imports
    return cells + [cell_order_cell(lesson)] + lesson


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
