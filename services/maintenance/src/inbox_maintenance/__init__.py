"""maintenance: scheduled housekeeping and alert evaluation (see ``inbox_maintenance.app``)."""
