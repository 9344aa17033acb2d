"""Worker processes: SMTP, IMAP and POP3 served by several interpreters.

One interpreter runs Python on one core at a time. With ``[server] workers =
N`` the main process binds the listening sockets of smtp, submission(s),
imap(s) and pop3(s) and starts N workers (``python -m mailhouse.workers.worker``)
that all accept on them; the kernel hands each new connection to one of them.
Each worker opens the store itself: SQLite admits one writer at a time, and
the store's lock file makes writers queue for it instead of polling
(see store/sqlite/engine.py), each still committing its sessions in groups.

The workers also drain the outbound queue, each its share of the entries and
of the connection limits (serve.outbound, serve.queue_shares). The main process
keeps the HTTP listeners and the control socket (control.py), and relays notices
over a socket pair per worker (link.py): a worker's commits that change a
folder reach every other process at once (an IDLE session elsewhere hears of a
delivery as if it were local), and mail queued anywhere wakes every worker's
queue manager. SMTP's and IMAP's connection limits are counted in shared memory
(net/counts.py). A worker that dies is restarted; its share of the queue waits
for it meanwhile (at most the restart back-off, 30 s, unless it keeps dying).

Logins are checked, messages counted against the per-user sending limits, and
greylisting's triplets checked by the main process (one lockout, one cache of
successes, one count per user, one set of triplets: a retry may reach another
worker). IMAP's \\Recent claims and SMTP's connection rate are shared too, in
shared memory (imap/recent.py, net/counts.py).
"""
