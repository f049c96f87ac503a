__version__ = "0.1.0"
"""diffstyler: the DiffStyler paper as notebooks and a library.  `import diffstyler as ds`."""
from .core import (InjectionConfig, DiffStylerError, InputError, ModelNotAvailableError, load_image, save_image,
                   seed_everything, make_generator)
from .models import load_pipeline
from .hooks import decoder_layers, InjectionController, FeatureStore, hooked
from .inversion import SourceTrajectory
from .transfer import DiffStyler, Style, TransferResult
from .lora import StyleLoRA, train_lora, load_lora, save_lora, use_adapter, delete_lora, adapter_names
from . import masks
from .masks import load_mask, to_latent_mask, fastsam, show_mask
from .toy import ToyShapes, render_scene, content_iou, style_distance, outside_mask_change, load_toy_pipeline
from .analysis import pca_across_loras, ablation_grid, steps_grid
from .widgets import InjectionExplorer, FusionExplorer
