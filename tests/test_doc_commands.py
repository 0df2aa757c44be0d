"""The ``safealign ...`` command lines shown in README.md and docs/*.md stay true.

Every invocation in a shell code block (```bash, sh, shell, console) is extracted the way a shell would read it —
continued lines joined, comments dropped, ``A=1 safealign ...`` env prefixes and ``&&``/``;``/``|``/``&`` lists
split, shell variables that the block itself sets (``c=...``, ``for p in a b; do``) substituted, ``{0,1,2}``
expanded — and checked without running anything: the subcommand exists, argparse accepts the line (the CLI's own
:func:`safealign.cli.parse`), and where the command reads a YAML config that is in the repo, the config with the
line's ``key=value`` overrides loads with that command's schema. A renamed flag or key fails here, naming the doc's
file and line, instead of in a reader's terminal. README's inline ``safealign ...`` code spans are parsed too: a span
may name a command without its required arguments, but a flag it shows must exist and take the value it shows.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
# Doc commands the extractor cannot resolve (e.g. a variable set outside the block); each one is unchecked.
MAX_SKIPPED = 0

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|([A-Za-z_]\w*))")
_BRACES = re.compile(r"^(.*?)\{([^{}]*,[^{}]*)\}(.*)$")
_KEYWORDS = {"do", "then", "else", "{", "(", "time"}


@dataclass(frozen=True)
class DocCommand:
    where: str  # README.md:137 (the first line of the command)
    argv: tuple[str, ...]  # what follows `safealign`


class Unresolved(Exception):
    """Shell syntax the extractor does not resolve (command substitution, a variable the block does not set)."""


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """``(line number of the block's first line, its lines)`` for every fenced shell code block."""
    blocks, fence, lang, start, lines = [], None, "", 0, []
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence, lang, start, lines = match.group(1), match.group(2).lower(), number + 1, []
        elif fence is not None and match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
            if lang in SHELL_LANGS:
                blocks.append((start, lines))
            fence = None
        elif fence is not None:
            lines.append(line[2:] if lang == "console" and line.startswith("$ ") else line)
    return blocks


def logical_lines(start: int, lines: list[str]) -> list[tuple[int, str]]:
    """Lines with a trailing backslash joined to the next (the backslash-newline removed, as bash does)."""
    joined, first, parts = [], None, []
    for number, line in enumerate(lines, start):
        first = number if first is None else first
        if line.endswith("\\") and not line.endswith("\\\\"):
            parts.append(line[:-1])
            continue
        joined.append((first, "".join([*parts, line])))
        first, parts = None, []
    if parts:
        joined.append((first, "".join(parts)))
    return joined


def split_commands(line: str) -> list[str]:
    """A line cut at ``;``, ``&&``, ``||``, ``|`` and ``&`` outside quotes, its ``# comment`` dropped."""
    commands, current, quote, i = [], [], None, 0
    while i < len(line):
        char = line[i]
        if quote:
            current.append(char)
            if char == "\\" and quote == '"' and i + 1 < len(line):
                current.append(line[i + 1])
                i += 1
            elif char == quote:
                quote = None
        elif char == "\\" and i + 1 < len(line):
            current.append(line[i:i + 2])
            i += 1
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == "#" and (not current or current[-1][-1:].isspace()):
            break
        elif char in ";|&" and not (char == "&" and current and current[-1] in "<>"):
            commands.append("".join(current))
            current = []
            if line[i + 1:i + 2] == char:  # && and ||
                i += 1
        else:
            current.append(char)
        i += 1
    commands.append("".join(current))
    return [c for c in commands if c.strip()]


def substitute(command: str, env: dict[str, str]) -> str:
    """``$name`` and ``${name}`` replaced by the block's own values (not inside single quotes)."""
    if "$(" in command or "`" in command:
        raise Unresolved("command substitution")
    out, quote = [], None
    for piece in re.split(r"""('[^']*'|")""", command):
        if piece == '"':
            quote = None if quote else '"'
        if piece.startswith("'") and piece.endswith("'") and len(piece) > 1 and not quote:
            out.append(piece)
            continue

        def value(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name not in env:
                raise Unresolved(f"${name} is not set in the block")
            # bash does not read quotes in an expanded value; unquoted, it splits it into words
            return re.sub(r"""(["'\\$`])""", r"\\\1", env[name])

        out.append(_VARIABLE.sub(value, piece))
        if "$" in _VARIABLE.sub("", piece):
            raise Unresolved(f"shell expansion in {piece.strip()!r}")
    return "".join(out)


def expand_braces(word: str) -> list[str]:
    """Bash's brace expansion, ``seed{0,1}/eval`` -> ``seed0/eval seed1/eval``."""
    match = _BRACES.match(word)
    if not match:
        return [word]
    head, items, tail = match.groups()
    return [w for item in items.split(",") for w in expand_braces(head + item + tail)]


_QUOTED_BRACES = str.maketrans("{}", "\x01\x02")  # braces inside quotes, which bash does not expand


def _hide_quoted_braces(command: str) -> str:
    """``command`` with each brace inside single or double quotes replaced by a placeholder (:func:`words` puts it
    back after expanding the others): ``'methods=[{name: a}, {name: b}]'`` is one word to bash."""
    out, quote = [], None
    for char in command:
        if quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        out.append(char.translate(_QUOTED_BRACES) if quote is not None else char)
    return "".join(out)


def words(command: str) -> list[str]:
    """The command's words: quotes removed, braces outside quotes expanded, redirections (``> file``) dropped."""
    try:
        tokens = shlex.split(_hide_quoted_braces(command))
    except ValueError as exc:  # an unclosed quote
        raise Unresolved(str(exc)) from None
    kept: list[str] = []
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif re.fullmatch(r"\d*(>>?|<)&?", token):
            skip_next = True
        elif not re.match(r"\d*(>>?|<)", token):
            kept.extend(w.replace("\x01", "{").replace("\x02", "}") for w in expand_braces(token))
    while kept and kept[0] in _KEYWORDS:
        kept.pop(0)
    while kept and kept[-1] in {"}", ")"}:
        kept.pop()
    return kept


def safealign_argv(tokens: list[str]) -> list[str] | None:
    """What follows ``safealign`` (or ``-m safealign``) when the command runs safealign, after env assignments."""
    while tokens and _ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    if tokens[:1] == ["safealign"]:
        return tokens[1:]
    for i in range(len(tokens) - 1):
        if tokens[i:i + 2] == ["-m", "safealign"]:
            return tokens[i + 2:]
    return None


def extract(label: str, text: str) -> tuple[list[DocCommand], list[str]]:
    """The ``safealign`` commands of one markdown file, and the ones skipped (``where: why``)."""
    found: list[DocCommand] = []
    skipped: list[str] = []
    for start, lines in code_blocks(text):
        env: dict[str, str] = {}  # the block's own shell variables
        for number, line in logical_lines(start, lines):
            where = f"{label}:{number}"
            for command in split_commands(line):
                try:
                    tokens = words(substitute(command, env))
                except Unresolved as exc:
                    raw = words_or_none(command)
                    if raw and safealign_argv(raw) is not None:
                        skipped.append(f"{where}: {exc}: {command.strip()}")
                    continue
                if tokens[:1] == ["export"]:
                    tokens = tokens[1:]
                if tokens and all(_ASSIGNMENT.match(t) for t in tokens):
                    env.update(t.split("=", 1) for t in tokens)
                elif len(tokens) > 3 and tokens[0] == "for" and tokens[2] == "in":
                    env[tokens[1]] = tokens[3]  # the loop's first value stands for all of them
                elif tokens and (argv := safealign_argv(tokens)) is not None:
                    seen = sum(c.where.split("+")[0] == where for c in found)
                    found.append(DocCommand(f"{where}+{seen + 1}" if seen else where, tuple(argv)))
    return found, skipped


def words_or_none(command: str) -> list[str] | None:
    """The words with every variable standing for a plain word: enough to tell a skipped safealign command."""
    try:
        return words(re.sub(r"\$\{?\w+\}?", "X", command))
    except Unresolved:
        return None


def doc_commands() -> tuple[list[DocCommand], list[str]]:
    commands, skipped = [], []
    for path in DOCS:
        found, missed = extract(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
        commands += found
        skipped += missed
    return commands, skipped


COMMANDS, SKIPPED = doc_commands()
_IDS = [c.where for c in COMMANDS]


# --- the extractor itself ---------------------------------------------------------------------------------------

SAMPLE = """\
Text with `safealign inline --ignored`.

```bash
OMP_NUM_THREADS=1 safealign eval configs/eval/x.yaml \\
  model.name=a   # a comment, with --not-a-flag
safealign sweep g.yaml --metrics a,\\
b "seeds=[0,1]" && safealign report out   # two commands on one line
c=runs/cell,x=1
for p in one two; do
  safealign diagnose anchor --prefix $p --a $c/s{0,1}/eval > log.txt &
done
safealign data inspect "$missing/file"
safealign defenses d.yaml 'methods=[{name: a}, {name: b}]' s{0,1}
```

```
safealign judge validate LABELS [--json]
```
"""


def test_extractor_reads_commands_as_bash_would():
    found, skipped = extract("S.md", SAMPLE)
    assert [(c.where, " ".join(c.argv)) for c in found] == [
        ("S.md:4", "eval configs/eval/x.yaml model.name=a"),
        ("S.md:6", "sweep g.yaml --metrics a,b seeds=[0,1]"),
        ("S.md:6+2", "report out"),
        ("S.md:10", "diagnose anchor --prefix one --a runs/cell,x=1/s0/eval runs/cell,x=1/s1/eval"),
        ("S.md:13", "defenses d.yaml methods=[{name: a}, {name: b}] s0 s1"),  # quoted braces are not expanded
    ]
    assert skipped == ['S.md:12: $missing is not set in the block: safealign data inspect "$missing/file"']


def test_the_docs_have_commands_and_few_are_skipped():
    assert len(COMMANDS) > 60, "the extractor found too few commands in README.md and docs/*.md"
    assert len(SKIPPED) <= MAX_SKIPPED, "doc commands the extractor cannot check:\n" + "\n".join(SKIPPED)


# --- every doc command ------------------------------------------------------------------------------------------

def parse_doc(command: DocCommand, capsys: pytest.CaptureFixture[str]) -> argparse.Namespace:
    """The command line parsed by the CLI's own parser (nothing runs); its usage error names the doc line."""
    from safealign.cli import COMMANDS as CLI_COMMANDS
    from safealign.cli import parse

    argv = list(command.argv)
    assert argv and argv[0] in CLI_COMMANDS, f"{command.where}: no subcommand {argv[:1]} (safealign {' '.join(argv)})"
    groups = getattr(import_module(CLI_COMMANDS[argv[0]][0]), "SUBCOMMANDS", None)
    if groups:
        assert len(argv) > 1 and argv[1] in groups, (
            f"{command.where}: `safealign {argv[0]}` has no subcommand {argv[1:2]}; it has {', '.join(groups)}")
    try:
        return parse(argv)
    except SystemExit as exc:
        message = capsys.readouterr().err.strip().splitlines()[-1:]
        pytest.fail(f"{command.where}: safealign {' '.join(argv)}\n  rejected (exit {exc.code}): {message}")


@pytest.mark.parametrize("command", COMMANDS, ids=_IDS)
def test_doc_command_parses(command, capsys):
    parse_doc(command, capsys)


# The commands that read settings: their YAML (when it is in the repo) and key=value overrides load.
_DIAGNOSE_SCHEMAS = {  # the diagnostics that take [CONFIG.yaml] [key=value ...] (safealign/cli/diagnose.py: load)
    "ranking": ("safealign.pipelines.diagnose_ranking", "RankingConfig"),
    "entanglement": ("safealign.pipelines.diagnose", "EntanglementConfig"),
    "anchor": ("safealign.pipelines.diagnose", "AnchorConfig"),
    "e-share": ("safealign.pipelines.diagnose", "EShareConfig"),
    "hidden-norms": ("safealign.pipelines.diagnose", "HiddenNormsConfig"),
}
_TRAIN_SCHEMAS = {  # safealign/cli/train.py: the recipe's trainer key picks the schema
    "preference": ("safealign.train.config", "TrainConfig"),
    "online": ("safealign.online.config", "OnlineConfig"),
    "reward": ("safealign.online.reward_train", "RewardConfig"),
}


def repo_config(path: str | None, where: str) -> str | None:
    """``path`` when it names a file in the repo; a config the doc only stands for (``recipe.yaml``) skips."""
    if path is not None and not (ROOT / path).is_file():
        pytest.skip(f"{where}: {path} is not a file in the repo")
    return path


def _demo(args: argparse.Namespace, where: str) -> object:
    """As safealign/cli/demo.py builds it, and the methods run_demo checks before the model loads."""
    from safealign.pipelines.demo import VARIANTS
    from safealign.pipelines.demo_config import load_demo_config

    overrides = [f"output_dir={args.output_dir}", f"model={args.model}", *args.overrides]
    config = load_demo_config(overrides + ([f"variants=[{args.compare}]"] if args.compare else []))
    unknown = [v for v in config.variants if v not in VARIANTS]
    assert not unknown, f"{where}: no demo method(s) {unknown}; valid: {', '.join(VARIANTS)}"
    return config


@functools.lru_cache(maxsize=None)
def _grid(path: str, overrides: tuple[str, ...]) -> object:
    """A sweep grid, loaded once per (file, overrides): a dozen doc lines show the same grid with other flags."""
    from safealign.pipelines.sweep import load_grid

    return load_grid(path, list(overrides))


def _sweep(args: argparse.Namespace, where: str) -> object:
    """The grid, and the ``--metrics`` a ``--table`` line names: each one a figure the grid's committed cells
    record (``results/``; the check needs one finished cell, which a clone of the repository has), or such a
    figure under another judge's label (``direct_asr@refusal_gcg``, added by ``safealign judge records``)."""
    grid = _grid(repo_config(args.grid, where), tuple(args.overrides))
    if args.table and args.metrics:
        recorded = _recorded_metrics(str(grid.output_dir))
        unknown = [m for m in args.metrics.split(",") if recorded and m.split("@")[0] not in recorded]
        assert not unknown, f"{where}: --metrics {unknown} recorded by no cell; the cells have {sorted(recorded)}"
    return grid


@functools.lru_cache(maxsize=None)
def _recorded_metrics(output_dir: str) -> frozenset[str]:
    """Every figure name in the ``cell.json`` of the finished cells under ``output_dir`` (empty: none finished), and
    the open held-out margin where a cell's margins were scored open (``--score-open-margins``: read from its file)."""
    import json

    from safealign.pipelines.demo_margin import MARGIN_DIR, OPEN

    cells = list(Path(output_dir).glob("cells/*/*/cell.json"))
    opened = any((path.parent / "eval" / MARGIN_DIR / OPEN.margins).is_file() for path in cells)
    return frozenset([*(name for path in cells for name in json.loads(path.read_text())["figures"]),
                      *([OPEN.figure] if opened else [])])


def _train(args: argparse.Namespace, where: str) -> object:
    """The schema the recipe's ``trainer`` key picks (safealign/cli/train.py), imported only when needed:
    reward_train loads transformers."""
    from safealign.cli.train import trainer_kind
    from safealign.config import load_config

    path = repo_config(args.config, where)
    module, name = _TRAIN_SCHEMAS[trainer_kind(path)]
    return load_config(getattr(import_module(module), name), path, args.overrides)


def _eval(args: argparse.Namespace, where: str) -> object:
    """The eval config, and its attacks and judges by name (registered, as the pipeline looks them up)."""
    from safealign.config import config_and_overrides, load_config
    from safealign.eval.config import EvalConfig
    from safealign.eval.registries import ATTACKS, JUDGES

    path, overrides = config_and_overrides(args.config, args.overrides)
    config = load_config(EvalConfig, repo_config(path, where), overrides)
    for kind, names, registry in (("attack", config.attacks, ATTACKS), ("judge", config.judges, JUDGES)):
        unknown = [n for n in names if n not in registry.names()]
        assert not unknown, f"{where}: no {kind}(s) {unknown}; registered: {', '.join(registry.names())}"
    return config


def _defenses(args: argparse.Namespace, where: str) -> object:
    from safealign.config import config_and_overrides, load_config
    from safealign.pipelines.defenses import DefenseCompareConfig

    path, overrides = config_and_overrides(args.config, args.overrides)
    return load_config(DefenseCompareConfig, repo_config(path, where), overrides)


def _compare_online(args: argparse.Namespace, where: str) -> object:
    """As safealign/cli/compare_online.py reads it, and every variant's recipe with ``train_overrides`` (the
    check check_compare_dir makes before training, without writing the output directory)."""
    from safealign.pipelines.online_compare import load_compare_config, stage_config

    path, overrides = args.config, list(args.overrides)
    if path and "=" in path:  # only overrides were given
        path, overrides = None, [path, *overrides]
    config = load_compare_config(repo_config(path, where), overrides)
    for variant in config.variants:
        stage_config(config, variant, config.seeds[0])
    return config


def _judge(args: argparse.Namespace, where: str) -> object:
    """A registered judge and its ``key=value`` parameters (building it could load a classifier: not done)."""
    from safealign.cli.judge_validate import parse_params
    from safealign.eval.registries import JUDGES

    name, *params = args.judge
    assert name in JUDGES.names(), f"{where}: no judge {name!r}; registered: {', '.join(JUDGES.names())}"
    return parse_params([*getattr(args, "params", []), *params])


def _diagnose(args: argparse.Namespace, where: str) -> object:
    """The diagnostic's schema from its optional YAML, flags and overrides (safealign/cli/diagnose.py: load)."""
    from safealign.cli.diagnose import load

    for path in (s for s in args.settings if "=" not in s):
        repo_config(path, where)
    module, name = _DIAGNOSE_SCHEMAS[args.diagnose_command]
    return load(getattr(import_module(module), name), args)


_LOADERS = {"demo": _demo, "sweep": _sweep, "train": _train, "eval": _eval, "defenses": _defenses,
            "compare-online": _compare_online, "judge": _judge, "diagnose": _diagnose}
SETTINGS_COMMANDS = [c for c in COMMANDS if c.argv[:1] and c.argv[0] in _LOADERS
                     and (c.argv[0] != "diagnose" or c.argv[1:2] and c.argv[1] in _DIAGNOSE_SCHEMAS)]


@pytest.mark.parametrize("command", SETTINGS_COMMANDS, ids=[c.where for c in SETTINGS_COMMANDS])
def test_doc_command_settings_load(command, capsys, monkeypatch):
    from safealign.errors import UserError

    monkeypatch.chdir(ROOT)  # the docs' commands run in the repo (a recipe names configs/train/...)
    args = parse_doc(command, capsys)
    try:
        config = _LOADERS[args.command](args, command.where)  # loaded as the command's run loads it
        if hasattr(config, "validate"):
            config.validate()
    except UserError as exc:
        pytest.fail(f"{command.where}: safealign {' '.join(command.argv)}\n  settings do not load: {exc}")


# --- README's inline `safealign ...` spans -----------------------------------------------------------------------

_INLINE = re.compile(r"`(safealign [^`]+)`")
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_,.]*$|…")  # GRID, N, W0,W1: the span shows a form, not a line
_NAMES_ONLY = "the following arguments are required"


def inline_commands(label: str, text: str) -> list[DocCommand]:
    """The ``safealign ...`` code spans of a markdown file's prose (outside fenced blocks); a span with a
    placeholder word (``GRID``, ``N``, ``…``) stands for a form and is left out."""
    found, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if match and (fence is None or match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence)):
            fence = match.group(1) if fence is None else None
            continue
        if fence is None:
            for span in _INLINE.findall(line):
                argv = shlex.split(span)[1:]
                if not any(_PLACEHOLDER.search(word) for word in argv):
                    found.append(DocCommand(f"{label}:{number}", tuple(argv)))
    return found


INLINE = inline_commands("README.md", (ROOT / "README.md").read_text(encoding="utf-8"))


def test_inline_extractor_reads_prose_spans_only():
    text = "Run `safealign demo --compare dpo` or `safealign sweep GRID --workers N`.\n```bash\nsafealign x\n```\n"
    assert [(c.where, c.argv) for c in inline_commands("S.md", text)] == [("S.md:1", ("demo", "--compare", "dpo"))]


def inline_problem(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str | None:
    """The CLI's usage error for an inline span, or None. A span may name a command without its required
    arguments (`safealign train`), but every flag it shows must exist and take the value it is shown with."""
    from safealign.cli import parse

    try:
        parse(list(argv))
    except SystemExit as exc:
        message = capsys.readouterr().err.strip().splitlines()[-1:]
        if not (message and _NAMES_ONLY in message[0]):
            return f"rejected (exit {exc.code}): {message}"
    return None


def test_inline_check_allows_a_bare_command_name_only(capsys):
    assert inline_problem(("train",), capsys) is None
    assert "--heads" in inline_problem(("diagnose", "ranking", "--heads"), capsys)
    assert "unrecognized" in inline_problem(("demo", "--no-such-flag"), capsys)


@pytest.mark.parametrize("command", INLINE, ids=[f"{c.where}:{' '.join(c.argv)}" for c in INLINE])
def test_readme_inline_command_parses(command, capsys):
    problem = inline_problem(command.argv, capsys)
    assert problem is None, f"{command.where}: safealign {' '.join(command.argv)}\n  {problem}"


def test_diagnose_schemas_are_the_ones_the_commands_load():
    """The map above follows safealign/cli/diagnose_*.py: a new diagnostic with settings, or a renamed schema,
    shows here rather than as a KeyError or a check against the wrong schema."""
    import inspect

    from safealign.cli.diagnose import SUBCOMMANDS

    loads = {}
    for name, (module, _) in SUBCOMMANDS.items():
        source = inspect.getsource(import_module(module).run)
        schema = re.search(r"\bload\((\w+), args\)", source)
        if schema:
            loads[name] = (re.search(rf"from (\S+) import .*\b{schema.group(1)}\b", source).group(1), schema.group(1))
    assert loads == _DIAGNOSE_SCHEMAS
