"""Using parjobs from code that is not trio: `BlockingManager` (threads, GUIs) and
`run_trio_guest` (trio as a guest of a running asyncio loop)."""

from ._facade import PROGRESS_QUEUE_SIZE as PROGRESS_QUEUE_SIZE
from ._facade import BlockingManager as BlockingManager
from ._guest import run_trio_guest as run_trio_guest
from ._util import fixup_module_metadata

__all__ = ["PROGRESS_QUEUE_SIZE", "BlockingManager", "run_trio_guest"]

fixup_module_metadata(__name__, ["run_trio_guest"], globals())
del fixup_module_metadata
