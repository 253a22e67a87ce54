"""The scenarios, by name.

Adding one (presence, recovery): write a module here with a class shaped like
``Scenario`` (its options, its channel count, its ``run`` built from the harness's
phases) and add an instance to ``REGISTRY``; the command line picks it up.
"""

from __future__ import annotations

from load.scenarios.base import Scenario
from load.scenarios.fanout import Fanout
from load.scenarios.idle import Idle
from load.scenarios.restart import Restart
from load.scenarios.storm import Storm
from load.scenarios.stormload import StormLoad
from load.scenarios.targeted import Targeted

REGISTRY: dict[str, Scenario] = {
    s.name: s for s in (Fanout(), Targeted(), Idle(), Storm(), StormLoad(), Restart())
}

__all__ = ["REGISTRY", "Scenario"]
