"""The human review queue: tasks (`tasks`), claims and leases (`service`), verdicts, double
review and escalation (`verdicts`), what a reviewer sees (`view`) and the quality numbers an
admin watches (`quality`)."""
