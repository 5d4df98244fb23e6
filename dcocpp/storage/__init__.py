"""The disk: what must survive a power cut, and the files around it.

`database` is the station's SQLite database (`Database`, synchronous), whose rows are read
back checked by `columns` (garbage in a row is dropped or stood in for, never a crash);
`asyncdb` runs it in a worker thread for the event loop (`AsyncDatabase`); `datarecord` is the
data directory's record of the database it holds (so that a lost database or write-ahead log
is noticed); `datalock` keeps a second process off the data directory; `atomicfile` writes a
file whole or not at all; `oserrors` puts an OSError in an operator's words. A leaf: any layer
may use it, it uses only another leaf (`clock`).

Errors::

    Exception
    └── database.StorageError          names the file or directory, what failed and why
        │                              (SQLite's or the system's reason; `datalock`: the
        │                              other process's pid)
        └── database.DataLossRefused   a database missing or older than recorded, refused
                                       unless the operator accepts the loss

`atomicfile` and `datarecord` raise `OSError` (and `ValueError` for a record that is not
one) to their callers, which say what the file was for.
"""
