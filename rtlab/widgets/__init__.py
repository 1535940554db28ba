"""Live notebook panels: watch a stream transcribe, and compare configurations side by side.

* :class:`LivePanel`: one stream (a file, a corpus utterance, NumPy samples, or an
  :class:`~rtlab.core.processor.AudioProcessor`): committed text, partial text in grey, a
  lag gauge, a commit-latency sparkline, Start and Stop.
* :class:`ComparePanel`: several configurations on the same audio through the replay,
  one column each, a live latency chart, then WER, latency, first text and RTF per
  configuration with the WER–latency plot; dropdowns from the plugin registry edit the
  configurations.

In Jupyter the panels are ipywidgets updated from the kernel's event loop (``panel.start()``
returns at once; other cells run meanwhile), at most 10 redraws a second. Elsewhere they
print a readable text form (``panel.run()`` in a script). Their results are a pandas
DataFrame (``panel.results``) and the ``results.jsonl`` of ``rtlab bench``
(``panel.save(folder)``). ipywidgets, matplotlib and pandas are imported only when a panel
needs them.
"""

from __future__ import annotations

from .compare import Column, ComparePanel
from .live import LivePanel
from .panel import VIEWS, in_jupyter

__all__ = ["Column", "ComparePanel", "LivePanel", "VIEWS", "in_jupyter"]
