"""What tools/make_notebooks.py reads from a script: its source and syntax tree, the project
modules it imports (followed transitively), its sections and def groups, main()'s numbered steps,
and the step texts in notebooks/text/SCRIPT.md. make_notebooks.py writes the notebook from these.
"""
import ast
import functools
import io
import os
import re
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tools/ sits in the repository root
STAGE_SCRIPTS = ['housing', 'mnist_linear', 'mnist_mlp', 'mnist_numpy', 'mnist_cnn']
# `# ---- 2. data (三) -------` at the start of a line: a section of a stage script
SECTION = re.compile(r'^# -{2,} (?P<title>.*?) -{3,}\s*$')
TEXT_DIR = os.path.join('notebooks', 'text')  # SCRIPT.md: what each step does, for a learner
STEP = re.compile(r'^    # (?P<number>\d+)\. (?P<title>.*)$')


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


# Imported inside a function, yet needed by every notebook whose modules import them so: common.py
# imports downloads only where no data was found (a notebook without data downloads it then).
NEEDED_INSIDE_FUNCTIONS = {'downloads'}


def project_imports(module):
    """The project modules (NAME.py in the repository root) that module imports at its top level,
    and those of NEEDED_INSIDE_FUNCTIONS it imports anywhere."""
    tree = parse(module)
    found = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names if alias.name in NEEDED_INSIDE_FUNCTIONS}
    for node in tree.body:
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
