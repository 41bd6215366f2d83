"""inbox-ops: the operator's command for the runbook."""
