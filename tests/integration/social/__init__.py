"""Connected accounts and platform adapters, against loopback platforms."""
