"""The automated reviewer: PDF loading with an injection guard, the review form, reviews, meta-review, calibration."""
