"""python -m loadtests.bench_schedulers"""

import sys

from .cli import main

main(sys.argv[1:])
