"""aggregator: follow news feeds, summarise every story, publish one feed.

The pipeline, one module per stage (open them in this order to follow an item):

    opml.py -> fetch.py -> parse.py -> decide.py -> store/ -> stages/cluster.py
            -> extract.py -> summarize.py -> publish/ -> serve.py

``update.py`` wires the stages into one pass, ``daemon.py`` runs passes on a
schedule, ``cli/`` is the command line.
"""

from __future__ import annotations

__version__ = "0.1.0"
