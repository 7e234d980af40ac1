"""The shell commands README.md and docs/*.md show work as written, from a fresh shell.

A fresh shell has a bare system ``PATH`` and does only what the README says: ``make setup`` (here: a
``.venv`` link to the venv running these tests, which ``make setup`` creates) and
``source .venv/bin/activate``. The cheap commands run for real in a temporary copy of the
repository; the heavy ones (``make repro``, ``dvc repro``, ``dvc exp run``, training stages) are
checked for form: the executable resolves in the activated shell, the subcommand exists, every
option shown is one it takes, and every ``-S`` key names a param in params.yaml.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from stages.cli import STAGES

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
HARNESS = ROOT / "tooling" / "bench" / "harness.py"
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
# First words of a shell command; a code block starting with one must be a `bash` block, so that
# every command the docs show is one this module checks.
COMMAND_WORDS = ("make", "source", "dvc", "mmaffect", "python", "torchrun")
ACTIVATE = "source .venv/bin/activate"
# Shown commands that read only what the repository holds: run as written in the temporary copy.
CHEAP = ("dvc metrics show", "dvc exp show --only-changed", "mmaffect ablate --dry-run")
FENCE = re.compile(r"^```(\w*)")
OPTION = re.compile(r"^\[?(--?[A-Za-z][\w-]*)")


@dataclass(frozen=True)
class Shown:
    """One command from a ``bash`` code block: where it is, its text, its words."""

    where: str                 # "docs/visual.md:117"
    text: str                  # continuation lines joined, comment removed
    argv: tuple[str, ...]      # leading VAR=value assignments removed

    @property
    def program(self) -> str:
        """The executable (or shell builtin) the command starts."""
        return self.argv[0]


def _blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """Every fenced code block of ``path``: (language, first body line number, body lines)."""
    blocks, language, start, body = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if match and language is None:
            language, start, body = match.group(1), number + 1, []
        elif line.startswith("```") and language is not None:
            blocks.append((language, start, body))
            language = None
        elif language is not None:
            body.append(line)
    return blocks


def shown_commands() -> list[Shown]:
    """Every command in the ``bash`` blocks of README.md and docs/*.md, in document order."""
    commands = []
    for path in DOCS:
        for language, start, body in _blocks(path):
            if language not in SHELL_LANGUAGES:
                continue
            pending, first = "", start
            for number, line in enumerate(body, start):
                if not pending:
                    first = number
                if line.rstrip().endswith("\\"):
                    pending += line.rstrip()[:-1] + " "
                    continue
                text = (pending + line).strip()
                pending = ""
                words = shlex.split(text, comments=True)
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words = words[1:]
                if words:
                    commands.append(Shown(f"{path.relative_to(ROOT)}:{first}", text, tuple(words)))
    return commands


COMMANDS = shown_commands()


def _ids(shown: Shown) -> str:
    return shown.where


def _fresh_shell(script: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """``bash -c script`` with a bare environment: system PATH, a fresh HOME, no venv active."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
    if os.environ.get("PYTHONPATH"):
        # how the test run itself found the project (empty under `make test`, whose venv has it installed)
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git copy of the repository after ``make setup``: ``.venv`` is the venv running the tests."""
    repo = tmp_path_factory.mktemp("readme") / "repo"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    (repo / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(git + args, cwd=repo, check=True, capture_output=True)
    return repo


def test_command_blocks_are_bash_blocks() -> None:
    """A command in an unlabelled block would escape the checks below."""
    hidden = []
    for path in DOCS:
        for language, start, body in _blocks(path):
            first = next((line.split() for line in body if line.strip()), [""])
            words = [w for w in first if not re.match(r"^[A-Z_]+=", w)]
            if language not in SHELL_LANGUAGES and words and words[0] in COMMAND_WORDS:
                hidden.append(f"{path.relative_to(ROOT)}:{start}")
    assert not hidden, f"commands outside ```bash blocks: {hidden}"


def test_readme_activates_the_venv_before_any_other_command() -> None:
    readme = [c for c in COMMANDS if c.where.startswith("README.md")]
    first_other = next(i for i, c in enumerate(readme) if c.program != "make")
    assert readme[first_other].text == ACTIVATE, (
        f"{readme[first_other].where}: {readme[first_other].text!r} needs the venv; say `{ACTIVATE}` first"
    )
    assert all(".venv/bin/" not in c.program for c in COMMANDS), "show commands in the activated form"


def test_every_program_resolves_in_the_activated_shell(copy: Path, tmp_path: Path) -> None:
    stage_programs = {stage["cmd"].split()[0] for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()}
    programs = sorted({c.program for c in COMMANDS if c.program not in ("make", "source") and "/" not in c.program}
                      | stage_programs)
    bare = _fresh_shell("command -v " + " ".join(programs) + " || true", copy, tmp_path)
    venv_bin = Path(sys.prefix).resolve() / "bin"
    script = f"{ACTIVATE} && " + " && ".join(f"command -v {shlex.quote(p)}" for p in programs)
    result = _fresh_shell(script, copy, tmp_path)
    assert result.returncode == 0, f"after `{ACTIVATE}`, not all of {programs} resolve:\n{result.stdout}{result.stderr}"
    found = result.stdout.split()
    assert [Path(f).parent.resolve() for f in found] == [venv_bin] * len(programs), found
    assert str(venv_bin) not in bare.stdout  # the fresh shell itself did not have them


def test_cheap_commands_run_as_written(copy: Path, tmp_path: Path) -> None:
    shown = {c.text.split("#")[0].strip() for c in COMMANDS}
    assert set(CHEAP) <= shown, f"no longer shown: {set(CHEAP) - shown}"
    for command in ("mmaffect --help", "dvc --version", *CHEAP):
        result = _fresh_shell(f"{ACTIVATE} && {command}", copy, tmp_path)
        assert result.returncode == 0, f"`{command}` failed in a fresh shell:\n{result.stdout}{result.stderr}"
    listed = _fresh_shell(f"{ACTIVATE} && mmaffect --help", copy, tmp_path).stdout
    assert all(name in listed for name in STAGES)


@pytest.mark.parametrize("shown", [c for c in COMMANDS if "/" in c.program and ".venv/" not in c.program], ids=_ids)
def test_a_repository_script_exists_is_executable_and_takes_its_options(shown: Shown) -> None:
    """A script the docs run by its path from the repository root (``experiments/pretrain_study.sh``)."""
    script = ROOT / shown.program
    assert script.is_file() and os.access(script, os.X_OK), f"{shown.where}: {shown.program} is not an executable file"
    usage = script.read_text()
    unknown = [w for w in shown.argv[1:] if w.startswith("-") and w not in usage]
    assert not unknown, f"{shown.where}: {shown.program} does not take {unknown}"


@pytest.mark.parametrize("shown", [c for c in COMMANDS if c.program == "make"], ids=_ids)
def test_make_targets_exist(shown: Shown, copy: Path, tmp_path: Path) -> None:
    result = _fresh_shell(f"make -n {shlex.join(shown.argv[1:])}", copy, tmp_path)
    assert result.returncode == 0, f"{shown.where}: {shown.text!r}:\n{result.stderr}"
    expected = {"repro": "dvc repro", "test": "pytest", "setup": "pip install"}
    for target in (arg for arg in shown.argv[1:] if "=" not in arg):   # NAME=value sets a make variable
        # the target's recipe, or, where .venv is already built (a checkout after `make test`),
        # make's word for nothing to do
        up_to_date = ("is up to date", f"Nothing to be done for '{target}'")
        assert expected[target] in result.stdout or any(s in result.stdout for s in up_to_date), result.stdout


def _options(argv: tuple[str, ...]) -> list[str]:
    return [m.group(1) for word in argv if (m := OPTION.match(word))]


def _click_options(module: str) -> set[str]:
    command = importlib.import_module(f"stages.{module}").command
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}


@pytest.mark.parametrize("shown", [c for c in COMMANDS if c.program == "mmaffect" and len(c.argv) > 1], ids=_ids)
def test_mmaffect_commands_take_the_options_shown(shown: Shown) -> None:
    name = shown.argv[1]
    assert name in STAGES, f"{shown.where}: no subcommand {name!r}"
    unknown = sorted(set(_options(shown.argv[2:])) - _click_options(STAGES[name]))
    assert not unknown, f"{shown.where}: `mmaffect {name}` takes no {unknown}"


@pytest.mark.parametrize("shown", [c for c in COMMANDS if c.program == "torchrun"], ids=_ids)
def test_torchrun_commands_name_a_stage_module(shown: Shown) -> None:
    module = shown.argv[shown.argv.index("-m") + 1]
    assert module.startswith("stages.") and module.split(".")[1] in STAGES.values(), f"{shown.where}: {module}"
    args = shown.argv[shown.argv.index("-m") + 2:]
    unknown = sorted(set(_options(args)) - _click_options(module.split(".")[1]))
    assert not unknown, f"{shown.where}: {module} takes no {unknown}"


@pytest.mark.parametrize("shown", [c for c in COMMANDS if c.program == "dask"], ids=_ids)
def test_dask_commands_take_the_options_shown(shown: Shown) -> None:
    dask = Path(sys.executable).with_name("dask")
    result = subprocess.run([str(dask), shown.argv[1], "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{shown.where}: no `dask {shown.argv[1]}`: {result.stderr}"
    taken = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", result.stdout))
    unknown = sorted(set(_options(shown.argv[2:])) - taken)
    assert not unknown, f"{shown.where}: `dask {shown.argv[1]}` takes no {unknown}"


@pytest.mark.parametrize("shown", [c for c in COMMANDS if c.program == "python"], ids=_ids)
def test_python_commands_name_what_exists(shown: Shown) -> None:
    args = shown.argv[1:]
    if args[0] == "-c":
        compile(args[1], shown.where, "exec")
        return
    if args[0] == "-m":
        # a benchmark: `python -m benchmarks.NAME`, run from the repository root
        args = [args[1].replace(".", "/") + ".py", *args[2:]]
    script = ROOT / args[0]
    assert script.is_file(), f"{shown.where}: no {args[0]}"
    source = script.read_text()
    if "from tooling.bench import harness" in source:
        source += HARNESS.read_text()   # options every benchmark shares (--out) are defined there
    unknown = [opt for opt in _options(args[1:]) if f'"{opt}"' not in source]
    assert not unknown, f"{shown.where}: {args[0]} defines no {unknown}"


def _params_keys() -> set[str]:
    def walk(value: object, prefix: str) -> set[str]:
        if not isinstance(value, dict):
            return {prefix}
        return {prefix} | {k for key, item in value.items() for k in walk(item, f"{prefix}.{key}" if prefix else key)}
    return walk(yaml.safe_load((ROOT / "params.yaml").read_text()), "")


@pytest.fixture(scope="module")
def dvc_help(copy: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``dvc <subcommand> --help`` of every dvc subcommand shown, from the activated shell."""
    home = tmp_path_factory.mktemp("home")
    helps = {}
    for subcommand in sorted({_dvc_subcommand(c) for c in COMMANDS if c.program == "dvc"}):
        result = _fresh_shell(f"{ACTIVATE} && dvc {subcommand} --help", copy, home)
        assert result.returncode == 0, f"dvc {subcommand} --help: {result.stderr}"
        helps[subcommand] = result.stdout
    return helps


def _dvc_subcommand(shown: Shown) -> str:
    return " ".join(w for w in shown.argv[1:3] if not w.startswith("-"))


@pytest.mark.parametrize("shown", [c for c in COMMANDS if c.program == "dvc"], ids=_ids)
def test_dvc_commands_take_the_options_and_params_shown(shown: Shown, dvc_help: dict[str, str]) -> None:
    subcommand = _dvc_subcommand(shown)
    text = dvc_help[subcommand]
    unknown = [opt for opt in _options(shown.argv[1:]) if not re.search(rf"(^|[\s,[]){re.escape(opt)}\b", text)]
    assert not unknown, f"{shown.where}: `dvc {subcommand}` takes no {unknown}"
    keys = _params_keys()
    set_params = [shown.argv[i + 1].split("=")[0] for i, w in enumerate(shown.argv) if w == "-S"]
    assert all(key in keys for key in set_params), f"{shown.where}: not in params.yaml: {set(set_params) - keys}"
