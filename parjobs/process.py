"""Running external programs as tasks: `ProcessTask`, the records its subscribers receive
(`Chunk`, `Lost`), the lines the manager's event stream carries (`OutputLine`) and
`ProcessFailedError`."""

from ._exceptions import ProcessFailedError as ProcessFailedError
from ._output import OutputLine as OutputLine
from ._process import Chunk as Chunk
from ._process import Lost as Lost
from ._process import ProcessTask as ProcessTask
from ._util import fixup_module_metadata

__all__ = ["Chunk", "Lost", "OutputLine", "ProcessFailedError", "ProcessTask"]

fixup_module_metadata(__name__, ["Chunk", "Lost", "OutputLine", "ProcessTask"], globals())
del fixup_module_metadata
