"""Where ``convert_dataset`` used to live; kept so that ``nnunet_subfore.data.convert`` imports keep working.

The converters are in :mod:`nnunet_subfore.data.converters`; this module re-exports its public names.
"""

from nnunet_subfore.data.converters import *  # noqa: F401,F403
from nnunet_subfore.data.converters import __all__  # noqa: F401
