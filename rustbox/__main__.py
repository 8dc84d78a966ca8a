"""``python -m rustbox`` is the ``rustbox`` command."""

from rustbox._cli._main import console_main

console_main()
