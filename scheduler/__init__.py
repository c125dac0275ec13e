"""APScheduler wiring: send-at, recurring announcements, quiet hours, expiry.

Until the scheduler issue lands, due announcements are started by the dispatcher's starter
loop (``gateway.outbox.dispatcher.Dispatcher.start_due``), which polls the database.
"""
