"""botopt: the checkout's root is the ``botopt`` package (``package-dir`` maps it), so every
import between cli/, core/ and benchmarks/ is relative and resolves from the tree itself.
The library is ``botopt.core``; the command line is ``botopt.cli``."""
