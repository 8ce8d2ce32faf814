"""Appraisals: the upload (`uploads`), the decision on it (`judgement`) and the service that
writes appraisals, their photos and events (`service`)."""
