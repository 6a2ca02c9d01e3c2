"""`seal serve`: an HTTP service over one `seal.memory.Memory`.

Documents are answered at once by retrieval while they wait in the store (SQLite), and learned into
the weights by consolidation, which runs in a worker process of its own so that chat never waits for it.
The service knows only `seal.memory`; it never reaches into the inner loop or the domains.
"""
