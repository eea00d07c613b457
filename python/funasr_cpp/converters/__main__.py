"""`python -m funasr_cpp.converters MODEL_DIR --outdir OUT` (the same as `funasr-cpp convert`)."""
import sys

from .convert import main

sys.exit(main())
