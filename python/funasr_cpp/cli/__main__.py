"""``python -m funasr_cpp.cli``: the ``funasr-cpp`` command."""
import sys

from . import main

sys.exit(main())
