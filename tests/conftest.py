"""Make the collection importable as ansible_collections.ckpt.criu for pytest."""
import sys
from pathlib import Path

_COLLECTIONS = Path(__file__).resolve().parents[1] / ".build" / "collections"
if str(_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(_COLLECTIONS))
