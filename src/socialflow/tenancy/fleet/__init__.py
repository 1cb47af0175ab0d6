"""Fleet migrations: every tenant schema brought to a revision, with its ledger, CLI and the
rendered tenant DDL."""
