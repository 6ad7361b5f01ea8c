"""Governance of deliveries: policy gates (Rego), deploy windows and freezes (the spec's and the organisation's
calendar), carbon-aware timing, incident hooks (PagerDuty, signed CloudEvents webhooks) and the audit trail.

Domain code only (no I/O but what a caller hands in): the typed settings a spec gives (`model`), the calendar
and its answer for a moment (`calendar`), the in-process Rego engine (`rego`), the audit records and their
hash chain (`audit`), webhook signatures (`signing`). The gates that use them are in aicd.gates; the side
effects in aicd.activities.governance, aicd.activities.incidents and aicd.activities.audit."""
