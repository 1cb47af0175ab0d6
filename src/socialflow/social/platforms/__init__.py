"""One adapter per platform, each behind `base.PlatformAdapter`."""
