"""Demo- and test-scale variants of the SubFore trainers, one class per entry of
:data:`nnunet_subfore.variants.VARIANTS` (tiny networks, 32^3 patches, short runs, no test-time mirroring).

Each is a shipped trainer with a few attributes changed, the way nnU-Net's own variants read; the table
says which and why. nnU-Net finds them by name like any other trainer of this folder.
"""

from nnunet_subfore.trainers import subfore_cnn, subfore_finetune, subfore_pretrain
from nnunet_subfore.variants import VARIANTS

_TRAINERS = {name: obj for module in (subfore_pretrain, subfore_finetune, subfore_cnn)
             for name, obj in vars(module).items() if isinstance(obj, type) and name.startswith("SubFore")}

for _variant in VARIANTS:
    _TRAINERS[_variant.name] = globals()[_variant.name] = type(_variant.name, (_TRAINERS[_variant.base],), {
        "__module__": __name__, "__qualname__": _variant.name, "__doc__": _variant.doc, **_variant.attributes})

__all__ = [v.name for v in VARIANTS]
