"""`python -m converters MODEL_DIR --outdir OUT` (or `python converters ...`) in a checkout."""
import sys

if __package__:
    from .convert import main
else:  # run as `python converters`: make the package importable from the checkout root
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from converters.convert import main

sys.exit(main())
