"""What a bag2dataset run reports: per bag, messages read, frames kept and dropped with their reasons, notes;
and for the whole run, where the episodes went. Printed by the command line, returned by `convert`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lewm_ros.data.conversion_spec import ConversionSpec


@dataclass
class BagConversionReport:
    """What happened to one bag: message counts, frames kept and dropped (with reasons), notes."""

    path: Path
    topics: dict[str, str] = field(default_factory=dict)  # requested topic -> type
    messages: Counter = field(default_factory=Counter)  # topic -> messages read
    frames: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> frames
    episodes: list[int] = field(default_factory=list)  # rows of each episode written
    resized: Counter = field(default_factory=Counter)  # "WxH" -> frames fitted from that size
    clipped: int = 0  # action values clipped to [-1, 1]
    refused_commands: Counter = field(default_factory=Counter)  # reason -> command messages ignored
    undecodable: Counter = field(default_factory=Counter)  # topic -> messages that failed to deserialise
    first_errors: dict[str, str] = field(default_factory=dict)  # reason -> first error text
    split_on: str = "gaps"
    frame_time: str = "bag receive times"
    notes: list[str] = field(default_factory=list)  # conversion notes (markers, joint states)
    source_notes: list[str] = field(default_factory=list)  # what the bag reader recovered from
    damaged: bool = False  # messages were lost (a truncated file, corrupt chunks, a read error)

    def lines(self, spec: ConversionSpec) -> list[str]:
        """Human-readable report lines."""
        counts = ", ".join(f"{self.messages[t]} on {t}" for t in self.topics)
        out = [f"bag {self.path}: {counts}; episodes split on {self.split_on}; frames placed by {self.frame_time}"]
        rows = self.episodes
        shape = f" ({min(rows)}/{sum(rows) / len(rows):.1f}/{max(rows)} rows min/mean/max)" if rows else ""
        out.append(f"  kept {self.kept} of {self.frames} frames in {len(rows)} episodes{shape}")
        dropped = +self.dropped  # without zero counts
        if dropped:
            reasons = "; ".join(f"{n} {reason}" for reason, n in dropped.most_common())
            out.append(f"  dropped {sum(dropped.values())} frames: {reasons}")
        for reason, text in self.first_errors.items():
            out.append(f"  first {reason}: {text}")
        side = spec.image_size
        for size, n in sorted(self.resized.items()):
            out.append(f"  resized {n} frames from {size} to {side}x{side} ({spec.image_policy})")
        if self.clipped:
            out.append(f"  {self.clipped} action values clipped to [-1, 1] (commands faster than --max-joint-speed)")
        for reason, n in self.refused_commands.most_common():
            out.append(f"  ignored {n} command messages: {reason}")
        for topic, n in self.undecodable.items():
            out.append(f"  {n} messages on {topic} could not be deserialised")
        prefix = "DAMAGED (converted with --allow-partial)" if self.damaged else "bag"
        out.extend(f"  {prefix}: {note}" for note in self.source_notes)
        out.extend(f"  note: {note}" for note in self.notes)
        return out


@dataclass
class ConversionReport:
    """The whole conversion: one BagConversionReport per bag and where the episodes went."""

    out: Path
    bags: list[BagConversionReport] = field(default_factory=list)
    joint_names: tuple[str, ...] = ()
    episodes: int = 0
    rows: int = 0

    def lines(self, spec: ConversionSpec) -> list[str]:
        """Every bag's lines, then one line for the output file."""
        out = [line for bag in self.bags for line in bag.lines(spec)]
        frames = sum(b.frames for b in self.bags)
        dropped = sum(sum(b.dropped.values()) for b in self.bags)
        out.append(f"wrote {self.episodes} episodes, {self.rows} rows ({spec.image_size}x{spec.image_size}, "
                   f"{len(self.joint_names)} joints {list(self.joint_names)}, control_dt {spec.control_dt:g} s) "
                   f"to {self.out}; {dropped} of {frames} frames dropped")  # fmt: skip
        return out
