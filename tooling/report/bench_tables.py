"""Renderers of benchmark records (``benchmarks/results/*.json``, see :mod:`tooling.bench.record`).

Every table ends with the line that says how, when and on what machine it was measured, and whether
other processes were using the cores at the time.
"""

from __future__ import annotations

from typing import Any

from tooling.report.markdown import count, rate, table


def cpu_label(machine: dict[str, Any]) -> str:
    """A record's CPU: its model, with its SIMD features where the record keeps them (older ones do not)."""
    features = machine.get("cpu_features")
    return f"{machine['cpu_model']} [{', '.join(features)}]" if features else machine["cpu_model"]


def measured_on(record: dict[str, Any], source: str) -> str:
    """The provenance line of a benchmark record: command, date, CPU, threads, load, file."""
    machine = record["machine"]
    before, after = machine["load_average_before"][0], machine["load_average_after"][0]
    load = f"1-minute load average {before:.2f} before, {after:.2f} after"
    busy = (": a busy machine, other processes shared the cores, so these are not idle-machine figures"
            if record["busy"] else "")
    return (f"Measured {record['date']} with `{record['command']}` on {cpu_label(machine)} "
            f"({machine['cpu_count']} cores, threads: {machine['threads']}; {load}{busy}). "
            f"Record: `{source}`.")


def face_tracking(record: dict[str, Any]) -> str:
    """docs/predict.md: full-frame detection vs the tracker."""
    r = record["results"]
    size = "×".join(str(v) for v in r["frame_size"])
    rows = [
        [f"face detection with landmarks on every frame, {size} frames", f"{rate(r['full_search_fps'])} frames/s",
         f"face found in {r['full_search_frames_with_face']}/{r['frames']} frames"],
        [f"face tracker (detection every {r.get('detect_every', '?')} frames, landmarks followed between)", f"{rate(r['tracker_fps'])} frames/s "
         f"({r['speedup']:.1f}× faster)", f"face kept in {r['tracker_frames_with_face']}/{r['frames']} frames"],
    ]
    return table(("what", "throughput", "faces"), rows) + "\n\n" + measured_on(record, "benchmarks/results/face_tracking.json")


def face_alignment(record: dict[str, Any]) -> str:
    """docs/predict.md: faces found and alignment errors on moving real photographs."""
    r = record["results"]
    rows = [
        [name.replace("_", " ").title(), f"{r[name]['found']}/{r['frames']}", f"{r[name]['median_error_px']:.2f} px",
         f"{r[name]['max_error_px']:.2f} px", f"{r[name]['within_3px']}/{r['frames']}",
         f"{r[name]['template_residual_px']:.2f} px"]
        for name in ("astronaut", "grace_hopper")
    ]
    heading = ("photograph", "frames with the face", "median error", "largest error", "frames within 3 px",
               "still's distance from the template")
    return table(heading, rows) + "\n\n" + measured_on(record, "benchmarks/results/face_alignment.json")


def face_orientation(record: dict[str, Any]) -> str:
    """docs/predict.md: frames with the face per viewed size and display rotation, now and as frames were searched before."""
    r = record["results"]
    cells: dict[tuple[str, int], list[int]] = {}
    for video in r["videos"]:
        found = cells.setdefault((video["size"], video["display_rotation"]), [0, 0, 0])
        found[0] += video["found"]
        found[1] += video["found_as_stored"]
        found[2] += video["frames"]
    rows = [[size.replace("x", "×"), "none" if rotation == 0 else f"{rotation}°", f"{now}/{frames}",
             f"{before}/{frames}"] for (size, rotation), (now, before, frames) in cells.items()]
    heading = ("viewed size", "display rotation", "frames with the face", "PyAV's array as stored (before)")
    return table(heading, rows) + "\n\n" + measured_on(record, "benchmarks/results/face_orientation.json")


_PREDICT_PARTS = {
    "decode": "decode (PyAV, to RGB)",
    "detection": "face detection (HOG search and the landmarks of what it finds)",
    "landmarks_alignment": "landmarks + alignment (faces followed between searches, crops, ids)",
    "embedding": "embedding (`visual.onnx`)",
    "audio": "audio (decode, log-mel, `tdnn.onnx`)",
    "sequence": "sequence (`sequence.onnx`)",
}


def predict_speed(record: dict[str, Any]) -> str:
    """docs/predict.md: frames/s and share of each part of predict at 720p and 1080p, end to end, memory on 4K."""
    r = record["results"]
    sizes = sorted((key for key in r if key.endswith("p") and "parts" in r[key]), key=lambda key: int(key[:-1]))
    heading = ["part"] + [f"{size} {what}" for size in sizes for what in ("frames/s", "share", "CPU frames/s")]
    rows = [[label] + [cell for size in sizes for cell in (
        rate(r[size]["parts"][part]["fps"]), f"{100 * r[size]['parts'][part]['share']:.0f} %",
        rate(r[size]["parts"][part]["cpu_fps"]))] for part, label in _PREDICT_PARTS.items()]
    rows.append(["all parts"] + [cell for size in sizes
                                 for cell in (rate(r[size]["parts_fps"]), "100 %", rate(r[size]["parts_cpu_fps"]))])
    for name, label in (("default", "end to end, `predict_video`"),
                        ("baseline", "end to end, before (full-resolution search every 5 frames)")):
        rows.append([label] + [cell for size in sizes for cell in (
            rate(r[size]["end_to_end"][name]["fps"]), "", rate(r[size]["end_to_end"][name]["cpu_fps"]))])
    settings, baseline = r["settings"], r["baseline_settings"]
    notes = [
        f"{r['frames']} frames at {r['fps']} fps per video, the face {100 * r['face_share_of_height']:.0f} % of the "
        f"frame's height turning by up to {r['max_angle']:g}°; settings `min_face_fraction: "
        f"{settings['min_face_fraction']:g}`, `detect_every: {settings['detect_every']}` (before: "
        f"{baseline['min_face_fraction']:g}, {baseline['detect_every']}); onnxruntime threads: {r['threads']}."]
    for size in sizes:
        e2e = r[size]["end_to_end"]
        notes.append(
            f"{size}: face found in {r[size]['frames_with_face']}/{r['frames']} frames, {r[size]['searches']} searches; "
            f"end to end now / before = {e2e['default_over_baseline']:.2f} by wall time, "
            f"{e2e['default_over_baseline_cpu']:.2f} by CPU time (medians of {len(e2e['default']['rounds_fps'])} "
            f"alternating rounds).")
    memory = sorted(r.get("2160p_memory", {}).values(), key=lambda m: m["frames"])
    if memory:
        notes.append("3840×2160: peak resident memory of a process predicting " + "; ".join(
            f"{m['frames']} frames: {count(m['peak_mib'])} MiB" for m in memory)
            + f" ({count(memory[0]['models_loaded_mib'])} MiB once the models are loaded).")
    return (table(heading, rows) + "\n\n" + " ".join(notes) + " "
            + measured_on(record, "benchmarks/results/predict_speed.json"))


def audio_tdnn(record: dict[str, Any]) -> str:
    """docs/audio.md: TDNN inference and training rates, and the log-mel rate."""
    r = record["results"]
    train = r["training_frames_per_s"]
    segment_key = next(k for k in train if k != "segments_of_1")
    rows = [
        ["inference, window by window (`forward`, what `tdnn.onnx` sees)", rate(r["inference_frames_per_s"]["per_window"])],
        ["inference, shared spans (`embed_frames`)", rate(r["inference_frames_per_s"]["shared_spans"])],
        [f"training step, {segment_key.replace('_', ' ')} frames", rate(train[segment_key])],
        ["training step, one window per frame", rate(train["segments_of_1"])],
        ["log-mel front end (seconds of audio per second)", rate(r["logmel_audio_seconds_per_s"])],
    ]
    channels = ", ".join(str(c) for c in r["tdnn"]["channels"])
    header = (f"TDNN channels {channels}, {r['context_frames']} mel frames per window, {r['fps']:g} fps", "frames/s")
    return table(header, rows) + "\n\n" + measured_on(record, "benchmarks/results/audio_tdnn.json")


def synth(record: dict[str, Any]) -> str:
    """docs/synthetic.md: generation time and size of one preset, and the detector's face rate."""
    r = record["results"]
    mb = (r["bytes_videos"] + r["bytes_crops"] + r["bytes_bp4d"]) / 1e6
    detected = f"{100 * r['detector_face_rate']:.1f} %" if "detector_face_rate" in r else "not run"
    rows = [[r["preset"], f"{r['videos']} / {count(r['frames'])} / {count(r['crops'])} / {count(r['bp4d_frames'])}",
             r["workers"], f"{r['seconds_wall']:.1f} s", f"{r['seconds_cpu_main_process']:.1f} s",
             f"{r['ms_per_frame_wall']:.1f} ms", f"{mb:.1f} MB", detected]]
    header = ("preset", "videos / video frames / crops / BP4D frames", "workers", "wall", "CPU (main process)",
              "wall per frame", "bytes written", "faces found by the detector")
    return table(header, rows) + "\n\n" + measured_on(record, "benchmarks/results/synth.json")


def pack_frames(record: dict[str, Any]) -> str:
    """docs/data.md: frame store size against the source JPEGs, pack and random-read rates."""
    r = record["results"]
    overhead = (r["store_bytes"] - r["source_jpeg_bytes"]) / r["faces"]
    rows = [[count(r["faces"]), count(r["source_jpeg_bytes"]), count(r["store_bytes"]), f"**{r['ratio']:.3f}**",
             f"{overhead:.0f} bytes", f"{rate(r['pack_frames_per_s'])} frames/s ({r['pack_workers']} workers)",
             f"{rate(r['random_read_frames_per_s'])} frames/s (batches of {r['random_read_batch']})"]]
    header = ("faces", "source JPEG bytes", "store bytes", "ratio", "store bytes over the JPEGs, per face",
              "pack rate", "random read")
    return table(header, rows) + "\n\n" + measured_on(record, "benchmarks/results/pack_frames.json")


def embed_visual(record: dict[str, Any]) -> str:
    """docs/embeddings.md: embed-visual throughput against the pure model rate."""
    r = record["results"]
    interleaved = r["interleaved"]
    ratio = next(v for k, v in interleaved.items() if k.endswith("_vs_pure"))
    rows = [
        ["pure model rate (onnxruntime on pre-decoded batches)", f"{rate(r['pure_faces_per_s'])} faces/s"],
        ["decode-ahead loop vs the pure model, alternated subject by subject", f"**{ratio:.2f}**"],
        ["inside the stage's dask tasks (JPEG decode, model, Zarr write)",
         f"{rate(r['task_faces_per_s'])} faces/s: **{r['task_vs_pure']:.2f}** of the pure rate; model "
         f"{100 * r['task_model_share']:.0f} % of task time, waiting for decoded batches "
         f"{100 * r['task_decode_wait_share']:.1f} %"],
        ["whole `embed_visual` call (cluster start and worker imports included)",
         f"{rate(r['wall_faces_per_s'])} faces/s ({count(r['faces'])} faces in {r['wall_seconds']:.1f} s)"],
        *[[f"`{name}.zarr` on disk", _bytes_per_frame(r[f"{name}_store"])] for name in ("visual", "audio")],
    ]
    header = (f"{r['backbone']}, batch {r['batch_size']}, {r['workers']} worker(s) × {r['threads']} thread(s)", "figure")
    return table(header, rows) + "\n\n" + measured_on(record, "benchmarks/results/embed_visual.json")


def _bytes_per_frame(store: dict[str, Any]) -> str:
    by_array = ", ".join(f"{name} {round(v)}" for name, v in store["bytes_per_frame_by_array"].items())
    return f"{round(store['bytes_per_frame'])} bytes/frame: {by_array}"


def sequence_cache(record: dict[str, Any]) -> str:
    """docs/sequence.md: a train-sequence epoch from the cache against recomputing the embeddings."""
    r = record["results"]["cache_vs_recompute"]
    recompute = r["recompute"]
    rows = [
        [f"train-sequence epoch from the cache ({count(r['frames'])} frames)",
         f"{r['cached_epoch_s']:.2f} s (training + whole-video validation); cache load {r['cache_load_s']:.2f} s"],
        ["the same epoch recomputing every frame's embeddings once",
         f"{r['recompute_epoch_s_extrapolated']:,.0f} s extrapolated ({recompute['visual_s_per_frame']:.4f} s/frame "
         f"visual, {recompute['audio_s_per_frame']:.4f} s/frame audio)"],
        ["speed-up of the cache", f"**{r['speedup']:.0f}x** (goal {r['goal']})"],
    ]
    return table(("what", "figure"), rows) + "\n\n" + measured_on(record, "benchmarks/results/sequence_cache.json")


def sequence_loader(record: dict[str, Any]) -> str:
    """docs/sequence.md: the window loader against slicing one in-RAM array."""
    r = record["results"]["loader"]
    rows = [
        [f"window loader (float16 batches of {r['batch_size']} x {r['window']} x {r['feature_dim']})",
         f"{rate(r['loader_windows_per_s'])} windows/s"],
        ["slicing the same windows from one in-RAM float16 / float32 array",
         f"{rate(r['numpy_slicing_float16_windows_per_s'])} / {rate(r['numpy_slicing_float32_windows_per_s'])} windows/s"],
        ["loader vs slicing", f"**{r['ratio_vs_float16_slicing']:.2f}x** (float16), "
         f"{r['ratio_vs_float32_slicing']:.2f}x (float32); goal {r['goal']}"],
    ]
    return table(("what", "figure"), rows) + "\n\n" + measured_on(record, "benchmarks/results/sequence_loader.json")


def _largest(diff: float | dict[str, float]) -> float:
    """The largest ONNX-vs-torch difference, over the outputs when given per output."""
    return max(diff.values()) if isinstance(diff, dict) else diff


def visual_throughput(record: dict[str, Any]) -> str:
    """docs/visual.md: training and embedding rates per backbone, torch eager and onnxruntime.

    Rates only mean something measured on an idle machine (a busy one slowed them many times over), so
    a busy record renders as a line saying so and how to measure them, not as a table.
    """
    r = record["results"]
    if record["busy"]:
        machine = record["machine"]
        return (f"Not measured on an idle machine yet: the committed record "
                f"(`benchmarks/results/visual_throughput.json`, {record['date']}) was taken while other processes "
                f"shared the cores (1-minute load average {machine['load_average_before'][0]:.2f} before on "
                f"{machine['cpu_count']} cores), so its rates are not shown. Rerun the command above on an idle "
                "machine, then `mmaffect report`.")
    rows = [[name, f"{b['params_million']:.1f} M", rate(b["train_images_per_s"]), rate(b["embed_torch_faces_per_s"]),
             rate(b["embed_onnxruntime_faces_per_s"]), f"{_largest(b['onnx_max_abs_diff']):.1e}"]
            for name, b in r["results"].items()]
    header = ("backbone", "parameters", "train images/s", "embed faces/s, torch eager",
              "embed faces/s, onnxruntime", "ONNX max abs diff")
    settings = (f"Batch {r['batch']}, {r['dtype']}, torch {r['torch']}, onnxruntime {r['onnxruntime']}, "
                f"device {r['device']}.")
    return table(header, rows) + "\n\n" + settings + " " + measured_on(record, "benchmarks/results/visual_throughput.json")


def repro_time(record: dict[str, Any]) -> str:
    """README: wall time of ``make repro`` in a fresh clone (install included) and the venv it installs."""
    r = record["results"]
    minutes, seconds = divmod(round(r["wall_seconds"]), 60)
    return (f"`{r['command_timed']}` in a fresh clone of commit {r['commit'][:10]} took **{minutes} min {seconds:02d} s** "
            f"of wall time, the install of a {r['venv_bytes'] / 1e9:.1f} GB venv included. "
            + measured_on(record, "benchmarks/results/repro_time.json"))


REPRO_TIME_MISSING = ("The wall time of `make repro` in a fresh clone has not been measured on this commit's "
                      "pipeline yet: `python -m benchmarks.repro_time` on an idle machine writes "
                      "`benchmarks/results/repro_time.json`, and `mmaffect report` renders it here, with the size of the "
                      "venv the install writes.")


def probe_video(record: dict[str, Any]) -> str:
    """docs/data.md: CPU seconds per hour of video of each ``prepare.frame_count`` mode."""
    r = record["results"]
    rows = [[f"`{mode}`", f"{seconds:.2f} s", f"{r['cpu_s'][mode]:.4f} s"]
            for mode, seconds in sorted(r["cpu_s_per_video_hour"].items(), key=lambda item: item[1])]
    header = ("`frame_count`", "CPU seconds per hour of video",
              f"CPU seconds for the {r['seconds']:g} s {r['video']} video ({count(r['frames'])} frames)")
    repeats = f"The fastest of {r['repeats']} runs of `probe_video` per mode (process time). "
    return table(header, rows) + "\n\n" + repeats + measured_on(record, "benchmarks/results/probe_video.json")


def embed_audio(record: dict[str, Any]) -> str:
    """docs/embeddings.md: embed-audio's TDNN pass window by window vs shared spans, per backend."""
    r = record["results"]
    backends = [name for name in ("onnx", "torch") if name in r]
    rows = [[f"`{name}`", rate(r[name]["window_by_window_frames_per_s"]), rate(r[name]["shared_spans_frames_per_s"]),
             f"**{r[name]['speedup']:.1f}×**", f"{r[name]['max_diff_float16_steps']:g}"] for name in backends]
    channels = ", ".join(str(c) for c in r["tdnn_channels"])
    header = ("backend", "window by window, frames/s", "shared spans, frames/s", "speed-up",
              "largest difference, float16 steps")
    settings = (f"{count(r['frames'])} frames at {r['fps']:g} fps, {r['context_frames']} mel frames per window, "
                f"TDNN channels {channels}, batch size {r['batch_size']}, {r['threads']} thread.")
    return table(header, rows) + "\n\n" + settings + " " + measured_on(record, "benchmarks/results/embed_audio.json")


def face_identities(*records: dict[str, Any]) -> str:
    """docs/pretrain.md: time and bytes of a small face-identity set, extrapolated to the demo size.

    One record per ``--workers`` run, rendered one row each in the order given.
    """
    rows, notes = [], []
    for record in records:
        r = record["results"]
        rows.append([
            f"{r['workers']}", f"{count(r['identities'])} x {r['images_per_identity']}",
            f"{r['seconds_wall']:.1f} s", f"{r['seconds_cpu']:.1f} s", f"{r['ms_per_image_wall']:.1f} ms",
            f"{r['bytes_rec'] / 1e6:.1f} MB", f"{r['bytes_folder'] / 1e6:.1f} MB",
            f"{r['target_seconds_wall_extrapolated']:.0f} s", f"{r['target_bytes_rec_extrapolated'] / 1e6:.0f} MB",
        ])
        notes.append(measured_on(record, _face_identities_source(r["workers"])))
    target = records[0]["results"]
    header = ("workers", "identities x images", "wall", "CPU of the generating process", "wall per image",
              "packed (.rec)", "folder (JPEG)",
              f"wall, extrapolated to {count(target['target_identities'])} x {target['images_per_identity']}",
              "packed, extrapolated")
    return table(header, rows) + "\n\n" + "\n\n".join(notes)


def _face_identities_source(workers: int) -> str:
    # benchmarks/face_identities.py names its record by the worker count (see its --out default).
    suffix = "" if workers == 1 else f"_workers{workers}"
    return f"benchmarks/results/face_identities{suffix}.json"


def margin_memory(record: dict[str, Any]) -> str:
    """docs/pretrain.md: class-layer memory of the margin head, full softmax vs Partial-FC sampling."""
    r = record["results"]
    mib = float(1 << 20)
    rows = [[f"{row['classes'] // 1000}k", f"{row['weights_plus_momentum_mib']:.1f} MiB",
             f"{row['full']['total_mib']:.1f} MiB", f"{row['sampled']['total_mib']:.1f} MiB",
             f"{row['full']['logits_bytes'] / mib:.1f} MiB", f"{row['sampled']['logits_bytes'] / mib:.1f} MiB"]
            for row in r["rows"]]
    header = ("identities", "centres + SGD momentum", "+ dense gradient: total, full softmax", "total, sampled",
              "logits, full", "logits, sampled")
    check = r["check_10k"]
    verdict = ", ".join(f"{mode}: {'match' if check[mode]['matches_computed'] else 'DIFFER'}" for mode in check)
    settings = (f"{r['dim']}-d, {r['dtype']}, batch {r['batch']}, `sample_rate` {r['sample_rate']:g}. Sizes computed "
                f"from the shapes; the {r['rows'][0]['classes'] // 1000}k head allocated for real, one SGD step, "
                f"tensor sizes against the computed ones: {verdict}.")
    largest = r["rows"][-1]
    fixed = (largest["weights_bytes"] + largest["grad_bytes"] + largest["momentum_bytes"]) / float(1 << 30)
    fixed_line = (f"At {largest['classes'] // 1000}k the centres, their gradient and their momentum alone take "
                  f"{fixed:.1f} GiB whatever the sample rate.")
    return (table(header, rows) + "\n\n" + settings + " " + fixed_line + " "
            + measured_on(record, "benchmarks/results/margin_memory.json"))


def int8_visual(record: dict[str, Any]) -> str:
    """docs/visual.md: int8 against float32 visual embedding, rates of both, their ratio and agreement."""
    r = record["results"]
    rounds = {name: ", ".join(f"{v:.2f}" for v in values) for name, values in r["rounds"].items()}
    agree = r["agreement"]
    rows = [[name, f"{r['faces_per_s'][name]:.2f}", rounds[name], f"{r['file_mb'][name]:.1f} MB"]
            for name in ("float32", "int8")]
    model = r["model"]
    model_text = (f"{model['backbone']} width {model['width_mult']:g} with random weights" if isinstance(model, dict)
                  else f"`{model}`")
    settings = (f"**int8 / float32 = {r['int8_vs_float32']:.2f}** (medians of {len(r['rounds']['int8'])} alternating "
                f"rounds). On the same {r['faces']} faces int8 keeps an embedding cosine similarity of "
                f"{agree['embedding_cosine_mean']:.3f} on average ({agree['embedding_cosine_min']:.3f} at worst), "
                f"{100 * agree['au_decisions_kept']:.0f} % of the AU decisions and "
                f"{100 * agree['expr_argmax_kept']:.0f} % of the expression argmaxes. {model_text}, "
                f"{r['calibration_crops']} calibration crops, batch {r['batch_size']}, onnxruntime {r['onnxruntime']}.")
    header = ("model", "faces/s (median)", "faces/s per round", "model file")
    return table(header, rows) + "\n\n" + settings + " " + measured_on(record, "benchmarks/results/int8_visual.json")


def low_latency(record: dict[str, Any]) -> str:
    """docs/predict.md: demo scores of the causal modes against the offline one, and their latency."""
    r = record["results"]
    lat = r["latency"]
    modes = {
        "offline": "offline (default): overlapping windows averaged over the whole video",
        "causal_pad": "`--low-latency`: window ending on t, first frames padded",
        "causal_short": "causal, first frames run on their history [0, t] alone",
        "causal_pad_causal_audio": "`--low-latency --causal-audio`: audio delayed",
    }
    scores = r["scores"]["sequence.onnx"]
    rows = [[label, *(f"{scores[mode][frames][task]['score']:.4f}" for frames in ("face_frames", "all_frames")
                      for task in ("au", "expr"))] for mode, label in modes.items()]
    heading = ("sequence mode", "AU score (face frames)", "EXPR score (face frames)", "AU score (all frames)",
               "EXPR score (all frames)")
    delays = ", ".join(f"{frames} frames at {fps} fps" for fps, frames in lat["causal_audio_delay_frames"].items())
    video_ahead = lat["video_lookahead_frames"]
    equal = {True: "equals", False: "does not equal", None: "was not compared with"}[r["offline_equals_metrics_json"]]
    notes = (
        f"{r['subjects']} validation subjects, {count(r['frames'])} frames; window {r['window']}, stride "
        f"{r['stride']}, modalities `{r['modalities']}`. The offline score of `evaluate`'s own path (`model.pt`) "
        f"{equal} `{r['metrics_json']}`. Look-ahead: offline, {video_ahead['offline']} frames and the audio's; "
        f"causal, {video_ahead['causal']} frames and the audio window's {1000 * lat['audio_lookahead_s']:.1f} ms "
        f"(none with `--causal-audio`, which delays the audio by {delays}). One causal step (compose the new "
        f"frame, one window of `sequence.onnx`, batch 1; the frame's visual and audio embeddings not included): "
        f"**{lat['causal_step_ms_median']:.2f} ms median**, {lat['causal_step_ms_p90']:.2f} ms at the 90th "
        f"percentile, over {lat['steps_timed']} frames. Whole videos: the causal mode runs "
        f"{r['throughput']['causal_over_offline_time']:.1f}× the offline mode's time "
        f"({rate(r['throughput']['causal_fps'])} against {rate(r['throughput']['offline_fps'])} frames/s, "
        f"medians of {r['throughput']['rounds']} alternating rounds)."
    )
    return table(heading, rows) + "\n\n" + notes + " " + measured_on(record, "benchmarks/results/low_latency.json")


def pretrain_face_cost(record: dict[str, Any]) -> str:
    """docs/pretrain.md: the pieces of `synth-faces` + `pretrain-face` at the demo params, per piece and per demo run."""
    r = record["results"]
    p = r["params"]
    rows = [
        ["training step (decode, flip, forward, backward, SGD)", f"{r['train_s_per_batch_cpu']:.2f} s",
         f"{r['train_s_per_batch_wall']:.2f} s", f"{r['demo_batches']} batches",
         f"{r['extrapolated_train_s_cpu_per_thread']:.0f} s"],
        ["embedding a held-out image (verification)", f"{r['embed_ms_per_image_cpu']:.1f} ms",
         f"{r['embed_ms_per_image_wall']:.1f} ms", f"{count(r['demo_verification_images'])} images",
         f"{r['extrapolated_verification_s_cpu_per_thread']:.0f} s"],
        ["rendering a synthetic face (wall only)", "—", f"{r['generation_ms_per_image_wall']:.1f} ms",
         f"{count(p['identities'] * p['images_per_identity'])} images",
         f"({r['extrapolated_generation_s_wall']:.0f} s wall)"],
    ]
    header = (f"piece (demo params, {p['backbone']} width {p['width_mult']:g}, batch {p['batch_size']})", "CPU",
              "wall", "demo count", "CPU / threads")
    return (table(header, rows) + f"\n\n{r['train_batches_timed']} training batches timed. "
            + measured_on(record, "benchmarks/results/pretrain_face.json"))


def pretrain_probe(record: dict[str, Any]) -> str:
    """docs/pretrain.md: a linear expression probe of the frozen embedding, random against pretrained backbone."""
    r = record["results"]
    rows = [["random initialisation", f"{r['random']['acc']:.3f}", f"{r['random']['f1']:.3f}"],
            ["pretrained on the synthetic identities", f"{r['pretrained']['acc']:.3f}", f"{r['pretrained']['f1']:.3f}"],
            ["majority class alone", f"{r['val_majority_acc']:.3f}", "—"]]
    return (table((f"frozen {r['backbone']} width {r['width_mult']:g}", "EXPR accuracy", "EXPR macro F1"), rows)
            + f"\n\nRidge least squares on {count(r['train_frames'])} EXPR training frames, scored on "
            f"{count(r['val_frames'])} validation frames. " + measured_on(record, "benchmarks/results/pretrain_probe.json"))


INT8_MODELS = (("width_1.0", "width 1.0"), ("demo", "demo (0.125)"))
INT8_PIPELINE_VARIANT = "qdq_u8s8_channel_7bit"


def _int8_speed_rows(visual: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, label in INT8_MODELS:
        model = visual[key]
        for variant, per_s in model["per_s"].items():
            rounds = ", ".join(f"{v:,.2f}" for v in model["rounds"][variant])
            if variant == "float32":
                rows.append([label, "float32", f"{per_s:,.2f}", rounds, "1", "", "", ""])
                continue
            agree = model["agreement"][variant]
            ratio = f"{model['vs_float32'][variant]:.2f}"
            name = f"`{variant}`" + (" (the pipeline's)" if variant == INT8_PIPELINE_VARIANT else "")
            rows.append([label, name, f"{per_s:,.2f}", rounds,
                         f"**{ratio}**" if variant == INT8_PIPELINE_VARIANT else ratio,
                         f"{agree['embedding_cosine_mean']:.4f} ({agree['embedding_cosine_min']:.4f})",
                         f"{agree['au_decisions_kept']:.3f}", f"{agree['expr_argmax_kept']:.3f}"])
    return rows


def _int8_score_rows(scores: dict[str, Any]) -> list[list[str]]:
    rows = []
    for frames in ("face_frames", "all_frames"):
        for model in ("sequence", "fusion", "visual"):
            cells = [frames, model]
            for task in ("au", "expr"):
                s = scores[frames][model][task]
                cells += [f"{s['float32']:.4f}", f"{s['int8']:.4f}", f"{s['change']:+.4f}"]
            rows.append(cells)
    return rows


def int8(record: dict[str, Any], source: str = "benchmarks/results/int8.json") -> str:
    """docs/visual.md: float32 against each int8 variant (speed, agreement), the TDNN, and the demo's scores
    from int8 stores with the same trained heads; one ``benchmarks/int8.py`` record."""
    r = record["results"]
    speed = table(("model", "variant", "faces/s (median)", "per round", "× float32", "embedding cosine mean (min)",
                   "AU decisions kept", "EXPR argmax kept"), _int8_speed_rows(r["visual"]))
    tdnn = r["tdnn"]
    tdnn_line = (f"TDNN: {tdnn['per_s']['float32']:,.0f} windows/s in float32, {tdnn['per_s']['int8']:,.0f} in int8 "
                 f"(**{tdnn['vs_float32']['int8']:.2f}×**), embedding cosine {tdnn['embedding_cosine_mean']:.3f} "
                 f"mean, {tdnn['embedding_cosine_min']:.3f} at worst, over {count(tdnn['windows'])} windows.")
    scores = table(("frames", "model", "AU float32", "AU int8", "change", "EXPR float32", "EXPR int8", "change"),
                   _int8_score_rows(r["scores"]))
    settings = (f"{r['visual']['demo']['faces']} faces, batch {r['batch_size']}, {r['threads']} onnxruntime threads, "
                f"onnxruntime {r['onnxruntime']}, {r['calibration_crops']} calibration crops.")
    return (speed + "\n\n" + tdnn_line + "\n\n" + "The demo's validation scores from int8 stores (same trained "
            "fusion head and sequence model), change int8 − float32:\n\n" + scores + "\n\n" + settings + " "
            + measured_on(record, source))


def int8_avx512(record: dict[str, Any]) -> str:
    """docs/visual.md: :func:`int8` of the run on a CPU with AVX-512 VNNI."""
    return int8(record, "benchmarks/results/int8_avx512.json")
