"""Hydra search-path plugin: makes ``+recipe=NAME`` find ``recipes/NAME.yaml`` in any Hydra app (verl's main_ppo).

Hydra imports every module under the ``hydra_plugins`` namespace at start-up, so this file imports nothing but
Hydra. The recipes ship inside the wheel as ``r1aqa_plugin/recipe/*.yaml`` (``recipe`` is a link to the
top-level ``recipes/`` folder in a source checkout, which is what an editable install sees).
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class R1AQARecipeSearchPath(SearchPathPlugin):
    """Appends ``pkg://r1aqa_plugin``, whose ``recipe/`` config group holds the r1aqa recipes."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Add the package to the end of the search path (verl's own config keeps precedence for its groups)."""
        search_path.append(provider="r1aqa-plugin", path="pkg://r1aqa_plugin")
