"""Every report block name, the JSON files it renders from, and its renderer: one line per block."""

from __future__ import annotations

from tooling.report import ablation_tables, bench_tables, full_size_tables, metrics_tables, study_tables
from tooling.report.registry import Renderer, build_registry

RENDERERS: dict[str, Renderer] = build_registry([
    Renderer("results", ("metrics/evaluate.json",), metrics_tables.results_table),
    Renderer("results-headline", ("metrics/evaluate.json",), metrics_tables.results_headline),
    Renderer("results-gains", ("metrics/evaluate.json",), metrics_tables.results_gains),
    Renderer("calibration", ("metrics/evaluate.json",), metrics_tables.calibration_table),
    Renderer("visual-demo", ("metrics/visual.json",), metrics_tables.visual_demo),
    Renderer("audio-demo", ("metrics/audio.json",), metrics_tables.audio_demo),
    Renderer("bench-visual-throughput", ("benchmarks/results/visual_throughput.json",), bench_tables.visual_throughput),
    Renderer("bench-audio-tdnn", ("benchmarks/results/audio_tdnn.json",), bench_tables.audio_tdnn),
    Renderer("bench-face-alignment", ("benchmarks/results/face_alignment.json",), bench_tables.face_alignment),
    Renderer("bench-face-orientation", ("benchmarks/results/face_orientation.json",), bench_tables.face_orientation),
    Renderer("bench-face-tracking", ("benchmarks/results/face_tracking.json",), bench_tables.face_tracking),
    Renderer("bench-predict-speed", ("benchmarks/results/predict_speed.json",), bench_tables.predict_speed),
    Renderer("bench-synth", ("benchmarks/results/synth.json",), bench_tables.synth),
    Renderer("bench-pack-frames", ("benchmarks/results/pack_frames.json",), bench_tables.pack_frames),
    Renderer("bench-probe-video", ("benchmarks/results/probe_video.json",), bench_tables.probe_video),
    Renderer("bench-embed-audio", ("benchmarks/results/embed_audio.json",), bench_tables.embed_audio),
    Renderer("bench-embed-visual", ("benchmarks/results/embed_visual.json",), bench_tables.embed_visual),
    Renderer("bench-sequence-cache", ("benchmarks/results/sequence_cache.json",), bench_tables.sequence_cache),
    Renderer("bench-sequence-loader", ("benchmarks/results/sequence_loader.json",), bench_tables.sequence_loader),
    Renderer("bench-face-identities", ("benchmarks/results/face_identities.json",
                                       "benchmarks/results/face_identities_workers2.json"), bench_tables.face_identities),
    Renderer("bench-pretrain-face", ("benchmarks/results/pretrain_face.json",), bench_tables.pretrain_face_cost),
    Renderer("bench-pretrain-probe", ("benchmarks/results/pretrain_probe.json",), bench_tables.pretrain_probe),
    Renderer("bench-margin-memory", ("benchmarks/results/margin_memory.json",), bench_tables.margin_memory),
    Renderer("bench-int8", ("benchmarks/results/int8.json",), bench_tables.int8),
    Renderer("bench-int8-avx512", ("benchmarks/results/int8_avx512.json",), bench_tables.int8_avx512),
    Renderer("bench-int8-visual", ("benchmarks/results/int8_visual.json",), bench_tables.int8_visual),
    Renderer("bench-low-latency", ("benchmarks/results/low_latency.json",), bench_tables.low_latency),
    Renderer("ablation-draws", ("benchmarks/results/ablation_draws.json",), ablation_tables.draw_table_sequence),
    Renderer("ablation-pretrain", ("benchmarks/results/ablation_pretrain.json",), ablation_tables.draw_table),
    Renderer("pretrain-study", (study_tables.SOURCE,), study_tables.study_table, missing=study_tables.MISSING),
    Renderer("pretrain-study-headline", (study_tables.SOURCE,), study_tables.study_headline,
             missing=study_tables.HEADLINE_MISSING),
    Renderer("ablation-training-seeds", ("benchmarks/results/ablation_training_seeds.json",), ablation_tables.seed_band_sequence),
    Renderer("cross-cpu", ("benchmarks/results/cross_cpu.json",), metrics_tables.cross_cpu),
    Renderer("repro-time", ("benchmarks/results/repro_time.json",), bench_tables.repro_time,
             missing=bench_tables.REPRO_TIME_MISSING),
    Renderer("full-size-bill", (full_size_tables.SOURCE,), full_size_tables.bill_table),
    Renderer("full-size-summary", (full_size_tables.SOURCE,), full_size_tables.bill_summary),
    Renderer("full-size-inputs", (full_size_tables.SOURCE,), full_size_tables.bill_inputs),
])
