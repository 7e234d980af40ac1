"""Synthetic Aff-Wild2-layout dataset with drawn faces, speech-like audio and temporal labels."""
