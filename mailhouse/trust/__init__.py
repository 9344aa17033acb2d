"""The trust layer: who may send what, and what arriving mail proves about itself.

Outbound: sender ownership, per-user sending limits, DKIM signing (keys.py,
dkim.py). Inbound: SPF, DKIM, ARC, DMARC and the Authentication-Results field
(spf.py, dkim.py, arc.py, dmarc.py, authresults.py). Abuse: the login lockout,
connection rates, greylisting (limits.py). hooks.py ties them to the reception
path. This package's top level imports nothing so the lower layers (auth,
config) can import its plain parts without cycles.
"""
