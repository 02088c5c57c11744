"""`python -m cnnlab ...`, the same as the `cnnlab` command; what torchrun starts in each process:
`torchrun --nproc-per-node N -m cnnlab train ...`."""

import sys

from .cli import main

sys.exit(main())
