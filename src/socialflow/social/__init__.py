"""Connected social accounts and the platforms' adapters."""
