"""Member benefits: the configuration (`config`), the append-only ledger (`ledger`), paying for
appraisals and what verdicts give back (`payments`), month close and expiries (`month`), and
the member-facing service (`service`)."""
