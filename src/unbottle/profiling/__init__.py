"""``unbottle profile``: measured machine peaks, hotspots per phase, roofline, diagnosis."""

from unbottle.profiling.peaks import Peaks, cached_peaks, measure_peaks, stored_peaks
from unbottle.profiling.run import ProfileConfig, profile_model

__all__ = ["Peaks", "ProfileConfig", "cached_peaks", "measure_peaks", "profile_model", "stored_peaks"]
