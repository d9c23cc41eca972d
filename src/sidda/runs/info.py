"""``run.json``: the model's shape and the data a run was trained on (:class:`RunInfo`).

:class:`~sidda.runs.RunDir` reads and writes the file; this module holds its schema, including
how the keys an older sidda did not write are read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sidda.errors import short_repr

__all__ = ["RunInfo"]


@dataclass(frozen=True)
class RunInfo:
    """``run.json``: the model's shape and the data a run was trained on.

    >>> info = RunInfo("sidda", "cnn", 1, 3, 32, "/data/shapes", target_suffix="_noise")
    >>> RunInfo.from_json(info.to_json()) == info
    True
    """

    method: str
    model: str
    in_channels: int
    num_classes: int
    image_size: int
    data_path: str  #: resolved when training started
    target_suffix: str | None = None  #: resolved from the data's manifest (zenodo layout)
    class_names: tuple[str, ...] | None = None  #: one per class, or None
    sizes: dict[str, int] = field(default_factory=dict)  #: images per split (train_s, val_s, ...)
    world_size: int = 1  #: processes that trained it
    #: source training images per class (the collapse flag's reference), or None (older runs)
    source_class_counts: tuple[int, ...] | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        for key in ("class_names", "source_class_counts"):
            d[key] = None if d[key] is None else list(d[key])
        return d

    @classmethod
    def from_json(cls, d: object) -> RunInfo:
        """Read ``run.json``; keys an older sidda did not write take their defaults.

        Raises:
            ValueError: a key is missing or of the wrong type (the reason, for a message).
        """
        if not isinstance(d, dict):
            raise ValueError(f"holds {type(d).__name__}, not an object")
        for key, kind in (("method", str), ("model", str), ("data_path", str),
                          ("in_channels", int), ("num_classes", int), ("image_size", int)):
            value = d.get(key)
            if not isinstance(value, kind) or isinstance(value, bool) or (
                    kind is int and value < 1):
                raise ValueError(f"{key} is {short_repr(value)}")
        names, counts = d.get("class_names"), d.get("source_class_counts")
        if not (isinstance(names, list) and len(names) == d["num_classes"]
                and all(isinstance(n, str) for n in names)):
            names = None  # absent, or a run from before run.json checked them: by number
        if not (isinstance(counts, list) and len(counts) == d["num_classes"] and all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
            counts = None  # absent (an older run): evaluation counts the training labels
        sizes, suffix, world = d.get("sizes") or {}, d.get("target_suffix"), d.get("world_size", 1)
        if not (isinstance(sizes, dict) and all(isinstance(v, int) for v in sizes.values())
                and (suffix is None or isinstance(suffix, str)) and isinstance(world, int)):
            raise ValueError(f"sizes {short_repr(sizes)}, target_suffix {short_repr(suffix)}, "
                             f"world_size {short_repr(world)}")
        return cls(d["method"], d["model"], d["in_channels"], d["num_classes"], d["image_size"],
                   d["data_path"], suffix, None if names is None else tuple(names), sizes, world,
                   None if counts is None else tuple(counts))
