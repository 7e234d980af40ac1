"""Dataset readers (Aff-Wild2, BP4D), manifest records and the synthetic generator."""
