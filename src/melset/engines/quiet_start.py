"""Imported by the local engine's fork server only, first: the server's stderr goes to /dev/null.

The fork server and the workers it forks would share the driver's terminal. Workers
silence fd 2 themselves once started (the decoder's notes), but a worker still being
born when the driver stops the pool (an error right at the start, Ctrl-C) would print
multiprocessing's traceback about a vanished semaphore over the driver's one sentence.
"""

import os

_devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(_devnull, 2)
os.close(_devnull)
