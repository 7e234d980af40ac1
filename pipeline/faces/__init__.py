"""Faces in raw videos: detection with five landmarks, alignment to the arcface template, tracking of
every face across frames, and the Aff-Wild2 ``cropped_aligned`` writer."""
