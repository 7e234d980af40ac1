#!/usr/bin/env bash
# The pretraining study of docs/results.md ("Does face-recognition pretraining help?"), step by step.
# Run it from the repository root with the project's environment active; rerun it after an interruption
# or an edit: every step skips or resumes what is done. `--dry-run` prints the commands (the ablations'
# planned experiments included, their grids checked) and runs nothing.
#
#   (0) the demo pipeline, `dvc repro` (nothing to do when it is up to date): each experiment below
#       reruns only the stages up to finetune-visual, and DVC saves it with the outputs of the others,
#       which must then be in this workspace's cache (in a fresh clone they are not, and the first
#       experiment fails on a missing cache directory);
#   (a) the positive control's starting point, once: finetune-visual from scratch on synthetic draw
#       CONTROL_DRAW, which no replicate uses, then `mmaffect backbone-of` into CONTROL_DIR (kept out of git);
#   (b) the learning-rate grid on tuning replicate TUNING_REPLICATE, and the best rate per start by the
#       held-out selection score; the study stops here while an arm of (c) or (d) does not use it;
#   (c) the study: 4 arms x 8 paired replicates (0-7), its statistic declared in the record before the
#       first run, resumed from the record when it exists;
#   (d) its sequence-model part: the pretrained and scratch arms, SEQUENCE_REPLICATES paired replicates
#       (0 onwards), the whole pipeline per experiment, the AU and EXPR mean of the sequence model on the
#       validation frames with a face declared before the first run; resumed the same way.
#
# STEPS picks the steps (default: all, "0abcd"): a study record is resumed only at a commit whose pipeline
# is the one it started at (`mmaffect ablate --resume` refuses otherwise), so (c) and (d) may be finished
# in different checkouts, e.g. STEPS=d experiments/pretrain_study.sh.
#
# Every step runs DVC experiments in the workspace (not --temp: the control's backbone is not in git);
# the workspace ends holding the last experiment (`git checkout params.yaml && dvc checkout` returns it).
set -euo pipefail

CONTROL_DIR=${CONTROL_DIR:-studies/controls}
CONTROL_DRAW=${CONTROL_DRAW:-1000}
CONTROL_LR=${CONTROL_LR:-0.02}           # params.yaml's finetune_visual.lr: the control is made before the tuning
TUNING_REPLICATE=${TUNING_REPLICATE:-100}
REPLICATES=${REPLICATES:-8}
LR_RECORD=${LR_RECORD:-benchmarks/results/pretrain_lr_grid.json}
LR_CHOICE=${LR_CHOICE:-benchmarks/results/pretrain_lr_choice.json}
STUDY_RECORD=${STUDY_RECORD:-benchmarks/results/pretrain_study.json}
SEQUENCE_REPLICATES=${SEQUENCE_REPLICATES:-8}
SEQUENCE_RECORD=${SEQUENCE_RECORD:-benchmarks/results/pretrain_study_sequence.json}
STEPS=${STEPS:-0abcd}
ARMS=experiments/pretrain_arms.yaml
SEQUENCE_ARMS=experiments/pretrain_arms_sequence.yaml
SEQUENCE_SEEDS=synth.seed,synth_faces.seed,pretrain_face.seed,finetune_visual.seed,train_audio.seed,train_sequence.seed
FINETUNE=(--stage finetune-visual --metrics metrics/visual.json --variant validation.face_frames)

dry_run=""
case "${1:-}" in
  --dry-run) dry_run=--dry-run ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

if [[ ! $STEPS =~ ^[0abcd]+$ ]]; then echo "STEPS must be letters of 0abcd, got '$STEPS'" >&2; exit 2; fi
# whether step $1 is one of STEPS
wanted() { [[ $STEPS == *"$1"* ]]; }
step() { echo "== $*" >&2; }
# a command that changes the workspace: printed, and run unless --dry-run
run() {
  echo "+ $*" >&2
  if [[ -z $dry_run ]]; then "$@"; fi
}

if wanted 0; then
step "(0) the demo pipeline, so every output dvc.lock names is in the cache"
# an experiment killed midway leaves its -S values in params.yaml; reproducing those would run a whole
# pipeline nobody asked for
if ! git diff --quiet HEAD -- params.yaml; then
  echo "params.yaml differs from HEAD (an interrupted experiment's values, or edits of yours): restore it with" \
    "'git checkout HEAD -- params.yaml dvc.lock metrics && dvc checkout', or skip this step (STEPS=abcd)" >&2
  exit 1
fi
run dvc repro
fi

if wanted a; then
step "(a) positive control's backbone: $CONTROL_DIR"
if [[ -f $CONTROL_DIR/backbone.pth && -f $CONTROL_DIR/backbone.json ]]; then
  echo "present, skipped" >&2
else
  run dvc exp run -f -n "control-d$CONTROL_DRAW" -S "synth.seed=$CONTROL_DRAW" -S "finetune_visual.seed=$CONTROL_DRAW" \
    -S finetune_visual.backbone_init=random -S "finetune_visual.lr=$CONTROL_LR" \
    -S data.pretrained_backbone=cache/pretrain/backbone.pth finetune-visual
  run mmaffect backbone-of cache/visual/model.pt "$CONTROL_DIR"
fi
fi

if wanted b; then
step "(b) learning rate per start, on tuning replicate $TUNING_REPLICATE"
mmaffect ablate --grid experiments/pretrain_lr_grid.yaml --replicates 1 --replicate-start "$TUNING_REPLICATE" \
  "${FINETUNE[@]}" --resume --json "$LR_RECORD" $dry_run
fi
# the arms of (c) and (d) must use the rates (b) chose, whichever steps run
run python -m tooling.study choose-lr "$LR_RECORD" --out "$LR_CHOICE" --check-arms "$ARMS" --check-arms "$SEQUENCE_ARMS"

if wanted c; then
step "(c) the study: $ARMS, $REPLICATES paired replicates"
mmaffect ablate --grid "$ARMS" --replicates "$REPLICATES" "${FINETUNE[@]}" --reference scratch \
  --resume --json "$STUDY_RECORD" $dry_run
fi

if wanted d; then
step "(d) the sequence model: $SEQUENCE_ARMS, $SEQUENCE_REPLICATES paired replicates, the whole pipeline each"
mmaffect ablate --grid "$SEQUENCE_ARMS" --replicates "$SEQUENCE_REPLICATES" --replicate-params "$SEQUENCE_SEEDS" \
  --metrics metrics/evaluate.json --variant face_frames.sequence --statistic au_expr_score --reference sequence-scratch \
  --resume --json "$SEQUENCE_RECORD" $dry_run
fi
