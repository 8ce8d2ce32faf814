"""Member benefits: the configuration (`config`), a member's tier and its history (`tiers`), the
append-only ledger (`ledger`), paying for appraisals and what verdicts give back (`payments`),
month close and expiries (`month`), and the member-facing service (`service`)."""
