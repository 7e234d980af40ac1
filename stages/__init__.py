"""Click entry points, one module per DVC stage; each is also runnable as ``python -m stages.<name>``."""
