"""Renderers of the full-size bill (``benchmarks/results/full_size_bill.json``, ``benchmarks/full_size_bill.py``).

Example:
    >>> [duration(s) for s in (42, 600, 7200, 3 * 86400, 1234.5 * 86400)]
    ['42 s', '10 min', '2.0 h', '3.0 days', '1,234 days']
"""

from __future__ import annotations

from typing import Any

from tooling.report.bench_tables import measured_on
from tooling.report.markdown import count, rate, table

SOURCE = "benchmarks/results/full_size_bill.json"


def duration(seconds: float) -> str:
    """A wall time in the unit a planner reads: seconds, minutes, hours, then days."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    days = seconds / 86400
    return f"{days:.1f} days" if days < 100 else f"{days:,.0f} days"


def size(n_bytes: float) -> str:
    """Bytes in MB below a gigabyte, else GB (decimal units)."""
    return f"{n_bytes / 1e6:.0f} MB" if n_bytes < 1e9 else f"{n_bytes / 1e9:.1f} GB"


def _tasks(workload: dict[str, Any]) -> str:
    return ", ".join(task.upper() for task in workload["tasks"])


def _workload_line(r: dict[str, Any]) -> str:
    w = r["workload"]
    return (f"{count(w['videos'])} videos, {count(w['frames'])} frames (the paper's count of Aff-Wild2), "
            f"{w['audio_hours']:.1f} hours of audio at {w['fps']:g} fps; every frame taken as having a face crop "
            f"and the labels of all {len(w['tasks'])} tasks ({_tasks(w)}), {100 * w['train_share']:.0f} % of "
            f"them trained on per task, the rest scored once per epoch (our assumptions: [the workload](#the-workload))")


def bill_table(record: dict[str, Any]) -> str:
    """README: each stage's wall time on 2 CPU cores for the demo and paper profiles, GPU, and disk."""
    r = record["results"]
    demo, paper = r["bill"]["demo"], r["bill"]["paper"]
    profiles = r["profiles"]
    rows = []
    for d_row, p_row in zip(demo["stages"], paper["stages"]):
        disk = f"{size(p_row['disk_bytes'])} ({p_row['disk']})" if p_row["disk"] else "—"
        if p_row["disk"] and round(d_row["disk_bytes"] / 1e6) != round(p_row["disk_bytes"] / 1e6):
            disk = f"{size(d_row['disk_bytes'])} / {size(p_row['disk_bytes'])} ({p_row['disk']})"
        rows.append([f"`{d_row['stage']}`", duration(d_row["seconds"]), duration(p_row["seconds"]),
                     "not measured", disk])
    rows.append(["**total**", f"**{duration(demo['total']['seconds'])}**", f"**{duration(paper['total']['seconds'])}**",
                 "not measured", f"**{size(demo['total']['disk_bytes'])} / {size(paper['total']['disk_bytes'])}**"])
    header = ("stage", f"demo profile ({profiles['demo']['visual']}), 2 CPU cores",
              f"paper profile ({profiles['paper']['visual']}), 2 CPU cores", "GPU", "disk written (demo / paper)")
    quick = " **A `--quick` record: tiny inputs and the demo's models in both columns; not for planning.**" \
        if r["quick"] else ""
    quick += _threads_line(r["rates"]["thread_check"])
    if record["busy"]:
        quick += (" These rates were measured while other processes shared the cores, so every time here is longer "
                  "than an idle machine's: rerun `python -m benchmarks.full_size_bill` on an idle one, then "
                  "`mmaffect report`.")
    caption = (f"For {_workload_line(r)}. Wall time = work ÷ the rate measured on this machine; the "
               f"GPU column is empty because no GPU machine was available to measure it. Disk excludes the "
               f"dataset itself.{quick}")
    return table(header, rows) + "\n\n" + caption + " " + measured_on(record, SOURCE)


def bill_summary(record: dict[str, Any]) -> str:
    """README: the bill in three lines: each profile's total wall time on 2 CPU cores, the disk, the provenance."""
    r = record["results"]
    demo, paper = r["bill"]["demo"]["total"], r["bill"]["paper"]["total"]
    profiles, w = r["profiles"], r["workload"]
    busy = " (on a busy machine: an idle one is faster)" if record["busy"] else ""
    return (f"- demo profile (`{profiles['demo']['visual']}`): **{duration(demo['seconds'])}** on 2 CPU cores{busy}, "
            f"{size(demo['disk_bytes'])} written;\n"
            f"- paper profile (`{profiles['paper']['visual']}`): **{duration(paper['seconds'])}** on 2 CPU cores, "
            f"{size(paper['disk_bytes'])} written; a GPU has not been measured;\n"
            f"- for {count(w['videos'])} videos, {count(w['frames'])} frames; rates measured {record['date'][:10]} "
            f"on {record['machine']['cpu_model']} by `python -m benchmarks.full_size_bill` "
            f"(`benchmarks/results/full_size_bill.json`).")


def _per_task(cap: int | None, unit: str) -> str:
    return f"{count(cap)} {unit}, a fresh draw each epoch" if cap is not None else "every training frame"


def bill_profiles(record: dict[str, Any]) -> str:
    """docs/full_size.md: what sets each profile's cost, side by side, from the record's profiles."""
    r = record["results"]
    demo, paper = r["profiles"]["demo"], r["profiles"]["paper"]

    def pretrain(p: dict[str, Any]) -> str:
        if not p["pretrain_epochs"]:
            return "0 epochs: a checkpoint of yours (Glint360K r100) is published as it is"
        return (f"{p['pretrain_epochs']} epochs of {count(p['pretrain_images_per_epoch'])} identity images, "
                f"verified before and after each")

    rows = [
        ["visual model", f"`{demo['visual']}`", f"`{paper['visual']}`"],
        ["`pretrain-face`", pretrain(demo), pretrain(paper)],
        ["`finetune-visual` frames per task per epoch", _per_task(demo["max_frames_per_epoch"], "frames"),
         _per_task(paper["max_frames_per_epoch"], "frames")],
        ["`train-audio` segments per task per epoch",
         *[_per_task(p.get("audio_max_segments"), f"segments of {p['audio_segment_frames']} frames")
           for p in (demo, paper)]],
        ["`train-sequence` windows per task per epoch",
         *[_per_task(p.get("sequence_max_windows"), "windows") for p in (demo, paper)]],
        ["TDNN channels", *[", ".join(str(c) for c in p["tdnn_channels"]) for p in (demo, paper)]],
        ["sequence model width, heads, batch",
         *[f"{p['sequence_d_model']}, {p['sequence_heads']}, {p['sequence_batch']}" for p in (demo, paper)]],
        ["epochs of `finetune-visual`, `train-audio`, `train-sequence`",
         *[f"{p['finetune_epochs']}, {p['audio_epochs']}, {p['sequence_epochs']}" for p in (demo, paper)]],
    ]
    sources = "; ".join(f"{what}: {why}" for what, why in paper["sources"].items())
    return (table(("", "demo (`params.yaml` as it is)", "paper"), rows)
            + f"\n\nThe paper profile's values and where each comes from: {sources}. Every trainer takes the "
              f"{len(r['workload']['tasks'])} tasks ({_tasks(r['workload'])}) in turn.")


def _threads_line(check: dict[str, Any]) -> str:
    """What the side-by-side thread check says about the run's rates."""
    threads, ratio = check["threads"], check["ratio"]
    if threads == 1:
        return ""
    line = (f" In alternating rounds during the run, {threads} threads trained `{check['model']}` at {ratio:.2f}× "
            f"the rate of 1 thread")
    if ratio < 1:
        return line + (": the cores were oversubscribed, and threads waiting on each other slowed every "
                       "multi-threaded rate far more than the load average alone suggests.")
    return line + "."


def bill_inputs(record: dict[str, Any]) -> str:
    """docs/full_size.md: every measured rate with its unit, the bytes per frame, and each stage's formula."""
    r = record["results"]
    units, rates = r["rate_units"], r["rates"]
    rows = [["`probe_cpu_s_per_video_hour`", rate(rates["probe_cpu_s_per_video_hour"]), units["probe_cpu_s_per_video_hour"]],
            ["`pack_faces_per_s`", rate(rates["pack_faces_per_s"]), units["pack_faces_per_s"]],
            ["`read_faces_per_s`", rate(rates["read_faces_per_s"]), units["read_faces_per_s"]],
            ["`logmel_audio_s_per_s`", rate(rates["logmel_audio_s_per_s"]), units["logmel_audio_s_per_s"]]]
    for key, v in rates["visual"].items():
        rows += [[f"`{key}` train", rate(v["train_images_per_s"]), f"{units['visual.*.train_images_per_s']} (batch {v['batch']})"],
                 [f"`{key}` embed, torch / onnxruntime",
                  f"{rate(v['embed_torch_faces_per_s'])} / {rate(v['embed_onnxruntime_faces_per_s'])}",
                  units["visual.*.embed_*_faces_per_s"]],
                 [f"`{key}` export", f"{v['export_s']:.1f} s, {size(v['onnx_bytes'])}",
                  f"{units['visual.*.export_s']}; {units['visual.*.onnx_bytes']}"]]
    for key, v in rates["tdnn"].items():
        rows += [[f"TDNN `{key}` train / embed", f"{rate(v['train_frames_per_s'])} / {rate(v['embed_frames_per_s'])}",
                  f"{units['tdnn.*.train_frames_per_s']} / {units['tdnn.*.embed_frames_per_s']}"]]
    for key, v in rates["sequence"].items():
        rows += [[f"sequence `{key}` train / infer", f"{rate(v['train_windows_per_s'])} / {rate(v['infer_windows_per_s'])}",
                  units["sequence.*.*_windows_per_s"]]]
    check = rates["thread_check"]
    medians = " / ".join(rate(v) for v in check["median_images_per_s"].values())
    rows.append([f"`{check['model']}` train at {' / '.join(check['median_images_per_s'])} thread(s)", medians,
                 f"images per second, median of alternating rounds (batch 16); ratio {check['ratio']:.2f}"])
    rate_table = table(("rate", "measured", "unit"), rows)

    disk = r["disk"]
    disk_rows = [[f"`{name}`", f"{per:.0f}", count(disk["bytes"][name]), count(disk["counted"][name])]
                 for name, per in disk["bytes_per_frame"].items()]
    disk_table = table(("store", "bytes per frame", "bytes in that cache", "frames (faces for frames_h5) counted"),
                       disk_rows)

    demo, paper = r["bill"]["demo"]["stages"], r["bill"]["paper"]["stages"]
    formula_rows = [[f"`{d['stage']}`", d["formula"], _inputs(d["inputs"]), _inputs(p["inputs"])]
                    for d, p in zip(demo, paper)]
    formula_table = table(("stage", "seconds =", "demo inputs", "paper inputs"), formula_rows)
    parts = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in rates["seconds"].items())
    took = f"The measurement took {r['measure_seconds']:.0f} s of wall time ({parts})."
    return (rate_table + "\n\n" + took + "\n\n" + f"Bytes per frame read from `{disk['cache']}`:\n\n" + disk_table + "\n\n"
            + formula_table + "\n\n" + measured_on(record, SOURCE))


def _inputs(inputs: dict[str, Any]) -> str:
    return ", ".join(f"{name} {count(round(v)) if isinstance(v, (int, float)) and v >= 100 else f'{v:g}'}"
                     for name, v in inputs.items())
