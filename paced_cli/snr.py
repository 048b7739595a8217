"""`paced snr`: its options are the fields of `stages.snr.SnrConfig`."""

from __future__ import annotations

from paced_cli.build import command
from stages import snr as stage

snr = command(stage.SnrConfig, stage.run, "Gradient signal-to-noise ratio per pass-rate bin (the paper's Figure 3 diagnostic).", "snr")
