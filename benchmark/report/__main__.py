"""``python -m benchmark.report``: see :mod:`benchmark.report.build`."""

import sys

from benchmark.report.build import main

sys.exit(main())
