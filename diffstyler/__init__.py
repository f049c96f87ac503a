"""diffstyler: the DiffStyler paper as notebooks and a library.  `import diffstyler as ds`.

The names below are imported lazily (PEP 562): `import diffstyler` costs only this file, and diffusers/transformers
load the first time a name that needs them is used. So `diffstyler --help` and a bad-input error exit after
importing torch only (4 s instead of 15 s measured on a busy 2-core CPU). Saved toy models name their VAE
`["diffstyler.toy", "PatchVAE"]` in model_index.json, which plain diffusers loads once `diffstyler.toy` is imported."""
__version__ = "0.1.0"
import importlib

_NAMES = {
    "core": ("InjectionConfig", "Rule", "PRESETS", "DiffStylerError", "InputError", "ModelNotAvailableError", "load_image", "save_image",
             "seed_everything", "make_generator"),
    "registry": ("resolve_model",),
    "models": ("load_pipeline",),
    "hooks": ("decoder_layers", "InjectionController", "FeatureStore", "hooked"),
    "inversion": ("SourceTrajectory",),
    "transfer": ("DiffStyler", "Style", "TransferResult"),
    "lora": ("StyleLoRA", "train_lora", "load_lora", "save_lora", "use_adapter", "delete_lora", "adapter_names"),
    "masks": ("load_mask", "to_latent_mask", "fastsam", "show_mask"),
    "toy": ("ToyShapes", "render_scene", "content_iou", "style_distance", "outside_mask_change", "load_toy_pipeline", "PatchVAE"),
    "analysis": ("pca_across_loras", "ablation_grid", "steps_grid"),
    "widgets": ("InjectionExplorer", "FusionExplorer"),
    "runs": ("run",),
    "compare": ("compare_methods", "PreferenceStudy"),
}
_WHERE = {name: mod for mod, names in _NAMES.items() for name in names}
_MODULES = ("core", "registry", "models", "hooks", "inversion", "transfer", "lora", "masks", "toy", "analysis", "widgets", "runs", "compare", "cli")
__all__ = sorted(_WHERE)

def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'diffstyler' has no attribute {name!r}")
    globals()[name] = value   # cache: __getattr__ runs once per name
    return value

def __dir__(): return sorted(set(globals()) | set(_WHERE) | set(_MODULES))
