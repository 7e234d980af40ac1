"""The whole DAG under ``dvc repro`` on the tiny synthetic preset, in a fresh git + DVC repository.

Checks that the pipeline runs end to end, that ``evaluate`` scores exactly the models the trainers
published, that a second ``dvc repro`` does nothing, and that changing a ``train_sequence`` param
reruns only ``train-sequence`` and ``evaluate`` (the cache is reused).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.labels import AU_NAMES, EXPR_NAMES

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

TINY_WIDTH = 0.0625
# Small enough for two CI cores; every other value comes from the repository's params.yaml.
TINY_OVERRIDES: dict[str, dict] = {
    "synth": {"preset": "tiny", "seed": 0},
    "synth_faces": {"identities": 8, "images_per_identity": 3},
    "pretrain_face": {"width_mult": TINY_WIDTH, "epochs": 1, "images_per_epoch": 16, "batch_size": 8,
                      "holdout_share": 0.25, "verification_pairs": 20,
                      "min_gain": None},  # one epoch on 6 identities: the plumbing, not learning
    "finetune_visual": {"width_mult": TINY_WIDTH, "epochs": 1, "max_frames_per_epoch": 128, "batch_size": 32},
    "train_audio": {"epochs": 1, "max_segments": 64},
    "train_sequence": {"epochs": 2, "d_model": 32, "heads": 2},
}


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{output[-6000:]}"
    return output


def _ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _set_params(repo: Path, overrides: dict[str, dict]) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        if section == "synth":
            params[section] = dict(values)  # a preset plus overrides: start from the bare preset
        else:
            params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh git + DVC repository holding the pipeline definition and code."""
    repo = tmp_path_factory.mktemp("dvc") / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, repo / name)
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    _set_params(repo, TINY_OVERRIDES)
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    _run(["dvc", "config", "core.analytics", "false"], repo)
    return repo


@pytest.fixture
def reproduced(repo: Path) -> Path:
    """The module's repository once a whole ``dvc repro`` has run in it: the tests after the first build on its
    outputs (the draw, dvc.lock, the metrics), and reproduce it themselves when selected alone."""
    if not (repo / "dvc.lock").is_file():
        _run(["dvc", "repro"], repo)
    return repo


@pytest.mark.slow
def test_dvc_repro_runs_the_whole_pipeline(repo: Path) -> None:
    output = _run(["dvc", "repro"], repo)
    stages = set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    assert _ran_stages(output) == stages

    # evaluate re-scores the models the trainers published, on the frames they validated on (all
    # labelled frames): its all-frames figures must be theirs. (Margins over the trivial baseline are
    # asserted by each trainer's unit test: one epoch of the tiny preset, all CI can afford here,
    # learns nothing that generalises.)
    metrics = {name: json.loads((repo / f"metrics/{name}.json").read_text())
               for name in ("visual", "audio", "sequence", "evaluate")}
    evaluated = metrics["evaluate"]
    # (evaluate scores every labelled frame: the trainers' all_frames)
    for variant, published in (("fusion", metrics["audio"]["validation"]),
                               ("visual", metrics["audio"]["visual_only"]),
                               ("sequence", metrics["sequence"]["validation"])):
        for task in ("au", "expr"):
            for frames in ("face_frames", "all_frames"):
                assert evaluated[frames][variant][task] == pytest.approx(published[frames][task]), \
                    (frames, variant, task)
    assert evaluated["sequence"] == evaluated["face_frames"]["sequence"]
    assert 0 < evaluated["face_frames"]["frames"]["expr"] <= evaluated["all_frames"]["frames"]["expr"]
    assert metrics["visual"]["frames"]["val"] > 0 and metrics["visual"]["baseline"]["face_frames"]["au"]["f1"] == 0.0
    # every trainer held out the same videos to select its epoch
    held = {name: metrics[name]["selection"]["videos"] for name in ("visual", "audio", "sequence")}
    assert held["visual"] == held["audio"] == held["sequence"] != [], held
    # each model's AU thresholds, chosen on that held-out split, are the ones evaluate's calibrated scores use
    for variant, trainer in (("visual", "visual"), ("fusion", "audio"), ("sequence", "sequence")):
        assert evaluated["calibrated"]["thresholds"][variant] == metrics[trainer]["au_thresholds"], variant
        assert metrics[trainer]["au_thresholds"]["source"].startswith("held-out selection split"), trainer

    assert (repo / "cache/onnx/visual.onnx").is_file()
    assert (repo / "cache/audio/tdnn.onnx").is_file()
    assert (repo / "cache/sequence/sequence.onnx").is_file()
    plots = sorted(p.name for p in (repo / "cache/evaluation/plots").glob("*.png"))
    assert any(p.startswith("confusion_") for p in plots) and any(p.startswith("timeline_") for p in plots)

    submission = repo / "cache/evaluation/submission"
    au_files = sorted(submission.glob("*/AU_Set/*.txt"))
    expr_files = sorted(submission.glob("*/EXPR_Set/*.txt"))
    assert au_files and expr_files
    assert au_files[0].read_text().splitlines()[0] == ",".join(AU_NAMES)
    assert expr_files[0].read_text().splitlines()[0] == ",".join(EXPR_NAMES)


@pytest.mark.slow
@pytest.mark.usefixtures("reproduced")
def test_second_repro_does_nothing(repo: Path) -> None:
    output = _run(["dvc", "repro"], repo)
    assert _ran_stages(output) == set(), output


@pytest.mark.slow
@pytest.mark.usefixtures("reproduced")
def test_sequence_param_change_reruns_only_sequence_and_evaluate(repo: Path) -> None:
    _set_params(repo, {"train_sequence": {"dropout": 0.2}})
    output = _run(["dvc", "repro"], repo)
    assert _ran_stages(output) == {"train-sequence", "evaluate"}, output


@pytest.mark.slow
@pytest.mark.usefixtures("reproduced")
def test_int8_precision_reembeds_from_the_declared_int8_models(repo: Path) -> None:
    assert (repo / "cache" / "onnx" / "visual.int8.onnx").is_file()
    assert (repo / "cache" / "audio" / "tdnn.int8.onnx").is_file()
    before = (repo / "cache" / "embeddings" / "visual.zarr" / "zarr.json").read_text()
    _set_params(repo, {"embed_visual": {"precision": "int8"}, "embed_audio": {"precision": "int8"}})
    output = _run(["dvc", "repro"], repo)
    # the int8 models are outputs of finetune-visual and train-audio already: nothing upstream reruns
    assert _ran_stages(output) == {"embed-visual", "train-audio", "embed-audio", "train-sequence", "evaluate"}, output
    attrs = json.loads((repo / "cache" / "embeddings" / "visual.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["model"]["quantization"]["format"] == "QDQ" and "precision" not in attrs["params"]
    assert json.loads(before)["attributes"]["fingerprint"] != attrs["fingerprint"]
    audio = json.loads((repo / "cache" / "embeddings" / "audio.zarr" / "zarr.json").read_text())["attributes"]
    assert audio["model"]["path"] == "cache/audio/tdnn.int8.onnx"


# --- experiments the DVC way: -S on every stage section, the headline, the plots ---------------------

# One key of every params section a DAG stage reads, each set to a new value, so that every stage
# reruns under params.yaml as `dvc exp run -S` writes it back (`amp: "off"` loses its quotes).
EVERY_SECTION = {
    "synth.seed": 1, "synth_faces.seed": 1, "pretrain_face.seed": 1, "prepare.frame_tolerance": 6,
    "pack_frames.chunk_frames": 128, "selection.seed": 1, "finetune_visual.seed": 1, "export_onnx.example_batch": 3,
    "embed_visual.chunk_frames": 256, "train_audio.seed": 1, "embed_audio.chunk_frames": 256,
    "train_sequence.seed": 1, "evaluate.seed": 1,
}
# The README's paper profile at the tiny width: IResNet100 at width 1.0 would take a quarter of an hour
# of CPU on the tiny data; every other value is the README's.
PAPER_ARCH = {"backbone=iresnet100": "backbone=iresnet18", "width_mult=1.0": f"width_mult={TINY_WIDTH}"}
COLUMN_BUDGET = 30   # columns of one screen of `dvc exp show` / `dvc metrics show`


def _commit(repo: Path, message: str) -> None:
    """Commit the workspace (not the stages' work directories): the baseline experiments start from."""
    ignore = repo / ".gitignore"
    if "/cache/work/" not in (ignore.read_text() if ignore.is_file() else ""):
        with ignore.open("a") as f:
            f.write("/cache/work/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    _run([*git, "add", "-A"], repo)
    _run([*git, "commit", "-q", "--allow-empty", "-m", message], repo)


def _md_table(output: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Markdown table `dvc ... --md` prints."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    return cells[0], [row for row in cells[2:]]


def _readme_paper_profile() -> list[str]:
    """The README's `dvc exp run -n paper ...` command, continuation lines joined, split into words."""
    lines = (ROOT / "README.md").read_text().splitlines()
    first = lines.index(next(line for line in lines if line.startswith("dvc exp run -n paper")))
    command = ""
    for line in lines[first:]:
        command += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            break
    return shlex.split(command)


def _sane_backbone(path: Path) -> None:
    """An untrained backbone of the tiny arch whose BatchNorm statistics keep its embeddings finite, as
    a stand-in for the Glint360K checkpoint the paper profile names."""
    from pipeline.models.iresnet import iresnet18

    torch.manual_seed(0)
    backbone = iresnet18(width_mult=TINY_WIDTH)
    for module in backbone.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None   # the plain mean over the batches below
    backbone.train()
    with torch.no_grad():
        backbone(torch.randn(16, 3, 112, 112))
    torch.save(backbone.state_dict(), path)


@pytest.mark.slow
@pytest.mark.usefixtures("reproduced")
def test_the_readme_paper_profile_and_a_key_of_every_section_run_under_dvc_exp_run(repo: Path, tmp_path: Path) -> None:
    """The README's paper profile with a key of every section changed, on an Aff-Wild2-layout copy
    without ``annotations/VA_Set`` (one whole-DAG run for both): every stage runs, every trainer skips
    VA with one line, and evaluate scores AU and EXPR only."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert set(EVERY_SECTION) and {key.split(".")[0] for key in EVERY_SECTION} == {
        section for stage in stages.values() for section in stage.get("params", [])}
    argv = _readme_paper_profile()
    assert "pretrain_face.init=/path/to/glint360k_r100/backbone.pth" in argv, argv
    assert sum(word.endswith(tuple(PAPER_ARCH)) for word in argv) == 4, argv
    _sane_backbone(tmp_path / "backbone.pth")
    for i, word in enumerate(argv):
        for paper, tiny in PAPER_ARCH.items():
            word = word.replace(paper, tiny)
        argv[i] = word.replace("/path/to/glint360k_r100/backbone.pth", str(tmp_path / "backbone.pth"))
    sets = [word for key, value in EVERY_SECTION.items() for word in ("-S", f"{key}={value}")]
    sets += ["-S", "data.root=data/no_va", "-S", "data.bp4d_root=data/no_va/BP4D"]
    _commit(repo, "tiny pipeline")
    no_va = repo / "data" / "no_va"   # the seed-0 draw the first repro wrote, without its VA_Set (not committed)
    shutil.copytree(repo / "data" / "synthetic", no_va, ignore=shutil.ignore_patterns("VA_Set"))
    output = _run([*argv, *sets], repo)
    assert _ran_stages(output) == set(stages), output
    # one line per trainer: finetune-visual's, then train-audio's and train-sequence's
    assert output.count("valence-arousal label; the va head is not trained") == 1, output[-3000:]
    assert output.count("no VA labels in the training split; the va task is skipped") == 2, output[-3000:]
    scores = json.loads((repo / "metrics/evaluate.json").read_text())["face_frames"]
    assert all("va" not in scores[variant] and "au" in scores[variant] for variant in ("visual", "fusion", "sequence"))
    shutil.rmtree(no_va)
    # what made the visual stages fail: DVC's writer drops the quotes of "off", and YAML reads false
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["finetune_visual"]["amp"] is False and params["pretrain_face"]["amp"] is False
    assert json.loads((repo / "metrics/pretrain.json").read_text())["epochs"] == 0   # init published as it is
    assert params["finetune_visual"]["lr"] == 0.001 and params["train_sequence"]["window"] == 30
    _run(["git", "checkout", "params.yaml", "dvc.lock", "metrics"], repo)
    _run(["dvc", "checkout", "-q"], repo)


@pytest.mark.slow
@pytest.mark.usefixtures("reproduced")
def test_an_experiment_shows_on_one_screen_and_plots_against_the_baseline(repo: Path, tmp_path: Path) -> None:
    _commit(repo, "tiny pipeline")
    _run(["dvc", "exp", "run", "-n", "visual-only", "-S", "train_sequence.modalities=visual"], repo)

    header, rows = _md_table(_run(["dvc", "exp", "show", "--md", "--only-changed"], repo))
    assert len(header) <= COLUMN_BUDGET, header
    assert "train_sequence.modalities" in header, header
    # rows: workspace, the baseline commit (its branch name), "└── <sha> [visual-only]"
    by_name = {(re.search(r"\[(.+)\]", row[0]) or re.search(r"(\S+)$", row[0])).group(1): row for row in rows}
    assert len(by_name) == 3, rows
    for name in ("visual-only", next(n for n in by_name if n not in ("workspace", "visual-only"))):
        for column in ("sequence.au.score", "sequence.expr.score"):
            assert by_name[name][header.index(column)] not in ("", "-"), (name, column, rows)
    metrics_header, _ = _md_table(_run(["dvc", "metrics", "show", "--md"], repo))
    assert len(metrics_header) <= COLUMN_BUDGET and "verification.accuracy" in metrics_header, metrics_header

    # every plots entry of dvc.yaml renders, with the data of both runs in one plot
    rendered = json.loads(_run(["dvc", "plots", "diff", "HEAD", "visual-only", "--json", "-o", str(tmp_path / "j")],
                               repo))["data"]
    declared = {next(iter(entry)) if isinstance(entry, dict) else entry
                for entry in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]}
    data_plots = {name for name in declared if not name.endswith("/")}
    assert data_plots <= set(rendered), data_plots - set(rendered)
    for name in data_plots:
        [plot] = rendered[name]
        revs = {row["rev"] for row in plot["content"]["data"]["values"]}
        assert plot["type"] == "vega" and revs == {"HEAD", "visual-only"}, (name, revs)
    assert any(name.startswith("cache/evaluation/plots/") and name.endswith(".png") for name in rendered)
    _run(["dvc", "plots", "diff", "HEAD", "visual-only", "-o", str(tmp_path / "html")], repo)
    assert (tmp_path / "html" / "index.html").is_file()

