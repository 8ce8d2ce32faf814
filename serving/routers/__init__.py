"""One router per resource: appraisals, models, and the service's own health."""
