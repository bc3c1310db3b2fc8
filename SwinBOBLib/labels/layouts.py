"""Model output channels <-> label values. SwinBOB models use the *compact* layout, 72 channels
(background plus the 71 structures, skipping the unused index 20); *full* 73-channel heads
(channel == label value) are converted on load with :meth:`ChannelLayout.rows_from`. Also the
left/right partner of each channel (flip TTA and lateral flip augmentation swap them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SwinBOBLib.labels.schemes import get_scheme


@dataclass(frozen=True)
class ChannelLayout:
    """Model output channels of a scheme: ``labels[c]`` is the label value of channel ``c``.

    ``compact`` holds background + every structure (72 channels for UKBOB); ``full`` holds every
    value 0..max_index including unused ones (73 channels for UKBOB).
    """

    scheme: str
    kind: str
    labels: tuple[int, ...]

    @property
    def num_channels(self) -> int:
        return len(self.labels)

    def channel_lookup(self) -> np.ndarray:
        """``lut[label] = channel`` for label values 0..max (-1 where a value has no channel)."""
        lut = np.full(max(self.labels) + 1, -1, dtype=np.int64)
        lut[list(self.labels)] = np.arange(self.num_channels)
        return lut

    def labels_to_channels(self, labelmap: np.ndarray) -> np.ndarray:
        """Label values -> channel indices (int64); values without a channel raise ValueError."""
        lut = self.channel_lookup()
        array = np.asarray(labelmap).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() >= lut.size or np.any(lut[array] < 0)):
            bad = sorted(set(np.unique(array).tolist()) - set(self.labels))
            raise ValueError(f"label values {bad[:10]} have no channel in the {self.kind} "
                             f"{self.num_channels}-channel layout of scheme '{self.scheme}'")
        return lut[array]

    def channels_to_labels(self, channels: np.ndarray) -> np.ndarray:
        """Channel indices (e.g. an argmax) -> label values, uint8 when they fit."""
        table = np.asarray(self.labels, dtype=np.uint8 if max(self.labels) < 256 else np.uint16)
        return table[np.asarray(channels, dtype=np.intp)]

    def rows_from(self, other: "ChannelLayout") -> np.ndarray:
        """For converting an output head from ``other``: ``rows[c]`` is the channel of ``other``
        holding this layout's channel ``c``, or -1 where ``other`` has none (initialise it fresh)."""
        lut = other.channel_lookup()
        return np.array([lut[v] if v < lut.size else -1 for v in self.labels], dtype=np.int64)


def channel_layout(scheme: str = "ukbob", kind: str = "compact") -> ChannelLayout:
    """The ``compact`` (default) or ``full`` channel layout of ``scheme``."""
    s = get_scheme(scheme)
    if kind == "compact":
        labels = (0, *s.indices)
    elif kind == "full":
        labels = tuple(range(s.max_index + 1))
    else:
        raise ValueError(f"channel layout must be 'compact' or 'full', got '{kind}'")
    return ChannelLayout(s.name, kind, labels)


def layout_for_channels(num_channels: int, scheme: str = "ukbob") -> ChannelLayout:
    """The layout of ``scheme`` that has ``num_channels`` output channels (72 or 73 for UKBOB)."""
    for kind in ("compact", "full"):
        layout = channel_layout(scheme, kind)
        if layout.num_channels == num_channels:
            return layout
    sizes = {k: channel_layout(scheme, k).num_channels for k in ("compact", "full")}
    raise ValueError(f"{num_channels} output channels match no layout of scheme '{scheme}' "
                     f"(compact: {sizes['compact']}, full: {sizes['full']})")


def lateral_swap_table(layout: ChannelLayout) -> np.ndarray:
    """``table[channel]`` = the channel of the same structure on the other side (itself if unpaired)."""
    partners = get_scheme(layout.scheme).lateral_partners()
    lookup = layout.channel_lookup()
    table = np.arange(layout.num_channels, dtype=np.int64)
    for channel, label in enumerate(layout.labels):
        if label in partners:  # background and an unused index of a full layout have none
            table[channel] = lookup[partners[label]]
    return table
