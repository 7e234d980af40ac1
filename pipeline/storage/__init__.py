"""The stores that hold per-frame arrays between stages, side by side: the frame store (face crops,
one HDF5 file, :mod:`pipeline.storage.frame_store`) and the embedding stores (Zarr v3 directories,
:mod:`pipeline.storage.embedding_store`)."""
