"""What every front end over a ModelSpec graph shares: building from the
graph a reader made, and pickling that graph (never C pointers)."""

from __future__ import annotations

from typing import Any, TypeVar

from fastlstm.engine.graph import Graph
from fastlstm.model_spec import ModelSpec

__all__ = ["GraphFrontEnd"]

G = TypeVar("G", bound="GraphFrontEnd")


class GraphFrontEnd:
    """A framework-shaped model over a Graph; subclasses read what they
    need from it in ``_adapt``."""

    spec: ModelSpec
    _graph: Graph
    _nan_policy: str

    @classmethod
    def from_spec(
        cls: type[G],
        spec: ModelSpec,
        *,
        nan_policy: str = "raise",
        threads: int | None = None,
    ) -> G:
        """From the graph its reader makes (``fastlstm.load_spec``)."""
        model = cls.__new__(cls)
        model._setup(spec, nan_policy, threads)
        return model

    def _setup(
        self, spec: ModelSpec, nan_policy: str, threads: int | None = None
    ) -> None:
        self.spec = spec
        self._nan_policy = nan_policy
        self._graph = Graph(spec, nan_policy, threads)
        self._adapt()

    threads = property(
        lambda self: self._graph.threads,
        doc="The threads= option (None: automatic, see fastlstm.get_num_threads).",
    )

    def _adapt(self) -> None:
        raise NotImplementedError

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles the graph (NumPy weights); unpickling rebuilds it."""
        return (_rebuild, (type(self), self.spec, self._nan_policy, self.threads))


def _rebuild(
    cls: type[G], spec: ModelSpec, nan_policy: str, threads: int | None = None
) -> G:
    return cls.from_spec(spec, nan_policy=nan_policy, threads=threads)
