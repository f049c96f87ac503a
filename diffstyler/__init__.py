__version__ = "0.1.0"
"""diffstyler: the DiffStyler paper as notebooks and a library.  `import diffstyler as ds`."""
from .core import InjectionConfig, DiffStylerError, InputError, ModelNotAvailableError, load_image, seed_everything
from .models import load_pipeline
