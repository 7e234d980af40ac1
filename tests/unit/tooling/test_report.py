"""Rendered report blocks: markers, the registry, stale detection, errors, and benchmark records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tooling.report.bench_tables import measured_on
from tooling.report.blocks import BlockError, find_blocks, replace_blocks
from tooling.report.catalog import RENDERERS
from tooling.report.metrics_tables import (
    CALIBRATION_PENDING, calibration_table, pretrain_demo, results_gains, results_headline, results_table,
)
from tooling.bench.record import SIMD_FLAGS, benchmark_record, is_busy, write_record
from tooling.report.registry import Renderer, build_registry
from tooling.report.run import render_docs
from stages.report import command as report_command


def _scores(au: float, expr: float) -> dict:
    return {"au": {"f1": au, "acc": au, "score": au}, "expr": {"f1": expr, "acc": expr, "score": expr}}


def _registry() -> dict[str, Renderer]:
    return build_registry([Renderer("gain", ("m.json",), lambda m: f"gain {m['b'] - m['a']:.2f}")])


def _repo(tmp_path: Path, body: str, a: float = 0.25, b: float = 0.75) -> Path:
    (tmp_path / "m.json").write_text(json.dumps({"a": a, "b": b}))
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\nbefore\n<!-- report:gain -->\n{body}\n<!-- /report:gain -->\nafter\n")
    return doc


def test_render_rewrites_only_the_block_and_check_then_passes(tmp_path: Path) -> None:
    doc = _repo(tmp_path, "gain 9.99")
    stale = render_docs(tmp_path, [doc], _registry(), check=False)
    assert [(s.name, s.line) for s in stale] == [("gain", 4)]
    assert doc.read_text() == "# Title\n\nbefore\n<!-- report:gain -->\ngain 0.50\n<!-- /report:gain -->\nafter\n"
    assert render_docs(tmp_path, [doc], _registry(), check=True) == []


def test_check_names_a_block_whose_source_changed_and_leaves_the_file(tmp_path: Path) -> None:
    doc = _repo(tmp_path, "gain 0.50", b=0.95)
    before = doc.read_text()
    stale = render_docs(tmp_path, [doc], _registry(), check=True)
    assert [str(s) for s in stale] == [f"{doc}:4: block 'gain' differs from m.json"]
    assert doc.read_text() == before


def test_unknown_block_missing_source_and_bad_markers_are_named(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- report:nope -->\n<!-- /report:nope -->\n")
    with pytest.raises(ValueError, match=r"doc.md:1: unknown report block 'nope'"):
        render_docs(tmp_path, [doc], _registry(), check=True)
    doc.write_text("x\n<!-- report:gain -->\n<!-- /report:gain -->\n")
    with pytest.raises(FileNotFoundError, match=r"doc.md:2: block 'gain' renders from .*m.json"):
        render_docs(tmp_path, [doc], _registry(), check=True)
    with pytest.raises(BlockError, match="never closed"):
        find_blocks("<!-- report:a -->\ntext\n", "f.md")
    with pytest.raises(BlockError, match="f.md:2: block 'b' opens inside block 'a'"):
        find_blocks("<!-- report:a -->\n<!-- report:b -->\n", "f.md")
    with pytest.raises(BlockError, match="closes no open block"):
        find_blocks("<!-- /report:a -->\n", "f.md")
    with pytest.raises(BlockError, match="stand alone"):
        find_blocks("see <!-- report:a --> here\n", "f.md")


def test_a_source_missing_a_key_is_one_line_naming_block_file_and_key(tmp_path: Path) -> None:
    doc = _repo(tmp_path, "gain 0.50")
    (tmp_path / "m.json").write_text(json.dumps({"a": 0.25}))
    with pytest.raises(ValueError, match=r"doc.md:4: block 'gain': m.json has no key 'b'"):
        render_docs(tmp_path, [doc], _registry(), check=True)
    (tmp_path / "metrics").mkdir()
    evaluate = _evaluate_json()
    del evaluate["all_frames"]["fusion"]
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(evaluate))
    (tmp_path / "README.md").write_text("<!-- report:results-gains -->\nold\n<!-- /report:results-gains -->\n")
    result = CliRunner().invoke(report_command, ["--root", str(tmp_path), "--check"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert "block 'results-gains': metrics/evaluate.json has no key 'fusion'" in result.output


def test_replace_keeps_blocks_it_was_not_given() -> None:
    text = "<!-- report:a -->\nold a\n<!-- /report:a -->\n<!-- report:b -->\nold b\n<!-- /report:b -->\n"
    assert replace_blocks(text, {"b": "new b"}, "f.md") == text.replace("old b", "new b")


def test_registry_refuses_a_name_twice() -> None:
    renderer = Renderer("x", ("a.json",), lambda a: "")
    with pytest.raises(ValueError, match="'x' is already registered"):
        build_registry([renderer, renderer])


def _evaluate_json() -> dict:
    """An evaluate metrics file: both frame sets, the face frames repeated at the top."""
    face = {"frames": {"au": 1200, "expr": 900}, "visual": _scores(0.5, 0.6), "fusion": _scores(0.55, 0.58),
            "sequence": _scores(0.7, 0.61), "baseline": {**_scores(0.4, 0.2), "expr_majority_class": 4}}
    every = {"frames": {"au": 1300, "expr": 1000}, "visual": _scores(0.4, 0.5), "fusion": _scores(0.45, 0.6),
             "sequence": _scores(0.6, 0.5), "baseline": {**_scores(0.41, 0.21), "expr_majority_class": 0}}
    return {"face_frames": face, "all_frames": every, **{k: face[k] for k in ("visual", "fusion", "sequence")}}


def _va(valence: float, arousal: float) -> dict:
    return {"ccc_valence": valence, "ccc_arousal": arousal, "score": (valence + arousal) / 2}


def _evaluate_json_with_va() -> dict:
    """:func:`_evaluate_json` with VA scores, as evaluate writes them for a manifest with VA labels."""
    evaluate = _evaluate_json()
    for frames, n, ccc in (("face_frames", 800, {"visual": (0.3, 0.2), "fusion": (0.4, 0.2), "sequence": (0.5, 0.3)}),
                           ("all_frames", 850, {"visual": (0.2, 0.1), "fusion": (0.4, 0.3), "sequence": (0.5, 0.4)})):
        evaluate[frames]["frames"]["va"] = n
        for variant, (valence, arousal) in ccc.items():
            evaluate[frames][variant]["va"] = _va(valence, arousal)
        evaluate[frames]["baseline"].update(va=_va(0.0, 0.0), va_mean=[0.1, -0.2])
    return evaluate


def test_gains_are_differences_of_the_source_scores() -> None:
    assert results_gains(_evaluate_json()).startswith(
        "In this one run: Score difference over visual-only on the frames with a face: the sequence model +0.200 (AU) and "
        "+0.010 (EXPR); the per-frame A+V fusion head +0.050 (AU) and -0.020 (EXPR). Score difference over "
        "visual-only on all labelled frames: the sequence model +0.200 (AU) and +0.000 (EXPR); the per-frame "
        "A+V fusion head +0.050 (AU) and +0.100 (EXPR). One run cannot tell")


def test_calibration_table_sets_each_models_own_thresholds_against_one_half() -> None:
    evaluate = _evaluate_json()
    assert calibration_table(evaluate) == CALIBRATION_PENDING   # a file from before calibration
    own = {"visual": 0.55, "fusion": 0.55, "sequence": 0.64}
    evaluate["calibrated"] = {
        "face_frames": {v: {"au": {"f1": value - 0.1, "acc": 0.9, "score": value}} for v, value in own.items()},
        "all_frames": {}, "thresholds": {v: {"strategy": "fixed" if v == "fusion" else "per_au"} for v in own}}
    text = calibration_table(evaluate)
    assert "| visual-only (fine-tuned IResNet) | per_au | 0.500 | 0.450 | 0.500 | 0.550 | +0.050 |" in text
    assert "| A+V fusion head (`train-audio`) | fixed | 0.550 | 0.450 | 0.550 | 0.550 | +0.000 |" in text
    assert "| sequence model (transformer over cached visual + audio windows) | per_au | 0.700 | 0.540 | 0.700 | " \
           "0.640 | -0.060 |" in text
    assert "1,200 AU validation frames with a face crop" in text


def test_results_table_shows_each_frame_set_with_its_own_baseline() -> None:
    text = results_table(_evaluate_json())
    face, every = text.split("**All labelled frames**")
    assert face.startswith("**Frames with a face crop**") and "1,200 AU and 900 EXPR validation frames (no VA scores in this record)" in face
    assert "| trivial baseline (no AU active / always Happiness) | 0.400 |" in face
    assert "| sequence model (transformer over cached visual + audio windows) | 0.700 |" in face
    assert "1,300 AU and 1,000 EXPR validation frames (no VA" in every and "`all_frames`" in every
    assert "| trivial baseline (no AU active / always Neutral) | 0.410 |" in every
    assert "| visual-only (fine-tuned IResNet) | 0.400 |" in every


def test_evaluate_tables_show_va_beside_au_and_expr() -> None:
    text = results_table(_evaluate_json_with_va())
    face, every = text.split("**All labelled frames**")
    assert "| EXPR score | VA CCC valence | VA CCC arousal | VA score |" in face
    assert "1,200 AU, 900 EXPR and 800 VA validation frames," in face
    assert "1,300 AU, 1,000 EXPR and 850 VA validation frames," in every
    assert ("| trivial baseline (no AU active / always Happiness / VA training mean) | 0.400 | 0.400 | 0.400 | "
            "0.200 | 0.200 | 0.200 | 0.000 | 0.000 | 0.000 |") in face
    assert "| sequence model (transformer over cached visual + audio windows) | 0.700 | 0.700 | 0.700 | 0.610 | " \
           "0.610 | 0.610 | 0.500 | 0.300 | 0.400 |" in face
    assert "| A+V fusion head (`train-audio`) | 0.450 | 0.450 | 0.450 | 0.600 | 0.600 | 0.600 | 0.400 | 0.300 | " \
           "0.350 |" in every
    headline = results_headline(_evaluate_json_with_va())
    assert headline.splitlines()[0] == ("| variant | AU F1 | AU acc | AU score | EXPR F1 | EXPR acc | EXPR score | "
                                        "VA score |")
    assert "| visual-only (fine-tuned IResNet) | 0.500 | 0.500 | 0.500 | 0.600 | 0.600 | 0.600 | 0.250 |" in headline
    assert "1,200 AU, 900 EXPR and 800 VA validation frames with a face crop" in headline


def test_evaluate_tables_say_n_a_for_a_record_without_va() -> None:
    # the metrics of a run before VA was scored, or of an Aff-Wild2 copy without VA_Set
    headline = results_headline(_evaluate_json())
    assert "| trivial baseline (no AU active / always Happiness) | 0.400 | 0.400 | 0.400 | 0.200 | 0.200 | " \
           "0.200 | n/a |" in headline
    assert "| sequence model (transformer over cached visual + audio windows) | 0.700 | 0.700 | 0.700 | 0.610 | " \
           "0.610 | 0.610 | n/a |" in headline
    assert "1,200 AU and 900 EXPR validation frames with a face crop (no VA scores in this record)" in headline
    assert "| visual-only (fine-tuned IResNet) | 0.400 | 0.400 | 0.400 | 0.500 | 0.500 | 0.500 | n/a | n/a | n/a |" \
        in results_table(_evaluate_json())   # all frames


def test_gains_add_va_where_both_variants_have_it() -> None:
    assert results_gains(_evaluate_json_with_va()).startswith(
        "In this one run: Score difference over visual-only on the frames with a face: the sequence model +0.200 (AU), "
        "+0.010 (EXPR) and +0.150 (VA); the per-frame A+V fusion head +0.050 (AU), -0.020 (EXPR) and +0.050 (VA). "
        "Score difference over visual-only on all labelled frames: the sequence model +0.200 (AU), +0.000 (EXPR) "
        "and +0.300 (VA); the per-frame A+V fusion head +0.050 (AU), +0.100 (EXPR) and +0.200 (VA).")


@pytest.mark.parametrize("with_va", [False, True])
def test_command_renders_the_evaluate_blocks_with_and_without_va(tmp_path: Path, with_va: bool) -> None:
    (tmp_path / "metrics").mkdir()
    evaluate = _evaluate_json_with_va() if with_va else _evaluate_json()
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(evaluate))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("<!-- report:results -->\n<!-- /report:results -->\n")
    (tmp_path / "README.md").write_text("".join(f"<!-- report:{name} -->\nold\n<!-- /report:{name} -->\n"
                                                for name in ("results-headline", "results-gains")))
    assert CliRunner().invoke(report_command, ["--root", str(tmp_path)]).exit_code == 0
    result = CliRunner().invoke(report_command, ["--root", str(tmp_path), "--check"])
    assert result.exit_code == 0 and "every report block matches" in result.output
    readme = (tmp_path / "README.md").read_text()
    assert ("| 0.250 |" in readme) == with_va and ("| n/a |" in readme) == (not with_va)
    assert ("(VA)" in readme) == with_va
    assert ("VA CCC valence" in (tmp_path / "docs" / "results.md").read_text())


def test_benchmark_record_says_command_machine_and_load(tmp_path: Path) -> None:
    record = benchmark_record("demo", {"fps": 3.0}, ["benchmarks/x.py", "--frames", "6"], threads=2,
                              load_before=[100.0, 1.0, 1.0])
    assert record["command"].endswith("python benchmarks/x.py --frames 6")
    assert record["machine"]["threads"] == 2 and record["machine"]["cpu_model"]
    assert set(record["machine"]["cpu_features"]) <= set(SIMD_FLAGS)
    assert record["busy"] is True   # a load of 100 on any machine of this suite is a busy one
    assert len(record["machine"]["load_average_after"]) == 3 and record["date"].endswith("Z")
    path = write_record(record, tmp_path / "results" / "demo.json")
    assert json.loads(path.read_text()) == record


def test_the_provenance_line_names_the_cpus_simd_features_when_recorded() -> None:
    record = benchmark_record("demo", {"fps": 3.0}, ["benchmarks/x.py"], threads=2, load_before=[0.1, 0.1, 0.1])
    record["machine"].update(cpu_model="AMD EPYC", cpu_features=["avx2", "fma", "avx512_vnni"])
    assert "on AMD EPYC [avx2, fma, avx512_vnni] (" in measured_on(record, "r.json")
    del record["machine"]["cpu_features"]   # a record written before the features were kept
    assert "on AMD EPYC (" in measured_on(record, "r.json")


def test_a_benchmarks_own_threads_do_not_make_it_busy() -> None:
    # two threads on two cores leave a load of about 2 behind them: the benchmark's own, not a busy machine
    assert not is_busy(0.2, 1.9, threads=2, cores=2)
    assert is_busy(0.2, 3.5, threads=2, cores=2)     # more than its own threads: someone else ran too
    assert is_busy(1.5, 0.1, threads=1, cores=2)     # already loaded when it started
    assert not is_busy(0.9, 0.9, threads=0, cores=2)


def test_command_exits_1_naming_the_stale_block(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(_evaluate_json()))
    (tmp_path / "README.md").write_text("<!-- report:results-gains -->\nold\n<!-- /report:results-gains -->\n")
    result = CliRunner().invoke(report_command, ["--root", str(tmp_path), "--check"])
    assert result.exit_code == 1 and "README.md:1: block 'results-gains' differs" in result.output
    assert CliRunner().invoke(report_command, ["--root", str(tmp_path)]).exit_code == 0
    assert "+0.200 (AU)" in (tmp_path / "README.md").read_text()
    assert CliRunner().invoke(report_command, ["--root", str(tmp_path), "--check"]).exit_code == 0


def test_every_registered_source_is_a_json_file_path() -> None:
    for name, renderer in RENDERERS.items():
        assert renderer.name == name and renderer.sources
        assert all(s.endswith(".json") and (s.startswith("metrics/") or s.startswith("benchmarks/results/"))
                   for s in renderer.sources), name


def test_repro_time_gives_the_wall_time_of_make_repro_in_a_fresh_clone() -> None:
    results = {"command_timed": "make PYTHON=python3 repro", "commit": "0123456789abcdef", "wall_seconds": 419.4,
               "venv_bytes": 2_345_000_000, "omp_num_threads": None}
    record = benchmark_record("repro_time", results, ["-m", "benchmarks.repro_time"],
                              threads=2, load_before=[0.1, 0.1, 0.1])
    text = RENDERERS["repro-time"].render(record)
    assert "`make PYTHON=python3 repro` in a fresh clone of commit 0123456789" in text
    assert "**6 min 59 s**" in text and "2.3 GB venv" in text and "benchmarks.repro_time" in text


def test_a_block_whose_record_is_not_measured_yet_says_so(tmp_path: Path) -> None:
    registry = build_registry([Renderer("gain", ("m.json",), lambda m: f"gain {m['b']:.2f}", missing="not measured yet")])
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- report:gain -->\ngain 9.99\n<!-- /report:gain -->\n")
    render_docs(tmp_path, [doc], registry, check=False)
    assert doc.read_text() == "<!-- report:gain -->\nnot measured yet\n<!-- /report:gain -->\n"
    (tmp_path / "m.json").write_text(json.dumps({"b": 0.5}))
    assert [s.name for s in render_docs(tmp_path, [doc], registry, check=True)] == ["gain"]
    render_docs(tmp_path, [doc], registry, check=False)
    assert "gain 0.50" in doc.read_text()


def test_a_block_without_a_missing_text_still_fails_on_a_missing_record(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- report:gain -->\nx\n<!-- /report:gain -->\n")
    with pytest.raises(FileNotFoundError, match="doc.md:1: block 'gain'"):
        render_docs(tmp_path, [doc], _registry(), check=True)


def test_probe_video_table_gives_each_mode_per_video_hour() -> None:
    results = {"video": "synthetic", "frames": 3600, "seconds": 120.0, "bytes": 1, "repeats": 3,
               "cpu_s": {"header": 0.004, "demux": 0.0784, "decode": 0.2444},
               "cpu_s_per_video_hour": {"decode": 7.33, "header": 0.12, "demux": 2.35}}
    record = benchmark_record("probe_video", results, ["benchmarks/probe_video.py", "--seconds", "120"],
                              threads=1, load_before=[0.1, 0.1, 0.1])
    text = RENDERERS["bench-probe-video"].render(record)
    assert "| `header` | 0.12 s | 0.0040 s |" in text and "| `decode` | 7.33 s | 0.2444 s |" in text
    assert text.index("| `header`") < text.index("| `demux`") < text.index("| `decode`")   # cheapest first
    assert "120 s synthetic video (3,600 frames)" in text and "fastest of 3 runs" in text
    assert "python benchmarks/probe_video.py --seconds 120`" in text


def test_embed_audio_table_gives_both_paths_speedup_and_difference_per_backend() -> None:
    def backend(old: float, new: float, steps: float) -> dict:
        return {"window_by_window_frames_per_s": old, "shared_spans_frames_per_s": new,
                "speedup": round(new / old, 2), "max_diff_float16_steps": steps}

    results = {"frames": 300, "fps": 30.0, "context_frames": 51, "batch_size": 64, "tdnn_channels": [128, 256],
               "receptive_field": 15, "threads": 1, "onnx": backend(447.0, 3145.0, 1.0),
               "torch": backend(402.0, 2582.0, 0.0)}
    record = benchmark_record("embed_audio", results, ["benchmarks/embed_audio.py"], threads=1,
                              load_before=[100.0, 1.0, 1.0])
    text = RENDERERS["bench-embed-audio"].render(record)
    assert "| `onnx` | 447 | 3,145 | **7.0×** | 1 |" in text and "| `torch` | 402 | 2,582 | **6.4×** | 0 |" in text
    assert "TDNN channels 128, 256" in text and "busy machine" in text


def test_pack_frames_table_gives_the_store_overhead_per_face() -> None:
    results = {"faces": 1000, "source_jpeg_bytes": 4_000_000, "store_bytes": 4_130_000, "ratio": 1.0325,
               "pack_frames_per_s": 593.2, "pack_workers": 2, "random_read_frames_per_s": 573.2, "random_read_batch": 64}
    record = benchmark_record("pack_frames", results, ["benchmarks/pack_frames.py"], threads=2,
                              load_before=[0.1, 0.1, 0.1])
    text = RENDERERS["bench-pack-frames"].render(record)
    assert "| 1,000 | 4,000,000 | 4,130,000 | **1.032** | 130 bytes | 593 frames/s (2 workers) |" in text


def test_face_identities_table_has_one_row_per_worker_count_and_the_extrapolation() -> None:
    def run(workers: int, wall: float) -> dict:
        results = {"identities": 50, "images": 600, "seed": 0, "bytes_rec": 2_386_008, "images_per_identity": 12,
                   "workers": workers, "seconds_wall": wall, "seconds_cpu": 2.58, "ms_per_image_wall": wall / 0.6,
                   "bytes_folder": 2_363_871, "target_identities": 1000,
                   "target_seconds_wall_extrapolated": wall * 20, "target_bytes_rec_extrapolated": 47_720_160}
        argv = ["benchmarks/face_identities.py", "--identities", "50", "--images", "12"]
        return benchmark_record("face_identities", results, argv + (["--workers", "2"] if workers == 2 else []),
                                threads=workers, load_before=[0.1, 0.1, 0.1])

    text = RENDERERS["bench-face-identities"].render(run(1, 5.41), run(2, 4.99))
    assert "| 1 | 50 x 12 | 5.4 s | 2.6 s | 9.0 ms | 2.4 MB | 2.4 MB | 108 s | 48 MB |" in text
    assert "| 2 | 50 x 12 | 5.0 s |" in text and "extrapolated to 1,000 x 12" in text
    assert "Record: `benchmarks/results/face_identities.json`" in text
    assert "Record: `benchmarks/results/face_identities_workers2.json`" in text and "--workers 2`" in text


def test_margin_memory_table_gives_each_class_count_and_the_allocation_check() -> None:
    def row(classes: int, total_full: float, total_sampled: float) -> dict:
        matrix = classes * 512 * 4
        return {"classes": classes, "weights_plus_momentum_mib": round(2 * matrix / 2**20, 1),
                "weights_bytes": matrix, "grad_bytes": matrix, "momentum_bytes": matrix,
                "full": {"logits_bytes": 128 * classes * 4, "total_mib": total_full},
                "sampled": {"logits_bytes": 128 * (classes // 10) * 4, "total_mib": total_sampled}}

    results = {"dim": 512, "batch": 128, "sample_rate": 0.1, "dtype": "float32",
               "rows": [row(10_000, 83.0, 63.0), row(360_000, 2988.3, 2267.6)],
               "check_10k": {"full": {"matches_computed": True}, "sampled": {"matches_computed": False}}}
    record = benchmark_record("margin_memory", results, ["benchmarks/margin_memory.py"], threads=2,
                              load_before=[0.1, 0.1, 0.1])
    text = RENDERERS["bench-margin-memory"].render(record)
    assert "| 10k | 39.1 MiB | 83.0 MiB | 63.0 MiB | 4.9 MiB | 0.5 MiB |" in text
    assert "| 360k | 1406.2 MiB | 2988.3 MiB | 2267.6 MiB | 175.8 MiB | 17.6 MiB |" in text
    assert "full: match, sampled: DIFFER" in text and "`sample_rate` 0.1" in text
    assert "At 360k the centres, their gradient and their momentum alone take 2.1 GiB" in text


def test_int8_visual_table_gives_both_rates_the_ratio_and_the_agreement() -> None:
    results = {"model": {"backbone": "iresnet18", "width_mult": 1.0}, "faces": 64, "batch_size": 64, "threads": 2,
               "faces_per_s": {"float32": 8.05, "int8": 12.69}, "int8_vs_float32": 1.576,
               "rounds": {"float32": [8.05, 9.79, 6.99], "int8": [12.69, 16.37, 11.89]},
               "agreement": {"embedding_cosine_mean": 0.98012, "embedding_cosine_min": 0.95833,
                             "au_decisions_kept": 0.8802, "expr_argmax_kept": 0.8125},
               "calibration_crops": 64, "file_mb": {"float32": 96.12, "int8": 24.19}, "onnxruntime": "1.31.1"}
    record = benchmark_record("int8_visual", results, ["benchmarks/int8_visual.py", "--faces", "64"], threads=2,
                              load_before=[6.3, 6.0, 5.0])
    text = RENDERERS["bench-int8-visual"].render(record)
    assert "| float32 | 8.05 | 8.05, 9.79, 6.99 | 96.1 MB |" in text
    assert "| int8 | 12.69 | 12.69, 16.37, 11.89 | 24.2 MB |" in text
    assert "**int8 / float32 = 1.58** (medians of 3 alternating rounds)" in text
    assert "cosine similarity of 0.980 on average (0.958 at worst), 88 % of the AU decisions" in text
    assert "81 % of the expression argmaxes. iresnet18 width 1 with random weights, 64 calibration crops" in text
    assert "busy machine" in text and "Record: `benchmarks/results/int8_visual.json`" in text


def test_seed_band_gives_each_arms_range_over_its_runs() -> None:
    from pipeline.ablation import summarize_runs
    from tooling.report.ablation_tables import seed_band

    runs = [{"arm": arm, "draw": None, "seed": seed, "params": {},
             "metrics": {"au.score": au, "expr.score": expr, "mean": (au + expr) / 2}}
            for arm, seed, au, expr in [("visual", 0, 0.70, 0.60), ("visual", 1, 0.74, 0.66), ("visual", 2, 0.72, 0.63),
                                        ("both", 0, 0.80, 0.70), ("both", 1, 0.81, 0.69), ("both", 2, 0.79, 0.74)]]
    doc = {"command": "mmaffect ablate --seeds 3", "finished": "2026-01-01T00:00:00+00:00", "cpu": "CPU X",
           "git_commit": "0123456789abcdef", "seed_params": ["train_sequence.seed"], "runs": runs,
           **summarize_runs(runs, ["visual"])}
    text = seed_band(doc)
    assert "- `visual`, 3 runs: AU 0.700–0.740 (range 0.040); EXPR 0.600–0.660 (range 0.060)" in text
    assert "- `both`, 3 runs: AU 0.790–0.810 (range 0.020); EXPR 0.690–0.740 (range 0.050)" in text
    assert "both − visual (paired)" in text and "(train_sequence.seed varied together" in text
    # both − visual: AU +0.10, +0.07, +0.07 (beyond a 3-pair t limit); EXPR +0.10, +0.03, +0.11 (within)
    assert "- `both − visual` over 3 pairs (95 %, paired t-test): AU beyond the noise; EXPR within the noise" in text
    assert text.endswith("on CPU X at commit 0123456789.")


def test_draw_table_shows_each_arm_draw_by_draw_and_the_verdicts() -> None:
    from pipeline.ablation import summarize_runs
    from tooling.report.ablation_tables import draw_table

    runs = [{"arm": arm, "draw": draw, "seed": None, "params": {},
             "metrics": {"au.score": au, "expr.score": expr, "mean": (au + expr) / 2}}
            for arm, draw, au, expr in [("visual", 0, 0.70, 0.60), ("visual", 1, 0.74, 0.66), ("visual", 2, 0.72, 0.63),
                                        ("both", 0, 0.80, 0.70), ("both", 1, 0.81, 0.69)]]
    doc = {"command": "mmaffect ablate --data-seeds 0,1,2", "finished": "2026-01-01T00:00:00+00:00", "cpu": "CPU X",
           "git_commit": "0123456789abcdef", "runs": runs, **summarize_runs(runs, ["visual"])}
    text = draw_table(doc)
    assert "| arm | draw 0 (AU / EXPR) | draw 1 (AU / EXPR) | draw 2 (AU / EXPR) |" in text
    assert "| visual | 0.700 / 0.600 | 0.740 / 0.660 | 0.720 / 0.630 |" in text
    assert "| both | 0.800 / 0.700 | 0.810 / 0.690 | – |" in text  # a draw the arm has no run for
    # both − visual over the 2 shared draws: AU +0.10, +0.07 (t limit 12.7 * 0.021 / 1.41 = 0.19: within)
    assert "- `both − visual` over 2 pairs (95 %, paired t-test): AU within the noise; EXPR within the noise" in text
    assert text.endswith("on CPU X at commit 0123456789.")


def test_noise_verdict_follows_the_paired_t_limit() -> None:
    from tooling.report.ablation_tables import noise_verdict

    # t(0.975, 2) = 4.303: with sd 0.01 over 3 pairs the limit is 0.0248
    assert noise_verdict(0.026, 0.01, 3) == "beyond the noise"
    assert noise_verdict(-0.024, 0.01, 3) == "within the noise"
    assert noise_verdict(0.5, None, 1) == "one pair: no spread to judge by"


def _frame_sets(face: float, every: float) -> dict:
    return {"face_frames": {**_scores(face, face), "score": face},
            "all_frames": {**_scores(every, every), "score": every}}


def test_trainer_blocks_show_both_frame_sets_and_how_the_epoch_was_kept() -> None:
    frames = {"au_train": 900, "expr_train": 800, "val": 400, "au_val": 300, "expr_val": 250, "selection": 120,
              "au_selection": 100, "expr_selection": 90}
    visual = {"validation": _frame_sets(0.6, 0.55), "best_epoch": 3, "epochs": 5, "frames": frames,
              "baseline": {**_frame_sets(0.3, 0.25), "expr_majority_class": 0},
              "selection": {"mode": "holdout", "videos": ["v1"]}}
    text = RENDERERS["visual-demo"].render(visual)
    assert "fine-tuned (demo params), face frames | 0.600" in text and "all frames | 0.550" in text
    assert "always Neutral, all frames | 0.250" in text and "120 held-out selection frames" in text
    assert "best on the held-out training videos" in text
    audio = {"validation": _frame_sets(0.7, 0.65), "visual_only": _frame_sets(0.6, 0.5), "best_epoch": 2,
             "epochs": 4, "selection": {"mode": "last"}}
    text = RENDERERS["audio-demo"].render(audio)
    assert "+0.100 (AU), +0.100 (EXPR) on face frames; +0.150 (AU), +0.150 (EXPR) on all frames" in text
    assert "Kept epoch: the last epoch." in text
    # a file of the layout before selection existed: one frame set, selected on validation
    legacy = {**_scores(0.6, 0.6), "score": 0.6, "visual_only": {**_scores(0.5, 0.5), "score": 0.5},
              "best_epoch": 2, "epochs": 4}
    text = RENDERERS["audio-demo"].render(legacy)
    assert "on all frames" in text and "face frames" not in text and "optimistic" in text


def test_visual_throughput_of_a_busy_machine_shows_no_rates() -> None:
    backbone = {"params_million": 24.0, "train_images_per_s": 0.48, "embed_torch_faces_per_s": 1.35,
                "embed_onnxruntime_faces_per_s": 1.61, "onnx_max_abs_diff": 1.1e-5}
    results = {"results": {"iresnet18": backbone}, "batch": 32, "dtype": "float32", "torch": "2", "onnxruntime": "1",
               "device": "cpu"}
    busy = benchmark_record("visual_throughput", results, ["-m", "benchmarks.visual_throughput"], threads=2,
                            load_before=[16.5, 9.0, 5.0])
    assert busy["busy"]
    text = RENDERERS["bench-visual-throughput"].render(busy)
    assert "Not measured on an idle machine yet" in text and "16.50" in text and "1.61" not in text
    idle = {**busy, "busy": False}   # the load after the run is this machine's, so set the verdict
    assert "| iresnet18 | 24.0 M | 0.48 |" in RENDERERS["bench-visual-throughput"].render(idle)


def test_pretrain_demo_reads_the_backbone_against_its_start_and_chance() -> None:
    pretrain = {"verification": {"accuracy": 0.8683, "tar_at_far": 0.3012, "far": 0.001},
                "initial": {"accuracy": 0.6398, "tar_at_far": 0.005, "far": 0.001}, "best_epoch": 2, "epochs": 2,
                "history": [{"loss": 10.2954}, {"loss": 7.3477}], "chance_loss": 11.02,
                "data": {"train_identities": 950, "holdout_identities": 50, "pairs": 6000}}
    text = pretrain_demo(pretrain)
    assert "held-out pair accuracy **0.868** (0.640 at its start; TAR at FAR 0.001 0.30)" in text
    assert "epoch 2 of 2 kept; margin-softmax loss per epoch 10.3, 7.3 against a chance loss of 11.0;" in text
    assert "950 training and 50 held-out identities, 6,000 pairs." in text
    given = {**pretrain, "history": [], "epochs": 0, "best_epoch": 0}
    assert "loss per epoch none (published as given)" in pretrain_demo(given)
