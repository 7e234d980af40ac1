"""Dataset readers (Aff-Wild2, BP4D), manifest records, frame store and the synthetic generator."""
