import sys
from pathlib import Path

# test helpers (tiny_llm_gguf, fixtures/) import as top-level modules
sys.path.insert(0, str(Path(__file__).resolve().parent))
