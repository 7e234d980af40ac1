"""Face-identity training sets: insightface's packed ``train.rec``/``train.idx`` and ``<identity>/<image>.jpg``
folders, their readers (chosen by what a path holds) and writers."""
