"""Per-frame embedding extraction into the Zarr stores, parallel across videos with dask."""
